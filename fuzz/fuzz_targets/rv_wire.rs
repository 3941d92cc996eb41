//! Control datagrams (`rv::wire`, docs/PROTOCOL.md section 4.1) into both machines: the
//! rendezvous's (`rv::server`: prescreen, handle, handle_verified, the signature check) and a
//! registered node's (`rv::client`). Invariants: nothing panics; a datagram that decodes is a
//! control datagram by `is_control`; a Hello decodes only at its exact length; whatever the
//! server answers a stranger with (a Cookie or an Unknown) is never larger than the datagram;
//! checked in a batch between two honest Registers (`verify_registers`), the honest ones pass
//! and the datagram passes whenever it passes alone.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use p2pnat_proto::rv::{client, server, wire};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let from: SocketAddr = "192.0.2.10:50000".parse().unwrap();
    let rendezvous: SocketAddr = "203.0.113.1:3478".parse().unwrap();
    if let Ok(datagram) = wire::decode(data) {
        assert!(wire::is_control(data));
        if matches!(datagram, wire::Datagram::Hello { .. }) {
            assert_eq!(data.len(), wire::HELLO_LEN);
        }
    }
    let mut machine = server::Server::new(Default::default(), [7; 32], now);
    let _ = machine.prescreen(now, from, data);
    let alone = server::verify_register(data);
    let [first, last] = honest_registers();
    let batch = server::verify_registers(&[first.as_slice(), data, last.as_slice()]);
    assert!(batch[0] && batch[2], "an honest Register refused beside {data:02x?}");
    assert!(batch[1] || !alone, "accepted alone, refused in a batch");
    let _ = machine.handle(now, from, data);
    while let Some(answer) = machine.poll_transmit() {
        assert!(
            answer.contents.len() <= data.len(),
            "{} for {}",
            answer.contents.len(),
            data.len()
        );
    }
    let _ = machine.handle_verified(now, from, data);
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let mut node = client::Client::new(Default::default(), key, rendezvous, [2; 32]);
    let _ = node.hello(now);
    let _ = node.handle_datagram(now, rendezvous, data);
    while node.poll_transmit().is_some() {}
    while node.poll_event().is_some() {}
});

/// Two Registers signed by their keys, as a node sends them (made once).
fn honest_registers() -> &'static [Vec<u8>; 2] {
    static MADE: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    MADE.get_or_init(|| [honest_register(3), honest_register(4)])
}

fn honest_register(seed: u8) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let peer = key.verifying_key().to_bytes();
    let body = p2pnat_proto::control::encode(&p2pnat_proto::control::Request::Lookup {
        peer: p2pnat_proto::PeerId(peer),
    });
    let mut bytes = wire::Builder::new(wire::KIND_REGISTER, &[seed; 8])
        .bytes(&[9; wire::COOKIE_LEN])
        .bytes(&peer)
        .bytes(&[0])
        .body(&body)
        .finish();
    let mut message = wire::SIGNATURE_DOMAIN.to_vec();
    message.extend_from_slice(&bytes);
    bytes.extend_from_slice(&key.sign(&message).to_bytes());
    bytes
}
