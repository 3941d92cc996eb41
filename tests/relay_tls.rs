//! The node's relay over TLS (issue #13, UDP blocked), with the real `p2p-rendezvous` on
//! loopback: the relay pieces a node runs (its `NodeSocket`, the relay link and driver) given a
//! `RelayOffer` whose transport is `RelayTransport::Tls`. The allocation is made over TLS; a
//! plain UDP peer's datagrams reach the node's link through it (checks to the side channel on
//! `RELAY`, QUIC to quinn's receive, woken), and the node's reach the peer; switching the
//! offer to UDP allocates afresh over UDP; a wrong pinned key allocates nothing and says so
//! once; a dropped connection is reconnected and allocated again.

mod common;

use std::future::poll_fn;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use common::Rendezvous;
use p2pnat::identity::Identity;
use p2pnat::node::app_io::{Output, Outputs};
use p2pnat::node::rendezvous_client::{RelayOffer, RelayTransport};
use p2pnat::relay::{self, RelayDriver};
use p2pnat::rendezvous_tls::RendezvousTls;
use p2pnat::socket::{self, NodeSocket, SideDatagram};
use p2pnat_proto::app::Event;
use p2pnat_proto::control::{Request, Response, TurnServerAddr};
use p2pnat_proto::nat::NatReport;
use p2pnat_proto::path::auth::OwnSecret;
use p2pnat_proto::path::{AgentConfig, LocalSocketId, PathAgent};
use p2pnat_proto::PeerId;
use quinn::udp::RecvMeta;
use quinn::AsyncUdpSocket as _;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

const WAIT: Duration = Duration::from_secs(15);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The relay pieces of a node, driven as `p2pnat::node` drives them.
struct NodeRelay {
    socket: Arc<NodeSocket>,
    side: mpsc::Receiver<SideDatagram>,
    offers: watch::Sender<Option<RelayOffer>>,
    relayed: watch::Receiver<Option<SocketAddr>>,
    shutdown: watch::Sender<bool>,
    outputs: mpsc::Receiver<Output>,
    driver: tokio::task::JoinHandle<()>,
}

impl NodeRelay {
    fn start() -> Self {
        let agent = PathAgent::new(
            OwnSecret::from_seed(&[5; 32]),
            AgentConfig::default(),
            [0; 32],
        );
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // No virtual addresses: relayed QUIC reaches quinn's receive with the peer's address.
        let (socket, side) = NodeSocket::new(std_socket, None).unwrap();
        let (offers, offers_rx) = watch::channel(None);
        let (relayed_tx, relayed) = watch::channel(None);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (outputs_tx, outputs) = Outputs::new(64, 1 << 20);
        let driver = tokio::spawn(relay::drive(RelayDriver {
            link: socket.relay().clone(),
            socket: socket.clone(),
            agent: Arc::new(Mutex::new(agent)),
            offers: offers_rx,
            relayed: relayed_tx,
            shutdown: shutdown_rx,
            config: Default::default(),
            session: Default::default(),
            expires_unix: Default::default(),
            outputs: outputs_tx,
            failing: Default::default(),
        }));
        NodeRelay {
            socket,
            side,
            offers,
            relayed,
            shutdown,
            outputs,
            driver,
        }
    }

    /// Waits for a relayed address other than `not`.
    async fn allocated(&mut self, not: Option<SocketAddr>) -> SocketAddr {
        let relayed = tokio::time::timeout(
            WAIT,
            self.relayed
                .wait_for(|relayed| relayed.is_some() && *relayed != not),
        )
        .await
        .expect("allocated in time")
        .unwrap();
        relayed.unwrap()
    }

    /// The `error relay ...` events written within `within`.
    async fn relay_errors(&mut self, within: Duration) -> Vec<String> {
        let mut errors = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(output)) = tokio::time::timeout_at(deadline, self.outputs.recv()).await {
            if let Output::Event(Event::Error { code, message }) = output {
                assert_eq!(code, "relay", "{message}");
                errors.push(message);
            }
        }
        errors
    }
}

/// Registers a fresh identity over TLS; returns the connection (the registration lives as
/// long as it does) and the relay offered, to be reached over TLS at the TLS port.
async fn register_over_tls(
    rendezvous: &Rendezvous,
    pinned: Option<PeerId>,
) -> (RendezvousTls, RelayOffer) {
    let tls_addr: SocketAddr = rendezvous.tls_addr.as_ref().unwrap().parse().unwrap();
    let identity = Identity::generate().unwrap();
    let (connection, _pushes) = RendezvousTls::connect(&identity, tls_addr, None)
        .await
        .unwrap();
    let request = Request::Register {
        local_addrs: Vec::new(),
        nat: NatReport::UNKNOWN,
        relayed: None,
    };
    let turn = match connection.request(&request).await.unwrap() {
        Response::Registered { turn, .. } => turn.expect("a relay is offered"),
        other => panic!("registration over TLS: {other:?}"),
    };
    let TurnServerAddr::SameHost { port } = turn.server else {
        panic!("the built-in relay is offered: {:?}", turn.server);
    };
    let offer = RelayOffer {
        server: SocketAddr::new(LOCALHOST, port),
        username: turn.username,
        password: turn.password,
        transport: RelayTransport::Tls {
            addr: tls_addr,
            pinned,
        },
        session: 1,
    };
    (connection, offer)
}

fn binding_request(id: u8) -> Vec<u8> {
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    stun.extend_from_slice(&[id; 12]);
    stun
}

/// Receives one datagram through the node's socket as quinn does: one `poll_recv` that finds
/// nothing and leaves its waker, then whatever wakes it.
async fn quinn_receive(socket: Arc<NodeSocket>) -> (SocketAddr, Vec<u8>) {
    let mut storage = vec![0u8; 2048];
    poll_fn(|cx| {
        let mut bufs = [IoSliceMut::new(&mut storage)];
        let mut meta = [RecvMeta::default()];
        match socket.poll_recv(cx, &mut bufs, &mut meta) {
            Poll::Ready(Ok(n)) => {
                assert_eq!(n, 1);
                Poll::Ready((meta[0].addr, bufs[0][..meta[0].len].to_vec()))
            }
            Poll::Ready(Err(e)) => panic!("receive failed: {e}"),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_over_tls_carries_both_ways_and_switches_to_udp() {
    let rendezvous = Rendezvous::start(&["--tls-listen", "127.0.0.1:0"]);
    let rendezvous_id: PeerId = rendezvous.id.parse().unwrap();
    let (_registration, offer) = register_over_tls(&rendezvous, Some(rendezvous_id)).await;
    let turn_udp = offer.server;
    let mut node = NodeRelay::start();
    node.offers.send_replace(Some(offer.clone()));
    let relayed = node.allocated(None).await;
    assert_eq!(relayed.ip(), LOCALHOST);
    let link = node.socket.relay().clone();
    assert!(link.on_stream());
    assert!(
        !link.is_server(turn_udp),
        "no UDP datagram is the relay's on TLS"
    );

    // The node -> a plain UDP peer, through RELAY as quinn's and the agent's datagrams go (the
    // first ones ask for the peer's permission; the relay drops what arrives before it).
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut probe = vec![0x81];
    probe.extend_from_slice(b"p2pN");
    probe.extend_from_slice(&[9; 31]);
    let mut buf = [0u8; 2048];
    let mut reached = None;
    for _ in 0..50 {
        node.socket
            .send_raw_on(LocalSocketId::RELAY, peer_addr, &probe)
            .unwrap();
        if let Ok(got) =
            tokio::time::timeout(Duration::from_millis(200), peer.recv_from(&mut buf)).await
        {
            reached = Some(got.unwrap());
            break;
        }
    }
    let (len, from) = reached.expect("the node's datagram reached the peer through the relay");
    assert_eq!((&buf[..len], from), (&probe[..], relayed));

    // The peer -> the node: a check reaches the side channel on RELAY, from the peer.
    let stun = binding_request(1);
    peer.send_to(&stun, relayed).await.unwrap();
    let side = tokio::time::timeout(WAIT, node.side.recv())
        .await
        .expect("relayed check in time")
        .unwrap();
    assert_eq!(
        (side.local, side.from, side.bytes),
        (LocalSocketId::RELAY, peer_addr, stun)
    );

    // QUIC (a short header) waits in the link's queue and quinn's receive is woken for it.
    let receiving = tokio::spawn(quinn_receive(node.socket.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!receiving.is_finished());
    let mut quic = vec![0x41];
    quic.extend_from_slice(&[0x5A; 40]);
    peer.send_to(&quic, relayed).await.unwrap();
    let (from, bytes) = tokio::time::timeout(WAIT, receiving)
        .await
        .expect("quinn's receive woken in time")
        .unwrap();
    assert_eq!((from, bytes), (peer_addr, quic));
    assert_eq!(
        link.counters
            .stream_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // The same offer over UDP: the TLS allocation goes, one is made over UDP (quinn's
    // endpoint reads the socket from now on, as in a node).
    let _endpoint = socket::endpoint(node.socket.clone(), None).unwrap();
    node.offers.send_replace(Some(RelayOffer {
        transport: RelayTransport::Udp,
        ..offer
    }));
    let over_udp = node.allocated(Some(relayed)).await;
    assert!(!link.on_stream());
    assert!(link.is_server(turn_udp));
    assert_ne!(over_udp, relayed);

    node.shutdown.send_replace(true);
    tokio::time::timeout(WAIT, node.driver)
        .await
        .expect("the driver ends at shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pinned_key_allocates_nothing_and_says_so_once() {
    let rendezvous = Rendezvous::start(&["--tls-listen", "127.0.0.1:0"]);
    let impostor = Identity::generate().unwrap().peer_id();
    let (_registration, offer) = register_over_tls(&rendezvous, Some(impostor)).await;
    let mut node = NodeRelay::start();
    node.offers.send_replace(Some(offer));
    // Connections at 0 s, 1 s and 3 s all fail the handshake: one event for the streak.
    let errors = node.relay_errors(Duration::from_millis(3_500)).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("TLS handshake"), "{}", errors[0]);
    assert_eq!(*node.relayed.borrow(), None);
    assert!(node.socket.relay().on_stream());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_reconnected_and_allocated_again() {
    let (port, turn_port, tls_port) = (free_port(), free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "--turn-listen".to_string(),
        format!("127.0.0.1:{turn_port}"),
        "--tls-listen".to_string(),
        format!("127.0.0.1:{tls_port}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let rendezvous = Rendezvous::start_on(&listen, &args);
    // Unpinned: the restarted rendezvous has another key.
    let (registration, offer) = register_over_tls(&rendezvous, None).await;
    let mut node = NodeRelay::start();
    node.offers.send_replace(Some(offer));
    let first = node.allocated(None).await;

    // The relay (built into the rendezvous) goes away: the connection drops, the allocation
    // with it.
    drop(registration);
    drop(rendezvous);
    tokio::time::timeout(WAIT, node.relayed.wait_for(Option::is_none))
        .await
        .expect("relay lost in time")
        .unwrap();
    let errors = node.relay_errors(Duration::from_millis(500)).await;
    assert_eq!(errors.len(), 1, "{errors:?}");

    // Back, with a new shared secret: the keeper's next registration brings new credentials
    // for the same server, which the reconnected client allocates with.
    let rendezvous = Rendezvous::start_on(&listen, &args);
    let (_registration, offer) = register_over_tls(&rendezvous, None).await;
    node.offers.send_replace(Some(offer));
    let again = node.allocated(None).await;
    assert_eq!(again.ip(), first.ip());
}
