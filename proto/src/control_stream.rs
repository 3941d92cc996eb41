//! Control messages over one TLS byte stream (the rendezvous's TLS port, docs/PROTOCOL.md
//! section 7), where QUIC's one-stream-per-request framing is not available.
//!
//! Each frame is a 9-byte header and a payload:
//!
//! ```text
//! offset  size  field
//! 0       1     kind: 1 = request (node -> rendezvous), 2 = response (rendezvous -> node),
//!               3 = push (rendezvous -> node)
//! 1       4     request id, u32 big-endian: chosen by the node for a request, copied into its
//!               response; 0 in a push
//! 5       4     payload length, u32 big-endian, at most MAX_CONTROL_MESSAGE (16,384)
//! 9       ...   payload: a control message exactly as over QUIC (crate::control: version
//!               u16, then bincode of Request, Response or Push)
//! ```
//!
//! The header is checked (kind known, length within the limit) before any payload is read, so
//! a reader allocates at most [`crate::control::MAX_CONTROL_MESSAGE`] bytes per frame. A bad
//! header is a [`FrameError`] and the connection is closed.

use crate::control::MAX_CONTROL_MESSAGE;

/// Bytes of a frame header.
pub const FRAME_HEADER: usize = 9;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Request = 1,
    Response = 2,
    Push = 3,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub id: u32,
    /// Payload bytes that follow (at most [`MAX_CONTROL_MESSAGE`]).
    pub len: usize,
}

/// Why a frame header is refused (the stream cannot go on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame payload of {0} bytes exceeds the {MAX_CONTROL_MESSAGE}-byte limit")]
    TooLong(u64),
}

impl FrameHeader {
    /// Parses and checks a header.
    pub fn parse(bytes: &[u8; FRAME_HEADER]) -> Result<Self, FrameError> {
        let kind = match bytes[0] {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Push,
            other => return Err(FrameError::UnknownKind(other)),
        };
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let len = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        if len as usize > MAX_CONTROL_MESSAGE {
            return Err(FrameError::TooLong(len.into()));
        }
        Ok(FrameHeader {
            kind,
            id,
            len: len as usize,
        })
    }
}

/// One frame, header and payload.
///
/// # Panics
/// If `payload` exceeds [`MAX_CONTROL_MESSAGE`] (control messages are encoded within it; a
/// longer one is the caller's bug, never network input).
pub fn encode_frame(kind: FrameKind, id: u32, payload: &[u8]) -> Vec<u8> {
    assert!(
        payload.len() <= MAX_CONTROL_MESSAGE,
        "control frame too long"
    );
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.push(kind as u8);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{self, Request};
    use crate::PeerId;

    #[test]
    fn round_trip() {
        let payload = control::encode(&Request::Lookup {
            peer: PeerId([7; 32]),
        });
        let frame = encode_frame(FrameKind::Request, 0xDEAD_BEEF, &payload);
        let header = FrameHeader::parse(frame[..FRAME_HEADER].try_into().unwrap()).unwrap();
        assert_eq!(
            header,
            FrameHeader {
                kind: FrameKind::Request,
                id: 0xDEAD_BEEF,
                len: payload.len()
            }
        );
        assert_eq!(&frame[FRAME_HEADER..], &payload[..]);
        assert_eq!(frame[..5], [1, 0xDE, 0xAD, 0xBE, 0xEF]);
    }

    #[test]
    fn bad_headers_are_refused_before_any_payload() {
        let mut header = [2u8, 0, 0, 0, 1, 0, 0, 0x40, 0x01]; // 16,385 bytes
        assert_eq!(
            FrameHeader::parse(&header),
            Err(FrameError::TooLong(16_385))
        );
        header[5..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            FrameHeader::parse(&header),
            Err(FrameError::TooLong(u32::MAX.into()))
        );
        header[5..].copy_from_slice(&16_384u32.to_be_bytes());
        assert!(FrameHeader::parse(&header).is_ok());
        for kind in [0u8, 4, 0x16, 0xFF] {
            header[0] = kind;
            assert_eq!(
                FrameHeader::parse(&header),
                Err(FrameError::UnknownKind(kind))
            );
        }
    }
}
