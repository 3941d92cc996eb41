//! Demultiplexing of datagrams on the node's single UDP socket.
//!
//! One socket carries STUN, project datagrams (path probes; later relay framing) and QUIC. They are
//! told apart by content alone, in [`classify`]:
//!
//! | first byte (bits) | extra check | kind |
//! |---|---|---|
//! | `00xxxxxx` | length >= 20 and bytes 4..8 are the STUN magic cookie `0x2112A442` | STUN |
//! | `10xxxxxx` | length >= 5 and bytes 1..5 are [`PROJECT_MAGIC`] | project datagram |
//! | `x1xxxxxx` | (QUIC fixed bit set; every node disables quinn's `grease_quic_bit`) | QUIC |
//! | anything else | | garbage, dropped |

/// Magic bytes 1..5 of every project datagram ("p2pN").
pub const PROJECT_MAGIC: [u8; 4] = *b"p2pN";
/// The STUN magic cookie (RFC 8489 section 5), at bytes 4..8 of every STUN message.
pub const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// What a received datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    Stun,
    Project,
    Quic,
    /// Matches nothing above: log and drop.
    Garbage,
}

/// Classifies a datagram by its content. Pure and total: never panics, whatever the input.
pub fn classify(datagram: &[u8]) -> DatagramKind {
    let Some(&first) = datagram.first() else {
        return DatagramKind::Garbage;
    };
    match first >> 6 {
        0b00 if datagram.len() >= 20 && datagram[4..8] == STUN_MAGIC_COOKIE => DatagramKind::Stun,
        0b10 if datagram.len() >= 5 && datagram[1..5] == PROJECT_MAGIC => DatagramKind::Project,
        0b01 | 0b11 => DatagramKind::Quic,
        _ => DatagramKind::Garbage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_needs_cookie_and_header_length() {
        let mut stun = [0u8; 20];
        stun[1] = 0x01; // Binding request
        stun[4..8].copy_from_slice(&STUN_MAGIC_COOKIE);
        assert_eq!(classify(&stun), DatagramKind::Stun);
        assert_eq!(classify(&stun[..19]), DatagramKind::Garbage);
        stun[5] = 0;
        assert_eq!(classify(&stun), DatagramKind::Garbage);
    }

    #[test]
    fn project_needs_magic() {
        let mut probe = vec![0x80];
        probe.extend_from_slice(&PROJECT_MAGIC);
        probe.extend_from_slice(&[1, 2, 3]);
        assert_eq!(classify(&probe), DatagramKind::Project);
        probe[2] = b'x';
        assert_eq!(classify(&probe), DatagramKind::Garbage);
        assert_eq!(classify(&[0x80, b'p', b'2']), DatagramKind::Garbage);
    }

    #[test]
    fn quic_long_and_short_headers() {
        assert_eq!(classify(&[0xC3, 0, 0, 0, 1]), DatagramKind::Quic);
        assert_eq!(classify(&[0x41, 9, 9]), DatagramKind::Quic);
    }

    #[test]
    fn empty_and_every_first_byte_is_total() {
        assert_eq!(classify(&[]), DatagramKind::Garbage);
        for byte in 0..=255u8 {
            let kind = classify(&[byte]);
            if byte & 0x40 != 0 {
                assert_eq!(kind, DatagramKind::Quic);
            } else {
                assert_eq!(kind, DatagramKind::Garbage);
            }
        }
    }
}
