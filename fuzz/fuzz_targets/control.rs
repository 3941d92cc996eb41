//! Control messages (`control::decode`) of every kind: Request, Response, Push. Invariants:
//! nothing above `MAX_CONTROL_MESSAGE` is decoded; a decoded message re-encodes to at most the
//! input's length and decodes back to itself (decode(encode(x)) == x).
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use p2pnat_proto::control::{self, Push, Request, Response, MAX_CONTROL_MESSAGE};

fn check<T: bincode::Encode + bincode::Decode<()> + PartialEq + Debug>(data: &[u8]) {
    if let Ok(message) = control::decode::<T>(data) {
        assert!(data.len() <= MAX_CONTROL_MESSAGE);
        let encoded = control::encode(&message);
        assert!(
            encoded.len() <= data.len(),
            "{} bytes re-encoded to {}",
            data.len(),
            encoded.len()
        );
        let back: T = control::decode(&encoded).expect("an encoded message decodes");
        assert_eq!(back, message);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Request>(data);
    check::<Response>(data);
    check::<Push>(data);
});
