//! Amplification: a datagram from an unverified source (its address may be spoofed) never
//! makes the rendezvous or a node send back more than a small multiple of its size. STUN's one
//! short answer is the yardstick. The factors measured here are in docs/PROTOCOL.md section 8.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{Node, Rendezvous};

/// Sends `request` from a fresh socket to `to` and returns the bytes that came back within
/// `window` (every datagram counted).
fn reflected_bytes(to: SocketAddr, request: &[u8], window: Duration) -> usize {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(request, to).unwrap();
    let deadline = Instant::now() + window;
    let mut total = 0;
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return total;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => total += n,
            Err(_) => return total,
        }
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal TURN Allocate (RFC 8656): header and REQUESTED-TRANSPORT (UDP), no credentials.
fn bare_allocate() -> Vec<u8> {
    let mut message = vec![0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
    message.extend_from_slice(&[7u8; 12]); // transaction ID
    message.extend_from_slice(&[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    message
}

/// A long-header QUIC Initial (version 1) whose contents are noise: nobody can decrypt it.
fn fake_initial() -> Vec<u8> {
    let mut packet = vec![0xC3, 0, 0, 0, 1, 8];
    packet.extend_from_slice(&[9u8; 8]);
    packet.push(0);
    packet.resize(1200, 0x5A);
    packet
}

/// Control datagrams (docs/PROTOCOL.md section 4.1) from a stranger: a Hello, a signed
/// Register under no valid cookie, and a Request for a session nobody holds.
fn control_datagrams(rendezvous: SocketAddr) -> Vec<(&'static str, Vec<u8>)> {
    use p2pnat_proto::control::Request;
    use p2pnat_proto::rv::{client, wire};
    let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let mut machine = client::Client::new(Default::default(), key, rendezvous, [1; 32]);
    let now = Instant::now();
    machine.hello(now).unwrap();
    let hello = machine.poll_transmit().unwrap();
    let register = Request::Register {
        local_addrs: vec!["10.0.0.2:4000".parse().unwrap()],
        nat: p2pnat_proto::nat::NatReport::UNKNOWN,
        relayed: None,
    };
    machine.request(now, register).unwrap();
    let register = machine.poll_transmit().unwrap();
    let lookup = p2pnat_proto::control::encode(&Request::Lookup {
        peer: p2pnat_proto::PeerId([3; 32]),
    });
    let request = wire::Builder::new(wire::KIND_REQUEST, &[5; 8])
        .bytes(&[42; 32])
        .u64(77)
        .u64(1)
        .body(&lookup)
        .tagged(&[0; 16]);
    vec![
        ("rendezvous: control Hello", hello),
        ("rendezvous: control Register, no cookie", register),
        ("rendezvous: control Request, unknown session", request),
    ]
}

#[test]
fn no_unverified_datagram_is_answered_with_more_than_a_small_multiple_of_itself() {
    let turn_port = free_udp_port();
    let turn_listen = format!("127.0.0.1:{turn_port}");
    let rendezvous = Rendezvous::start(&["--turn-listen", &turn_listen]);
    let node = Node::start(&rendezvous, &[]);
    let rendezvous_addr: SocketAddr = rendezvous.addr.parse().unwrap();
    let turn_addr: SocketAddr = turn_listen.parse().unwrap();
    let node_addr = common::stranger::node_addr(&node.ready);
    let window = Duration::from_millis(700);
    let binding = p2pnat_proto::stun::binding_request([1; 12]);
    let garbage = vec![0xFFu8; 512];
    let cases: Vec<(&str, SocketAddr, Vec<u8>)> = vec![
        (
            "rendezvous: STUN Binding request",
            rendezvous_addr,
            binding.clone(),
        ),
        (
            "rendezvous: QUIC Initial (undecryptable)",
            rendezvous_addr,
            fake_initial(),
        ),
        ("rendezvous: garbage", rendezvous_addr, garbage.clone()),
        (
            "TURN: Allocate without credentials",
            turn_addr,
            bare_allocate(),
        ),
        ("TURN: STUN Binding request", turn_addr, binding.clone()),
        ("TURN: garbage", turn_addr, garbage.clone()),
        ("node: STUN Binding request", node_addr, binding.clone()),
        (
            "node: QUIC Initial (undecryptable)",
            node_addr,
            fake_initial(),
        ),
        ("node: garbage", node_addr, garbage),
    ];
    let mut worst = 0.0f64;
    // Control datagrams are held to less than they carry (never more bytes than the request).
    for (what, request) in control_datagrams(rendezvous_addr) {
        let back = reflected_bytes(rendezvous_addr, &request, window);
        let factor = back as f64 / request.len() as f64;
        eprintln!(
            "amplification | {what} | {} bytes in | {back} bytes out | {factor:.2}x",
            request.len()
        );
        assert!(
            back > 0,
            "{what}: the rendezvous answers it (a cookie or Unknown)"
        );
        assert!(
            back <= request.len(),
            "{what}: {back} bytes answered {}",
            request.len()
        );
    }
    for (what, request) in control_datagrams(node_addr) {
        let back = reflected_bytes(node_addr, &request, window);
        eprintln!(
            "amplification | node: {what} | {} bytes in | {back} bytes out",
            request.len()
        );
        assert_eq!(back, 0, "node: {what} is answered");
    }
    for (what, to, request) in &cases {
        let back = reflected_bytes(*to, request, window);
        let factor = back as f64 / request.len() as f64;
        eprintln!(
            "amplification | {what} | {} bytes in | {back} bytes out | {factor:.2}x",
            request.len()
        );
        worst = worst.max(factor);
        // STUN's answer to a bare Binding request is the yardstick: 20 bytes in, under 100 out.
        assert!(
            factor <= 4.0,
            "{what}: {back} bytes answered {} bytes",
            request.len()
        );
    }
    eprintln!("amplification | worst factor {worst:.2}x");
}
