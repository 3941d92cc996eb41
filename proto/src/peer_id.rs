//! Peer identity: an ed25519 public key.
//!
//! Text form: the 32 key bytes in RFC 4648 base32, lowercase, without padding: always 52
//! characters of `a-z2-7`. Parsing is case-insensitive for letters but rejects padding, spaces and
//! any other length. The text form is also used as the TLS server name when dialling a peer.

use std::fmt;
use std::str::FromStr;

/// Length in characters of a peer ID's text form.
pub const PEER_ID_TEXT_LEN: usize = 52;

/// A peer's identity: the raw 32 bytes of its ed25519 public key.
///
/// Invariant: the bytes are whatever key the peer presented; whether they are a valid curve point
/// is checked by TLS signature verification, not here.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct PeerId(pub [u8; 32]);

/// Why a peer ID text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdError {
    #[error(
        "peer ID must be {PEER_ID_TEXT_LEN} characters of base32 (a-z, 2-7), got {0} characters"
    )]
    BadLength(usize),
    #[error("peer ID contains a character outside base32 (a-z, 2-7): {0:?}")]
    BadCharacter(char),
    #[error("peer ID is not canonical base32 (its last character carries stray bits)")]
    NotCanonical,
}

/// The lowercase base32 encoding, built once (building it per ID cost 3-4% of a bulk transfer's
/// CPU: one per received frame and per `delivered` event).
fn base32_lower() -> &'static data_encoding::Encoding {
    static ENCODING: std::sync::OnceLock<data_encoding::Encoding> = std::sync::OnceLock::new();
    ENCODING.get_or_init(|| {
        let mut spec = data_encoding::Specification::new();
        spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
        spec.check_trailing_bits = true;
        spec.encoding().expect("valid base32 specification")
    })
}

impl PeerId {
    /// The text form (52 lowercase base32 characters).
    pub fn to_text(&self) -> String {
        base32_lower().encode(&self.0)
    }

    /// A short prefix for logs; not unique, never use it to identify a peer.
    pub fn short(&self) -> String {
        let mut text = self.to_text();
        text.truncate(8);
        text
    }
}

impl FromStr for PeerId {
    type Err = PeerIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let chars = text.chars().count();
        if chars != PEER_ID_TEXT_LEN {
            return Err(PeerIdError::BadLength(chars));
        }
        let lower = text.to_ascii_lowercase();
        if let Some(bad) = lower.chars().find(|c| !matches!(c, 'a'..='z' | '2'..='7')) {
            return Err(PeerIdError::BadCharacter(bad));
        }
        let bytes = base32_lower()
            .decode(lower.as_bytes())
            .map_err(|_| PeerIdError::NotCanonical)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| PeerIdError::NotCanonical)?;
        Ok(PeerId(key))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_is_52_lowercase_chars() {
        let id = PeerId([0xA5; 32]);
        let text = id.to_text();
        assert_eq!(text.len(), PEER_ID_TEXT_LEN);
        assert!(text
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
        assert_eq!(text.parse::<PeerId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<PeerId>().unwrap(), id);
    }

    #[test]
    fn malformed_ids_are_rejected_with_reason() {
        assert_eq!("abc".parse::<PeerId>(), Err(PeerIdError::BadLength(3)));
        let mut text = PeerId([1; 32]).to_text();
        text.replace_range(0..1, "1");
        assert_eq!(text.parse::<PeerId>(), Err(PeerIdError::BadCharacter('1')));
        // The last character of 256 bits in base32 carries 4 stray bits that must be zero.
        let mut text = PeerId([0; 32]).to_text();
        text.replace_range(51..52, "b");
        assert_eq!(text.parse::<PeerId>(), Err(PeerIdError::NotCanonical));
        let padded = format!("{}=", &PeerId([0; 32]).to_text()[..51]);
        assert!(padded.parse::<PeerId>().is_err());
    }
}
