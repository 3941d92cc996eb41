//! A scripted TURN server for the client's tests: it decodes the client's requests with stun-rs,
//! checks their MESSAGE-INTEGRITY with the long-term key, and answers with crafted responses
//! signed the same way. Knobs make it drop, challenge, refuse or forge.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use stun_rs::attributes::stun::{
    ErrorCode, MessageIntegrity, Nonce, Realm, UserName, XorMappedAddress,
};
use stun_rs::attributes::turn::{
    ChannelNumber, Data, LifeTime, RequestedTrasport, XorPeerAddress, XorRelayedAddress,
};
use stun_rs::methods::{ALLOCATE, BINDING, CHANNEL_BIND, CREATE_PERMMISSION, DATA, REFRESH, SEND};
use stun_rs::{
    Algorithm, AlgorithmId, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    StunMessage, StunMessageBuilder, TransactionId,
};

pub const REALM: &str = "p2pnat.test";

pub fn key(username: &str, password: &str) -> HMACKey {
    HMACKey::new_long_term(
        username,
        REALM,
        password,
        Algorithm::new(AlgorithmId::MD5, None),
    )
    .unwrap()
}

pub fn encode(message: &StunMessage) -> Vec<u8> {
    let mut buffer = vec![0u8; 4096];
    let size = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buffer, message)
        .unwrap();
    buffer.truncate(size);
    buffer
}

pub fn decode(bytes: &[u8]) -> StunMessage {
    MessageDecoderBuilder::default()
        .build()
        .decode(bytes)
        .unwrap()
        .0
}

/// A request the server saw, decoded, and whether its integrity checked out.
#[derive(Debug)]
pub struct Seen {
    pub message: StunMessage,
    pub username: Option<String>,
    pub nonce: Option<String>,
    pub authenticated: bool,
}

impl Seen {
    pub fn lifetime(&self) -> Option<u32> {
        self.message
            .get::<LifeTime>()
            .map(|a| a.as_life_time().unwrap().as_u32())
    }

    pub fn peers(&self) -> Vec<SocketAddr> {
        self.message
            .attributes()
            .iter()
            .filter_map(|a| a.as_xor_peer_address().ok())
            .map(|a| *a.socket_address())
            .collect()
    }

    pub fn channel(&self) -> Option<u16> {
        self.message
            .get::<ChannelNumber>()
            .map(|a| a.as_channel_number().unwrap().number())
    }
}

pub struct FakeServer {
    pub passwords: HashMap<String, String>,
    pub nonce: String,
    pub relayed: SocketAddr,
    pub mapped: SocketAddr,
    pub lifetime: u32,
    /// Answer nothing (loss).
    pub drop_all: bool,
    /// Answer the next authenticated request with 438 and a new nonce.
    pub stale_next: bool,
    /// Answer every authenticated request with 438 and a new nonce.
    pub always_stale: bool,
    /// Answer Allocate with this error code (after authentication).
    pub allocate_error: Option<u16>,
    /// Answer Refresh with this error code (after authentication).
    pub refresh_error: Option<u16>,
    /// Peer IPs CreatePermission is refused for (403).
    pub denied: HashSet<IpAddr>,
    /// Sign responses with this wrong password instead.
    pub forge_with: Option<String>,
    pub seen: Vec<Seen>,
    /// Send indications received: (peer, payload).
    pub indications: Vec<(SocketAddr, Vec<u8>)>,
    nonce_counter: u32,
}

impl FakeServer {
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            passwords: HashMap::from([(username.to_owned(), password.to_owned())]),
            nonce: "nonce-0".to_owned(),
            relayed: "203.0.113.10:50000".parse().unwrap(),
            mapped: "198.51.100.7:41000".parse().unwrap(),
            lifetime: 600,
            drop_all: false,
            stale_next: false,
            always_stale: false,
            allocate_error: None,
            refresh_error: None,
            denied: HashSet::new(),
            forge_with: None,
            seen: Vec::new(),
            indications: Vec::new(),
            nonce_counter: 0,
        }
    }

    /// Requests of `method` seen so far.
    pub fn requests(&self, method: stun_rs::MessageMethod) -> Vec<&Seen> {
        self.seen
            .iter()
            .filter(|s| s.message.method() == method)
            .collect()
    }

    /// Takes one datagram from the client; returns the answer, if any.
    pub fn answer(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        if self.drop_all {
            return None;
        }
        if bytes[0] & 0xC0 != 0 {
            return None; // ChannelData: relayed, nothing to answer
        }
        let message = decode(bytes);
        if message.class() == MessageClass::Indication && message.method() == BINDING {
            return None; // a keepalive
        }
        if message.class() == MessageClass::Indication {
            assert_eq!(message.method(), SEND);
            let peer = *message
                .get::<XorPeerAddress>()
                .unwrap()
                .as_xor_peer_address()
                .unwrap()
                .socket_address();
            let data = message
                .get::<Data>()
                .unwrap()
                .as_data()
                .unwrap()
                .as_bytes()
                .to_vec();
            self.indications.push((peer, data));
            return None;
        }
        assert_eq!(message.class(), MessageClass::Request);
        let username = message
            .get::<UserName>()
            .map(|a| a.as_user_name().unwrap().as_str().to_owned());
        let nonce = message
            .get::<Nonce>()
            .map(|a| a.as_nonce().unwrap().as_str().to_owned());
        let key = username
            .as_ref()
            .and_then(|u| self.passwords.get(u))
            .map(|p| key(username.as_deref().unwrap(), p));
        let authenticated = match (&key, message.get::<MessageIntegrity>()) {
            (Some(key), Some(mi)) => {
                let input = stun_rs::get_input_text::<MessageIntegrity>(bytes).unwrap();
                mi.as_message_integrity().unwrap().validate(&input, key)
            }
            _ => false,
        };
        self.seen.push(Seen {
            message: decode(bytes),
            username: username.clone(),
            nonce: nonce.clone(),
            authenticated,
        });
        if message.method() == ALLOCATE {
            let transport = message.get::<RequestedTrasport>().unwrap();
            assert_eq!(
                transport
                    .as_requested_trasport()
                    .unwrap()
                    .protocol()
                    .as_u8(),
                17
            );
        }
        if !authenticated {
            return Some(self.error(&message, 401, "Unauthorized", None));
        }
        let key = key.unwrap();
        if self.stale_next || self.always_stale || nonce.as_deref() != Some(&self.nonce) {
            self.stale_next = false;
            self.nonce_counter += 1;
            self.nonce = format!("nonce-{}", self.nonce_counter);
            return Some(self.error(&message, 438, "Stale Nonce", None));
        }
        let signing = match &self.forge_with {
            Some(wrong) => self::key(username.as_deref().unwrap(), wrong),
            None => key,
        };
        let method = message.method();
        let mut response = StunMessageBuilder::new(method, MessageClass::SuccessResponse)
            .with_transaction_id(*message.transaction_id());
        if method == ALLOCATE {
            if let Some(code) = self.allocate_error {
                return Some(self.error(&message, code, "Refused", Some(signing)));
            }
            response = response
                .with_attribute(XorRelayedAddress::from(self.relayed))
                .with_attribute(XorMappedAddress::from(self.mapped))
                .with_attribute(LifeTime::from(self.lifetime));
        } else if method == REFRESH {
            if let Some(code) = self.refresh_error {
                return Some(self.error(&message, code, "Refused", Some(signing)));
            }
            let requested = self.seen.last().unwrap().lifetime();
            let granted = requested.map_or(self.lifetime, |r| r.min(self.lifetime));
            response = response.with_attribute(LifeTime::from(granted));
        } else if method == CREATE_PERMMISSION {
            let peers = self.seen.last().unwrap().peers();
            if peers.iter().any(|p| self.denied.contains(&p.ip())) {
                return Some(self.error(&message, 403, "Forbidden", Some(signing)));
            }
        } else if method == CHANNEL_BIND {
            assert!(message.get::<ChannelNumber>().is_some());
        } else {
            panic!("unexpected method {:?}", method);
        }
        Some(encode(
            &response
                .with_attribute(MessageIntegrity::new(signing))
                .build(),
        ))
    }

    fn error(
        &self,
        request: &StunMessage,
        code: u16,
        reason: &str,
        key: Option<HMACKey>,
    ) -> Vec<u8> {
        let mut builder = StunMessageBuilder::new(request.method(), MessageClass::ErrorResponse)
            .with_transaction_id(*request.transaction_id())
            .with_attribute(ErrorCode::from(
                stun_rs::ErrorCode::new(code, reason).unwrap(),
            ));
        if code == 401 || code == 438 {
            builder = builder
                .with_attribute(Realm::new(REALM).unwrap())
                .with_attribute(Nonce::new(&self.nonce).unwrap());
        }
        if let Some(key) = key {
            builder = builder.with_attribute(MessageIntegrity::new(key));
        }
        encode(&builder.build())
    }

    /// A Data indication from `peer` carrying `payload`, as the server would relay it.
    pub fn data_indication(peer: SocketAddr, payload: &[u8], txid: [u8; 12]) -> Vec<u8> {
        encode(
            &StunMessageBuilder::new(DATA, MessageClass::Indication)
                .with_transaction_id(TransactionId::from(txid))
                .with_attribute(XorPeerAddress::from(peer))
                .with_attribute(Data::from(payload.to_vec()))
                .build(),
        )
    }
}
