//! Path checks and probes (`path::wire::CheckDatagram`): Check, Reply, SweepOffer, SweepGo.
//! Invariants: a decoded datagram re-encodes (under any key) to the same length and the same
//! bytes but for the flag bits it ignores and the tag, and decodes back to itself; `verify`
//! never panics and accepts the re-encoded datagram.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use p2pnat_proto::path::auth::{OwnSecret, PairKey, TAG_LEN};
use p2pnat_proto::path::wire::CheckDatagram;

/// The pair key the seeds are tagged with (`examples/seeds.rs`).
fn key() -> &'static PairKey {
    static KEY: OnceLock<PairKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let peer = OwnSecret::from_seed(&[2; 32]).id();
        OwnSecret::from_seed(&[1; 32]).pair_key(&peer).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    let _ = CheckDatagram::verify(data, key);
    let Ok(datagram) = CheckDatagram::decode(data) else {
        return;
    };
    let encoded = datagram.encode(key);
    assert_eq!(encoded.len(), data.len(), "{datagram:?}");
    let body = data.len() - TAG_LEN;
    assert_eq!(encoded[..6], data[..6]);
    assert_eq!(encoded[7..body], data[7..body]);
    assert_eq!(CheckDatagram::decode(&encoded).unwrap(), datagram);
    assert!(CheckDatagram::verify(&encoded, key));
});
