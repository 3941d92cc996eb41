//! The TURN server machine (`turn::server::TurnServer`), fed arbitrary sequences of operations
//! (`p2pnat_fuzz::Records`): client messages (STUN requests and indications, ChannelData) over
//! UDP, TCP and TLS from four clients, datagrams from peers to relayed addresses, time passing,
//! connections closing and the driver's answers to relay binds.
//!
//! So that the fuzzer gets past authentication, a client message's NONCE is replaced by the
//! last one the server gave that client (when the lengths agree) and its MESSAGE-INTEGRITY is
//! recomputed with the REST-API password of its USERNAME (`p2pnat_fuzz::stun_fix`): both only
//! overwrite bytes in place.
//!
//! Invariants: queued outputs stay within `MAX_QUEUED_OUTPUTS`; allocations within
//! `max_allocations`; an answer to a message that failed authentication is at most
//! `MAX_AMPLIFICATION` times its size; a Transmit to a peer leaves from a relayed address the
//! driver bound.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use p2pnat_fuzz::stun_fix::{self, ATTR_NONCE, ATTR_USERNAME};
use p2pnat_fuzz::{u16_at, Records};
use p2pnat_proto::turn::credentials::SharedSecret;
use p2pnat_proto::turn::server::{
    Client, ClientTransport, Family, Output, RelayBindError, TurnServer, TurnServerConfig, Via,
    MAX_AMPLIFICATION, MAX_QUEUED_OUTPUTS,
};

/// Shared with `examples/seeds.rs`.
const SECRET: &[u8] = b"fuzz-secret";
const UNIX: u64 = 1_700_000_000;

fn clients() -> [Client; 4] {
    let v4: SocketAddr = "192.0.2.10:50000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::10]:50001".parse().unwrap();
    [
        Client::udp(v4),
        Client {
            transport: ClientTransport::Tcp,
            addr: v4,
        },
        Client {
            transport: ClientTransport::Tls,
            addr: v6,
        },
        Client::udp("192.0.2.11:50002".parse().unwrap()),
    ]
}

fn policy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [203, 0, 113],
        IpAddr::V6(v6) => v6.segments()[0] == 0x2001,
    }
}

struct Harness {
    server: TurnServer,
    secret: SharedSecret,
    start: Instant,
    now: Instant,
    unix: u64,
    nonces: HashMap<SocketAddr, Vec<u8>>,
    relayed: Vec<SocketAddr>,
    bound: HashSet<SocketAddr>,
    next_port: u16,
    bind_choice: u8,
    max_allocations: usize,
}

impl Harness {
    fn new(config_byte: u8) -> Self {
        let config = TurnServerConfig {
            max_allocations: 1 + usize::from(config_byte & 3),
            max_allocations_per_user: 1 + usize::from((config_byte >> 2) & 1),
            max_permissions: 4,
            max_channels: 4,
            max_pending_binds: 2,
            max_bytes_per_sec: if config_byte & 0x10 != 0 { 1000 } else { 0 },
            unauthenticated_burst: 8,
            ..TurnServerConfig::default()
        };
        let max_allocations = config.max_allocations;
        let secret = SharedSecret::new(SECRET).unwrap();
        let start = Instant::now();
        Harness {
            server: TurnServer::new(config, SharedSecret::new(SECRET).unwrap(), 7),
            secret,
            start,
            now: start,
            unix: UNIX,
            nonces: HashMap::new(),
            relayed: Vec::new(),
            bound: HashSet::new(),
            next_port: 40000,
            bind_choice: 0,
            max_allocations,
        }
    }

    /// Replaces NONCE and recomputes MESSAGE-INTEGRITY (see the module documentation).
    fn repair(&self, client: &Client, message: &mut [u8]) {
        if !stun_fix::is_stun(message) {
            return;
        }
        if let Some(nonce) = self.nonces.get(&client.addr) {
            stun_fix::replace(message, ATTR_NONCE, nonce);
        }
        let Some(username) = stun_fix::find(message, ATTR_USERNAME) else {
            return;
        };
        let Ok(username) = std::str::from_utf8(username) else {
            return;
        };
        let password = self.secret.password_for(username);
        let realm = &self.server.config().realm;
        let key = stun_fix::long_term_key(username, realm, &password);
        stun_fix::fix_integrity(message, &key);
    }

    /// Drains the outputs, answering relay binds; `request_len` is the size of the client
    /// message that caused them, when one did.
    fn drain(&mut self, request_len: Option<usize>, authenticated: bool) {
        let mut count = 0;
        while let Some(output) = self.server.poll_output() {
            count += 1;
            assert!(count <= MAX_QUEUED_OUTPUTS + 16, "output queue not bounded");
            match output {
                Output::Transmit(transmit) => match transmit.from {
                    Via::Client(_) => {
                        let contents = &transmit.contents;
                        if let (Some(len), false) = (request_len, authenticated) {
                            assert!(
                                contents.len() <= MAX_AMPLIFICATION * len,
                                "answer of {} bytes to an unauthenticated {len}-byte message",
                                contents.len()
                            );
                        }
                        if let Some(nonce) = stun_fix::find(contents, ATTR_NONCE) {
                            self.nonces.insert(transmit.to, nonce.to_vec());
                        }
                    }
                    Via::Relay(from) => assert!(self.bound.contains(&from)),
                },
                Output::BindRelay { id, family, .. } => {
                    let result = match self.bind_choice {
                        0..=229 => {
                            self.next_port = self.next_port.wrapping_add(1);
                            let ip: IpAddr = match family {
                                Family::V4 => Ipv4Addr::new(198, 51, 100, 1).into(),
                                Family::V6 => "2001:db8:ffff::1".parse().unwrap(),
                            };
                            Ok(SocketAddr::new(ip, self.next_port))
                        }
                        230..=242 => Err(RelayBindError::FamilyUnsupported),
                        _ => Err(RelayBindError::NoPort),
                    };
                    if let Ok(addr) = result {
                        self.relayed.push(addr);
                        self.bound.insert(addr);
                    }
                    self.server.relay_bound(self.now, id, result);
                }
                Output::ReleaseRelay { relayed, .. } => {
                    self.bound.remove(&relayed);
                }
            }
        }
        assert!(self.server.allocation_count() <= self.max_allocations);
    }

    fn step(&mut self, op: u8, payload: &[u8]) {
        let pick = payload.first().copied().unwrap_or(0);
        let body = payload.get(1..).unwrap_or_default();
        self.bind_choice = payload.last().copied().unwrap_or(0);
        let client = clients()[usize::from(pick & 3)];
        match op % 8 {
            0..=2 => {
                let mut message = body.to_vec();
                self.repair(&client, &mut message);
                let result = if op % 8 == 2 {
                    self.server
                        .handle_client_message_direct(
                            self.now, self.unix, client, &message, &policy,
                        )
                        .map(|to| {
                            if let Some(to) = to {
                                assert!(self.bound.contains(&to.relayed));
                                assert!(to.data.len() <= message.len());
                            }
                        })
                } else {
                    self.server
                        .handle_client_message(self.now, self.unix, client, &message, &policy)
                };
                let _ = result;
                // Only a message without USERNAME is certainly unauthenticated.
                let authenticated = stun_fix::find(&message, ATTR_USERNAME).is_some();
                self.drain(Some(message.len()), authenticated);
            }
            3 | 4 => {
                let Some(&relayed) = self
                    .relayed
                    .get(usize::from(pick) % self.relayed.len().max(1))
                else {
                    return;
                };
                let peer_ip = if u16_at(body, 0).is_multiple_of(2) {
                    IpAddr::V4(Ipv4Addr::new(
                        203,
                        0,
                        113,
                        body.get(2).copied().unwrap_or(1),
                    ))
                } else {
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99))
                };
                let peer = SocketAddr::new(peer_ip, u16_at(body, 3));
                let datagram = body.get(5..).unwrap_or_default();
                if op % 8 == 3 {
                    let _ = self
                        .server
                        .handle_relay_datagram(self.now, relayed, peer, datagram);
                } else {
                    let mut out = Vec::new();
                    if let Ok(to) = self
                        .server
                        .handle_relay_datagram_into(self.now, relayed, peer, datagram, &mut out)
                    {
                        assert!(!out.is_empty());
                        assert!(clients().contains(&to));
                    }
                }
                self.drain(None, true);
            }
            5 => {
                let ms = u64::from(u16_at(payload, 0)) * u64::from(pick.max(1));
                self.now += Duration::from_millis(ms);
                self.unix = UNIX + (self.now - self.start).as_secs();
                if self.server.poll_timeout().is_some_and(|at| at <= self.now) {
                    self.server.handle_timeout(self.now);
                }
                self.drain(None, true);
            }
            6 => {
                self.server.client_closed(client);
                self.drain(None, true);
            }
            _ => {
                // A late or unknown answer to a relay bind.
                let id = p2pnat_proto::turn::server::AllocationId(u64::from(u16_at(payload, 0)));
                let addr = SocketAddr::new(Ipv4Addr::new(198, 51, 100, 2).into(), 9);
                self.server.relay_bound(self.now, id, Ok(addr));
                self.bound.insert(addr);
                self.drain(None, true);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, ops)) = data.split_first() else {
        return;
    };
    let mut harness = Harness::new(config);
    for (op, payload) in Records::new(ops) {
        harness.step(op, payload);
    }
});
