//! STUN Binding (RFC 8489) codec, sans-IO: the client builds requests and reads the mapped address
//! from responses; the server answers Binding requests with XOR-MAPPED-ADDRESS.
//!
//! Only the Binding method is supported. Messages are decoded by `stun-rs`, which checks lengths
//! before reading; a datagram larger than [`MAX_STUN_MESSAGE`] is refused before decoding.

use std::net::SocketAddr;

use stun_rs::attributes::stun::XorMappedAddress;
use stun_rs::methods::BINDING;
use stun_rs::{
    MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder, TransactionId,
};

/// Largest STUN message this codec decodes (a Binding request with padding fits in far less).
pub const MAX_STUN_MESSAGE: usize = 1024;

/// Why a STUN datagram was not usable.
#[derive(Debug, thiserror::Error)]
pub enum StunError {
    #[error("STUN message of {0} bytes exceeds the {MAX_STUN_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("malformed STUN message: {0}")]
    Malformed(String),
    #[error("STUN message is not a Binding {0}")]
    NotBinding(&'static str),
    #[error("Binding response has no XOR-MAPPED-ADDRESS")]
    NoMappedAddress,
}

/// A decoded Binding success response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingResponse {
    pub transaction_id: [u8; 12],
    pub mapped: SocketAddr,
}

fn decode(datagram: &[u8]) -> Result<stun_rs::StunMessage, StunError> {
    if datagram.len() > MAX_STUN_MESSAGE {
        return Err(StunError::TooLarge(datagram.len()));
    }
    let decoder = MessageDecoderBuilder::default().build();
    let (message, _) = decoder
        .decode(datagram)
        .map_err(|e| StunError::Malformed(format!("{e:?}")))?;
    Ok(message)
}

fn encode(message: &stun_rs::StunMessage) -> Vec<u8> {
    let mut buffer = vec![0u8; 256];
    let encoder = MessageEncoderBuilder::default().build();
    let size = encoder
        .encode(&mut buffer, message)
        .expect("a Binding message with one address attribute fits in 256 bytes");
    buffer.truncate(size);
    buffer
}

/// Builds a Binding request with the given transaction ID (the caller draws it at random).
pub fn binding_request(transaction_id: [u8; 12]) -> Vec<u8> {
    let message = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(TransactionId::from(transaction_id))
        .build();
    encode(&message)
}

/// Answers a Binding request from `source` with a success response carrying `source` as
/// XOR-MAPPED-ADDRESS. Any other message is an error (the caller logs and drops it).
pub fn answer_binding_request(datagram: &[u8], source: SocketAddr) -> Result<Vec<u8>, StunError> {
    let request = decode(datagram)?;
    if request.method() != BINDING || request.class() != MessageClass::Request {
        return Err(StunError::NotBinding("request"));
    }
    let response = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(*request.transaction_id())
        .with_attribute(XorMappedAddress::from(source))
        .build();
    Ok(encode(&response))
}

/// Reads a Binding success response.
pub fn parse_binding_response(datagram: &[u8]) -> Result<BindingResponse, StunError> {
    let response = decode(datagram)?;
    if response.method() != BINDING || response.class() != MessageClass::SuccessResponse {
        return Err(StunError::NotBinding("success response"));
    }
    let mapped = response
        .get::<XorMappedAddress>()
        .and_then(|attribute| attribute.as_xor_mapped_address().ok())
        .map(|address| *address.socket_address())
        .ok_or(StunError::NoMappedAddress)?;
    Ok(BindingResponse {
        transaction_id: *response.transaction_id().as_bytes(),
        mapped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demux::{classify, DatagramKind};

    #[test]
    fn request_answer_round_trip_reports_source() {
        let request = binding_request([7; 12]);
        assert_eq!(classify(&request), DatagramKind::Stun);
        let source: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let answer = answer_binding_request(&request, source).unwrap();
        assert_eq!(classify(&answer), DatagramKind::Stun);
        let response = parse_binding_response(&answer).unwrap();
        assert_eq!(response.transaction_id, [7; 12]);
        assert_eq!(response.mapped, source);
        let v6: SocketAddr = "[2001:db8::5]:9".parse().unwrap();
        let answer = answer_binding_request(&request, v6).unwrap();
        assert_eq!(parse_binding_response(&answer).unwrap().mapped, v6);
    }

    #[test]
    fn garbage_and_wrong_class_are_errors_not_panics() {
        let request = binding_request([1; 12]);
        assert!(parse_binding_response(&request).is_err());
        let source: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let answer = answer_binding_request(&request, source).unwrap();
        assert!(answer_binding_request(&answer, source).is_err());
        for len in 0..request.len() {
            assert!(answer_binding_request(&request[..len], source).is_err());
        }
        let mut corrupt = request.clone();
        corrupt[3] = 0xFF; // claims attributes that are not there
        assert!(answer_binding_request(&corrupt, source).is_err());
        assert!(matches!(
            answer_binding_request(&vec![0u8; 2000], source),
            Err(StunError::TooLarge(2000))
        ));
    }
}
