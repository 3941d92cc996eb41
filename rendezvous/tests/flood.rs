//! A public rendezvous under a flood (issue #14): 1,000 throw-away identities from ten source
//! addresses (127.0.1.1-10, all loopback) hold QUIC connections, try to register, look up and ask
//! for punches, while junk STUN datagrams pour in and a legitimate node on its own address (127.0.0.2) registers, is found and
//! looks others up. Refills are set to ten minutes so that every limit is an exact count:
//! 20 new registrations per source IP, 8 punch pushes per source IP. The rendezvous's RSS is
//! read from /proc before and after and printed (docs/PERFORMANCE.md, "What a public rendezvous
//! withstands"); it must stay under [`RSS_BOUND_KIB`].
//!
//! `P2PNAT_FLOOD_PER_IP` changes the identities per source address (default 100), and
//! `P2PNAT_FLOOD_NEW_PER_IP` the new registrations each source address may make (default 20, the
//! rendezvous's default), for the memory figures of a fuller registry.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use p2pnat::identity::Identity;
use p2pnat::tls;
use p2pnat_proto::control::{self, RefusalCode, Request, Response};
use p2pnat_proto::PeerId;
use support::{register, Rendezvous};
use tokio::sync::Semaphore;

/// Flooding source addresses.
const FLOOD_IPS: u8 = 10;
/// Punch pushes one source IP may cause (set below; no refill during the test).
const PUNCH_PER_IP: usize = 8;
/// Junk STUN datagrams sent during the punch flood.
const JUNK_DATAGRAMS: u32 = 20_000;
/// Lookups the legitimate node makes during the punch flood.
const LEGIT_LOOKUPS: usize = 20;
/// The rendezvous's resident memory must stay under this during the flood (KiB).
const RSS_BOUND_KIB: u64 = 256 * 1024;

fn endpoint(ip: &str) -> quinn::Endpoint {
    let mut config = quinn::EndpointConfig::default();
    config.grease_quic_bit(false);
    let socket = std::net::UdpSocket::bind((ip, 0)).unwrap();
    quinn::Endpoint::new(config, None, socket, quinn::default_runtime().unwrap()).unwrap()
}

/// A node's QUIC client configuration for the rendezvous, with its 5 s keep-alives: the
/// flood may take longer than the idle timeout.
fn client_config(identity: &Identity) -> quinn::ClientConfig {
    let crypto = tls::client_crypto(identity, tls::ALPN_RENDEZVOUS, true).unwrap();
    let mut config = quinn::ClientConfig::new(crypto);
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
    config.transport_config(Arc::new(transport));
    config
}

async fn connect(
    endpoint: &quinn::Endpoint,
    identity: &Identity,
    to: SocketAddr,
) -> quinn::Connection {
    endpoint
        .connect_with(client_config(identity), to, tls::UNPINNED_SERVER_NAME)
        .unwrap()
        .await
        .unwrap()
}

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

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The floods run one at a time (two at once on a small machine would only measure each
/// other).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One flooding identity's connection and whether its registration was accepted.
struct Flooder {
    connection: quinn::Connection,
    id: PeerId,
    registered: bool,
}

#[test]
fn a_thousand_identities_leave_the_legitimate_node_served_and_the_limits_hold() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let per_ip: usize = std::env::var("P2PNAT_FLOOD_PER_IP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    // New registrations one source IP may make (no refill during the test).
    let new_per_ip: usize = std::env::var("P2PNAT_FLOOD_NEW_PER_IP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rendezvous = Rendezvous::start(&[
        "--new-per-ip-burst",
        &new_per_ip.to_string(),
        "--new-per-ip-interval-ms",
        "600000",
        "--punch-per-ip-burst",
        &PUNCH_PER_IP.to_string(),
        "--punch-per-ip-interval-ms",
        "600000",
    ]);
    let pid = rendezvous.child.id();
    let rss_before = rss_kib(pid);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let quic = rendezvous.quic;

    // The flood: connect, register, look up a random key; 64 handshakes at a time.
    let slots = Arc::new(Semaphore::new(64));
    let endpoints: Vec<_> = runtime.block_on(async {
        (1..=FLOOD_IPS)
            .map(|n| endpoint(&format!("127.0.1.{n}")))
            .collect()
    });
    let flooders: Vec<Flooder> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for endpoint in &endpoints {
            for _ in 0..per_ip {
                let (endpoint, slots) = (endpoint.clone(), slots.clone());
                tasks.push(tokio::spawn(async move {
                    let _slot = slots.acquire_owned().await.unwrap();
                    let identity = Identity::generate().unwrap();
                    let connection = connect(&endpoint, &identity, quic).await;
                    let registered = match request(&connection, &register(vec![])).await {
                        Response::Registered { .. } => true,
                        Response::Refused {
                            code: RefusalCode::RateLimited,
                            ..
                        } => false,
                        other => panic!("flooder registration: {other:?}"),
                    };
                    let nobody = Identity::generate().unwrap().peer_id();
                    let lookup = Request::Lookup { peer: nobody };
                    let answer = request(&connection, &lookup).await;
                    assert!(matches!(answer, Response::NotFound { .. }), "{answer:?}");
                    Flooder {
                        connection,
                        id: identity.peer_id(),
                        registered,
                    }
                }));
            }
        }
        let mut flooders = Vec::new();
        for task in tasks {
            flooders.push(task.await.unwrap());
        }
        flooders
    });
    let total = usize::from(FLOOD_IPS) * per_ip;
    let accepted = flooders.iter().filter(|f| f.registered).count();
    assert_eq!(accepted, usize::from(FLOOD_IPS) * new_per_ip.min(per_ip));

    // The legitimate node, on its own address, registers and is served while they all hold on.
    let legit = Identity::generate().unwrap();
    let legit_endpoint = runtime.block_on(async { endpoint("127.0.0.2") });
    let legit_connection = runtime.block_on(connect(&legit_endpoint, &legit, quic));
    let answer = runtime.block_on(request(&legit_connection, &register(vec![])));
    assert!(matches!(answer, Response::Registered { .. }), "{answer:?}");
    let registered_flooder = flooders.iter().find(|f| f.registered).unwrap().id;
    for wanted in [legit.peer_id(), registered_flooder] {
        let answer = runtime.block_on(request(
            &legit_connection,
            &Request::Lookup { peer: wanted },
        ));
        assert!(matches!(answer, Response::Found { .. }), "{answer:?}");
    }

    // Every flooder asks for a punch to the legitimate node: all are answered (Found), but
    // at most PUNCH_PER_IP pushes per source IP reach it. Meanwhile junk STUN (Binding
    // indications, which the rendezvous does not answer) pours in from a flooding address, and
    // the legitimate node keeps looking a flooder up: every one of its lookups is answered.
    let junk = std::net::UdpSocket::bind("127.0.1.1:0").unwrap();
    let mut indication = [0u8; 20];
    indication[..8].copy_from_slice(&[0x00, 0x11, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]);
    runtime.block_on(async {
        let junk_sender = tokio::task::spawn_blocking(move || {
            for n in 0..JUNK_DATAGRAMS {
                indication[8..12].copy_from_slice(&n.to_be_bytes());
                let _ = junk.send_to(&indication, quic);
            }
        });
        let legit_lookups = {
            let connection = legit_connection.clone();
            tokio::spawn(async move {
                let mut found = 0;
                for _ in 0..LEGIT_LOOKUPS {
                    let lookup = Request::Lookup {
                        peer: registered_flooder,
                    };
                    if let Response::Found { .. } = request(&connection, &lookup).await {
                        found += 1;
                    }
                }
                found
            })
        };
        let mut tasks = Vec::new();
        for flooder in &flooders {
            let connection = flooder.connection.clone();
            let wanted = legit.peer_id();
            tasks.push(tokio::spawn(async move {
                request(&connection, &Request::Connect { peer: wanted }).await
            }));
        }
        for task in tasks {
            let answer = task.await.unwrap();
            assert!(matches!(answer, Response::Found { .. }), "{answer:?}");
        }
        assert_eq!(legit_lookups.await.unwrap(), LEGIT_LOOKUPS);
        junk_sender.await.unwrap();
    });

    let scrape = rendezvous.scrape();
    let rss_after = rss_kib(pid);
    let drops = |component, reason| {
        scrape.value(
            "p2pnat_rendezvous_drops_total",
            &[("component", component), ("reason", reason)],
        )
    };
    let pushed = usize::from(FLOOD_IPS) * PUNCH_PER_IP.min(per_ip);
    assert_eq!(
        scrape.value("p2pnat_rendezvous_registrations_total", &[]),
        (accepted + 1) as f64
    );
    assert_eq!(
        drops("registration", "rate_limit"),
        (total - accepted) as f64
    );
    assert_eq!(
        scrape.value(
            "p2pnat_rendezvous_punch_requests_total",
            &[("result", "pushed")]
        ),
        pushed as f64
    );
    assert_eq!(drops("punch", "rate_limit"), (total - pushed) as f64);
    assert_eq!(
        scrape.value("p2pnat_rendezvous_connections", &[("kind", "quic_control")]),
        (total + 1) as f64
    );
    assert_eq!(
        scrape.value(
            "p2pnat_rendezvous_lookups_total",
            &[("result", "not_found")]
        ),
        total as f64
    );
    // Loopback may drop some under the burst; those that arrived were counted and dropped.
    assert!(drops("stun", "malformed") > 0.0);
    eprintln!(
        "flood: {total} identities from {FLOOD_IPS} IPs held open; {accepted} registered, \
         {pushed} punches pushed; {} of {JUNK_DATAGRAMS} junk STUN datagrams counted and dropped; \
         {LEGIT_LOOKUPS}/{LEGIT_LOOKUPS} legitimate lookups found during the punch flood; rendezvous RSS {rss_before} KiB before, {rss_after} KiB after \
         ({} bytes per held connection)",
        drops("stun", "malformed"),
        (rss_after.saturating_sub(rss_before) * 1024) / total as u64
    );
    assert!(
        rss_after < RSS_BOUND_KIB,
        "rendezvous RSS {rss_after} KiB over {RSS_BOUND_KIB} KiB"
    );
    drop(flooders);
    drop(legit_connection);
    runtime.shutdown_background();
}

/// A flood from 1,000 distinct source addresses (127.2.0.1 and on, one identity each) is not
/// slowed by the per-IP limits; the global caps bound it: `--max-connections` (exact: a
/// connection counts from before its handshake) and `--max-registrations`. A node connected and
/// registered before the flood stays served: lookups, and its refresh, which a full registry
/// still accepts. (A legitimate node arriving after the caps are reached is refused too: only
/// the caps bound memory against many addresses.)
#[test]
fn a_thousand_source_addresses_meet_the_global_caps_and_a_connected_node_stays_served() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const FLOODERS: usize = 1000;
    const MAX_CONNECTIONS: usize = 600;
    const MAX_REGISTRATIONS: usize = 300;
    let rendezvous = Rendezvous::start(&[
        "--max-connections",
        &MAX_CONNECTIONS.to_string(),
        "--max-registrations",
        &MAX_REGISTRATIONS.to_string(),
    ]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let quic = rendezvous.quic;
    let legit = Identity::generate().unwrap();
    let legit_endpoint = runtime.block_on(async { endpoint("127.0.0.2") });
    let legit_connection = runtime.block_on(connect(&legit_endpoint, &legit, quic));
    let answer = runtime.block_on(request(&legit_connection, &register(vec![])));
    assert!(matches!(answer, Response::Registered { .. }), "{answer:?}");

    let slots = Arc::new(Semaphore::new(64));
    // (endpoint, connection, registered, key) for each flooder let in (the endpoint is kept
    // with its connection); None for each refused.
    type Outcome = Option<(quinn::Endpoint, quinn::Connection, bool, PeerId)>;
    let outcomes: Vec<Outcome> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for n in 0..FLOODERS {
            let slots = slots.clone();
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.unwrap();
                let ip = format!("127.2.{}.{}", n / 250, n % 250 + 1);
                let endpoint = endpoint(&ip);
                let identity = Identity::generate().unwrap();
                let connecting = endpoint
                    .connect_with(client_config(&identity), quic, tls::UNPINNED_SERVER_NAME)
                    .unwrap();
                let connection = match connecting.await {
                    Ok(connection) => connection,
                    Err(quinn::ConnectionError::ConnectionClosed(_)) => return None,
                    Err(e) => panic!("flooder {ip}: {e}"),
                };
                let registered = match request(&connection, &register(vec![])).await {
                    Response::Registered { .. } => true,
                    Response::Refused {
                        code: RefusalCode::RegistryFull,
                        ..
                    } => false,
                    other => panic!("flooder {ip}: {other:?}"),
                };
                Some((endpoint, connection, registered, identity.peer_id()))
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        outcomes
    });
    let connected = outcomes.iter().flatten().count();
    let registered = outcomes.iter().flatten().filter(|(_, _, r, _)| *r).count();
    assert_eq!(
        connected,
        MAX_CONNECTIONS - 1,
        "the legitimate node holds one"
    );
    assert_eq!(
        registered,
        MAX_REGISTRATIONS - 1,
        "the legitimate node holds one"
    );

    let flooder = outcomes.iter().flatten().find(|(_, _, r, _)| *r).unwrap().3;
    for wanted in [flooder, legit.peer_id()] {
        let answer = runtime.block_on(request(
            &legit_connection,
            &Request::Lookup { peer: wanted },
        ));
        assert!(matches!(answer, Response::Found { .. }), "{answer:?}");
    }
    let refresh = runtime.block_on(request(&legit_connection, &register(vec![])));
    assert!(
        matches!(refresh, Response::Registered { .. }),
        "{refresh:?}"
    );

    let scrape = rendezvous.scrape();
    let drops = |component, reason| {
        scrape.value(
            "p2pnat_rendezvous_drops_total",
            &[("component", component), ("reason", reason)],
        )
    };
    // Attempts, not clients: a client's Initial sent again before the refusal reached it is
    // refused (and counted) again.
    assert!(drops("quic", "quota") >= (FLOODERS - connected) as f64);
    assert_eq!(
        drops("registration", "quota"),
        (connected - registered) as f64
    );
    assert_eq!(
        scrape.value("p2pnat_rendezvous_registered_peers", &[]),
        MAX_REGISTRATIONS as f64
    );
    eprintln!(
        "distributed flood: {FLOODERS} source addresses; {connected} connected, {} refused \
         (--max-connections {MAX_CONNECTIONS}); {registered} registered, {} refused \
         RegistryFull (--max-registrations {MAX_REGISTRATIONS}); rendezvous RSS {} KiB",
        FLOODERS - connected,
        connected - registered,
        rss_kib(rendezvous.child.id())
    );
    drop(outcomes);
    runtime.shutdown_background();
}
