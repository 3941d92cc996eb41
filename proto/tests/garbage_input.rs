//! Every decoder in the crate, fed random and mutated bytes: each must return a value or an error,
//! never panic, whatever the input. Deterministic (seeded xorshift), so a failure reproduces.

use p2pnat_proto::app::{parse_command_line, parse_send_header};
use p2pnat_proto::control::{self, Push, Request, Response};
use p2pnat_proto::demux::classify;
use p2pnat_proto::path::auth::OwnSecret;
use p2pnat_proto::path::wire::{CheckBody, CheckDatagram};
use p2pnat_proto::path::{AgentConfig, LocalSocketId, PathAgent};
use p2pnat_proto::stun;
use p2pnat_proto::PeerId;

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = (self.next() as usize) % (max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// `valid` with a few bytes flipped, truncated or extended.
    fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        let mut out = valid.to_vec();
        match self.next() % 3 {
            0 => {
                for _ in 0..=(self.next() % 4) {
                    if !out.is_empty() {
                        let at = (self.next() as usize) % out.len();
                        out[at] = self.next() as u8;
                    }
                }
            }
            1 => out.truncate((self.next() as usize) % (out.len() + 1)),
            _ => out.extend(self.bytes(16)),
        }
        out
    }
}

fn alice() -> OwnSecret {
    OwnSecret::from_seed(&[1; 32])
}

fn bob() -> OwnSecret {
    OwnSecret::from_seed(&[2; 32])
}

fn valid_samples() -> Vec<Vec<u8>> {
    let peer = PeerId([0x42; 32]);
    let key = bob().pair_key(&alice().id()).unwrap();
    vec![
        control::encode(&Request::Register {
            local_addrs: vec![
                "10.0.0.1:1".parse().unwrap(),
                "[2001:db8::1]:2".parse().unwrap(),
            ],
            nat: p2pnat_proto::nat::NatReport::UNKNOWN,
            relayed: Some("203.0.113.5:49000".parse().unwrap()),
        }),
        control::encode(&Request::Lookup { peer }),
        control::encode(&Response::Registered {
            observed: "192.0.2.1:3".parse().unwrap(),
            ttl_secs: 120,
            stun_alternates: vec!["203.0.113.11:3478".parse().unwrap()],
            inbound_probe: None,
            turn: None,
        }),
        stun::binding_request([7; 12]),
        stun::answer_binding_request(
            &stun::binding_request([8; 12]),
            "192.0.2.9:4".parse().unwrap(),
        )
        .unwrap(),
        CheckDatagram {
            transaction: [1; 12],
            sender: bob().id(),
            receiver: alice().id(),
            body: CheckBody::Check {
                heartbeat: false,
                relayed: false,
            },
        }
        .encode(&key),
        CheckDatagram {
            transaction: [2; 12],
            sender: bob().id(),
            receiver: alice().id(),
            body: CheckBody::Reply {
                observed: "[2001:db8::2]:5".parse().unwrap(),
            },
        }
        .encode(&key),
        p2pnat_proto::app::encode_send_frame(9, &peer.to_text(), b"payload")[5..].to_vec(),
    ]
}

/// Alice's path agent, fed every input as a datagram from one source.
fn agent() -> PathAgent {
    PathAgent::new(alice(), AgentConfig::default(), [3; 32])
}

fn feed(agent: &mut PathAgent, now: std::time::Instant, input: &[u8]) {
    let _ = agent.handle_datagram(now, LocalSocketId(0), "192.0.2.7:7".parse().unwrap(), input);
    let _ = CheckDatagram::decode(input);
    let _ = classify(input);
    let _ = control::decode::<Request>(input);
    let _ = control::decode::<Response>(input);
    let _ = control::decode::<Push>(input);
    let _ = stun::parse_binding_response(input);
    let _ = stun::answer_binding_request(input, "192.0.2.1:1".parse().unwrap());
    let _ = parse_send_header(input, input.len());
    let _ = parse_command_line(&String::from_utf8_lossy(input));
    let _ = String::from_utf8_lossy(input).parse::<PeerId>();
}

#[test]
fn random_bytes_never_panic_any_decoder() {
    let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
    let mut agent = agent();
    let now = std::time::Instant::now();
    for _ in 0..20_000 {
        feed(&mut agent, now, &rng.bytes(300));
    }
}

#[test]
fn mutated_valid_messages_never_panic_any_decoder() {
    let mut rng = Xorshift(0xD1B5_4A32_D192_ED03);
    let samples = valid_samples();
    // The unmutated samples decode: the mutations start from real messages.
    assert!(control::decode::<Request>(&samples[0]).is_ok());
    assert!(stun::parse_binding_response(&samples[4]).is_ok());
    assert!(CheckDatagram::decode(&samples[5]).is_ok());
    let mut agent = agent();
    let now = std::time::Instant::now();
    // The valid check is accepted (and answered): mutations start from a real one.
    assert!(agent
        .handle_datagram(
            now,
            LocalSocketId(0),
            "192.0.2.7:7".parse().unwrap(),
            &samples[5]
        )
        .is_ok());
    for round in 0..50_000 {
        let sample = &samples[round % samples.len()];
        feed(&mut agent, now, &rng.mutate(sample));
        // Drain what the agent wants to send so its queues stay bounded as they would.
        while let p2pnat_proto::path::Output::Transmit(_) = agent.poll_output(now) {}
    }
}
