//! Encoding helpers of the TURN server: STUN responses through stun-rs, and the two messages on
//! the data path (Data indication, ChannelData) by hand, so relaying copies the payload once.

use std::net::{IpAddr, SocketAddr};

use stun_rs::attributes::stun::{ErrorCode, MessageIntegrity, Nonce, Realm};
use stun_rs::{
    HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, MessageMethod,
    StunAttribute, StunMessage, StunMessageBuilder, TransactionId, MAGIC_COOKIE,
};

/// Largest STUN message the server decodes: a Send indication carrying a full UDP payload.
pub const MAX_STUN_DATAGRAM: usize = 65_535;
/// Largest response the server builds (responses carry a handful of short attributes).
const MAX_RESPONSE: usize = 512;

/// STUN attribute types the server understands in requests (comprehension-required range).
/// Anything else below 0x8000 gets 420 Unknown Attribute.
pub const UNDERSTOOD: &[u16] = &[
    0x0006, // USERNAME
    0x0008, // MESSAGE-INTEGRITY
    0x000C, // CHANNEL-NUMBER
    0x000D, // LIFETIME
    0x0012, // XOR-PEER-ADDRESS
    0x0013, // DATA
    0x0014, // REALM
    0x0015, // NONCE
    0x0017, // REQUESTED-ADDRESS-FAMILY
    0x0018, // EVEN-PORT
    0x0019, // REQUESTED-TRANSPORT
    0x0022, // RESERVATION-TOKEN
];

/// DONT-FRAGMENT: understood (and ignored) in Send indications only; in an Allocate it is an
/// unknown attribute, as RFC 8656 section 7.2 asks of a server that cannot set DF.
pub const DONT_FRAGMENT: u16 = 0x001A;

/// Decodes a STUN message without checking integrity (`None` on any malformation).
pub fn decode(datagram: &[u8]) -> Option<StunMessage> {
    if datagram.len() > MAX_STUN_DATAGRAM {
        return None;
    }
    MessageDecoderBuilder::default()
        .build()
        .decode(datagram)
        .ok()
        .map(|(message, _)| message)
}

/// Whether MESSAGE-INTEGRITY of `datagram` verifies with `key` (stun-rs decodes it again with
/// the key and validation on).
pub fn integrity_ok(datagram: &[u8], key: &HMACKey) -> bool {
    let context = stun_rs::DecoderContextBuilder::default()
        .with_key(key.clone())
        .with_validation()
        .build();
    MessageDecoderBuilder::default()
        .with_context(context)
        .build()
        .decode(datagram)
        .is_ok()
}

/// Unknown comprehension-required attribute types of `message` (at most 16 listed).
pub fn unknown_required(message: &StunMessage, allow_dont_fragment: bool) -> Vec<u16> {
    message
        .attributes()
        .iter()
        .map(|a| a.attribute_type().as_u16())
        .filter(|t| *t < 0x8000 && !UNDERSTOOD.contains(t))
        .filter(|t| !(allow_dont_fragment && *t == DONT_FRAGMENT))
        .take(16)
        .collect()
}

fn encode(message: &StunMessage) -> Vec<u8> {
    let mut buffer = vec![0u8; MAX_RESPONSE];
    match MessageEncoderBuilder::default()
        .build()
        .encode(&mut buffer, message)
    {
        Ok(size) => {
            buffer.truncate(size);
            buffer
        }
        // Only attributes built by this module go in, all short: cannot happen; an empty
        // datagram is never sent (the caller drops it).
        Err(_) => Vec::new(),
    }
}

/// A response to `method`/`transaction`, with `attributes` and, when `key` is given,
/// MESSAGE-INTEGRITY last.
pub fn response(
    method: MessageMethod,
    class: MessageClass,
    transaction: TransactionId,
    attributes: Vec<StunAttribute>,
    key: Option<&HMACKey>,
) -> Vec<u8> {
    let mut builder = StunMessageBuilder::new(method, class).with_transaction_id(transaction);
    for attribute in attributes {
        builder = builder.with_attribute(attribute);
    }
    if let Some(key) = key {
        builder = builder.with_attribute(MessageIntegrity::new(key.clone()));
    }
    encode(&builder.build())
}

/// An error response with `code` and a short reason, then `extra`, then MESSAGE-INTEGRITY when
/// `key` is given.
pub fn error(
    method: MessageMethod,
    transaction: TransactionId,
    code: u16,
    extra: Vec<StunAttribute>,
    key: Option<&HMACKey>,
) -> Vec<u8> {
    let mut attributes = Vec::with_capacity(extra.len() + 1);
    if let Ok(code) = stun_rs::ErrorCode::new(code, reason(code)) {
        attributes.push(ErrorCode::new(code).into());
    }
    attributes.extend(extra);
    response(
        method,
        MessageClass::ErrorResponse,
        transaction,
        attributes,
        key,
    )
}

/// REALM and NONCE, for 401 and 438.
pub fn challenge(realm: &str, nonce: &str) -> Vec<StunAttribute> {
    let mut attributes = Vec::with_capacity(2);
    if let Ok(realm) = Realm::new(realm) {
        attributes.push(realm.into());
    }
    if let Ok(nonce) = Nonce::new(nonce) {
        attributes.push(nonce.into());
    }
    attributes
}

/// Reason phrases are kept short: a 401 must stay small (amplification).
fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "",
    }
}

/// Appends an XOR-encoded address attribute (RFC 8489 section 14.2).
fn put_xor_address(out: &mut Vec<u8>, attr_type: u16, addr: SocketAddr, transaction: &[u8; 12]) {
    let cookie = MAGIC_COOKIE.as_u32().to_be_bytes();
    let port = addr.port() ^ 0x2112;
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&attr_type.to_be_bytes());
            out.extend_from_slice(&8u16.to_be_bytes());
            out.extend_from_slice(&[0, 0x01]);
            out.extend_from_slice(&port.to_be_bytes());
            let octets = ip.octets();
            out.extend((0..4).map(|i| octets[i] ^ cookie[i]));
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&attr_type.to_be_bytes());
            out.extend_from_slice(&20u16.to_be_bytes());
            out.extend_from_slice(&[0, 0x02]);
            out.extend_from_slice(&port.to_be_bytes());
            let octets = ip.octets();
            let mask: Vec<u8> = cookie.iter().chain(transaction.iter()).copied().collect();
            out.extend((0..16).map(|i| octets[i] ^ mask[i]));
        }
    }
}

/// Bytes a Data indication adds around its payload (header, XOR-PEER-ADDRESS, DATA header and
/// at most 3 bytes of padding).
pub const DATA_INDICATION_OVERHEAD: usize = 20 + 24 + 4 + 3;

/// A Data indication carrying `data` from `peer` (`None` if it would not fit a UDP datagram).
pub fn data_indication(transaction: [u8; 12], peer: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    if data.len() + DATA_INDICATION_OVERHEAD > MAX_STUN_DATAGRAM {
        return None;
    }
    let padding = (4 - data.len() % 4) % 4;
    let mut out = Vec::with_capacity(DATA_INDICATION_OVERHEAD + data.len());
    out.extend_from_slice(&0x0017u16.to_be_bytes()); // Data indication
    out.extend_from_slice(&[0, 0]); // length, set below
    out.extend_from_slice(&MAGIC_COOKIE.as_u32().to_be_bytes());
    out.extend_from_slice(&transaction);
    put_xor_address(&mut out, 0x0012, peer, &transaction);
    out.extend_from_slice(&0x0013u16.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, padding));
    let length = (out.len() - 20) as u16;
    out[2..4].copy_from_slice(&length.to_be_bytes());
    Some(out)
}

/// Highest channel number the server binds: RFC 5766's range (0x4000-0x7FFF), which older
/// clients still use (coturn 4.6's `turnutils_uclient` draws from it). RFC 8656 narrowed it to
/// 0x4FFF so that ChannelData cannot be mistaken for QUIC on a shared port (RFC 9443); the
/// server's listener carries TURN only, so the wider range is unambiguous here. Clients that
/// share a port with QUIC (ours) bind 0x4000-0x4FFF.
pub const LEGACY_CHANNEL_MAX: u16 = 0x7FFF;

/// Decodes ChannelData with a channel in 0x4000-0x7FFF (UDP: padding after the length is
/// ignored).
pub fn decode_channel_data(datagram: &[u8]) -> Option<(u16, &[u8])> {
    let header = datagram.get(..4)?;
    let channel = u16::from_be_bytes([header[0], header[1]]);
    if !(0x4000..=LEGACY_CHANNEL_MAX).contains(&channel) {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    Some((channel, datagram.get(4..4 + length)?))
}

/// Appends ChannelData (UDP form, no padding) to `out`. `data` is at most 65,535 bytes
/// (checked by the caller).
pub fn write_channel_data(channel: u16, data: &[u8], out: &mut Vec<u8>) {
    out.reserve(4 + data.len());
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}
