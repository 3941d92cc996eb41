//! Control messages over a byte stream (`control_stream`): the stream arrives in arbitrary
//! chunks (one per record, see `p2pnat_fuzz::Records`) and is cut into frames exactly as
//! `read_frame` (src/rendezvous_tls.rs) and the rendezvous's reader do: 9-byte header checked by
//! `FrameHeader::parse`, then the payload, decoded as the message its kind announces.
//! Invariants: a frame's announced payload is at most `MAX_CONTROL_MESSAGE` (checked before it
//! is awaited), so the reader never holds more than header + limit + one chunk; every accepted
//! frame re-encodes byte for byte (`encode_frame`); a refused header ends the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pnat_fuzz::Records;
use p2pnat_proto::control::{self, Push, Request, Response, MAX_CONTROL_MESSAGE};
use p2pnat_proto::control_stream::{encode_frame, FrameHeader, FrameKind, FRAME_HEADER};

fuzz_target!(|data: &[u8]| {
    let mut pending: Vec<u8> = Vec::new();
    for (_, chunk) in Records::new(data) {
        pending.extend_from_slice(chunk);
        while let Some(header) = pending.first_chunk::<FRAME_HEADER>() {
            let header = match FrameHeader::parse(header) {
                Ok(header) => header,
                // The connection is closed: nothing after a bad header is read.
                Err(_) => return,
            };
            assert!(header.len <= MAX_CONTROL_MESSAGE);
            let end = FRAME_HEADER + header.len;
            let Some(payload) = pending.get(FRAME_HEADER..end) else {
                break;
            };
            assert_eq!(
                encode_frame(header.kind, header.id, payload),
                pending[..end],
                "frame does not re-encode to its bytes"
            );
            match header.kind {
                FrameKind::Request => drop(control::decode::<Request>(payload)),
                FrameKind::Response => drop(control::decode::<Response>(payload)),
                FrameKind::Push => drop(control::decode::<Push>(payload)),
            }
            pending.drain(..end);
        }
        // What waits for more bytes is a partial header or one frame's partial payload.
        assert!(pending.len() < FRAME_HEADER + MAX_CONTROL_MESSAGE + chunk.len() + 1);
    }
});
