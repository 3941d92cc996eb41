//! The TURN client against a scripted fake server, in virtual time (nothing sleeps).

mod coturn;
mod fake_server;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use fake_server::{decode, FakeServer};
use p2pnat_proto::turn::channel_data;
use p2pnat_proto::turn::client::{
    max_payload_for_mtu, overhead_channel, overhead_send_indication, AllocationFailure,
    ClientEvent, ClientOutput, Received, TurnClient, TurnClientConfig, TurnClientError,
    TurnPermitError, TurnSendError, MAX_PAYLOAD,
};
use stun_rs::attributes::stun::MessageIntegrity;
use stun_rs::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMMISSION, REFRESH, SEND};
use stun_rs::MessageClass;

const USER: &str = "1700000000:alice";
const PASS: &str = "secret-password";

fn server_addr() -> SocketAddr {
    "192.0.2.1:3478".parse().unwrap()
}

fn peer(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::from([198, 18, 0, n]), 4000 + u16::from(n))
}

/// A client wired to a fake server with zero latency; `now` only moves when told.
struct Harness {
    client: TurnClient,
    server: FakeServer,
    base: Instant,
    now: Instant,
    events: Vec<ClientEvent>,
    /// When each datagram left the client (offset from `base`) and its bytes.
    sent: Vec<(Duration, Vec<u8>)>,
    errors: Vec<TurnClientError>,
    closed: bool,
}

impl Harness {
    fn new(config: TurnClientConfig) -> Self {
        let base = Instant::now();
        let client = TurnClient::new(
            config,
            server_addr(),
            USER.to_owned(),
            PASS.to_owned(),
            base,
            42,
        );
        Self {
            client,
            server: FakeServer::new(USER, PASS),
            base,
            now: base,
            events: Vec::new(),
            sent: Vec::new(),
            errors: Vec::new(),
            closed: false,
        }
    }

    /// Polls until the client waits; every transmit goes to the server and its answer back.
    fn pump(&mut self) -> Option<Instant> {
        loop {
            match self.client.poll_output(self.now) {
                ClientOutput::Transmit(bytes) => {
                    self.sent.push((self.now - self.base, bytes.clone()));
                    if let Some(answer) = self.server.answer(&bytes) {
                        match self.client.handle_datagram(self.now, &answer) {
                            Ok(Received::Control) => {}
                            Ok(other) => panic!("unexpected {other:?}"),
                            Err(e) => self.errors.push(e),
                        }
                    }
                }
                ClientOutput::Event(event) => self.events.push(event),
                ClientOutput::Timeout(at) => {
                    assert!(at >= self.now, "timeout in the past");
                    return Some(at);
                }
                ClientOutput::Closed => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }

    /// Runs every timer up to `base + offset`.
    fn run_until(&mut self, offset: Duration) {
        let end = self.base + offset;
        while let Some(at) = self.pump() {
            if at > end {
                break;
            }
            self.now = at;
            self.client.handle_timeout(at);
        }
        self.now = end;
        self.pump();
    }

    fn allocated(&mut self) {
        self.pump();
        assert!(self.client.is_allocated(), "events: {:?}", self.events);
    }

    fn sent_requests(&self, method: stun_rs::MessageMethod) -> Vec<Duration> {
        self.sent
            .iter()
            .filter(|(_, b)| b[0] & 0xC0 == 0)
            .map(|(t, b)| (t, decode(b)))
            .filter(|(_, m)| m.method() == method && m.class() == MessageClass::Request)
            .map(|(t, _)| *t)
            .collect()
    }

    fn take_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.events)
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

#[test]
fn challenge_then_allocated() {
    let mut h = Harness::new(TurnClientConfig::default());
    assert!(!h.client.is_allocated());
    h.allocated();
    // First Allocate unauthenticated, answered 401; the second carries the credentials.
    let allocates = h.server.requests(ALLOCATE);
    assert_eq!(allocates.len(), 2);
    assert!(allocates[0].username.is_none());
    assert!(allocates[0].message.get::<MessageIntegrity>().is_none());
    assert!(allocates[1].authenticated);
    assert_eq!(allocates[1].username.as_deref(), Some(USER));
    assert_eq!(allocates[1].nonce.as_deref(), Some("nonce-0"));
    assert_eq!(
        h.take_events(),
        [ClientEvent::Allocated {
            relayed: h.server.relayed,
            mapped: Some(h.server.mapped),
            lifetime: secs(600),
        }]
    );
    assert_eq!(h.client.relayed_address(), Some(h.server.relayed));
    assert_eq!(h.client.mapped_address(), Some(h.server.mapped));
    assert_eq!(h.client.server(), server_addr());
    assert_eq!(h.client.counters().allocations, 1);
    assert_eq!(h.client.counters().requests, 2);
    assert!(h.errors.is_empty());
}

#[test]
fn retransmits_then_fails_and_retries_with_backoff() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.server.drop_all = true;
    h.run_until(ms(9_400));
    // 7 transmissions, RTO 100 ms doubling to a 3.2 s ceiling.
    let times: Vec<u64> = h
        .sent_requests(ALLOCATE)
        .iter()
        .map(|t| t.as_millis() as u64)
        .collect();
    assert_eq!(times, [0, 100, 300, 700, 1_500, 3_100, 6_300]);
    assert!(h.events.is_empty());
    h.run_until(ms(9_500));
    assert_eq!(
        h.take_events(),
        [ClientEvent::AllocationFailed {
            reason: AllocationFailure::Timeout,
            retry_in: secs(1),
        }]
    );
    assert_eq!(h.client.counters().retransmits, 6);
    // Retry after 1 s, fail again, then 2 s.
    h.run_until(ms(10_499));
    assert_eq!(h.sent_requests(ALLOCATE).len(), 7);
    h.run_until(ms(10_500));
    assert_eq!(h.sent_requests(ALLOCATE).len(), 8);
    h.run_until(ms(20_000));
    assert_eq!(
        h.take_events(),
        [ClientEvent::AllocationFailed {
            reason: AllocationFailure::Timeout,
            retry_in: secs(2),
        }]
    );
    // The server comes back: the next retry (at 22 s) allocates.
    h.server.drop_all = false;
    h.run_until(ms(22_000));
    assert!(h.client.is_allocated());
    assert!(matches!(
        h.take_events()[..],
        [ClientEvent::Allocated { .. }]
    ));
}

#[test]
fn backoff_doubles_to_its_ceiling_and_never_gives_up() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.server.drop_all = true;
    h.run_until(secs(3_600));
    let waits: Vec<Duration> = h
        .take_events()
        .into_iter()
        .map(|e| match e {
            ClientEvent::AllocationFailed { retry_in, .. } => retry_in,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(&waits[..7], &[1, 2, 4, 8, 16, 32, 60].map(secs));
    assert!(waits[7..].iter().all(|w| *w == secs(60)));
    assert!(waits.len() > 40);
}

#[test]
fn quota_error_backs_off_longer_and_errors_are_reported() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.server.allocate_error = Some(486);
    h.pump();
    assert_eq!(
        h.take_events(),
        [ClientEvent::AllocationFailed {
            reason: AllocationFailure::Error {
                code: 486,
                reason: "Refused".into()
            },
            retry_in: secs(30),
        }]
    );
    h.server.allocate_error = Some(508);
    h.run_until(secs(30));
    assert!(matches!(
        h.take_events()[..],
        [ClientEvent::AllocationFailed {
            reason: AllocationFailure::Error { code: 508, .. },
            retry_in,
        }] if retry_in == secs(2)
    ));
    h.server.allocate_error = None;
    h.run_until(secs(32));
    assert!(h.client.is_allocated());
}

#[test]
fn allocate_437_deletes_the_stale_allocation_first() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.server.allocate_error = Some(437);
    h.pump();
    let refreshes = h.server.requests(REFRESH);
    assert_eq!(refreshes.len(), 1);
    assert_eq!(refreshes[0].lifetime(), Some(0));
    assert!(refreshes[0].authenticated);
}

#[test]
fn refresh_before_expiry() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.allocated();
    h.take_events();
    h.run_until(ms(539_999));
    assert!(h.sent_requests(REFRESH).is_empty());
    h.run_until(secs(540));
    assert_eq!(h.sent_requests(REFRESH), [secs(540)]);
    assert_eq!(
        h.take_events(),
        [ClientEvent::Refreshed {
            lifetime: secs(600)
        }]
    );
    h.run_until(secs(1_080));
    assert_eq!(h.sent_requests(REFRESH), [secs(540), secs(1_080)]);
    // Short lifetimes are refreshed at half.
    h.server.lifetime = 60;
    h.run_until(secs(1_620));
    h.take_events();
    h.run_until(secs(1_649));
    assert_eq!(h.sent_requests(REFRESH).len(), 3);
    h.run_until(secs(1_650));
    assert_eq!(h.sent_requests(REFRESH).len(), 4);
    assert!(h.client.is_allocated());
}

#[test]
fn refresh_437_reallocates_and_reinstalls() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.allocated();
    h.client.permit(h.now, peer(1).ip()).unwrap();
    h.client.bind_channel(h.now, peer(1)).unwrap();
    h.pump();
    h.take_events();
    h.server.refresh_error = Some(437);
    h.run_until(secs(540));
    let events = h.take_events();
    assert!(matches!(
        &events[0],
        ClientEvent::AllocationFailed {
            reason: AllocationFailure::Error { code: 437, .. },
            retry_in
        } if *retry_in == Duration::ZERO
    ));
    assert!(matches!(events[1], ClientEvent::Allocated { .. }));
    assert!(matches!(events[2], ClientEvent::ChannelBound { .. }));
    // Before: 240 s permission refresh, 300 s channel rebind; then all again on the new
    // allocation, and nothing queued for the lost one goes out.
    assert_eq!(
        h.sent_requests(CREATE_PERMMISSION),
        [secs(0), secs(240), secs(540)]
    );
    assert_eq!(
        h.sent_requests(CHANNEL_BIND),
        [secs(0), secs(300), secs(540)]
    );
}

#[test]
fn refresh_failure_retries_then_expiry_reallocates() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.allocated();
    h.take_events();
    h.server.refresh_error = Some(500);
    h.run_until(secs(599));
    // Retried every 5 s after each failure from 540 s on.
    assert_eq!(h.sent_requests(REFRESH).len(), 12);
    assert!(h.client.is_allocated());
    h.server.refresh_error = None;
    h.server.drop_all = true;
    h.run_until(secs(600));
    assert!(!h.client.is_allocated());
    assert!(matches!(
        h.take_events()[..],
        [ClientEvent::AllocationFailed {
            reason: AllocationFailure::Expired,
            ..
        }]
    ));
}

#[test]
fn stale_nonce_is_retried_with_the_new_nonce() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.allocated();
    h.server.stale_next = true;
    h.client.permit(h.now, peer(1).ip()).unwrap();
    h.pump();
    let creates = h.server.requests(CREATE_PERMMISSION);
    assert_eq!(creates.len(), 2);
    assert_eq!(creates[0].nonce.as_deref(), Some("nonce-0"));
    assert_eq!(creates[1].nonce.as_deref(), Some("nonce-1"));
    assert!(h.client.has_permission(peer(1).ip()));
    // A server that always says stale: a few retries, then the permission fails.
    h.server.always_stale = true;
    h.client.permit(h.now, peer(2).ip()).unwrap();
    h.pump();
    assert_eq!(h.server.requests(CREATE_PERMMISSION).len(), 2 + 4);
    assert!(h.take_events().contains(&ClientEvent::PermissionFailed {
        ip: peer(2).ip(),
        code: Some(438)
    }));
}

#[test]
fn new_credentials_are_used_for_the_next_request() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.allocated();
    h.server
        .passwords
        .insert("1800000000:alice".into(), "fresh".into());
    h.client
        .set_credentials("1800000000:alice".into(), "fresh".into());
    h.run_until(secs(540));
    let refreshes = h.server.requests(REFRESH);
    assert_eq!(refreshes.len(), 1);
    assert_eq!(refreshes[0].username.as_deref(), Some("1800000000:alice"));
    assert!(refreshes[0].authenticated);
    assert_eq!(refreshes[0].nonce.as_deref(), Some("nonce-0"));
    assert!(h.errors.is_empty());
    assert!(h.take_events().contains(&ClientEvent::Refreshed {
        lifetime: secs(600)
    }));
}

#[test]
fn permissions_are_batched_and_refreshed_while_wanted() {
    let mut h = Harness::new(TurnClientConfig::default());
    // Wanted before the allocation exists: installed once it does.
    h.client.permit(h.now, peer(1).ip()).unwrap();
    h.client.permit(h.now, peer(2).ip()).unwrap();
    h.client.permit(h.now, peer(2).ip()).unwrap(); // idempotent
    h.allocated();
    let creates = h.server.requests(CREATE_PERMMISSION);
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].peers().len(), 2);
    assert!(h.client.has_permission(peer(1).ip()));
    h.run_until(ms(239_999));
    assert_eq!(h.sent_requests(CREATE_PERMMISSION).len(), 1);
    h.run_until(secs(240));
    assert_eq!(h.sent_requests(CREATE_PERMMISSION), [secs(0), secs(240)]);
    h.client.forget(peer(1).ip());
    h.run_until(secs(480));
    let creates = h.server.requests(CREATE_PERMMISSION);
    assert_eq!(creates.len(), 3);
    assert_eq!(
        creates[2]
            .peers()
            .iter()
            .map(|p| p.ip())
            .collect::<Vec<_>>(),
        [peer(2).ip()]
    );
    h.client.forget(peer(2).ip());
    h.run_until(secs(1_200));
    assert_eq!(h.sent_requests(CREATE_PERMMISSION).len(), 3);
    let mut out = Vec::new();
    assert_eq!(
        h.client.send_to(h.now, peer(2), b"x", &mut out),
        Err(TurnSendError::NoPermission(peer(2).ip()))
    );
}

#[test]
fn permission_refused_with_403() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.allocated();
    h.take_events();
    h.server.denied.insert(peer(3).ip());
    h.client.permit(h.now, peer(3).ip()).unwrap();
    h.pump();
    assert_eq!(
        h.take_events(),
        [ClientEvent::PermissionFailed {
            ip: peer(3).ip(),
            code: Some(403)
        }]
    );
    let mut out = vec![1, 2, 3];
    assert_eq!(
        h.client.send_to(h.now, peer(3), b"x", &mut out),
        Err(TurnSendError::PermissionFailed(peer(3).ip()))
    );
    assert!(out.is_empty());
    // Not retried on its own; permit() again asks again.
    h.run_until(secs(600));
    assert_eq!(h.sent_requests(CREATE_PERMMISSION).len(), 1);
    h.server.denied.clear();
    h.client.permit(h.now, peer(3).ip()).unwrap();
    h.pump();
    assert!(h.client.has_permission(peer(3).ip()));
}

#[test]
fn permissions_are_bounded() {
    let config = TurnClientConfig {
        max_permissions: 2,
        ..TurnClientConfig::default()
    };
    let mut h = Harness::new(config);
    h.client.permit(h.now, peer(1).ip()).unwrap();
    h.client.permit(h.now, peer(2).ip()).unwrap();
    assert_eq!(
        h.client.permit(h.now, peer(3).ip()),
        Err(TurnPermitError::TooManyPermissions { max: 2 })
    );
}

#[test]
fn send_indication_until_the_channel_is_confirmed_then_channel_data() {
    let mut h = Harness::new(TurnClientConfig::default());
    let mut out = Vec::new();
    assert_eq!(
        h.client.send_to(h.now, peer(1), b"early", &mut out),
        Err(TurnSendError::NotAllocated)
    );
    h.allocated();
    assert_eq!(
        h.client.send_to(h.now, peer(1), b"x", &mut out),
        Err(TurnSendError::NoPermission(peer(1).ip()))
    );
    h.client.permit(h.now, peer(1).ip()).unwrap();
    h.pump();
    // First send: a Send indication, and a channel bind is started.
    h.client
        .send_to(h.now, peer(1), b"hello", &mut out)
        .unwrap();
    assert_eq!(out.len(), overhead_send_indication(false) + 5 + 3);
    let message = decode(&out);
    assert_eq!(
        (message.method(), message.class()),
        (SEND, MessageClass::Indication)
    );
    h.server.answer(&out);
    assert_eq!(h.server.indications, [(peer(1), b"hello".to_vec())]);
    assert_eq!(h.client.bound_channel(peer(1)), None);
    h.pump();
    let binds = h.server.requests(CHANNEL_BIND);
    assert_eq!(binds.len(), 1);
    assert_eq!(binds[0].channel(), Some(0x4000));
    assert_eq!(binds[0].peers(), [peer(1)]);
    assert!(h.take_events().contains(&ClientEvent::ChannelBound {
        peer: peer(1),
        channel: 0x4000
    }));
    // Now ChannelData with its 4-byte header.
    h.client
        .send_to(h.now, peer(1), b"hello", &mut out)
        .unwrap();
    assert_eq!(out, channel_data::encode(0x4000, b"hello"));
    assert_eq!(out.len(), overhead_channel() + 5);
    assert_eq!(h.client.counters().sent_channel, 1);
    assert_eq!(h.client.counters().sent_indication, 1);
    // Rebound every 300 s; the permission refreshed every 240 s meanwhile.
    h.run_until(secs(300));
    assert_eq!(h.sent_requests(CHANNEL_BIND), [secs(0), secs(300)]);
    // A second peer gets the next number.
    h.client.permit(h.now, peer(2).ip()).unwrap();
    assert_eq!(h.client.bind_channel(h.now, peer(2)), Ok(0x4001));
    assert_eq!(h.client.bind_channel(h.now, peer(2)), Ok(0x4001));
    // Too large.
    let big = vec![0u8; MAX_PAYLOAD + 1];
    assert!(matches!(
        h.client.send_to(h.now, peer(1), &big, &mut out),
        Err(TurnSendError::PayloadTooLarge { .. })
    ));
}

#[test]
fn channels_are_bounded_and_peers_beyond_use_send_indications() {
    let config = TurnClientConfig {
        max_channels: 1,
        ..TurnClientConfig::default()
    };
    let mut h = Harness::new(config);
    h.allocated();
    h.client.permit(h.now, peer(1).ip()).unwrap();
    h.client.permit(h.now, peer(2).ip()).unwrap();
    let mut out = Vec::new();
    h.client.send_to(h.now, peer(1), b"a", &mut out).unwrap();
    h.client.send_to(h.now, peer(2), b"b", &mut out).unwrap();
    h.pump();
    assert_eq!(h.server.requests(CHANNEL_BIND).len(), 1);
    assert_eq!(
        h.client.bind_channel(h.now, peer(2)),
        Err(TurnPermitError::TooManyChannels { max: 1 })
    );
    h.client.send_to(h.now, peer(2), b"b", &mut out).unwrap();
    assert_eq!(decode(&out).method(), SEND);
    // Forgetting frees the slot; the number is only reused after its quarantine.
    h.client.forget(peer(1).ip());
    assert_eq!(h.client.bind_channel(h.now, peer(2)), Ok(0x4001));
}

#[test]
fn receives_data_indications_and_channel_data() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.allocated();
    let v6: SocketAddr = "[2001:db8::7]:9000".parse().unwrap();
    for from in [peer(4), v6] {
        let datagram = FakeServer::data_indication(from, b"relayed bytes", [9; 12]);
        assert_eq!(
            h.client.handle_datagram(h.now, &datagram),
            Ok(Received::Data {
                peer: from,
                payload: b"relayed bytes"
            })
        );
    }
    h.client.permit(h.now, peer(4).ip()).unwrap();
    let channel = h.client.bind_channel(h.now, peer(4)).unwrap();
    h.pump();
    let datagram = channel_data::encode(channel, b"over a channel");
    assert_eq!(
        h.client.handle_datagram(h.now, &datagram),
        Ok(Received::Data {
            peer: peer(4),
            payload: b"over a channel"
        })
    );
    assert_eq!(h.client.counters().received_indication, 2);
    assert_eq!(h.client.counters().received_channel, 1);
    assert_eq!(
        h.client
            .handle_datagram(h.now, &channel_data::encode(0x4ABC, b"x")),
        Err(TurnClientError::UnknownChannel(0x4ABC))
    );
}

#[test]
fn forged_and_unknown_responses_are_rejected() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.server.forge_with = Some("not the password".into());
    h.pump();
    assert!(!h.client.is_allocated());
    assert_eq!(h.errors, [TurnClientError::IntegrityFailed]);
    // The forged answer counts as lost: the request is retransmitted and the real answer
    // allocates.
    h.server.forge_with = None;
    h.run_until(ms(100));
    assert!(h.client.is_allocated());
    // Replaying an answer whose transaction is over.
    let last = h.sent.last().unwrap().1.clone();
    let answer = h.server.answer(&last).unwrap();
    assert_eq!(
        h.client.handle_datagram(h.now, &answer),
        Err(TurnClientError::UnknownTransaction)
    );
    assert_eq!(h.client.counters().rejected, 2);
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.allocated();
    h.client.permit(h.now, peer(1).ip()).unwrap();
    h.client.bind_channel(h.now, peer(1)).unwrap();
    h.pump();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let valid = [
        FakeServer::data_indication(peer(1), b"payload", [1; 12]),
        channel_data::encode(0x4000, b"payload"),
        h.sent.last().unwrap().1.clone(),
    ];
    for round in 0..20_000 {
        let datagram: Vec<u8> = if round % 2 == 0 {
            let len = (next() % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 4 == 0 && bytes.len() >= 8 {
                // Plausible STUN: zero top bits and the magic cookie.
                bytes[0] &= 0x01;
                bytes[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            }
            bytes
        } else {
            let mut bytes = valid[round % 3].clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % bytes.len();
                bytes[at] ^= next() as u8 | 1;
            }
            bytes.truncate((next() as usize) % (bytes.len() + 1) + bytes.len() / 2);
            bytes
        };
        let _ = h.client.handle_datagram(h.now, &datagram);
    }
    // Still working.
    let mut out = Vec::new();
    h.client
        .send_to(h.now, peer(1), b"after", &mut out)
        .unwrap();
    assert!(h.client.is_allocated());
}

#[test]
fn close_deletes_the_allocation() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.allocated();
    h.client.close(h.now);
    h.pump();
    assert!(h.closed);
    let refreshes = h.server.requests(REFRESH);
    assert_eq!(refreshes.len(), 1);
    assert_eq!(refreshes[0].lifetime(), Some(0));
    assert!(refreshes[0].authenticated);
    let mut out = Vec::new();
    assert_eq!(
        h.client.send_to(h.now, peer(1), b"x", &mut out),
        Err(TurnSendError::Closed)
    );
    assert_eq!(
        h.client.permit(h.now, peer(1).ip()),
        Err(TurnPermitError::Closed)
    );
    assert_eq!(
        h.client.handle_datagram(h.now, b"x"),
        Err(TurnClientError::Closed)
    );
    assert_eq!(
        h.client.poll_output(h.now + secs(1_000)),
        ClientOutput::Closed
    );
}

#[test]
fn mtu_helpers() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.allocated();
    assert_eq!(max_payload_for_mtu(1280, false, false), 1280 - 20 - 8 - 36);
    assert_eq!(h.client.max_payload(1280, peer(1)), 1280 - 20 - 8 - 36);
    h.client.permit(h.now, peer(1).ip()).unwrap();
    h.client.bind_channel(h.now, peer(1)).unwrap();
    h.pump();
    assert_eq!(h.client.max_payload(1280, peer(1)), 1280 - 20 - 8 - 4);
}

#[test]
fn a_refused_peer_does_not_fail_its_batch() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.server.denied.insert(peer(2).ip());
    for n in 1..=3 {
        h.client.permit(h.now, peer(n).ip()).unwrap();
    }
    h.allocated();
    let creates = h.server.requests(CREATE_PERMMISSION);
    assert_eq!(creates.len(), 4, "one batch, then one request per IP");
    assert_eq!(creates[0].peers().len(), 3);
    assert!(h.client.has_permission(peer(1).ip()));
    assert!(!h.client.has_permission(peer(2).ip()));
    assert!(h.client.has_permission(peer(3).ip()));
    let failed: Vec<_> = h
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, ClientEvent::PermissionFailed { .. }))
        .collect();
    assert_eq!(
        failed,
        [ClientEvent::PermissionFailed {
            ip: peer(2).ip(),
            code: Some(403)
        }]
    );
}

#[test]
fn an_idle_allocation_sends_keepalives_and_a_busy_one_does_not() {
    let mut h = Harness::new(TurnClientConfig::default());
    h.allocated();
    let keepalives = |h: &Harness| -> Vec<Duration> {
        h.sent
            .iter()
            .filter(|(_, b)| b.len() == 20 && b[..4] == [0x00, 0x11, 0x00, 0x00])
            .map(|(t, _)| *t)
            .collect()
    };
    h.run_until(ms(14_999));
    assert!(keepalives(&h).is_empty());
    h.run_until(secs(46));
    assert_eq!(keepalives(&h), [secs(15), secs(30), secs(45)]);
    assert_eq!(h.client.counters().keepalives, 3);
    // Data to a peer every 10 s counts as traffic: no keepalive while it flows.
    h.client.permit(h.now, peer(1).ip()).unwrap();
    h.pump();
    let mut out = Vec::new();
    for _ in 0..6 {
        h.client.send_to(h.now, peer(1), b"data", &mut out).unwrap();
        let next = h.now + secs(10) - h.base;
        h.run_until(next);
    }
    assert_eq!(keepalives(&h).len(), 3, "{:?}", keepalives(&h));
}
