//! The hot-path STUN codec of the TURN client, by hand: Send indications are encoded straight
//! into the caller's buffer and Data indications decoded borrowing the datagram, so relaying a
//! packet allocates nothing (stun-rs copies DATA into its own vector both ways). Requests and
//! responses, which are rare, go through stun-rs in `client.rs`.
//!
//! Every length is checked against the datagram before it is used to slice.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::TurnClientError;

/// The STUN magic cookie (RFC 8489).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Bytes of the STUN header.
pub const STUN_HEADER: usize = 20;
/// Message type of a Send indication (method 0x006, class indication).
pub const SEND_INDICATION: u16 = 0x0016;
/// Message type of a Data indication (method 0x007, class indication).
pub const DATA_INDICATION: u16 = 0x0017;
const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
const ATTR_DATA: u16 = 0x0013;

/// Bytes a ChannelData message adds to a payload (UDP: no padding).
pub const fn overhead_channel() -> usize {
    4
}

/// Bytes a Send indication adds to a payload, padding excluded (a payload whose length is not
/// a multiple of 4 gains up to 3 bytes of padding): header 20, XOR-PEER-ADDRESS 12 (IPv4 peer)
/// or 24 (IPv6 peer), DATA header 4. So 36 or 48.
pub const fn overhead_send_indication(peer_is_ipv6: bool) -> usize {
    STUN_HEADER + if peer_is_ipv6 { 24 } else { 12 } + 4
}

/// Largest payload [`super::TurnClient::send_to`] accepts: it fits both a ChannelData length
/// field and a Send indication's 16-bit message length with an IPv6 peer, padding included.
pub const MAX_PAYLOAD: usize = 65_504;

/// Largest payload that fits an IP packet of `path_mtu` bytes to the TURN server whatever the
/// client chooses (a Send indication, the larger framing), padding included.
/// `server_is_ipv6` picks the IP header (40 or 20 bytes), 8 more for UDP.
pub const fn max_payload_for_mtu(
    path_mtu: usize,
    server_is_ipv6: bool,
    peer_is_ipv6: bool,
) -> usize {
    let ip_udp = if server_is_ipv6 { 48 } else { 28 };
    let overhead = ip_udp + overhead_send_indication(peer_is_ipv6);
    if path_mtu <= overhead {
        return 0;
    }
    let room = (path_mtu - overhead) & !3;
    if room > MAX_PAYLOAD {
        MAX_PAYLOAD
    } else {
        room
    }
}

/// The fixed part of a STUN message, checked: two zero bits, the magic cookie, a length that
/// is a multiple of 4 and fits the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub msg_type: u16,
    /// Bytes of attributes after the header.
    pub length: usize,
    pub transaction_id: [u8; 12],
}

/// Reads and checks a STUN header.
pub fn peek_header(datagram: &[u8]) -> Result<Header, TurnClientError> {
    if datagram.len() < STUN_HEADER {
        return Err(TurnClientError::Malformed("shorter than a STUN header"));
    }
    if datagram[0] & 0xC0 != 0 {
        return Err(TurnClientError::Malformed("first two bits not zero"));
    }
    if u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]) != MAGIC_COOKIE {
        return Err(TurnClientError::Malformed("no magic cookie"));
    }
    let msg_type = u16::from_be_bytes([datagram[0], datagram[1]]);
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if length % 4 != 0 {
        return Err(TurnClientError::Malformed("length not a multiple of 4"));
    }
    if STUN_HEADER + length > datagram.len() {
        return Err(TurnClientError::Malformed("length exceeds the datagram"));
    }
    let mut transaction_id = [0u8; 12];
    transaction_id.copy_from_slice(&datagram[8..20]);
    Ok(Header {
        msg_type,
        length,
        transaction_id,
    })
}

/// The class bits of a message type: 0 request, 1 indication, 2 success, 3 error.
pub fn class_of(msg_type: u16) -> u8 {
    (((msg_type >> 7) & 0x2) | ((msg_type >> 4) & 0x1)) as u8
}

/// Decodes a Data indication's XOR-PEER-ADDRESS and DATA, the payload borrowing `datagram`.
/// `header` is `peek_header(datagram)`.
pub fn parse_data_indication<'a>(
    datagram: &'a [u8],
    header: &Header,
) -> Result<(SocketAddr, &'a [u8]), TurnClientError> {
    let attributes = &datagram[STUN_HEADER..STUN_HEADER + header.length];
    let mut peer = None;
    let mut data = None;
    let mut at = 0;
    while at < attributes.len() {
        if attributes.len() - at < 4 {
            return Err(TurnClientError::Malformed("truncated attribute header"));
        }
        let kind = u16::from_be_bytes([attributes[at], attributes[at + 1]]);
        let len = usize::from(u16::from_be_bytes([attributes[at + 2], attributes[at + 3]]));
        let start = at + 4;
        if len > attributes.len() - start {
            return Err(TurnClientError::Malformed("attribute exceeds the message"));
        }
        let value = &attributes[start..start + len];
        match kind {
            ATTR_XOR_PEER_ADDRESS if peer.is_none() => {
                peer = Some(decode_xor_address(value, &header.transaction_id)?)
            }
            ATTR_DATA if data.is_none() => data = Some(value),
            _ => {}
        }
        // Padding to 4; the message length is a multiple of 4, so this cannot overflow it
        // by more than the final padding, which `min` absorbs.
        at = (start + len).div_ceil(4) * 4;
        at = at.min(attributes.len());
    }
    match (peer, data) {
        (Some(peer), Some(data)) => Ok((peer, data)),
        (None, _) => Err(TurnClientError::Malformed(
            "Data indication without XOR-PEER-ADDRESS",
        )),
        (_, None) => Err(TurnClientError::Malformed("Data indication without DATA")),
    }
}

/// Decodes an XOR-PEER-ADDRESS (or any XOR address) value.
pub fn decode_xor_address(value: &[u8], txid: &[u8; 12]) -> Result<SocketAddr, TurnClientError> {
    if value.len() < 4 {
        return Err(TurnClientError::Malformed("short XOR address"));
    }
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let mask = xor_mask(txid);
    match value[1] {
        0x01 if value.len() == 8 => {
            let mut octets = [0u8; 4];
            for (i, octet) in octets.iter_mut().enumerate() {
                *octet = value[4 + i] ^ mask[i];
            }
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
        }
        0x02 if value.len() == 20 => {
            let mut octets = [0u8; 16];
            for (i, octet) in octets.iter_mut().enumerate() {
                *octet = value[4 + i] ^ mask[i];
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => Err(TurnClientError::Malformed(
            "bad XOR address family or length",
        )),
    }
}

fn xor_mask(txid: &[u8; 12]) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(txid);
    mask
}

/// Appends a Send indication carrying `payload` to `peer` to `out`.
///
/// # Panics
/// If `payload` is longer than [`MAX_PAYLOAD`] (the caller checks).
pub fn encode_send_indication(
    txid: &[u8; 12],
    peer: SocketAddr,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    assert!(payload.len() <= MAX_PAYLOAD);
    let padding = (4 - payload.len() % 4) % 4;
    let address_len: u16 = if peer.is_ipv6() { 20 } else { 8 };
    // Fits: MAX_PAYLOAD + 3 + 24 + 4 <= 65,535.
    let length = 4 + usize::from(address_len) + 4 + payload.len() + padding;
    out.reserve(STUN_HEADER + length);
    out.extend_from_slice(&SEND_INDICATION.to_be_bytes());
    out.extend_from_slice(&(length as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
    out.extend_from_slice(&ATTR_XOR_PEER_ADDRESS.to_be_bytes());
    out.extend_from_slice(&address_len.to_be_bytes());
    let mask = xor_mask(txid);
    out.push(0);
    match peer.ip() {
        IpAddr::V4(ip) => {
            out.push(0x01);
            out.extend_from_slice(&(peer.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
            out.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
        IpAddr::V6(ip) => {
            out.push(0x02);
            out.extend_from_slice(&(peer.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
            out.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
    out.extend_from_slice(&ATTR_DATA.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&[0u8; 3][..padding]);
}

/// SplitMix64: the transaction-ID generator, seeded by the caller (the machine draws no
/// randomness of its own).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Twelve bytes for a STUN transaction ID.
    pub fn transaction_id(&mut self) -> [u8; 12] {
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        id[8..].copy_from_slice(&self.next_u64().to_le_bytes()[..4]);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_indication_overhead_and_round_trip_as_data() {
        for (peer, overhead) in [
            ("192.0.2.9:4000".parse::<SocketAddr>().unwrap(), 36),
            ("[2001:db8::9]:4000".parse().unwrap(), 48),
        ] {
            let mut out = Vec::new();
            encode_send_indication(&[3; 12], peer, b"abcd", &mut out);
            assert_eq!(out.len(), overhead + 4);
            assert_eq!(overhead_send_indication(peer.is_ipv6()), overhead);
            // The same layout with the Data type decodes back.
            out[1] = 0x17;
            let header = peek_header(&out).unwrap();
            assert_eq!(class_of(header.msg_type), 1);
            assert_eq!(
                parse_data_indication(&out, &header).unwrap(),
                (peer, &b"abcd"[..])
            );
        }
    }

    #[test]
    fn mtu_sizing() {
        assert_eq!(max_payload_for_mtu(1280, false, false), 1280 - 28 - 36);
        assert_eq!(max_payload_for_mtu(1281, false, false), 1280 - 28 - 36);
        assert_eq!(max_payload_for_mtu(1280, true, true) % 4, 0);
        assert_eq!(max_payload_for_mtu(10, false, false), 0);
        assert_eq!(max_payload_for_mtu(1 << 20, false, false), MAX_PAYLOAD);
    }

    #[test]
    fn classes() {
        assert_eq!(class_of(0x0003), 0);
        assert_eq!(class_of(0x0017), 1);
        assert_eq!(class_of(0x0103), 2);
        assert_eq!(class_of(0x0113), 3);
    }
}
