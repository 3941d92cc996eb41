//! Datagram junk and the witness.
//!
//! [`DgramJunk`]: hostile control datagrams (docs/PROTOCOL.md section 4.1) from the flood
//! host's addresses, one socket per kind, each socket reading what comes back so that every
//! answer is counted against the kind that caused it:
//!
//! | kind | what | the rendezvous must |
//! |---|---|---|
//! | `hello` | Hellos (48 bytes) | answer a Cookie (30 bytes) each, nothing else |
//! | `stale-register` | Registers under a zero cookie, random signature | answer a fresh Cookie (30), nothing else |
//! | `forged-register` | Registers under a valid cookie (the socket's own, from a Hello) with a random signature | answer nothing (it checks the signature and drops it) |
//! | `bad-tag` | Requests naming a real session (the witness's, the flooders'), tagged under a random key | answer nothing |
//! | `replay` | a real client's first Request (the witness's, the flooders'), copied byte for byte, from another address | answer nothing (a copy is answered only at the session's own address) |
//! | `no-session` | Requests of a random peer under a random session | answer Unknown (22 bytes), nothing else |
//!
//! [`Witness`]: one more client from the lab's witness host (198.51.100.250, its own IP and so
//! its own limits), with a node's timers, registered before the flood; every 250 ms until the
//! end it looks up alice and bob (itself until they are up). Every lookup must be answered
//! `Found`: the rendezvous kept serving registered nodes throughout the flood and the junk.

use super::client::{self, Answer, DgramClient, FloodClient};
use super::dgram::DgramSocket;
use crate::error::{NetsimError, Result};
use crate::lab::Lab;
use p2pnat_proto::control::{self, Request};
use p2pnat_proto::nat::NatReport;
use p2pnat_proto::rv::client::ClientConfig;
use p2pnat_proto::rv::wire;
use p2pnat_proto::PeerId;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The kinds of datagram junk, in the order they take turns.
pub const KINDS: [&str; 6] = [
    "hello",
    "stale-register",
    "forged-register",
    "bad-tag",
    "replay",
    "no-session",
];
/// A forged-register socket asks for a fresh cookie this often (cookies last 60 to 120 s).
const COOKIE_REFRESH: Duration = Duration::from_secs(30);

/// What one kind of junk sent, and what came back to its socket.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindTally {
    pub kind: String,
    pub sent: u64,
    pub sent_bytes: u64,
    /// Hellos the forged-register socket sent for its cookie (not counted in `sent`).
    pub cookie_hellos: u64,
    /// Answers by kind (`Cookie`, `Unknown`, `Registered`, ...): (datagrams, bytes).
    pub answers: BTreeMap<String, (u64, u64)>,
}

impl KindTally {
    pub fn answered(&self) -> (u64, u64) {
        self.answers
            .values()
            .fold((0, 0), |(n, b), (n2, b2)| (n + n2, b + b2))
    }
}

/// Material from the real flooders: (peer, session, its first Request as sent).
pub type Material = Vec<(PeerId, u64, Option<Vec<u8>>)>;

pub struct DgramJunk {
    stop: Arc<AtomicBool>,
    material: Arc<Mutex<Material>>,
    thread: Option<std::thread::JoinHandle<Vec<KindTally>>>,
}

fn answer_name(kind: u8) -> &'static str {
    match kind {
        wire::KIND_COOKIE => "Cookie",
        wire::KIND_REGISTERED => "Registered",
        wire::KIND_RESPONSE => "Response",
        wire::KIND_UNKNOWN => "Unknown",
        wire::KIND_PUSH => "Push",
        _ => "other",
    }
}

/// A small xorshift generator for IDs, keys and signatures (seeded from the OS).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let mut seed = [0u8; 8];
        let _ = getrandom::getrandom(&mut seed);
        Rng(u64::from_le_bytes(seed) | 1)
    }
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        self.fill(&mut out);
        out
    }
}

fn register(rng: &mut Rng, peer: &PeerId, cookie: &wire::Cookie) -> Vec<u8> {
    let body = control::encode(&Request::Register {
        local_addrs: Vec::new(),
        nat: NatReport::UNKNOWN,
        relayed: None,
    });
    wire::Builder::new(wire::KIND_REGISTER, &rng.bytes())
        .bytes(cookie)
        .bytes(&peer.0)
        .bytes(&[0])
        .body(&body)
        .bytes(&rng.bytes::<{ wire::SIG_LEN }>())
        .finish()
}

impl DgramJunk {
    /// Starts about `per_sec` junk datagrams a second (the kinds in turn; `bad-tag` and
    /// `replay` only once [`DgramJunk::set_material`] gave them sessions), in bursts every
    /// 10 ms, from sockets bound to `addrs` inside `host`.
    pub fn start(
        lab: &Lab,
        host: &str,
        addrs: &[Ipv4Addr],
        to: SocketAddr,
        per_sec: u64,
    ) -> Result<DgramJunk> {
        let netns = lab.node(host)?.netns.clone();
        let binds: Vec<SocketAddr> = (0..KINDS.len())
            .map(|i| SocketAddr::from((addrs[i % addrs.len()], 0)))
            .collect();
        let sockets: Vec<UdpSocket> =
            crate::netns::in_netns(&netns, move || binds.iter().map(UdpSocket::bind).collect())?;
        for s in &sockets {
            s.set_nonblocking(true)
                .map_err(|e| NetsimError::io("junk socket", e))?;
        }
        let forged_peer = client::random_peer().map_err(|e| NetsimError::Matrix(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let material = Arc::new(Mutex::new(Material::new()));
        let (flag, shared) = (stop.clone(), material.clone());
        let thread = std::thread::spawn(move || {
            let mut tallies: Vec<KindTally> = KINDS
                .iter()
                .map(|k| KindTally {
                    kind: k.to_string(),
                    ..KindTally::default()
                })
                .collect();
            if per_sec == 0 {
                return tallies;
            }
            let mut rng = Rng::new();
            let burst = (per_sec / 100).max(1);
            let mut turn = 0usize;
            // The forged-register socket's cookie: (its Hellos' IDs, cookie, when asked).
            let mut cookie: (Vec<wire::Id>, Option<wire::Cookie>, Option<Instant>) =
                (Vec::new(), None, None);
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::SeqCst) {
                for _ in 0..burst {
                    let k = turn % KINDS.len();
                    turn += 1;
                    let datagram = match KINDS[k] {
                        "hello" => Some(wire::hello(&rng.bytes())),
                        "stale-register" => Some(register(&mut rng, &forged_peer, &[0; 16])),
                        "forged-register" => {
                            if cookie.2.is_none_or(|at| at.elapsed() > COOKIE_REFRESH) {
                                let id = rng.bytes();
                                cookie.0.push(id);
                                cookie.2 = Some(Instant::now());
                                let _ = sockets[k].send_to(&wire::hello(&id), to);
                                tallies[k].cookie_hellos += 1;
                            }
                            cookie.1.map(|c| register(&mut rng, &forged_peer, &c))
                        }
                        "bad-tag" => {
                            let m = shared.lock().expect("material lock");
                            (!m.is_empty()).then(|| {
                                let (peer, session, _) = &m[turn % m.len()];
                                wire::Builder::new(wire::KIND_REQUEST, &rng.bytes())
                                    .bytes(&peer.0)
                                    .u64(*session)
                                    .u64(u64::from(rng.bytes::<4>()[0]) + 1_000_000)
                                    .body(&control::encode(&Request::Lookup { peer: *peer }))
                                    .tagged(&rng.bytes())
                            })
                        }
                        "replay" => {
                            let m = shared.lock().expect("material lock");
                            let copies: Vec<&Vec<u8>> =
                                m.iter().filter_map(|(_, _, r)| r.as_ref()).collect();
                            (!copies.is_empty()).then(|| copies[turn % copies.len()].clone())
                        }
                        _ => client::no_session_request(&Request::Lookup {
                            peer: PeerId(rng.bytes()),
                        })
                        .ok(),
                    };
                    if let Some(d) = datagram {
                        if sockets[k].send_to(&d, to).is_ok() {
                            tallies[k].sent += 1;
                            tallies[k].sent_bytes += d.len() as u64;
                        }
                    }
                }
                for (k, socket) in sockets.iter().enumerate() {
                    while let Ok((len, _)) = socket.recv_from(&mut buf) {
                        let kind = if wire::is_control(&buf[..len]) {
                            buf[5]
                        } else {
                            0
                        };
                        if KINDS[k] == "forged-register"
                            && kind == wire::KIND_COOKIE
                            && cookie.0.iter().any(|id| buf[6..14] == id[..])
                        {
                            // The cookie our own Hello asked for: not an answer to junk.
                            cookie.1 = buf[14..30].try_into().ok();
                            continue;
                        }
                        let entry = tallies[k]
                            .answers
                            .entry(answer_name(kind).to_string())
                            .or_default();
                        entry.0 += 1;
                        entry.1 += len as u64;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            tallies
        });
        Ok(DgramJunk {
            stop,
            material,
            thread: Some(thread),
        })
    }

    /// Real flooders' sessions for the `bad-tag` and `replay` kinds.
    pub fn set_material(&self, material: Material) {
        *self.material.lock().expect("material lock") = material;
    }

    /// Stops the junk; returns what each kind sent and got back.
    pub fn stop(mut self) -> Vec<KindTally> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for DgramJunk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What the witness saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WitnessTally {
    /// Its own registration: the observed address, or why not.
    pub registered: Option<String>,
    pub lookups: u64,
    pub found: u64,
    /// Lookups of alice or bob (the rest looked up the witness itself).
    pub of_nodes: u64,
    pub failed: u64,
    pub example: Option<String>,
}

/// The witness: see the module documentation.
pub struct Witness {
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<PeerId>>>,
    socket: Arc<Mutex<Option<Arc<DgramSocket>>>>,
    thread: Option<std::thread::JoinHandle<WitnessTally>>,
}

/// Between the witness's lookups.
const WITNESS_GAP: Duration = Duration::from_millis(250);

impl Witness {
    /// Registers the witness (from `host`, `bind`) and starts its lookups; returns once it is
    /// registered or has failed to.
    pub fn start(lab: &Lab, host: &str, bind: Ipv4Addr, to: SocketAddr) -> Result<Witness> {
        let netns = lab.node(host)?.netns.clone();
        let socket =
            crate::netns::in_netns(&netns, move || UdpSocket::bind(SocketAddr::from((bind, 0))))?;
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Mutex::new(None));
        let (flag, wanted, mine) = (stop.clone(), targets.clone(), shared.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut tally = WitnessTally::default();
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                let _ = ready_tx.send(());
                return tally;
            };
            runtime.block_on(async {
                let me = async {
                    let (socket, _task) =
                        DgramSocket::start(socket, to).map_err(|e| e.to_string())?;
                    *mine.lock().expect("witness socket lock") = Some(socket.clone());
                    let client = DgramClient::connect_with(socket, ClientConfig::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((client.peer(), FloodClient::Dgram(client)))
                };
                let (own, client) = match me.await {
                    Ok(c) => c,
                    Err(e) => {
                        tally.registered = Some(format!("no cookie: {e}"));
                        let _ = ready_tx.send(());
                        return;
                    }
                };
                match client.register().await {
                    Ok(Answer::Registered { observed }) => {
                        tally.registered = Some(observed.to_string())
                    }
                    other => {
                        tally.registered = Some(format!("refused: {other:?}"));
                        let _ = ready_tx.send(());
                        return;
                    }
                }
                let _ = ready_tx.send(());
                let mut n = 0usize;
                while !flag.load(Ordering::SeqCst) {
                    let next = tokio::time::Instant::now() + WITNESS_GAP;
                    let targets = wanted.lock().expect("targets lock").clone();
                    let target = if targets.is_empty() {
                        own
                    } else {
                        tally.of_nodes += 1;
                        targets[n % targets.len()]
                    };
                    n += 1;
                    tally.lookups += 1;
                    match client.lookup(target).await {
                        Ok(Answer::Found) => tally.found += 1,
                        other => {
                            tally.failed += 1;
                            if tally.example.is_none() {
                                tally.example = Some(format!("{other:?}"));
                            }
                        }
                    }
                    tokio::time::sleep_until(next).await;
                }
            });
            tally
        });
        let _ = ready_rx.recv_timeout(client::REQUEST_TIMEOUT);
        Ok(Witness {
            stop,
            targets,
            socket: shared,
            thread: Some(thread),
        })
    }

    /// The witness's session (and its first Request, once sent), as junk material: forged
    /// tags and replays aimed at it must not disturb it.
    pub fn material(&self) -> Material {
        self.socket
            .lock()
            .expect("witness socket lock")
            .as_ref()
            .map(|s| s.sessions())
            .unwrap_or_default()
    }

    /// From now on the witness looks up these (alice and bob) in turn.
    pub fn look_up(&self, targets: Vec<PeerId>) {
        *self.targets.lock().expect("targets lock") = targets;
    }

    pub fn stop(mut self) -> WitnessTally {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
