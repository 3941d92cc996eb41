//! The client and server machines together in virtual time: a Pair-style harness with a
//! one-way delay, loss and reordering chosen per datagram, and an attacker who can send from
//! any address and replay anything it saw (but not read keys it was never sent).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;

use super::client::{Client, ClientConfig, ClientEvent, OpId, Outcome};
use super::server::{Inbound, Server, ServerConfig, ServerDrop};
use super::wire;
use crate::control::{PeerRecord, Push, RegisteredOver, Request, Response};
use crate::nat::NatReport;
use crate::PeerId;

const DELAY: Duration = Duration::from_millis(20);

fn server_addr() -> SocketAddr {
    "203.0.113.1:3478".parse().unwrap()
}

fn register() -> Request {
    Request::Register {
        local_addrs: vec!["10.0.0.2:5000".parse().unwrap()],
        nat: NatReport::UNKNOWN,
        relayed: None,
    }
}

fn registered(observed: SocketAddr) -> Response {
    Response::Registered {
        observed,
        ttl_secs: 120,
        stun_alternates: vec![],
        inbound_probe: None,
        turn: None,
    }
}

/// In flight: (arrival, from, to, bytes).
type Flight = (Instant, SocketAddr, SocketAddr, Vec<u8>);

struct Harness {
    now: Instant,
    server: Server,
    clients: Vec<(Client, SocketAddr)>,
    in_flight: Vec<Flight>,
    /// Every datagram sent, for replays: (from, to, bytes).
    seen: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Decides, per datagram sent (counted from 0), whether it is lost.
    lose: Box<dyn FnMut(usize, SocketAddr) -> bool>,
    /// Extra delay per datagram (reordering).
    jitter: Box<dyn FnMut(usize) -> Duration>,
    sent: usize,
    events: Vec<(usize, ClientEvent)>,
    inbound: Vec<Inbound>,
    drops: Vec<ServerDrop>,
    /// Registry stand-in: peer -> observed.
    registry: HashMap<PeerId, SocketAddr>,
    bytes_to: HashMap<SocketAddr, usize>,
}

impl Harness {
    fn new(clients: usize) -> Self {
        let now = Instant::now();
        let clients = (0..clients)
            .map(|n| {
                let key = SigningKey::from_bytes(&[n as u8 + 1; 32]);
                let addr: SocketAddr = format!("198.51.100.{}:4000", n + 1).parse().unwrap();
                let client =
                    Client::new(ClientConfig::default(), key, server_addr(), [n as u8; 32]);
                (client, addr)
            })
            .collect();
        Harness {
            now,
            server: Server::new(ServerConfig::default(), [9; 32], now),
            clients,
            in_flight: Vec::new(),
            seen: Vec::new(),
            lose: Box::new(|_, _| false),
            jitter: Box::new(|_| Duration::ZERO),
            sent: 0,
            events: Vec::new(),
            inbound: Vec::new(),
            drops: Vec::new(),
            registry: HashMap::new(),
            bytes_to: HashMap::new(),
        }
    }

    fn peer(&self, n: usize) -> PeerId {
        PeerId(
            SigningKey::from_bytes(&[n as u8 + 1; 32])
                .verifying_key()
                .to_bytes(),
        )
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let n = self.sent;
        self.sent += 1;
        self.seen.push((from, to, bytes.clone()));
        *self.bytes_to.entry(to).or_default() += bytes.len();
        if (self.lose)(n, to) {
            return;
        }
        let at = self.now + DELAY + (self.jitter)(n);
        self.in_flight.push((at, from, to, bytes));
    }

    /// Moves every machine's output onto the network; the stand-in rendezvous answers.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.clients.len() {
                while let Some(bytes) = self.clients[i].0.poll_transmit() {
                    let from = self.clients[i].1;
                    self.send(from, server_addr(), bytes);
                    progressed = true;
                }
                while let Some(event) = self.clients[i].0.poll_event() {
                    self.events.push((i, event));
                }
            }
            while let Some(t) = self.server.poll_transmit() {
                self.send(server_addr(), t.destination, t.contents);
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
    }

    fn decide(&mut self, inbound: Inbound) {
        match &inbound {
            Inbound::Register {
                id,
                peer,
                from,
                pinned,
                ..
            } => {
                self.registry.insert(*peer, *from);
                let pair = if *pinned {
                    super::server::pinned_key(&rendezvous_secret(), peer)
                } else {
                    None
                };
                assert!(self
                    .server
                    .accept(*id, *peer, *from, pair.as_ref(), &registered(*from)));
            }
            Inbound::Request {
                id,
                peer,
                request,
                from,
                duplicate,
                ..
            } => {
                self.registry
                    .insert(*peer, self.server.observed(peer).unwrap());
                let response = match request {
                    Request::Register { .. } => registered(*from),
                    Request::Unregister => Response::Unregistered,
                    Request::Lookup { peer: wanted } | Request::Connect { peer: wanted } => {
                        match self.registry.get(wanted) {
                            Some(observed) => {
                                if matches!(request, Request::Connect { .. }) && !duplicate {
                                    let push = Push::PunchRequest {
                                        peer: *peer,
                                        record: record(*from),
                                    };
                                    self.server.push(self.now, wanted, &push);
                                }
                                Response::Found {
                                    peer: *wanted,
                                    record: record(*observed),
                                }
                            }
                            None => Response::NotFound { peer: *wanted },
                        }
                    }
                };
                self.server.respond(*id, peer, *from, &response);
            }
            Inbound::PushAcked { .. } => {}
        }
        self.inbound.push(inbound);
    }

    /// Runs until `until`, delivering datagrams and firing timers in time order.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.pump();
            let next_arrival = self.in_flight.iter().map(|f| f.0).min();
            let next_timer = self
                .clients
                .iter()
                .filter_map(|(c, _)| c.poll_timeout())
                .chain(self.server.poll_timeout())
                .min();
            let next = match (next_arrival, next_timer) {
                (Some(a), Some(t)) => a.min(t),
                (a, t) => match a.or(t) {
                    Some(x) => x,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            let now = self.now;
            let mut due: Vec<Flight> = Vec::new();
            self.in_flight.retain(|f| {
                if f.0 <= now {
                    due.push(f.clone());
                    false
                } else {
                    true
                }
            });
            due.sort_by_key(|f| f.0);
            for (_, from, to, bytes) in due {
                self.deliver(from, to, &bytes);
            }
            for (client, _) in &mut self.clients {
                client.handle_timeout(now);
            }
            self.server.handle_timeout(now);
        }
        self.now = self.now.max(until);
        self.pump();
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        if to == server_addr() {
            match self.server.handle(now, from, bytes) {
                Ok(Some(inbound)) => self.decide(inbound),
                Ok(None) => {}
                Err(e) => self.drops.push(e),
            }
        } else if let Some((client, _)) = self.clients.iter_mut().find(|(_, a)| *a == to) {
            let _ = client.handle_datagram(now, from, bytes);
        }
    }

    fn after(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn outcome(&self, client: usize, op: OpId) -> Option<&Outcome> {
        self.events.iter().find_map(|(c, e)| match e {
            ClientEvent::Done { op: o, outcome } if *c == client && *o == op => Some(outcome),
            _ => None,
        })
    }

    fn register(&mut self, n: usize) -> OpId {
        let now = self.now;
        self.clients[n].0.request(now, register()).unwrap()
    }

    fn request(&mut self, n: usize, request: Request) -> OpId {
        let now = self.now;
        self.clients[n].0.request(now, request).unwrap()
    }
}

/// The rendezvous's identity in the harness.
fn rendezvous_secret() -> crate::path::auth::OwnSecret {
    crate::path::auth::OwnSecret::from_seed(&[77; 32])
}

fn record(observed: SocketAddr) -> PeerRecord {
    PeerRecord {
        observed,
        local_addrs: vec![],
        nat: NatReport::UNKNOWN,
        relayed: None,
        over: RegisteredOver::Quic,
    }
}

fn is_registered(outcome: Option<&Outcome>) -> bool {
    matches!(
        outcome,
        Some(Outcome::Response(Response::Registered { .. }))
    )
}

#[test]
fn registers_through_a_cookie_then_looks_up_and_pushes() {
    let mut h = Harness::new(2);
    let a = h.register(0);
    let b = h.register(1);
    h.after(Duration::from_millis(200));
    assert!(is_registered(h.outcome(0, a)) && is_registered(h.outcome(1, b)));
    // Cookie, then the signed Register: two round trips.
    assert_eq!(h.server.session_count(), 2);
    let peer1 = h.peer(1);
    let connect = h.request(0, Request::Connect { peer: peer1 });
    h.after(Duration::from_millis(200));
    assert!(matches!(
        h.outcome(0, connect),
        Some(Outcome::Response(Response::Found { .. }))
    ));
    let pushes = h
        .events
        .iter()
        .filter(|(c, e)| *c == 1 && matches!(e, ClientEvent::Push(_)))
        .count();
    assert_eq!(pushes, 1, "the target got the punch request once");
    assert_eq!(h.server.pending_pushes(), 0, "and acknowledged it");
}

#[test]
fn survives_heavy_loss_and_reordering() {
    let mut h = Harness::new(2);
    // Lose 30% of datagrams (a fixed pseudo-random choice) and delay every third by 300 ms.
    h.lose = Box::new(|n, _| {
        let mut x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) + 1;
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        x % 10 < 3
    });
    h.jitter = Box::new(|n| {
        if n % 3 == 0 {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        }
    });
    let a = h.register(0);
    let b = h.register(1);
    h.after(Duration::from_secs(5));
    assert!(is_registered(h.outcome(0, a)), "{:?}", h.outcome(0, a));
    assert!(is_registered(h.outcome(1, b)));
    let peer1 = h.peer(1);
    let lookups: Vec<OpId> = (0..5)
        .map(|_| h.request(0, Request::Connect { peer: peer1 }))
        .collect();
    h.after(Duration::from_secs(6));
    for op in lookups {
        assert!(
            matches!(
                h.outcome(0, op),
                Some(Outcome::Response(Response::Found { .. }))
            ),
            "{:?}",
            h.outcome(0, op)
        );
    }
    let pushes = h
        .events
        .iter()
        .filter(|(c, e)| *c == 1 && matches!(e, ClientEvent::Push(_)))
        .count();
    assert_eq!(
        pushes, 5,
        "each push reported once, however often it was resent"
    );
    // The same session throughout: a retransmitted Register did not make a second one.
    assert_eq!(h.server.session_count(), 2);
}

#[test]
fn unanswered_operations_time_out_once() {
    let mut h = Harness::new(1);
    h.lose = Box::new(|_, _| true);
    let a = h.register(0);
    h.after(Duration::from_secs(10));
    assert_eq!(h.outcome(0, a), Some(&Outcome::TimedOut));
    let done = h
        .events
        .iter()
        .filter(|(_, e)| matches!(e, ClientEvent::Done { .. }))
        .count();
    assert_eq!(done, 1);
    assert!(h.clients[0].0.poll_timeout().is_none());
}

#[test]
fn a_register_replayed_from_another_address_gets_only_a_cookie() {
    let mut h = Harness::new(1);
    h.register(0);
    h.after(Duration::from_millis(200));
    let (_, _, register) = h
        .seen
        .iter()
        .rfind(|(_, to, b)| *to == server_addr() && b[5] == wire::KIND_REGISTER)
        .cloned()
        .unwrap();
    let spoofed: SocketAddr = "192.0.2.66:666".parse().unwrap();
    let before = h.bytes_to.get(&spoofed).copied().unwrap_or(0);
    h.deliver(spoofed, server_addr(), &register);
    h.pump();
    assert_eq!(h.drops.last(), Some(&ServerDrop::Cookie));
    let answered = h.bytes_to.get(&spoofed).copied().unwrap_or(0) - before;
    assert!(
        answered <= register.len(),
        "no amplification: {answered} for {}",
        register.len()
    );
    assert_eq!(
        h.server.observed(&h.peer(0)),
        Some(h.clients[0].1),
        "not moved"
    );
    // And the same Register from the right address two cookie epochs later: stale.
    h.after(Duration::from_secs(121));
    let sessions = h.inbound.len();
    let from = h.clients[0].1;
    h.deliver(from, server_addr(), &register);
    assert_eq!(h.drops.last(), Some(&ServerDrop::Cookie));
    assert_eq!(h.inbound.len(), sessions);
}

#[test]
fn tampered_or_forged_registers_are_dropped() {
    let mut h = Harness::new(1);
    h.register(0);
    h.after(Duration::from_millis(200));
    let (from, _, register) = h
        .seen
        .iter()
        .rfind(|(_, to, b)| *to == server_addr() && b[5] == wire::KIND_REGISTER)
        .cloned()
        .unwrap();
    // Another key claimed with the same signature, and a changed body.
    let mut other_key = register.clone();
    other_key[30] ^= 1;
    h.deliver(from, server_addr(), &other_key);
    assert_eq!(h.drops.last(), Some(&ServerDrop::Signature));
    let mut changed = register.clone();
    let body_byte = register.len() - 65;
    changed[body_byte] ^= 1;
    h.deliver(from, server_addr(), &changed);
    assert_eq!(h.drops.last(), Some(&ServerDrop::Signature));
    // Screened for a check elsewhere: the cookie is valid, so all three want one, and the
    // check tells them apart.
    let now = h.now;
    for (bytes, good) in [(&register, true), (&other_key, false), (&changed, false)] {
        assert_eq!(
            h.server.prescreen(now, from, bytes),
            super::server::Prescreen::Verify
        );
        assert_eq!(super::server::verify_register(bytes), good);
    }
    // From another address the cookie is wrong: no signature check is worth doing.
    let elsewhere: SocketAddr = "192.0.2.1:9".parse().unwrap();
    assert_eq!(
        h.server.prescreen(now, elsewhere, &register),
        super::server::Prescreen::Handle
    );
}

#[test]
fn spoofed_requests_cannot_move_refresh_or_replay() {
    let mut h = Harness::new(2);
    h.register(0);
    h.register(1);
    h.after(Duration::from_millis(200));
    let peer1 = h.peer(1);
    h.request(0, Request::Lookup { peer: peer1 });
    h.after(Duration::from_millis(200));
    let (from, _, lookup) = h
        .seen
        .iter()
        .rfind(|(f, _, b)| *f == h.clients[0].1 && b[5] == wire::KIND_REQUEST)
        .cloned()
        .unwrap();
    let home = h.server.observed(&h.peer(0)).unwrap();
    assert_eq!(home, from);
    let spoofed: SocketAddr = "192.0.2.66:666".parse().unwrap();
    // A replay from elsewhere: dropped, not answered, not moved.
    let before = h.bytes_to.get(&spoofed).copied().unwrap_or(0);
    h.deliver(spoofed, server_addr(), &lookup);
    h.pump();
    assert_eq!(h.drops.last(), Some(&ServerDrop::Replay));
    assert_eq!(h.bytes_to.get(&spoofed).copied().unwrap_or(0), before);
    assert_eq!(h.server.observed(&h.peer(0)), Some(home));
    // A forged sequence number (tag no longer matches).
    let mut forged = lookup.clone();
    forged[61] ^= 0x40; // seq is bytes 54..62
    h.deliver(spoofed, server_addr(), &forged);
    assert_eq!(h.drops.last(), Some(&ServerDrop::Tag));
    assert_eq!(h.server.observed(&h.peer(0)), Some(home));
    // A replay from the node's own address is answered again but acts as a duplicate.
    h.deliver(from, server_addr(), &lookup);
    assert!(matches!(
        h.inbound.last(),
        Some(Inbound::Request {
            duplicate: true,
            moved: false,
            ..
        })
    ));
    // A request for a session that does not exist gets a smaller Unknown.
    let mut unknown = lookup.clone();
    unknown[46] ^= 1; // session ID
    let before = h.bytes_to.get(&spoofed).copied().unwrap_or(0);
    h.deliver(spoofed, server_addr(), &unknown);
    h.pump();
    let answered = h.bytes_to.get(&spoofed).copied().unwrap_or(0) - before;
    assert_eq!(answered, 22);
    assert!(answered < unknown.len());
}

#[test]
fn the_observed_address_follows_a_rebinding_but_not_an_older_datagram() {
    let mut h = Harness::new(2);
    h.register(0);
    h.register(1);
    h.after(Duration::from_millis(200));
    let old = h.clients[0].1;
    // A lookup leaves from the old address and is held up in the network (lost here, and
    // delivered by hand below).
    h.lose = Box::new(|_, _| true);
    let peer1 = h.peer(1);
    h.request(0, Request::Lookup { peer: peer1 });
    h.pump();
    h.lose = Box::new(|_, _| false);
    let (_, _, late) = h
        .seen
        .iter()
        .rfind(|(f, _, b)| *f == old && b[5] == wire::KIND_REQUEST)
        .cloned()
        .unwrap();
    // The NAT rebinds: the next refresh comes from a new port.
    let new: SocketAddr = "198.51.100.1:4999".parse().unwrap();
    h.clients[0].1 = new;
    let refresh = h.register(0);
    h.after(Duration::from_millis(200));
    assert!(is_registered(h.outcome(0, refresh)));
    assert_eq!(h.server.observed(&h.peer(0)), Some(new));
    // Pushes now go to the new address.
    let peer0 = h.peer(0);
    h.request(1, Request::Connect { peer: peer0 });
    h.after(Duration::from_millis(200));
    assert!(h
        .events
        .iter()
        .any(|(c, e)| *c == 0 && matches!(e, ClientEvent::Push(_))));
    // The older lookup arrives late from the old address: fresh, answered there, but the
    // session stays at the new address.
    h.deliver(old, server_addr(), &late);
    assert!(matches!(
        h.inbound.last(),
        Some(Inbound::Request {
            moved: false,
            duplicate: false,
            ..
        })
    ));
    assert_eq!(h.server.observed(&h.peer(0)), Some(new));
}

#[test]
fn a_restarted_rendezvous_answers_unknown_and_the_node_registers_again() {
    let mut h = Harness::new(1);
    h.register(0);
    h.after(Duration::from_millis(200));
    // The rendezvous restarts with new secrets.
    h.server = Server::new(ServerConfig::default(), [10; 32], h.now);
    let refresh = h.register(0);
    h.after(Duration::from_millis(200));
    assert_eq!(h.outcome(0, refresh), Some(&Outcome::UnknownSession));
    assert!(!h.clients[0].0.is_registered());
    // The stale cookie is refused with a fresh one, and the Register goes through.
    let again = h.register(0);
    h.after(Duration::from_millis(300));
    assert!(is_registered(h.outcome(0, again)));
}

#[test]
fn forged_pushes_are_not_accepted() {
    let mut h = Harness::new(1);
    h.register(0);
    h.after(Duration::from_millis(200));
    let push = Push::PunchRequest {
        peer: PeerId([3; 32]),
        record: record("192.0.2.1:1".parse().unwrap()),
    };
    // Under a guessed key, and from the right address.
    let forged = wire::Builder::new(wire::KIND_PUSH, &[1; 8])
        .u64(0)
        .body(&crate::control::encode(&push))
        .tagged(&[0; 16]);
    let now = h.now;
    let to = h.clients[0].1;
    let _ = to;
    assert!(h.clients[0]
        .0
        .handle_datagram(now, server_addr(), &forged)
        .is_err());
    // From another address than the rendezvous's.
    assert!(h.clients[0]
        .0
        .handle_datagram(now, "192.0.2.9:3478".parse().unwrap(), &forged)
        .is_err());
    h.pump();
    assert!(!h
        .events
        .iter()
        .any(|(_, e)| matches!(e, ClientEvent::Push(_))));
}

#[test]
fn unanswered_pushes_are_resent_a_bounded_number_of_times() {
    let mut h = Harness::new(2);
    h.register(0);
    h.register(1);
    h.after(Duration::from_millis(200));
    // Client 1 stops answering (everything to it is lost).
    let to = h.clients[1].1;
    h.lose = Box::new(move |_, dest| dest == to);
    let peer1 = h.peer(1);
    h.request(0, Request::Connect { peer: peer1 });
    h.after(Duration::from_secs(10));
    let pushes = h
        .seen
        .iter()
        .filter(|(_, t, b)| *t == to && b[5] == wire::KIND_PUSH)
        .count();
    assert_eq!(pushes, ServerConfig::default().push_attempts as usize);
    assert_eq!(h.server.pending_pushes(), 0);
}

#[test]
fn garbage_never_panics_either_machine() {
    let mut h = Harness::new(1);
    h.register(0);
    h.after(Duration::from_millis(200));
    let mut state = 0x1234_5678_u64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let samples: Vec<Vec<u8>> = h.seen.iter().map(|s| s.2.clone()).collect();
    for _ in 0..5_000 {
        let mut bytes = samples[(rand() as usize) % samples.len()].clone();
        for _ in 0..(rand() % 4) {
            let at = (rand() as usize) % bytes.len();
            bytes[at] = rand() as u8;
        }
        let cut = (rand() as usize) % (bytes.len() + 1);
        bytes.truncate(cut.max(6));
        let now = h.now;
        let _ = h.server.handle(now, "192.0.2.1:1".parse().unwrap(), &bytes);
        let _ = h.clients[0].0.handle_datagram(now, server_addr(), &bytes);
    }
}

#[test]
fn a_pinned_node_registers_under_a_key_never_sent_and_refuses_an_impostor() {
    use crate::path::auth::OwnSecret;
    let node_secret = |n: u8| OwnSecret::from_seed(&[n + 1; 32]);
    // Node 0 pins the real rendezvous, node 1 pins another key (an impostor's view).
    let mut h = Harness::new(2);
    let real = rendezvous_secret().id();
    let other = OwnSecret::from_seed(&[78; 32]).id();
    let pair0 = node_secret(0).pair_key(&real).unwrap();
    let pair1 = node_secret(1).pair_key(&other).unwrap();
    h.clients[0].0.pin(pair0);
    h.clients[1].0.pin(pair1);
    let a = h.register(0);
    let b = h.register(1);
    h.after(Duration::from_secs(6));
    assert!(is_registered(h.outcome(0, a)), "{:?}", h.outcome(0, a));
    assert_eq!(
        h.outcome(1, b),
        Some(&Outcome::TimedOut),
        "a Registered from the wrong key"
    );
    // The key field of every Registered sent to node 0 is zeros: the key never travels.
    let to0 = h.clients[0].1;
    let answers: Vec<_> = h
        .seen
        .iter()
        .filter(|(_, t, b)| *t == to0 && b[5] == wire::KIND_REGISTERED)
        .collect();
    assert!(!answers.is_empty());
    for (_, _, bytes) in answers {
        assert_eq!(&bytes[22..38], &[0; 16]);
    }
    // And the session works: a lookup under it is answered.
    let peer1 = h.peer(1);
    let lookup = h.request(0, Request::Lookup { peer: peer1 });
    h.after(Duration::from_millis(200));
    assert!(matches!(h.outcome(0, lookup), Some(Outcome::Response(_))));
}

#[test]
fn a_push_arriving_without_room_is_resent_and_taken_once_there_is_room() {
    let mut h = Harness::new(2);
    h.register(0);
    h.register(1);
    h.after(Duration::from_millis(200));
    // Client 1's queue is full: the push is neither acknowledged nor reported...
    h.clients[1].0.set_push_room(false);
    let peer1 = h.peer(1);
    h.request(0, Request::Connect { peer: peer1 });
    h.after(Duration::from_millis(700));
    let reported = |h: &Harness| {
        h.events
            .iter()
            .filter(|(c, e)| *c == 1 && matches!(e, ClientEvent::Push(_)))
            .count()
    };
    assert_eq!(reported(&h), 0);
    assert_eq!(h.server.pending_pushes(), 1, "still waiting for its ack");
    let to = h.clients[1].1;
    let sends = |h: &Harness| {
        h.seen
            .iter()
            .filter(|(_, t, b)| *t == to && b[5] == wire::KIND_PUSH)
            .count()
    };
    assert!(sends(&h) >= 2, "resent while unacknowledged: {}", sends(&h));
    // ...until the queue has room: the next copy is taken, reported once and acknowledged.
    h.clients[1].0.set_push_room(true);
    h.after(Duration::from_secs(2));
    assert_eq!(reported(&h), 1);
    assert_eq!(h.server.pending_pushes(), 0);
}
