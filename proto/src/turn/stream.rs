//! TURN over a byte stream (TCP or TLS, RFC 8656 section 3.1): cutting the stream into STUN
//! messages and ChannelData messages, sans-IO.
//!
//! Over a stream nothing marks where a message ends, so the length comes from each message's
//! header:
//! - a STUN message (first two bits `00`): 20-byte header, bytes 2..4 the length of the
//!   attributes (a multiple of 4), bytes 4..8 the magic cookie `21 12 A4 42`; the message is
//!   `20 + length` bytes;
//! - a ChannelData message (first byte `0x40`-`0x7F`: channel numbers 0x4000-0x7FFF): 4-byte
//!   header, bytes 2..4 the data length; over a stream the message is padded to a multiple of
//!   4 (RFC 8656 section 12.5), so it takes `4 + length` rounded up to 4 bytes. The padding is
//!   skipped; the frame handed out is `4 + length` bytes, the UDP form.
//!
//! Anything else (first byte `0x80`-`0xFF`, a STUN header without the cookie or with a length
//! not a multiple of 4, a frame longer than the decoder's limit) is a [`StreamError`]: the
//! stream cannot be resynchronised, and the connection must be closed.
//!
//! # Limits
//! The decoder buffers at most [`StreamDecoder::capacity`] bytes (twice its `max_frame`). A
//! frame's length is checked against `max_frame` from its header, before its body is awaited,
//! and nothing is allocated from a length field: the buffer is allocated once, at its full
//! size, when the decoder is made.

use crate::turn::channel_data::CHANNEL_DATA_HEADER;

/// STUN header bytes.
const STUN_HEADER: usize = 20;
/// The STUN magic cookie (RFC 8489).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// The longest frame the wire format allows: a STUN message with 65,532 bytes of attributes
/// (the largest multiple of 4 a 16-bit length holds), 65,552 bytes. (ChannelData is at most
/// 4 + 65,535 bytes plus 1 byte of padding, 65,540.)
pub const MAX_STREAM_FRAME: usize = STUN_HEADER + 65_532;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Stun,
    ChannelData,
}

/// Why the stream cannot be decoded further (the connection should be closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("first byte {0:#04x} starts neither STUN nor ChannelData")]
    UnknownFrame(u8),
    #[error("STUN header without the magic cookie")]
    NoMagicCookie,
    #[error("STUN length {0} is not a multiple of 4")]
    UnalignedStun(usize),
    #[error("frame of {length} bytes exceeds the limit of {max}")]
    TooLong { length: usize, max: usize },
    #[error("{given} bytes given with room for {room}")]
    Overflow { given: usize, room: usize },
}

/// One frame cut from the stream, borrowing the decoder's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: FrameKind,
    /// The whole message (header included, stream padding of ChannelData excluded).
    pub bytes: &'a [u8],
}

/// Cuts a TURN byte stream into frames. See the module documentation.
///
/// Use: read at most [`StreamDecoder::room`] bytes from the stream, give them to
/// [`StreamDecoder::extend`], then call [`StreamDecoder::next_frame`] until it returns
/// `Ok(None)`. After that there is always room for at least `max_frame` more bytes.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Box<[u8]>,
    /// Bytes `start..end` of `buf` are received and not yet handed out.
    start: usize,
    end: usize,
    max_frame: usize,
    /// Set once an error was returned: every later call returns it again.
    failed: Option<StreamError>,
}

impl StreamDecoder {
    /// A decoder for frames of at most `max_frame` bytes (stream padding included), clamped to
    /// 24..=[`MAX_STREAM_FRAME`]. Allocates `2 * max_frame` bytes once.
    pub fn new(max_frame: usize) -> Self {
        let max_frame = max_frame.clamp(STUN_HEADER + 4, MAX_STREAM_FRAME);
        StreamDecoder {
            buf: vec![0u8; 2 * max_frame].into_boxed_slice(),
            start: 0,
            end: 0,
            max_frame,
            failed: None,
        }
    }

    /// The largest frame accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes held at most.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes buffered and not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// How many bytes [`Self::extend`] accepts now.
    pub fn room(&self) -> usize {
        self.buf.len() - self.buffered()
    }

    /// Appends bytes read from the stream. More than [`Self::room`] is an error (and nothing
    /// is appended).
    pub fn extend(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let room = self.room();
        if bytes.len() > room {
            return Err(StreamError::Overflow {
                given: bytes.len(),
                room,
            });
        }
        if self.buf.len() - self.end < bytes.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
        Ok(())
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. An error is final.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, StreamError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match self.frame_len() {
            Err(e) => {
                self.failed = Some(e);
                Err(e)
            }
            Ok(None) => Ok(None),
            Ok(Some((kind, len, padded))) => {
                let at = self.start;
                self.start += padded;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                Ok(Some(Frame {
                    kind,
                    bytes: &self.buf[at..at + len],
                }))
            }
        }
    }

    /// The kind, length and length with padding of the frame at `start`, once it is all here.
    fn frame_len(&self) -> Result<Option<(FrameKind, usize, usize)>, StreamError> {
        let pending = &self.buf[self.start..self.end];
        let Some(&first) = pending.first() else {
            return Ok(None);
        };
        let kind = match first {
            0x00..=0x3F => FrameKind::Stun,
            0x40..=0x7F => FrameKind::ChannelData,
            _ => return Err(StreamError::UnknownFrame(first)),
        };
        if kind == FrameKind::Stun && pending.len() >= 8 && pending[4..8] != MAGIC_COOKIE {
            return Err(StreamError::NoMagicCookie);
        }
        if pending.len() < 4 {
            return Ok(None);
        }
        let length = usize::from(u16::from_be_bytes([pending[2], pending[3]]));
        let (len, padded) = match kind {
            FrameKind::Stun => {
                if length % 4 != 0 {
                    return Err(StreamError::UnalignedStun(length));
                }
                (STUN_HEADER + length, STUN_HEADER + length)
            }
            FrameKind::ChannelData => {
                let len = CHANNEL_DATA_HEADER + length;
                (len, len.next_multiple_of(4))
            }
        };
        if padded > self.max_frame {
            return Err(StreamError::TooLong {
                length: padded,
                max: self.max_frame,
            });
        }
        if pending.len() < padded {
            return Ok(None);
        }
        Ok(Some((kind, len, padded)))
    }
}

/// The stream form of a ChannelData message built for UDP (`4 + length` bytes): padded with
/// zeros to a multiple of 4 (RFC 8656 section 12.5).
pub fn pad_channel_data(mut message: Vec<u8>) -> Vec<u8> {
    let padded = message.len().next_multiple_of(4);
    message.resize(padded, 0);
    message
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
