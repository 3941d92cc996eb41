//! The datagram demultiplexer (`demux::classify`) against an independent model of the table in
//! its documentation, then the decoder each kind is handed to on the node's socket.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use p2pnat_proto::demux::{classify, DatagramKind, PROJECT_MAGIC, STUN_MAGIC_COOKIE};
use p2pnat_proto::path::wire::CheckDatagram;
use p2pnat_proto::stun;

fn model(d: &[u8]) -> DatagramKind {
    match d.first().map(|b| b >> 6) {
        Some(0) if d.len() >= 20 && d[4..8] == STUN_MAGIC_COOKIE => DatagramKind::Stun,
        Some(2) if d.len() >= 5 && d[1..5] == PROJECT_MAGIC => DatagramKind::Project,
        Some(1 | 3) => DatagramKind::Quic,
        _ => DatagramKind::Garbage,
    }
}

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    assert_eq!(
        kind,
        model(data),
        "classify disagrees with the documented table"
    );
    match kind {
        DatagramKind::Stun => {
            let source: SocketAddr = "192.0.2.1:5000".parse().unwrap();
            let _ = stun::answer_binding_request(data, source);
            let _ = stun::parse_binding_response(data);
        }
        DatagramKind::Project => {
            let _ = CheckDatagram::decode(data);
        }
        DatagramKind::Quic | DatagramKind::Garbage => {}
    }
});
