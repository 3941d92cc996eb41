//! TURN over TCP/TLS (`turn::stream::StreamDecoder`), a stateful decoder: the first two input
//! bytes pick `max_frame`, then each record (`p2pnat_fuzz::Records`) is a chunk of the stream,
//! handed over in pieces of at most `room()` bytes as the driver does, each followed by
//! `next_frame` until `Ok(None)`.
//! Invariants, checked against a model that keeps every byte delivered: each frame is the next
//! `len` bytes of the stream (ChannelData padding skipped), its length is the one its header
//! states and at most `max_frame`; the buffer never holds more than `capacity()`; after
//! `Ok(None)` there is room for `max_frame` more bytes; an error is final (returned again by
//! `extend` and `next_frame`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pnat_fuzz::{u16_at, Records};
use p2pnat_proto::turn::stream::{FrameKind, StreamDecoder};

fuzz_target!(|data: &[u8]| {
    let max_frame = usize::from(u16_at(data, 0));
    let mut decoder = StreamDecoder::new(max_frame);
    let max_frame = decoder.max_frame();
    assert!(max_frame >= 24 && decoder.capacity() == 2 * max_frame);
    let mut stream: Vec<u8> = Vec::new();
    let mut consumed = 0usize;
    for (_, chunk) in Records::new(data.get(2..).unwrap_or_default()) {
        let mut chunk = chunk;
        while !chunk.is_empty() {
            let piece = decoder.room().min(chunk.len());
            if piece == 0 {
                // No room and no frame: only possible after an error.
                assert!(decoder.next_frame().is_err());
                return;
            }
            let (now, rest) = chunk.split_at(piece);
            chunk = rest;
            if decoder.extend(now).is_err() {
                return;
            }
            stream.extend_from_slice(now);
            assert!(decoder.buffered() <= decoder.capacity());
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        let bytes = frame.bytes;
                        let length = usize::from(u16_at(bytes, 2));
                        let (len, padded) = match frame.kind {
                            FrameKind::Stun => (20 + length, 20 + length),
                            FrameKind::ChannelData => {
                                (4 + length, (4 + length).next_multiple_of(4))
                            }
                        };
                        assert_eq!(bytes.len(), len);
                        assert!(padded <= max_frame);
                        assert_eq!(bytes, &stream[consumed..consumed + len]);
                        consumed += padded;
                    }
                    Ok(None) => {
                        assert_eq!(decoder.buffered(), stream.len() - consumed);
                        assert!(decoder.room() >= max_frame);
                        break;
                    }
                    Err(e) => {
                        assert_eq!(decoder.next_frame().err(), Some(e));
                        assert_eq!(decoder.extend(&[0]).err(), Some(e));
                        return;
                    }
                }
            }
        }
    }
});
