//! The answering side of a coordinated punch against many requesters (issue #14, reflection):
//! forty throw-away identities on one IP register at the rendezvous with a host address this
//! test listens on, then all ask to connect to one node at once. The rendezvous pushes every
//! request (its own limits are raised here); the node answers at most
//! `PUNCH_ANSWERS_PER_IP` (16) of them, then one per 250 ms, whatever the keys. Each answer
//! checks the requester's addresses, so the Checks arriving at the listener, counted by the
//! requester they name, say how many requests the node answered.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Node, Rendezvous};
use p2pnat::identity::Identity;
use p2pnat::node::dial::{PUNCH_ANSWERS_PER_IP, PUNCH_ANSWERS_PER_PEER};
use p2pnat::tls;
use p2pnat_proto::control::{self, Request, Response};
use p2pnat_proto::nat::NatReport;
use p2pnat_proto::PeerId;

const REQUESTERS: usize = 40;
/// Check datagrams (docs/PROTOCOL.md 2.1): 99 bytes, kind 1, receiver's ID at 51..83.
const CHECK_LEN: usize = 99;

async fn request(connection: &quinn::Connection, request: &Request) -> Response {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&control::encode(request)).await.unwrap();
    send.finish().unwrap();
    let bytes = recv
        .read_to_end(control::MAX_CONTROL_MESSAGE)
        .await
        .unwrap();
    control::decode(&bytes).unwrap()
}

/// A requester's registration connection to the rendezvous, registered with `host_addr` as its
/// only host address.
async fn register(rendezvous: SocketAddr, host_addr: SocketAddr) -> (quinn::Connection, PeerId) {
    let identity = Identity::generate().unwrap();
    let mut config = quinn::EndpointConfig::default();
    config.grease_quic_bit(false);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoint =
        quinn::Endpoint::new(config, None, socket, quinn::default_runtime().unwrap()).unwrap();
    let crypto = tls::client_crypto(&identity, tls::ALPN_RENDEZVOUS, true).unwrap();
    let connection = endpoint
        .connect_with(
            quinn::ClientConfig::new(crypto),
            rendezvous,
            tls::UNPINNED_SERVER_NAME,
        )
        .unwrap()
        .await
        .expect("rendezvous handshake");
    let registration = Request::Register {
        local_addrs: vec![host_addr],
        nat: NatReport::UNKNOWN,
        relayed: None,
    };
    match request(&connection, &registration).await {
        Response::Registered { .. } => {}
        other => panic!("registration refused: {other:?}"),
    }
    (connection, identity.peer_id())
}

#[test]
fn a_node_answers_a_bounded_number_of_punch_requests_per_requester_ip() {
    let rendezvous =
        Rendezvous::start(&["--new-per-ip-burst", "1000", "--punch-per-ip-burst", "1000"]);
    let node = Node::start(&rendezvous, &[]);
    let target: PeerId = node.id.parse().unwrap();
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    let host_addr = listener.local_addr().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let quic: SocketAddr = rendezvous.addr.parse().unwrap();
    let requesters: Vec<(quinn::Connection, PeerId)> = runtime.block_on(async {
        let mut requesters = Vec::new();
        for _ in 0..REQUESTERS {
            requesters.push(register(quic, host_addr).await);
        }
        requesters
    });
    let ids: HashSet<[u8; 32]> = requesters.iter().map(|(_, id)| id.0).collect();

    // All ask at once; the pushes reach the node within the time this takes.
    let asked = Instant::now();
    let connections: Vec<Arc<quinn::Connection>> = requesters
        .iter()
        .map(|(connection, _)| Arc::new(connection.clone()))
        .collect();
    runtime.block_on(async {
        let mut asks = Vec::new();
        for connection in &connections {
            let connection = connection.clone();
            asks.push(tokio::spawn(async move {
                request(&connection, &Request::Connect { peer: target }).await
            }));
        }
        for ask in asks {
            match ask.await.unwrap() {
                Response::Found { .. } => {}
                other => panic!("connect request not answered with the record: {other:?}"),
            }
        }
    });
    let asking_took = asked.elapsed();

    // Collect the node's Checks for a second after the last answer (an answer checks each
    // address for 250 ms).
    listener
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let listened = Duration::from_secs(1);
    let until = Instant::now() + listened;
    let mut answered: HashSet<[u8; 32]> = HashSet::new();
    let mut checks = 0;
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        let Ok(len) = listener.recv(&mut buf) else {
            continue;
        };
        let datagram = &buf[..len];
        if len != CHECK_LEN || datagram[0] != 0x81 || &datagram[1..5] != b"p2pN" || datagram[5] != 1
        {
            continue;
        }
        assert_eq!(&datagram[19..51], &target.0, "a Check from someone else");
        let receiver: [u8; 32] = datagram[51..83].try_into().unwrap();
        assert!(
            ids.contains(&receiver),
            "a Check naming an unknown receiver"
        );
        checks += 1;
        answered.insert(receiver);
    }
    let (burst, interval) = PUNCH_ANSWERS_PER_IP;
    // The bucket refills while pushes arrive: a push that found the node's queue full is
    // resent by the rendezvous (0.2 s and later), so answers may come until listening ends.
    let refills = ((asking_took + listened).as_millis() / interval.as_millis()) as usize + 1;
    println!(
        "{REQUESTERS} requesters on one IP: {} answered ({checks} Checks), asks took {asking_took:?}",
        answered.len()
    );
    assert!(
        answered.len() >= burst as usize,
        "only {} of {REQUESTERS} punch requests answered: the node's burst is {burst}",
        answered.len()
    );
    assert!(
        answered.len() <= burst as usize + refills,
        "{} of {REQUESTERS} punch requests from one IP answered within {asking_took:?}",
        answered.len()
    );
    // The per-peer limit is the other half (unit-tested in src/node/dial.rs).
    assert!(PUNCH_ANSWERS_PER_PEER.0 < burst);
}
