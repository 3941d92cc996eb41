//! Writes the seed corpus of every fuzz target from the real encoders: valid messages of every
//! kind, and for the stateful targets whole exchanges (allocate with the 401 challenge,
//! permissions, channels, data both ways, refresh, expiry).
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds -- DIR` writes `DIR/<target>/seed-*`
//! (scripts/fuzz.sh seeds then minimises them into fuzz/corpus with `cargo fuzz cmin`).

use std::net::SocketAddr;
use std::path::Path;

use p2pnat_fuzz::record;
use p2pnat_proto::app::{encode_frame, encode_send_frame, FRAME_COMMAND};
use p2pnat_proto::control::{
    self, PeerRecord, Push, RefusalCode, RegisteredOver, Request, Response, TurnOffer,
    TurnServerAddr,
};
use p2pnat_proto::control_stream::{self, FrameKind};
use p2pnat_proto::nat::NatReport;
use p2pnat_proto::path::auth::OwnSecret;
use p2pnat_proto::path::wire::{CheckBody, CheckDatagram, SweepPorts};
use p2pnat_proto::stun;
use p2pnat_proto::turn::channel_data;
use p2pnat_proto::turn::stream::pad_channel_data;
use stun_rs::attributes::stun::{
    ErrorCode, MessageIntegrity, Nonce, Realm, UserName, XorMappedAddress,
};
use stun_rs::attributes::turn::{
    ChannelNumber, Data, LifeTime, RequestedTrasport, XorPeerAddress, XorRelayedAddress,
};
use stun_rs::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMMISSION, DATA, REFRESH, SEND};
use stun_rs::{
    Algorithm, AlgorithmId, HMACKey, MessageClass, MessageEncoderBuilder, MessageMethod,
    StunAttribute, StunMessageBuilder, TransactionId,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn stun_message(
    method: MessageMethod,
    class: MessageClass,
    attributes: Vec<StunAttribute>,
    key: Option<&HMACKey>,
) -> Vec<u8> {
    let mut builder =
        StunMessageBuilder::new(method, class).with_transaction_id(TransactionId::from([9; 12]));
    for attribute in attributes {
        builder = builder.with_attribute(attribute);
    }
    if let Some(key) = key {
        builder = builder.with_attribute(MessageIntegrity::new(key.clone()));
    }
    let mut buffer = vec![0u8; 70_000];
    let size = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buffer, &builder.build())
        .unwrap();
    buffer.truncate(size);
    buffer
}

fn key(username: &str, password: &str) -> HMACKey {
    HMACKey::new_long_term(
        username,
        "p2pnat",
        password,
        Algorithm::from(AlgorithmId::MD5),
    )
    .unwrap()
}

fn peer_ids() -> (p2pnat_proto::PeerId, p2pnat_proto::PeerId) {
    (
        OwnSecret::from_seed(&[1; 32]).id(),
        OwnSecret::from_seed(&[2; 32]).id(),
    )
}

fn checks() -> Vec<(&'static str, Vec<u8>)> {
    let (me, peer) = peer_ids();
    let key = OwnSecret::from_seed(&[1; 32]).pair_key(&peer).unwrap();
    let datagram = |body| CheckDatagram {
        transaction: [3; 12],
        sender: me,
        receiver: peer,
        body,
    };
    [
        (
            "check",
            CheckBody::Check {
                heartbeat: false,
                relayed: false,
            },
        ),
        (
            "heartbeat",
            CheckBody::Check {
                heartbeat: true,
                relayed: true,
            },
        ),
        (
            "reply4",
            CheckBody::Reply {
                observed: addr("192.0.2.1:4000"),
            },
        ),
        (
            "reply6",
            CheckBody::Reply {
                observed: addr("[2001:db8::1]:4000"),
            },
        ),
        (
            "offer",
            CheckBody::SweepOffer {
                wait_ms: 250,
                ports: SweepPorts::new(&[4000, 4001, 4002]),
            },
        ),
        ("go", CheckBody::SweepGo { port: 4001 }),
    ]
    .into_iter()
    .map(|(name, body)| (name, datagram(body).encode(&key)))
    .collect()
}

fn control_messages() -> Vec<(&'static str, FrameKind, Vec<u8>)> {
    let (me, peer) = peer_ids();
    let record = PeerRecord {
        observed: addr("198.51.100.4:6000"),
        local_addrs: vec![addr("10.0.0.2:6000"), addr("[fe80::1]:6000")],
        nat: NatReport::UNKNOWN,
        relayed: Some(addr("198.51.100.1:40001")),
        over: RegisteredOver::Tls,
    };
    vec![
        (
            "register",
            FrameKind::Request,
            control::encode(&Request::Register {
                local_addrs: vec![addr("10.0.0.2:6000"), addr("[2001:db8::2]:6000")],
                nat: NatReport::UNKNOWN,
                relayed: Some(addr("198.51.100.1:40001")),
            }),
        ),
        (
            "lookup",
            FrameKind::Request,
            control::encode(&Request::Lookup { peer }),
        ),
        (
            "connect",
            FrameKind::Request,
            control::encode(&Request::Connect { peer }),
        ),
        (
            "registered",
            FrameKind::Response,
            control::encode(&Response::Registered {
                observed: addr("198.51.100.4:6000"),
                ttl_secs: 60,
                stun_alternates: vec![addr("192.0.2.1:3479")],
                inbound_probe: Some(addr("192.0.2.1:3480")),
                turn: Some(TurnOffer {
                    server: TurnServerAddr::SameHost { port: 3478 },
                    username: "1700086400:alice".into(),
                    password: "secret".into(),
                    expires_unix: 1_700_086_400,
                }),
            }),
        ),
        (
            "registered-ext",
            FrameKind::Response,
            control::encode(&Response::Registered {
                observed: addr("[2001:db8::4]:6000"),
                ttl_secs: 60,
                stun_alternates: vec![],
                inbound_probe: None,
                turn: Some(TurnOffer {
                    server: TurnServerAddr::Addr(addr("192.0.2.9:3478")),
                    username: "u".into(),
                    password: "p".into(),
                    expires_unix: 1,
                }),
            }),
        ),
        (
            "found",
            FrameKind::Response,
            control::encode(&Response::Found {
                peer,
                record: record.clone(),
            }),
        ),
        (
            "notfound",
            FrameKind::Response,
            control::encode(&Response::NotFound { peer: me }),
        ),
        (
            "refused",
            FrameKind::Response,
            control::encode(&Response::Refused {
                code: RefusalCode::RateLimited,
                message: "slow down".into(),
            }),
        ),
        (
            "punch",
            FrameKind::Push,
            control::encode(&Push::PunchRequest { peer: me, record }),
        ),
    ]
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: seeds DIR");
    let out = Path::new(&out);
    let (_, peer) = peer_ids();
    let peer_text = peer.to_text();
    let v4 = addr("192.0.2.10:50000");

    // STUN and the demultiplexer.
    let request = stun::binding_request([5; 12]);
    let response4 = stun::answer_binding_request(&request, v4).unwrap();
    let response6 = stun::answer_binding_request(&request, addr("[2001:db8::10]:50001")).unwrap();
    let allocate = stun_message(
        ALLOCATE,
        MessageClass::Request,
        vec![RequestedTrasport::from(stun_rs::protocols::UDP).into()],
        None,
    );
    for (name, bytes) in [
        ("request", &request),
        ("response4", &response4),
        ("response6", &response6),
        ("allocate", &allocate),
    ] {
        write(out, "stun", name, bytes);
        write(out, "demux", name, bytes);
    }
    for (name, bytes) in checks() {
        write(out, "path_wire", name, &bytes);
        write(out, "demux", name, &bytes);
    }
    write(
        out,
        "demux",
        "quic-long",
        &[0xC3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0x40, 0x80],
    );
    write(out, "demux", "quic-short", &[0x41, 9, 9, 9, 9]);
    write(
        out,
        "demux",
        "channel",
        &channel_data::encode(0x4000, b"relayed"),
    );

    // Control messages, alone and framed on a stream (some frames split across chunks).
    let mut stream = Vec::new();
    for (i, (name, kind, bytes)) in control_messages().into_iter().enumerate() {
        write(out, "control", name, &bytes);
        let frame = control_stream::encode_frame(kind, i as u32 + 1, &bytes);
        write(out, "control_stream", name, &record(0, &frame));
        stream.extend_from_slice(&frame);
    }
    let split: Vec<u8> = stream
        .chunks(37)
        .flat_map(|chunk| record(0, chunk))
        .collect();
    write(out, "control_stream", "all-split", &split);

    // Framed stdin and line mode.
    let mut frames = vec![64u8];
    frames.extend(encode_send_frame(1, &peer_text, b"hello"));
    frames.extend(encode_frame(
        FRAME_COMMAND,
        format!("send {peer_text} hi").as_bytes(),
    ));
    frames.extend(encode_frame(FRAME_COMMAND, b"list"));
    frames.extend(encode_send_frame(2, &peer_text, &[7; 100]));
    frames.extend(encode_frame(0x33, b"unknown"));
    frames.extend([0, 0, 0, 0]);
    frames.extend(encode_send_frame(3, "not-a-peer", b"x"));
    write(out, "app_frames", "mixed", &frames);
    let mut big = vec![255u8];
    big.extend(encode_send_frame(9, &peer_text, &[1; 300]));
    big.extend(encode_frame(
        FRAME_COMMAND,
        format!("connect {peer_text}").as_bytes(),
    ));
    write(out, "app_frames", "default-limit", &big);
    let lines = format!(
        "send {peer_text} hello there\nconnect {peer_text}\r\ndisconnect {peer_text}\nlist\nid\nhelp\nquit\nexit\nbogus\n  send\n"
    );
    write(out, "app_lines", "all", lines.as_bytes());

    // TURN over a stream: STUN messages and padded ChannelData, in chunks.
    let mut turn_stream = vec![0x02, 0x00];
    for chunk in [
        &allocate[..],
        &pad_channel_data(channel_data::encode(0x4001, b"abcde")),
        &request,
    ] {
        turn_stream.extend(record(0, chunk));
    }
    write(out, "turn_stream", "mixed", &turn_stream);
    let mut whole = vec![0xFF, 0xFF];
    let mut joined = allocate.clone();
    joined.extend(pad_channel_data(channel_data::encode(0x4FFF, &[0; 61])));
    joined.extend(&response4);
    whole.extend(record(0, &joined));
    write(out, "turn_stream", "joined", &whole);

    turn_seeds(out);
}

fn turn_seeds(out: &Path) {
    // The server: see fuzz_targets/turn_server.rs (secret "fuzz-secret", unix 1,700,000,000).
    let secret = p2pnat_proto::turn::credentials::SharedSecret::new(b"fuzz-secret").unwrap();
    let issued = secret.issue("alice", 1_700_000_000, 86_400);
    let server_key = key(&issued.username, &issued.password);
    let auth = |mut attributes: Vec<StunAttribute>| {
        attributes.push(UserName::new(&issued.username).unwrap().into());
        attributes.push(Realm::new("p2pnat").unwrap().into());
        attributes.push(Nonce::new("x".repeat(36)).unwrap().into());
        attributes
    };
    let udp = || -> StunAttribute { RequestedTrasport::from(stun_rs::protocols::UDP).into() };
    let peer = addr("203.0.113.5:7000");
    let peer_attr = || -> StunAttribute { XorPeerAddress::from(peer).into() };
    let request = |method, attributes| {
        stun_message(
            method,
            MessageClass::Request,
            auth(attributes),
            Some(&server_key),
        )
    };
    let with_client = |client: u8, bytes: &[u8]| [&[client][..], bytes].concat();
    let mut relay_body = vec![0, 0, 5];
    relay_body.extend(7000u16.to_be_bytes());
    relay_body.extend(b"from the peer");
    let steps: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "allocate-401",
            0,
            with_client(
                0,
                &stun_message(ALLOCATE, MessageClass::Request, vec![udp()], None),
            ),
        ),
        (
            "allocate",
            0,
            with_client(
                0,
                &request(ALLOCATE, vec![udp(), LifeTime::new(600).into()]),
            ),
        ),
        (
            "permission",
            0,
            with_client(0, &request(CREATE_PERMMISSION, vec![peer_attr()])),
        ),
        (
            "channel-bind",
            1,
            with_client(
                0,
                &request(
                    CHANNEL_BIND,
                    vec![ChannelNumber::new(0x4001).into(), peer_attr()],
                ),
            ),
        ),
        (
            "send",
            0,
            with_client(
                0,
                &stun_message(
                    SEND,
                    MessageClass::Indication,
                    vec![peer_attr(), Data::new(b"hello").into()],
                    None,
                ),
            ),
        ),
        (
            "channel-data",
            2,
            with_client(0, &channel_data::encode(0x4001, b"hi there")),
        ),
        ("relay", 3, with_client(0, &relay_body)),
        ("relay-into", 4, with_client(0, &relay_body)),
        (
            "binding",
            0,
            with_client(3, &stun::binding_request([4; 12])),
        ),
        (
            "refresh",
            0,
            with_client(0, &request(REFRESH, vec![LifeTime::new(1200).into()])),
        ),
        (
            "tcp-allocate-401",
            0,
            with_client(
                1,
                &stun_message(ALLOCATE, MessageClass::Request, vec![udp()], None),
            ),
        ),
        (
            "tcp-allocate",
            0,
            with_client(1, &request(ALLOCATE, vec![udp()])),
        ),
        ("time", 5, vec![0x10, 0x00]),
        (
            "delete",
            0,
            with_client(0, &request(REFRESH, vec![LifeTime::new(0).into()])),
        ),
        ("close", 6, vec![1]),
        ("late-bind", 7, vec![0, 3]),
    ];
    let mut sequence = vec![0x01];
    for (name, op, payload) in &steps {
        write(
            out,
            "turn_server",
            name,
            &[&[0x01][..], &record(*op, payload)].concat(),
        );
        sequence.extend(record(*op, payload));
    }
    write(out, "turn_server", "exchange", &sequence);

    // The client: see fuzz_targets/turn_client.rs (its username, password and realm).
    let client_key = key("1700086400:alice", "fuzz-password");
    let response =
        |method, class, attributes| stun_message(method, class, attributes, Some(&client_key));
    let success = MessageClass::SuccessResponse;
    let error = MessageClass::ErrorResponse;
    let peer_bytes = [0u8, 5, 0x1B, 0x58];
    let steps: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "401",
            0,
            with_client(
                0,
                &stun_message(
                    ALLOCATE,
                    error,
                    vec![
                        ErrorCode::from(stun_rs::ErrorCode::new(401, "Unauthorized").unwrap())
                            .into(),
                        Realm::new("p2pnat").unwrap().into(),
                        Nonce::new("p2pn0000000000000001abcdefabcdefabcd")
                            .unwrap()
                            .into(),
                    ],
                    None,
                ),
            ),
        ),
        (
            "allocated",
            0,
            with_client(
                0,
                &response(
                    ALLOCATE,
                    success,
                    vec![
                        XorRelayedAddress::from(addr("198.51.100.1:40001")).into(),
                        XorMappedAddress::from(addr("192.0.2.10:50000")).into(),
                        LifeTime::new(600).into(),
                    ],
                ),
            ),
        ),
        ("permit", 4, with_client(0, &peer_bytes)),
        (
            "permitted",
            0,
            with_client(0, &response(CREATE_PERMMISSION, success, vec![])),
        ),
        ("bind", 5, with_client(0, &peer_bytes)),
        (
            "bound",
            0,
            with_client(0, &response(CHANNEL_BIND, success, vec![])),
        ),
        (
            "data",
            1,
            with_client(
                0xFF,
                &stun_message(
                    DATA,
                    MessageClass::Indication,
                    vec![peer_attr(), Data::new(b"hello").into()],
                    None,
                ),
            ),
        ),
        (
            "channel",
            2,
            with_client(0xFF, &channel_data::encode(0x4000, b"over the channel")),
        ),
        (
            "send",
            6,
            with_client(0, &[&peer_bytes[..], b"payload"].concat()),
        ),
        ("time", 3, vec![0xFF, 0x0A]),
        (
            "refreshed",
            0,
            with_client(
                0,
                &response(REFRESH, success, vec![LifeTime::new(600).into()]),
            ),
        ),
        (
            "stale",
            0,
            with_client(
                0,
                &response(
                    REFRESH,
                    error,
                    vec![
                        ErrorCode::from(stun_rs::ErrorCode::new(438, "Stale Nonce").unwrap())
                            .into(),
                        Nonce::new("p2pn0000000000000002abcdefabcdefabcd")
                            .unwrap()
                            .into(),
                    ],
                ),
            ),
        ),
        (
            "quota",
            0,
            with_client(
                1,
                &response(
                    ALLOCATE,
                    error,
                    vec![ErrorCode::from(
                        stun_rs::ErrorCode::new(486, "Allocation Quota Reached").unwrap(),
                    )
                    .into()],
                ),
            ),
        ),
        ("credentials", 7, with_client(1, b"fuzz-password")),
        ("close", 7, vec![0]),
    ];
    let mut sequence = Vec::new();
    for (name, op, payload) in &steps {
        write(out, "turn_client", name, &record(*op, payload));
        sequence.extend(record(*op, payload));
    }
    write(out, "turn_client", "exchange", &sequence);
}
