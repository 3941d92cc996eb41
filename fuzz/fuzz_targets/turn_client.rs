//! The TURN client machine (`turn::client::TurnClient`), fed arbitrary sequences of
//! operations (`p2pnat_fuzz::Records`): datagrams from the server (responses, Data
//! indications, ChannelData), time passing, the node asking for permissions, channels and
//! sends, new credentials, close.
//!
//! So that the fuzzer reaches the response handling behind the transaction and integrity
//! checks, a datagram from the server may take the transaction ID of one of the client's
//! requests (the payload's first byte picks which; 0xFF keeps the datagram's own), and its
//! MESSAGE-INTEGRITY is recomputed with the client's key for realm `p2pnat`
//! (`p2pnat_fuzz::stun_fix`): both only overwrite bytes in place.
//!
//! Invariants: relayed data is a slice of the datagram it came in, within its bounds; a
//! ChannelData message decodes to a slice that re-encodes to the message (`channel_data`);
//! every transmit is within the wire's largest message; `poll_output` settles (a bounded
//! number of transmits and events before it asks for a timeout).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use p2pnat_fuzz::{stun_fix, u16_at, Records};
use p2pnat_proto::turn::channel_data;
use p2pnat_proto::turn::client::{ClientOutput, Received, TurnClient, TurnClientConfig};

/// Shared with `examples/seeds.rs`.
const USERNAME: &str = "1700086400:alice";
const PASSWORD: &str = "fuzz-password";
const REALM: &str = "p2pnat";

struct Harness {
    client: TurnClient,
    now: Instant,
    /// Transaction IDs of the requests sent, newest last (at most 16 kept).
    requests: Vec<[u8; 12]>,
    key: [u8; 16],
}

impl Harness {
    fn drain(&mut self) {
        for _ in 0..10_000 {
            match self.client.poll_output(self.now) {
                ClientOutput::Transmit(bytes) => {
                    assert!(
                        bytes.len() <= 65_535 + 20,
                        "transmit of {} bytes",
                        bytes.len()
                    );
                    if stun_fix::is_stun(&bytes) && bytes[0] & 0x01 == 0 && bytes[1] & 0x10 == 0 {
                        let id: [u8; 12] = bytes[8..20].try_into().unwrap();
                        if self.requests.len() == 16 {
                            self.requests.remove(0);
                        }
                        self.requests.push(id);
                    }
                }
                ClientOutput::Event(_) => {}
                ClientOutput::Timeout(_) | ClientOutput::Closed => return,
            }
        }
        panic!("poll_output never settles");
    }

    fn peer(bytes: &[u8]) -> SocketAddr {
        let ip = match bytes.first().copied().unwrap_or(0) % 3 {
            0 => IpAddr::V4(Ipv4Addr::new(
                203,
                0,
                113,
                bytes.get(1).copied().unwrap_or(1),
            )),
            1 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            _ => "2001:db8::7".parse().unwrap(),
        };
        SocketAddr::new(ip, u16_at(bytes, 2))
    }

    fn step(&mut self, op: u8, payload: &[u8]) {
        let pick = payload.first().copied().unwrap_or(0xFF);
        let body = payload.get(1..).unwrap_or_default();
        match op % 8 {
            0..=2 => {
                let mut datagram = body.to_vec();
                if stun_fix::is_stun(&datagram) && pick != 0xFF && !self.requests.is_empty() {
                    let n = self.requests.len();
                    let id = self.requests[n - 1 - usize::from(pick) % n];
                    stun_fix::set_transaction(&mut datagram, &id);
                    stun_fix::fix_integrity(&mut datagram, &self.key);
                }
                if let Ok(message) = channel_data::decode(&datagram) {
                    let encoded = channel_data::encode(message.channel, message.data);
                    assert_eq!(encoded[..], datagram[..encoded.len()]);
                }
                let range = datagram.as_ptr_range();
                if let Ok(Received::Data { payload, .. }) =
                    self.client.handle_datagram(self.now, &datagram)
                {
                    let inner = payload.as_ptr_range();
                    assert!(range.start <= inner.start && inner.end <= range.end);
                }
            }
            3 => {
                let ms = u64::from(u16_at(payload, 0)) * u64::from(pick.max(1));
                self.now += Duration::from_millis(ms);
            }
            4 => {
                let _ = self.client.permit(self.now, Self::peer(body).ip());
            }
            5 => {
                let _ = self.client.bind_channel(self.now, Self::peer(body));
            }
            6 => {
                let peer = Self::peer(body);
                let data = body.get(4..).unwrap_or_default();
                let mut out = Vec::new();
                if self.client.send_to(self.now, peer, data, &mut out).is_ok() {
                    assert!(out.len() >= data.len() && out.len() <= data.len() + 64);
                    let _ = self.client.max_payload(1280, peer);
                    let _ = self.client.channel_for_send(self.now, peer, 1);
                }
            }
            _ => match pick {
                0 => self.client.close(self.now),
                _ => {
                    let password = String::from_utf8_lossy(body).into_owned();
                    self.key = stun_fix::long_term_key(USERNAME, REALM, &password);
                    self.client.set_credentials(USERNAME.to_string(), password);
                }
            },
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let server: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let client = TurnClient::new(
        TurnClientConfig::default(),
        server,
        USERNAME.to_string(),
        PASSWORD.to_string(),
        now,
        1,
    );
    let mut harness = Harness {
        client,
        now,
        requests: Vec::new(),
        key: stun_fix::long_term_key(USERNAME, REALM, PASSWORD),
    };
    harness.drain();
    for (op, payload) in Records::new(data) {
        harness.step(op, payload);
    }
});
