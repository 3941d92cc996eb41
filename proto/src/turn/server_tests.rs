//! Tests of the TURN server machine in virtual time, with a minimal client-side message builder
//! (test code only; the real client is `turn::client`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_rs::attributes::stun::{
    ErrorCode, MessageIntegrity, Nonce, Realm, UnknownAttributes, UserName, XorMappedAddress,
};
use stun_rs::attributes::turn::{
    ChannelNumber, Data, LifeTime, RequestedTrasport, XorPeerAddress, XorRelayedAddress,
};
use stun_rs::methods::{ALLOCATE, BINDING, CHANNEL_BIND, CREATE_PERMMISSION, REFRESH, SEND};
use stun_rs::{
    Algorithm, AlgorithmId, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    MessageMethod, StunAttribute, StunMessage, StunMessageBuilder, TransactionId,
};

use super::*;
use crate::turn::channel_data;

#[path = "server_tests_data.rs"]
mod data;
#[path = "server_tests_direct.rs"]
mod direct;

const SECRET: &[u8] = b"north";
const UNIX: u64 = 1_700_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The harness's policy: peers in 203.0.113.0/24 and 127.0.0.1 are "registered".
fn policy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [203, 0, 113] || v4.is_loopback(),
        IpAddr::V6(_) => false,
    }
}

struct Client {
    transport: ClientTransport,
    addr: SocketAddr,
    username: String,
    password: String,
    nonce: Option<String>,
    next_tx: u8,
}

impl Client {
    fn new(addr: SocketAddr, user: &str) -> Self {
        let secret = SharedSecret::new(SECRET).unwrap();
        let issued = secret.issue(user, UNIX, 86_400);
        Client {
            transport: ClientTransport::Udp,
            addr,
            username: issued.username,
            password: issued.password,
            nonce: None,
            next_tx: 0,
        }
    }

    fn key(&self) -> HMACKey {
        HMACKey::new_long_term(
            &self.username,
            "p2pnat",
            &self.password,
            Algorithm::from(AlgorithmId::MD5),
        )
        .unwrap()
    }

    fn tx(&mut self) -> [u8; 12] {
        self.next_tx += 1;
        let mut tx = [self.next_tx; 12];
        tx[0] = self.addr.port() as u8;
        tx
    }

    /// A request with `attributes`, signed when a nonce is known.
    fn request(
        &self,
        method: MessageMethod,
        tx: [u8; 12],
        attributes: Vec<StunAttribute>,
    ) -> Vec<u8> {
        let mut builder = StunMessageBuilder::new(method, MessageClass::Request)
            .with_transaction_id(TransactionId::from(tx));
        for attribute in attributes {
            builder = builder.with_attribute(attribute);
        }
        if let Some(nonce) = &self.nonce {
            builder = builder
                .with_attribute(UserName::new(&self.username).unwrap())
                .with_attribute(Realm::new("p2pnat").unwrap())
                .with_attribute(Nonce::new(nonce).unwrap())
                .with_attribute(MessageIntegrity::new(self.key()));
        }
        encode(&builder.build())
    }
}

fn encode(message: &StunMessage) -> Vec<u8> {
    let mut buffer = vec![0u8; 70_000];
    let size = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buffer, message)
        .unwrap();
    buffer.truncate(size);
    buffer
}

fn decode(bytes: &[u8]) -> StunMessage {
    MessageDecoderBuilder::default()
        .build()
        .decode(bytes)
        .unwrap()
        .0
}

fn error_code(message: &StunMessage) -> Option<u16> {
    message
        .get::<ErrorCode>()
        .map(|a| a.as_error_code().unwrap().error_code().error_code())
}

fn udp() -> StunAttribute {
    RequestedTrasport::from(stun_rs::protocols::UDP).into()
}

fn peer_attr(peer: SocketAddr) -> StunAttribute {
    XorPeerAddress::from(peer).into()
}

struct Harness {
    server: TurnServer,
    now: Instant,
    unix: u64,
    next_port: u16,
}

impl Harness {
    fn new(config: TurnServerConfig) -> Self {
        Harness {
            server: TurnServer::new(config, SharedSecret::new(SECRET).unwrap(), 42),
            now: Instant::now(),
            unix: UNIX,
            next_port: 50_000,
        }
    }

    fn outputs(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.server.poll_output()).collect()
    }

    /// Feeds a client datagram, answers every BindRelay, and returns the rest of the outputs.
    fn client(&mut self, from: SocketAddr, bytes: &[u8]) -> Vec<Output> {
        self.client_on(ClientTransport::Udp, from, bytes)
    }

    /// [`Self::client`] over any transport.
    fn client_on(
        &mut self,
        transport: ClientTransport,
        addr: SocketAddr,
        bytes: &[u8],
    ) -> Vec<Output> {
        let from = super::Client { transport, addr };
        let _ = self
            .server
            .handle_client_message(self.now, self.unix, from, bytes, &policy);
        let mut rest = Vec::new();
        for output in self.outputs() {
            match output {
                Output::BindRelay { id, family, .. } => {
                    assert_eq!(family, Family::V4);
                    let relayed = SocketAddr::from(([198, 51, 100, 1], self.next_port));
                    self.next_port += 2;
                    self.server.relay_bound(self.now, id, Ok(relayed));
                    rest.extend(self.outputs());
                }
                other => rest.push(other),
            }
        }
        rest
    }

    /// Sends a request and returns the one response to the client.
    fn ask(&mut self, client: &Client, bytes: &[u8]) -> (StunMessage, Vec<u8>) {
        let outputs = self.client_on(client.transport, client.addr, bytes);
        assert_eq!(outputs.len(), 1, "{outputs:?}");
        let Output::Transmit(t) = &outputs[0] else {
            panic!("{outputs:?}")
        };
        assert_eq!((t.from, t.to), (Via::Client(client.transport), client.addr));
        (decode(&t.contents), t.contents.clone())
    }

    /// Allocate with the 401 round trip; returns the relayed address.
    fn allocate(&mut self, client: &mut Client) -> Result<SocketAddr, u16> {
        if client.nonce.is_none() {
            let tx = client.tx();
            let (challenge, _) = self.ask(client, &client.request(ALLOCATE, tx, vec![udp()]));
            assert_eq!(error_code(&challenge), Some(401));
            let nonce = challenge.get::<Nonce>().unwrap().as_nonce().unwrap();
            client.nonce = Some(nonce.as_str().to_string());
        }
        let tx = client.tx();
        let (answer, _) = self.ask(client, &client.request(ALLOCATE, tx, vec![udp()]));
        match error_code(&answer) {
            Some(code) => Err(code),
            None => Ok(*answer
                .get::<XorRelayedAddress>()
                .unwrap()
                .as_xor_relayed_address()
                .unwrap()
                .socket_address()),
        }
    }

    fn simple(
        &mut self,
        client: &mut Client,
        method: MessageMethod,
        attrs: Vec<StunAttribute>,
    ) -> Option<u16> {
        let tx = client.tx();
        let (answer, _) = self.ask(client, &client.request(method, tx, attrs));
        error_code(&answer)
    }

    fn advance(&mut self, by: Duration) -> Vec<Output> {
        self.now += by;
        self.unix += by.as_secs();
        self.server.handle_timeout(self.now);
        self.outputs()
    }
}

#[test]
fn allocate_with_challenge_then_success_and_retransmission() {
    let mut h = Harness::new(TurnServerConfig::default());
    let mut client = Client::new(addr("192.0.2.10:4000"), "alice");
    let tx = client.tx();
    let (challenge, wire) = h.ask(&client, &client.request(ALLOCATE, tx, vec![udp()]));
    assert_eq!(challenge.class(), MessageClass::ErrorResponse);
    assert_eq!(error_code(&challenge), Some(401));
    assert!(challenge.get::<Realm>().is_some());
    assert!(challenge.get::<MessageIntegrity>().is_none());
    assert!(
        wire.len() <= MAX_AMPLIFICATION * 28,
        "401 is {} bytes",
        wire.len()
    );
    client.nonce = Some(
        challenge
            .get::<Nonce>()
            .unwrap()
            .as_nonce()
            .unwrap()
            .as_str()
            .into(),
    );

    let tx = client.tx();
    let request = client.request(ALLOCATE, tx, vec![udp(), LifeTime::new(777).into()]);
    let _ = h
        .server
        .handle_client_datagram(h.now, h.unix, client.addr, &request, &policy);
    let outputs = h.outputs();
    let [Output::BindRelay {
        id,
        even_port: false,
        ..
    }] = outputs[..]
    else {
        panic!("{outputs:?}")
    };
    // A retransmission while the socket is being bound gets nothing (the answer is coming).
    assert!(h.client(client.addr, &request).is_empty());
    let relayed = addr("198.51.100.1:40000");
    h.server.relay_bound(h.now, id, Ok(relayed));
    let Some(Output::Transmit(t)) = h.server.poll_output() else {
        panic!()
    };
    // The response verifies with the client's key.
    assert!(super::wire::integrity_ok(&t.contents, &client.key()));
    let answer = decode(&t.contents);
    assert_eq!(answer.class(), MessageClass::SuccessResponse);
    let got = |a: &StunMessage| {
        *a.get::<XorRelayedAddress>()
            .unwrap()
            .as_xor_relayed_address()
            .unwrap()
            .socket_address()
    };
    assert_eq!(got(&answer), relayed);
    let mapped = answer.get::<XorMappedAddress>().unwrap();
    assert_eq!(
        *mapped.as_xor_mapped_address().unwrap().socket_address(),
        client.addr
    );
    assert_eq!(
        answer
            .get::<LifeTime>()
            .unwrap()
            .as_life_time()
            .unwrap()
            .as_u32(),
        777
    );
    // Same transaction again: the same answer; another transaction: 437.
    let (_, again) = h.ask(&client, &request);
    assert_eq!(again, t.contents);
    assert_eq!(h.simple(&mut client, ALLOCATE, vec![udp()]), Some(437));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn refresh_and_expiry_release_the_relay() {
    let mut h = Harness::new(TurnServerConfig::default());
    let mut client = Client::new(addr("192.0.2.10:4000"), "alice");
    let relayed = h.allocate(&mut client).unwrap();
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.now + Duration::from_secs(600))
    );
    // Refresh to 1200 s (granted), then beyond the maximum (clamped to 3600 s).
    let tx = client.tx();
    let (answer, _) = h.ask(
        &client,
        &client.request(REFRESH, tx, vec![LifeTime::new(1200).into()]),
    );
    assert_eq!(
        answer
            .get::<LifeTime>()
            .unwrap()
            .as_life_time()
            .unwrap()
            .as_u32(),
        1200
    );
    let tx = client.tx();
    let (answer, _) = h.ask(
        &client,
        &client.request(REFRESH, tx, vec![LifeTime::new(99_999).into()]),
    );
    assert_eq!(
        answer
            .get::<LifeTime>()
            .unwrap()
            .as_life_time()
            .unwrap()
            .as_u32(),
        3600
    );
    assert!(h.advance(Duration::from_secs(3599)).is_empty());
    let released = h.advance(Duration::from_secs(1));
    assert!(matches!(released[..], [Output::ReleaseRelay { relayed: r, .. }] if r == relayed));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(
        h.simple(&mut client, REFRESH, vec![]),
        Some(438),
        "the nonce is an hour old"
    );
    client.nonce = None;

    // Refresh with lifetime 0 deletes at once.
    let relayed = h.allocate(&mut client).unwrap();
    let tx = client.tx();
    let outputs = h.client(
        client.addr,
        &client.request(REFRESH, tx, vec![LifeTime::new(0).into()]),
    );
    assert!(matches!(outputs[0], Output::ReleaseRelay { relayed: r, .. } if r == relayed));
    let Output::Transmit(t) = &outputs[1] else {
        panic!()
    };
    assert_eq!(decode(&t.contents).class(), MessageClass::SuccessResponse);
    assert_eq!(h.server.poll_timeout(), None);
    assert_eq!(h.simple(&mut client, REFRESH, vec![]), Some(437));
}

#[test]
fn permissions_follow_the_policy() {
    let mut h = Harness::new(TurnServerConfig::default());
    let mut client = Client::new(addr("192.0.2.10:4000"), "alice");
    h.allocate(&mut client).unwrap();
    let forbidden = addr("198.18.0.1:5000");
    assert_eq!(
        h.simple(&mut client, CREATE_PERMMISSION, vec![peer_attr(forbidden)]),
        Some(403)
    );
    // One forbidden peer among allowed ones refuses the whole request.
    let allowed = addr("203.0.113.5:5000");
    assert_eq!(
        h.simple(
            &mut client,
            CREATE_PERMMISSION,
            vec![peer_attr(allowed), peer_attr(forbidden)]
        ),
        Some(403)
    );
    // Never relayed whatever the policy says.
    for never in ["0.0.0.0:1", "224.0.0.1:1", "255.255.255.255:1"] {
        let everything = |_: IpAddr| true;
        let tx = client.tx();
        let request = client.request(CREATE_PERMMISSION, tx, vec![peer_attr(addr(never))]);
        h.server
            .handle_client_datagram(h.now, h.unix, client.addr, &request, &everything)
            .unwrap();
        let Some(Output::Transmit(t)) = h.server.poll_output() else {
            panic!()
        };
        assert_eq!(error_code(&decode(&t.contents)), Some(403), "{never}");
    }
    assert_eq!(h.simple(&mut client, CREATE_PERMMISSION, vec![]), Some(400));
    assert_eq!(
        h.simple(
            &mut client,
            CREATE_PERMMISSION,
            vec![peer_attr(addr("[2001:db8::1]:5"))]
        ),
        Some(443)
    );
    assert_eq!(
        h.simple(&mut client, CREATE_PERMMISSION, vec![peer_attr(allowed)]),
        None
    );
    assert!(h.server.stats().refused_forbidden >= 2);
}

#[test]
fn quotas_per_user_and_total() {
    let mut h = Harness::new(TurnServerConfig {
        max_allocations: 3,
        max_allocations_per_user: 2,
        ..TurnServerConfig::default()
    });
    let mut alice = (0..3)
        .map(|n| Client::new(SocketAddr::from(([192, 0, 2, 10], 4000 + n)), "alice"))
        .collect::<Vec<_>>();
    assert!(h.allocate(&mut alice[0]).is_ok());
    assert!(h.allocate(&mut alice[1]).is_ok());
    assert_eq!(h.allocate(&mut alice[2]), Err(486));
    // A fresh username of the same user counts as the same user.
    let secret = SharedSecret::new(SECRET).unwrap();
    let mut again = Client::new(addr("192.0.2.10:4100"), "alice");
    again.username = secret.issue("alice", UNIX + 5, 86_400).username;
    again.password = secret.password_for(&again.username);
    assert_eq!(h.allocate(&mut again), Err(486));
    let mut bob = Client::new(addr("192.0.2.11:4000"), "bob");
    assert!(h.allocate(&mut bob).is_ok());
    let mut carol = Client::new(addr("192.0.2.12:4000"), "carol");
    assert_eq!(h.allocate(&mut carol), Err(508));
    assert_eq!(h.server.stats().refused_quota, 3);
    // Another user cannot use alice's allocation.
    bob.addr = alice[0].addr;
    bob.nonce = alice[0].nonce.clone();
    assert_eq!(h.simple(&mut bob, REFRESH, vec![]), Some(441));
}

#[test]
fn stale_nonce_wrong_password_and_expired_username() {
    let mut h = Harness::new(TurnServerConfig {
        max_lifetime: Duration::from_secs(7200),
        ..TurnServerConfig::default()
    });
    let mut client = Client::new(addr("192.0.2.10:4000"), "alice");
    h.allocate(&mut client).unwrap();
    let tx = client.tx();
    h.ask(
        &client,
        &client.request(REFRESH, tx, vec![LifeTime::new(7200).into()]),
    );
    h.advance(Duration::from_secs(3600));
    let tx = client.tx();
    let (stale, _) = h.ask(&client, &client.request(REFRESH, tx, vec![]));
    assert_eq!(error_code(&stale), Some(438));
    client.nonce = Some(
        stale
            .get::<Nonce>()
            .unwrap()
            .as_nonce()
            .unwrap()
            .as_str()
            .into(),
    );
    assert_eq!(h.simple(&mut client, REFRESH, vec![]), None);

    // A nonce issued to another IP is stale here.
    let mut elsewhere = Client::new(addr("192.0.2.99:4000"), "alice");
    elsewhere.nonce = client.nonce.clone();
    assert_eq!(h.simple(&mut elsewhere, ALLOCATE, vec![udp()]), Some(438));

    let mut wrong = Client::new(addr("192.0.2.20:4000"), "mallory");
    wrong.password = "not-the-password".into();
    assert_eq!(h.allocate(&mut wrong), Err(401));
    let mut expired = Client::new(addr("192.0.2.21:4000"), "old");
    let secret = SharedSecret::new(SECRET).unwrap();
    expired.username = secret.issue("old", h.unix - 100, 10).username;
    expired.password = secret.password_for(&expired.username);
    assert_eq!(h.allocate(&mut expired), Err(401));
    let mut malformed = Client::new(addr("192.0.2.22:4000"), "x");
    malformed.username = "nobody".into();
    assert_eq!(h.allocate(&mut malformed), Err(401));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn unknown_attributes_transport_and_reservations() {
    let mut h = Harness::new(TurnServerConfig::default());
    let mut client = Client::new(addr("192.0.2.10:4000"), "alice");
    h.allocate(&mut client).unwrap();
    // DONT-FRAGMENT in an Allocate is an unknown comprehension-required attribute here.
    let mut other = Client::new(addr("192.0.2.10:4001"), "alice");
    other.nonce = client.nonce.clone();
    let tx = other.tx();
    let df = stun_rs::attributes::turn::DontFragment::default();
    let (answer, _) = h.ask(&other, &other.request(ALLOCATE, tx, vec![udp(), df.into()]));
    assert_eq!(error_code(&answer), Some(420));
    let unknown = answer
        .get::<UnknownAttributes>()
        .unwrap()
        .as_unknown_attributes()
        .unwrap();
    assert_eq!(unknown.attributes(), &[0x001A]);
    // EVEN-PORT with R=1 (reservation) is not supported: 508; R=0 is passed to the driver.
    let even = |r| StunAttribute::from(stun_rs::attributes::turn::EvenPort::new(r));
    assert_eq!(
        h.simple(&mut other, ALLOCATE, vec![udp(), even(true)]),
        Some(508)
    );
    let tx = other.tx();
    let request = other.request(ALLOCATE, tx, vec![udp(), even(false)]);
    h.server
        .handle_client_datagram(h.now, h.unix, other.addr, &request, &policy)
        .unwrap();
    assert!(matches!(
        h.server.poll_output(),
        Some(Output::BindRelay {
            even_port: true,
            ..
        })
    ));
    h.server
        .relay_bound(h.now, AllocationId(1), Err(RelayBindError::NoPort));
    let Some(Output::Transmit(t)) = h.server.poll_output() else {
        panic!()
    };
    assert_eq!(error_code(&decode(&t.contents)), Some(508));
    // Missing REQUESTED-TRANSPORT: 400. TCP (6): 442, built by hand with the client's key.
    assert_eq!(h.simple(&mut other, ALLOCATE, vec![]), Some(400));
    let tx = other.tx();
    let mut raw = other.request(ALLOCATE, tx, vec![udp()]);
    assert_eq!(&raw[20..24], &[0x00, 0x19, 0x00, 0x04]);
    raw[24] = 6;
    resign(&mut raw, &other.key());
    let (answer, _) = h.ask(&other, &raw);
    assert_eq!(error_code(&answer), Some(442));
    // Binding is answered without credentials.
    let binding = encode(&StunMessageBuilder::new(BINDING, MessageClass::Request).build());
    let (answer, _) = h.ask(&other, &binding);
    let mapped = answer.get::<XorMappedAddress>().unwrap();
    assert_eq!(
        *mapped.as_xor_mapped_address().unwrap().socket_address(),
        other.addr
    );
}

/// Recomputes MESSAGE-INTEGRITY (the last attribute) after the test edited the message.
fn resign(raw: &mut [u8], key: &HMACKey) {
    use hmac::{Hmac, Mac};
    let at = raw.len() - 24;
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(&raw[..at]);
    raw[at + 4..].copy_from_slice(&mac.finalize().into_bytes());
}

#[test]
fn unauthenticated_answers_are_small_and_rate_limited() {
    let mut h = Harness::new(TurnServerConfig {
        unauthenticated_burst: 5,
        unauthenticated_interval: Duration::from_secs(1),
        ..TurnServerConfig::default()
    });
    let client = Client::new(addr("192.0.2.10:4000"), "alice");
    // A bare 20-byte Allocate would draw a 92-byte 401: not answered.
    let bare = client.request(ALLOCATE, [1; 12], vec![]);
    assert_eq!(bare.len(), 20);
    assert_eq!(
        h.server
            .handle_client_datagram(h.now, h.unix, client.addr, &bare, &policy),
        Err(DropReason::Amplification)
    );
    let request = client.request(ALLOCATE, [2; 12], vec![udp()]);
    let answered = (0..20)
        .filter(|_| {
            h.server
                .handle_client_datagram(h.now, h.unix, client.addr, &request, &policy)
                .is_ok()
        })
        .count();
    assert_eq!(answered, 5);
    for output in h.outputs() {
        let Output::Transmit(t) = output else {
            panic!()
        };
        assert!(t.contents.len() <= 4 * request.len());
    }
}
