//! TURN ChannelData framing (RFC 8656 section 12.4), which stun-rs does not provide.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Channel Number        |            Length             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! /                       Application Data                        /
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Channel numbers are 0x4000..=0x4FFF. Over UDP the datagram may carry padding after `Length`
//! bytes (it is ignored); over TCP/TLS the frame is padded to a multiple of 4. Lengths are
//! checked before anything is sliced; nothing is allocated from an unchecked length.

/// Lowest valid channel number.
pub const CHANNEL_MIN: u16 = 0x4000;
/// Highest valid channel number.
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// Bytes of the ChannelData header.
pub const CHANNEL_DATA_HEADER: usize = 4;

/// Whether `first_byte` may start a ChannelData message (0x40-0x4F). QUIC short-header packets
/// share this range (RFC 9443), so callers must first know the datagram came from a TURN server.
pub fn may_be_channel_data(first_byte: u8) -> bool {
    (0x40..=0x4F).contains(&first_byte)
}

/// Why a datagram is not a ChannelData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    #[error("ChannelData shorter than its 4-byte header ({0} bytes)")]
    Truncated(usize),
    #[error("channel number {0:#06x} outside 0x4000-0x4FFF")]
    BadChannel(u16),
    #[error("ChannelData length {length} exceeds the {available} bytes after the header")]
    LengthExceedsDatagram { length: usize, available: usize },
}

/// A decoded ChannelData message borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

/// Decodes a ChannelData message from a UDP datagram (trailing padding ignored).
pub fn decode(datagram: &[u8]) -> Result<ChannelData<'_>, ChannelDataError> {
    if datagram.len() < CHANNEL_DATA_HEADER {
        return Err(ChannelDataError::Truncated(datagram.len()));
    }
    let channel = u16::from_be_bytes([datagram[0], datagram[1]]);
    if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
        return Err(ChannelDataError::BadChannel(channel));
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let available = datagram.len() - CHANNEL_DATA_HEADER;
    if length > available {
        return Err(ChannelDataError::LengthExceedsDatagram { length, available });
    }
    Ok(ChannelData {
        channel,
        data: &datagram[CHANNEL_DATA_HEADER..CHANNEL_DATA_HEADER + length],
    })
}

/// Appends a ChannelData message to `out` (no padding: the UDP form).
///
/// # Panics
/// If `channel` is outside 0x4000-0x4FFF or `data` is longer than 65,535 bytes (both are the
/// caller's bugs, never network input).
pub fn encode_into(channel: u16, data: &[u8], out: &mut Vec<u8>) {
    assert!((CHANNEL_MIN..=CHANNEL_MAX).contains(&channel));
    let length = u16::try_from(data.len()).expect("ChannelData payload over 65535 bytes");
    out.reserve(CHANNEL_DATA_HEADER + data.len());
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(data);
}

/// Encodes a ChannelData message (the UDP form).
pub fn encode(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHANNEL_DATA_HEADER + data.len());
    encode_into(channel, data, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let wire = encode(0x4001, b"hello");
        assert_eq!(wire, [0x40, 0x01, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o']);
        let decoded = decode(&wire).unwrap();
        assert_eq!(decoded.channel, 0x4001);
        assert_eq!(decoded.data, b"hello");
    }

    #[test]
    fn padding_after_length_is_ignored() {
        let mut wire = encode(0x4FFF, b"abc");
        wire.push(0);
        assert_eq!(decode(&wire).unwrap().data, b"abc");
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            decode(&[0x40, 0x00, 0x00]),
            Err(ChannelDataError::Truncated(3))
        );
        assert_eq!(
            decode(&[0x50, 0x00, 0x00, 0x00]),
            Err(ChannelDataError::BadChannel(0x5000))
        );
        assert_eq!(
            decode(&[0x40, 0x00, 0x00, 0x09, 1, 2]),
            Err(ChannelDataError::LengthExceedsDatagram {
                length: 9,
                available: 2
            })
        );
    }

    #[test]
    fn first_byte_range() {
        assert!(may_be_channel_data(0x40));
        assert!(may_be_channel_data(0x4F));
        assert!(!may_be_channel_data(0x50));
        assert!(!may_be_channel_data(0x00));
    }
}
