//! Minimal hand-encoded STUN (RFC 8489) Binding requests and responses, IPv4 only.
//!
//! The lab's self-check only needs a Binding request from the client and a Binding success
//! response carrying XOR-MAPPED-ADDRESS from the responder, so that is all this module speaks.
//! Decoding never panics on arbitrary input; it returns `None` for anything it does not accept.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// The fixed magic cookie of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Message type of a Binding request.
pub const BINDING_REQUEST: u16 = 0x0001;
/// Message type of a Binding success response.
pub const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const HEADER_LEN: usize = 20;

/// A 96-bit STUN transaction ID.
pub type TransactionId = [u8; 12];

/// Encodes a Binding request with no attributes.
pub fn binding_request(txid: &TransactionId) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HEADER_LEN);
    msg.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    msg.extend_from_slice(&0u16.to_be_bytes());
    msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    msg.extend_from_slice(txid);
    msg
}

/// Encodes a Binding success response telling the client it was seen from `mapped`.
pub fn binding_success(txid: &TransactionId, mapped: SocketAddrV4) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HEADER_LEN + 12);
    msg.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    msg.extend_from_slice(&12u16.to_be_bytes());
    msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    msg.extend_from_slice(txid);
    msg.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    msg.extend_from_slice(&8u16.to_be_bytes());
    msg.push(0);
    msg.push(0x01); // family IPv4
    let xport = mapped.port() ^ (MAGIC_COOKIE >> 16) as u16;
    msg.extend_from_slice(&xport.to_be_bytes());
    let xaddr = u32::from(*mapped.ip()) ^ MAGIC_COOKIE;
    msg.extend_from_slice(&xaddr.to_be_bytes());
    msg
}

/// Parses the 20-byte header; returns (type, body length, transaction ID) if `msg` is a
/// well-formed STUN message (leading bits 00, magic cookie, length matching and 4-aligned).
fn parse_header(msg: &[u8]) -> Option<(u16, usize, TransactionId)> {
    if msg.len() < HEADER_LEN || msg[0] & 0xC0 != 0 {
        return None;
    }
    let msg_type = u16::from_be_bytes([msg[0], msg[1]]);
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    let cookie = u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]);
    if cookie != MAGIC_COOKIE || len % 4 != 0 || HEADER_LEN + len != msg.len() {
        return None;
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&msg[8..20]);
    Some((msg_type, len, txid))
}

/// If `msg` is a Binding request, returns its transaction ID.
pub fn parse_binding_request(msg: &[u8]) -> Option<TransactionId> {
    match parse_header(msg)? {
        (BINDING_REQUEST, _, txid) => Some(txid),
        _ => None,
    }
}

/// If `msg` is a Binding success response for `expected_txid`, returns the mapped address it
/// carries (XOR-MAPPED-ADDRESS preferred, MAPPED-ADDRESS accepted). IPv6 addresses are ignored.
pub fn parse_binding_success(msg: &[u8], expected_txid: &TransactionId) -> Option<SocketAddr> {
    let (msg_type, len, txid) = parse_header(msg)?;
    if msg_type != BINDING_SUCCESS || &txid != expected_txid {
        return None;
    }
    let mut rest = &msg[HEADER_LEN..HEADER_LEN + len];
    let mut plain = None;
    while rest.len() >= 4 {
        let attr_type = u16::from_be_bytes([rest[0], rest[1]]);
        let attr_len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let padded = attr_len.div_ceil(4) * 4;
        if rest.len() < 4 + padded {
            return None;
        }
        let value = &rest[4..4 + attr_len];
        match attr_type {
            ATTR_XOR_MAPPED_ADDRESS => {
                if let Some((port, ip)) = ipv4_value(value) {
                    let port = port ^ (MAGIC_COOKIE >> 16) as u16;
                    let ip = Ipv4Addr::from(ip ^ MAGIC_COOKIE);
                    return Some(SocketAddr::V4(SocketAddrV4::new(ip, port)));
                }
            }
            ATTR_MAPPED_ADDRESS => {
                if let Some((port, ip)) = ipv4_value(value) {
                    plain = Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)));
                }
            }
            _ => {}
        }
        rest = &rest[4 + padded..];
    }
    plain
}

/// Splits an IPv4 (MAPPED|XOR-MAPPED)-ADDRESS value into (port, address) as raw integers.
fn ipv4_value(value: &[u8]) -> Option<(u16, u32)> {
    if value.len() != 8 || value[1] != 0x01 {
        return None;
    }
    let port = u16::from_be_bytes([value[2], value[3]]);
    let ip = u32::from_be_bytes([value[4], value[5], value[6], value[7]]);
    Some((port, ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 section 2.2 (sample IPv4 response): transaction ID and the XOR-MAPPED-ADDRESS
    /// attribute bytes, which encode 192.0.2.1:32853.
    const RFC5769_TXID: TransactionId = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    #[test]
    fn decodes_rfc5769_xor_mapped_address() {
        let mut msg = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        msg.extend_from_slice(&RFC5769_TXID);
        msg.extend_from_slice(&[
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
        ]);
        let mapped = parse_binding_success(&msg, &RFC5769_TXID).unwrap();
        assert_eq!(mapped, "192.0.2.1:32853".parse().unwrap());
    }

    #[test]
    fn encodes_what_it_decodes() {
        let txid = [7u8; 12];
        let addr: SocketAddrV4 = "203.0.113.77:4242".parse().unwrap();
        let resp = binding_success(&txid, addr);
        assert_eq!(
            parse_binding_success(&resp, &txid),
            Some(SocketAddr::V4(addr))
        );
        assert_eq!(parse_binding_success(&resp, &[8u8; 12]), None, "wrong txid");
        let req = binding_request(&txid);
        assert_eq!(parse_binding_request(&req), Some(txid));
        assert_eq!(
            parse_binding_request(&resp),
            None,
            "a response is not a request"
        );
        assert_eq!(
            parse_binding_success(&req, &txid),
            None,
            "a request is not a response"
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        let txid = [1u8; 12];
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(parse_binding_success(&junk, &txid), None);
        }
        // Correct header but an attribute longer than the message.
        let mut msg = binding_success(&txid, "192.0.2.1:1".parse().unwrap());
        msg[22] = 0x00;
        msg[23] = 0x40;
        assert_eq!(parse_binding_success(&msg, &txid), None);
        // QUIC long header (first bit set) is not STUN.
        let mut quic = binding_request(&txid);
        quic[0] = 0xC0;
        assert_eq!(parse_binding_request(&quic), None);
    }
}
