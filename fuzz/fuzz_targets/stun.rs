//! The STUN Binding codec (`stun`): answering requests and reading responses from arbitrary
//! datagrams. Invariants: nothing above `MAX_STUN_MESSAGE` is decoded; an answered request
//! yields a response that parses back with the request's transaction ID and the source address;
//! a parsed response carries the datagram's transaction ID.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use p2pnat_proto::stun::{self, StunError, MAX_STUN_MESSAGE};

fuzz_target!(|data: &[u8]| {
    let source: SocketAddr = if data.len().is_multiple_of(2) {
        "192.0.2.7:40000".parse().unwrap()
    } else {
        "[2001:db8::5]:9".parse().unwrap()
    };
    match stun::answer_binding_request(data, source) {
        Ok(answer) => {
            assert!(data.len() <= MAX_STUN_MESSAGE);
            let response = stun::parse_binding_response(&answer).expect("our answer parses");
            assert_eq!(response.mapped, source);
            assert_eq!(response.transaction_id[..], data[8..20]);
        }
        Err(StunError::TooLarge(n)) => assert!(n > MAX_STUN_MESSAGE && n == data.len()),
        Err(_) => {}
    }
    if let Ok(response) = stun::parse_binding_response(data) {
        assert!(data.len() <= MAX_STUN_MESSAGE);
        assert_eq!(response.transaction_id[..], data[8..20]);
    }
    // Round trip of the request builder, transaction ID taken from the input.
    if let Some(id) = data.get(..12) {
        let id: [u8; 12] = id.try_into().unwrap();
        let request = stun::binding_request(id);
        let answer = stun::answer_binding_request(&request, source).expect("own request");
        assert_eq!(
            stun::parse_binding_response(&answer)
                .unwrap()
                .transaction_id,
            id
        );
    }
});
