//! End to end through a hostile relay: the relay can neither read nor forge the peers' traffic.
//!
//! Two `--relay-only` nodes register with a rendezvous that offers an external TURN server
//! (`--turn-url`). That "server" is a proxy in this test in front of a second rendezvous's
//! built-in TURN server (same shared secret). Every relayed byte crosses the proxy one way or
//! the other (into a node's allocation, or out of it to the node): it looks for the plaintext
//! of the messages (never found: QUIC encrypts end to end) and flips a byte in every fourth
//! relayed data message either way (QUIC drops the forged packets and the senders retransmit).
//! Every message still arrives intact, in order, confirmed.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{pseudo_random_bytes, Node, Rendezvous};

const SECRET: &str = "tamper-test-secret";
const MARKER: &[u8] = b"PLAINTEXT-MARKER-5a1f";

#[derive(Default)]
struct ProxyCounters {
    forged: AtomicU64,
    marker_seen: AtomicU64,
    relayed_data: AtomicU64,
}

/// A UDP proxy to `server`: one upstream socket per client (so the server sees one 5-tuple
/// per client, as allocations need), forging relayed data on its way to the clients.
struct TamperingProxy {
    addr: SocketAddr,
    counters: Arc<ProxyCounters>,
    stop: Arc<AtomicBool>,
}

impl TamperingProxy {
    fn start(server: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        front
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = front.local_addr().unwrap();
        let counters = Arc::new(ProxyCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let upstreams: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        let (front2, counters2, stop2) = (front.clone(), counters.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((len, client)) = front2.recv_from(&mut buf) else {
                    continue;
                };
                let upstream = upstreams
                    .lock()
                    .unwrap()
                    .entry(client)
                    .or_insert_with(|| {
                        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
                        socket
                            .set_read_timeout(Some(Duration::from_millis(50)))
                            .unwrap();
                        spawn_downstream(
                            socket.clone(),
                            front2.clone(),
                            client,
                            counters2.clone(),
                            stop2.clone(),
                        );
                        socket
                    })
                    .clone();
                scan(&buf[..len], &counters2);
                maybe_forge(&mut buf[..len], &counters2);
                let _ = upstream.send_to(&buf[..len], server);
            }
        });
        TamperingProxy {
            addr,
            counters,
            stop,
        }
    }
}

impl Drop for TamperingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn scan(datagram: &[u8], counters: &ProxyCounters) {
    if datagram.windows(MARKER.len()).any(|w| w == MARKER) {
        counters.marker_seen.fetch_add(1, Ordering::Relaxed);
    }
}

/// Forges every fourth relayed data message of some size past its header, whichever way it
/// goes: ChannelData, or a STUN Send (0x0016) or Data (0x0017) indication, whose payload is not
/// covered by any integrity check of TURN's.
fn maybe_forge(datagram: &mut [u8], counters: &ProxyCounters) {
    let len = datagram.len();
    let channel_data = len > 0 && (0x40..=0x7F).contains(&datagram[0]);
    let indication = len >= 20 && (datagram[..2] == [0x00, 0x16] || datagram[..2] == [0x00, 0x17]);
    if (channel_data || indication) && len > 200 {
        let n = counters.relayed_data.fetch_add(1, Ordering::Relaxed);
        if n % 4 == 3 {
            datagram[len - 40] ^= 0x5A;
            counters.forged.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Server -> client: forges every fourth relayed data message (ChannelData, or a STUN Data
/// indication, type 0x0017) of some size, past its header.
fn spawn_downstream(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    counters: Arc<ProxyCounters>,
    stop: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let Ok((len, _)) = upstream.recv_from(&mut buf) else {
                continue;
            };
            let datagram = &mut buf[..len];
            scan(datagram, &counters);
            maybe_forge(datagram, &counters);
            let _ = front.send_to(datagram, client);
        }
    });
}

#[test]
fn a_relay_that_reads_and_forges_learns_nothing_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("turn.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let secret_path = secret_file.to_str().unwrap();
    let turn_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let turn_listen = format!("127.0.0.1:{turn_port}");
    // The relay: a rendezvous's built-in TURN server. It relays only toward registered peers,
    // so a bystander node registers 127.0.0.1 with it.
    let relay_host = Rendezvous::start(&[
        "--turn-listen",
        &turn_listen,
        "--turn-secret-file",
        secret_path,
    ]);
    let _bystander = Node::start(&relay_host, &["--no-relay"]);
    let proxy = TamperingProxy::start(turn_listen.parse().unwrap());
    let turn_url = format!("turn:{}", proxy.addr);
    let rendezvous =
        Rendezvous::start(&["--turn-url", &turn_url, "--turn-secret-file", secret_path]);

    let mut a = Node::start(&rendezvous, &["--relay-only"]);
    let mut b = Node::start(&rendezvous, &["--relay-only"]);
    assert!(a.ready.contains("relay=127.0.0.1:"), "{}", a.ready);
    assert!(b.ready.contains("relay=127.0.0.1:"), "{}", b.ready);
    let b_id = b.id.clone();
    let count = 300u64;
    let mut sent = Vec::new();
    for i in 0..count {
        let mut payload = MARKER.to_vec();
        payload.extend(pseudo_random_bytes(1000 + (i as usize % 7) * 100, i));
        a.send(i, &b_id, &payload);
        sent.push(payload);
    }
    let connected = a.wait_event(|e| e.starts_with("connected "));
    assert!(connected.contains(" relayed "), "{connected}");
    let received = b.wait_recvs(count as usize);
    for (i, (peer, payload)) in received.iter().enumerate() {
        assert_eq!(peer, &a.id);
        assert!(payload == &sent[i], "message {i} differs");
    }
    for i in 0..count {
        a.wait_event(|e| e == format!("delivered {i} {b_id}"));
    }
    let counters = &proxy.counters;
    assert!(
        counters.forged.load(Ordering::Relaxed) > 0,
        "the proxy forged nothing ({} relayed data messages): the test proves nothing",
        counters.relayed_data.load(Ordering::Relaxed)
    );
    assert_eq!(
        counters.marker_seen.load(Ordering::Relaxed),
        0,
        "the relay saw plaintext"
    );
}
