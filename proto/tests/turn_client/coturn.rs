//! The client against a real coturn (`turnserver`, REST-API credentials), when it is installed:
//! real sockets on loopback, real time. Skipped (passes, with a note on stderr) without it.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p2pnat_proto::turn::client::TurnClientConfig;
use p2pnat_proto::turn::client::{ClientEvent, ClientOutput, Received, TurnClient};
use p2pnat_proto::turn::credentials::SharedSecret;

struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Drives `client` on `socket` until `done` says so or `limit` passes; returns whether it did.
fn drive(
    client: &mut TurnClient,
    socket: &UdpSocket,
    limit: Duration,
    mut done: impl FnMut(&mut TurnClient, Option<ClientEvent>, Option<(SocketAddr, Vec<u8>)>) -> bool,
) -> bool {
    let end = Instant::now() + limit;
    let mut buffer = vec![0u8; 2048];
    while Instant::now() < end {
        let wait = loop {
            match client.poll_output(Instant::now()) {
                ClientOutput::Transmit(bytes) => {
                    socket.send_to(&bytes, client.server()).unwrap();
                }
                ClientOutput::Event(event) => {
                    if done(client, Some(event), None) {
                        return true;
                    }
                }
                ClientOutput::Timeout(at) => break at.saturating_duration_since(Instant::now()),
                ClientOutput::Closed => return false,
            }
        };
        let wait = wait.clamp(Duration::from_millis(1), Duration::from_millis(50));
        socket.set_read_timeout(Some(wait)).unwrap();
        if let Ok((len, from)) = socket.recv_from(&mut buffer) {
            assert_eq!(from, client.server());
            if let Ok(Received::Data { peer, payload }) =
                client.handle_datagram(Instant::now(), &buffer[..len])
            {
                let payload = payload.to_vec();
                if done(client, None, Some((peer, payload))) {
                    return true;
                }
            }
        }
        client.handle_timeout(Instant::now());
    }
    false
}

#[test]
fn relays_through_coturn() {
    if Command::new("turnserver")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("turnserver not installed: coturn check skipped");
        return;
    }
    // A free port: bind one, note it, let it go for coturn.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _coturn = Coturn(
        Command::new("turnserver")
            .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .args([
                "--use-auth-secret",
                "--static-auth-secret=north",
                "--realm=p2pnat",
            ])
            .args([
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allow-loopback-peers",
            ])
            .args(["--min-port=49152", "--max-port=65535", "--no-stdout-log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn turnserver"),
    );
    // coturn's listener comes up meanwhile; the Allocate is retransmitted until it answers.
    std::thread::sleep(Duration::from_millis(100));
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let credentials = SharedSecret::new(b"north")
        .unwrap()
        .issue("alice", now_unix, 600);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer_socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let peer = peer_socket.local_addr().unwrap();
    let mut client = TurnClient::new(
        TurnClientConfig::default(),
        server,
        credentials.username,
        credentials.password,
        Instant::now(),
        7,
    );
    let allocated = drive(
        &mut client,
        &socket,
        Duration::from_secs(5),
        |_, event, _| matches!(event, Some(ClientEvent::Allocated { .. })),
    );
    assert!(allocated, "no allocation from coturn");
    let relayed = client.relayed_address().unwrap();
    client.permit(Instant::now(), peer.ip()).unwrap();
    client.bind_channel(Instant::now(), peer).unwrap();
    let bound = drive(
        &mut client,
        &socket,
        Duration::from_secs(5),
        |_, event, _| matches!(event, Some(ClientEvent::ChannelBound { .. })),
    );
    assert!(bound, "no channel from coturn");
    // Client -> peer over the channel.
    let mut out = Vec::new();
    client
        .send_to(Instant::now(), peer, b"to the peer", &mut out)
        .unwrap();
    assert_eq!(out.len(), 4 + 11, "ChannelData once bound");
    socket.send_to(&out, server).unwrap();
    let mut buffer = [0u8; 2048];
    let (len, from) = peer_socket.recv_from(&mut buffer).unwrap();
    assert_eq!((&buffer[..len], from), (&b"to the peer"[..], relayed));
    // Peer -> client.
    peer_socket.send_to(b"to the client", relayed).unwrap();
    let received = drive(
        &mut client,
        &socket,
        Duration::from_secs(3),
        |_, _, data| data == Some((peer, b"to the client".to_vec())),
    );
    assert!(received, "nothing relayed back");
    client.close(Instant::now());
    drive(&mut client, &socket, Duration::from_secs(1), |_, _, _| {
        false
    });
}
