use super::*;
use crate::turn::channel_data;

/// A STUN Binding request with `attributes` bytes of (fake) attributes.
fn stun(attributes: usize, fill: u8) -> Vec<u8> {
    let mut message = vec![0x00, 0x01];
    message.extend_from_slice(&(attributes as u16).to_be_bytes());
    message.extend_from_slice(&MAGIC_COOKIE);
    message.extend_from_slice(&[fill; 12]);
    message.extend(std::iter::repeat_n(fill, attributes));
    message
}

/// A stream carrying STUN, padded and unpadded-length ChannelData, in that order.
fn sample() -> (Vec<u8>, Vec<(FrameKind, Vec<u8>)>) {
    let frames = vec![
        (FrameKind::Stun, stun(8, 1)),
        (
            FrameKind::ChannelData,
            channel_data::encode(0x4001, b"hello"),
        ), // 9 bytes, pad 3
        (
            FrameKind::ChannelData,
            channel_data::encode(0x4FFF, b"four"),
        ), // 8 bytes, no pad
        (FrameKind::ChannelData, channel_data::encode(0x4002, b"")), // 4 bytes
        (FrameKind::Stun, stun(0, 2)),
        (
            FrameKind::ChannelData,
            channel_data::encode(0x4003, b"abcdefg"),
        ), // 11, pad 1
    ];
    let mut stream = Vec::new();
    for (_, frame) in &frames {
        stream.extend_from_slice(&pad_channel_data(frame.clone()));
    }
    (stream, frames)
}

fn drain(decoder: &mut StreamDecoder, out: &mut Vec<(FrameKind, Vec<u8>)>) {
    while let Some(frame) = decoder.next_frame().unwrap() {
        out.push((frame.kind, frame.bytes.to_vec()));
    }
}

#[test]
fn split_at_every_byte() {
    let (stream, expected) = sample();
    for split in 0..=stream.len() {
        let mut decoder = StreamDecoder::new(1024);
        let mut got = Vec::new();
        decoder.extend(&stream[..split]).unwrap();
        drain(&mut decoder, &mut got);
        decoder.extend(&stream[split..]).unwrap();
        drain(&mut decoder, &mut got);
        assert_eq!(got, expected, "split at {split}");
        assert_eq!(decoder.buffered(), 0);
    }
}

#[test]
fn one_byte_at_a_time() {
    let (stream, expected) = sample();
    let mut decoder = StreamDecoder::new(64);
    let mut got = Vec::new();
    for byte in &stream {
        decoder.extend(std::slice::from_ref(byte)).unwrap();
        drain(&mut decoder, &mut got);
    }
    assert_eq!(got, expected);
}

#[test]
fn padding_is_skipped_not_handed_out() {
    let mut decoder = StreamDecoder::new(64);
    decoder
        .extend(&[0x40, 0x01, 0x00, 0x01, 0xAA, 0, 0, 0])
        .unwrap();
    let frame = decoder.next_frame().unwrap().unwrap();
    assert_eq!(frame.bytes, &[0x40, 0x01, 0x00, 0x01, 0xAA]);
    assert_eq!(decoder.next_frame().unwrap(), None);
    assert_eq!(decoder.buffered(), 0);
    // Without its padding the frame is not complete yet.
    decoder.extend(&[0x40, 0x01, 0x00, 0x01, 0xBB]).unwrap();
    assert_eq!(decoder.next_frame().unwrap(), None);
    decoder.extend(&[0, 0, 0]).unwrap();
    assert!(decoder.next_frame().unwrap().is_some());
}

#[test]
fn oversized_length_is_refused_from_the_header() {
    let mut decoder = StreamDecoder::new(100);
    // ChannelData declaring 65,535 bytes: refused on its 4 header bytes alone.
    decoder.extend(&[0x40, 0x00, 0xFF, 0xFF]).unwrap();
    assert_eq!(
        decoder.next_frame(),
        Err(StreamError::TooLong {
            length: 65_540,
            max: 100
        })
    );
    // The error is final.
    assert!(decoder.next_frame().is_err());
    assert!(decoder.extend(&[0]).is_err());

    let mut decoder = StreamDecoder::new(100);
    let message = stun(80, 0); // 100 bytes: fits exactly
    decoder.extend(&message).unwrap();
    assert_eq!(decoder.next_frame().unwrap().unwrap().bytes, &message[..]);
    decoder.extend(&stun(84, 0)[..8]).unwrap();
    assert!(matches!(
        decoder.next_frame(),
        Err(StreamError::TooLong { length: 104, .. })
    ));
}

#[test]
fn largest_wire_frames_fit_the_default_limit() {
    let mut decoder = StreamDecoder::new(MAX_STREAM_FRAME);
    let big = pad_channel_data(channel_data::encode(0x4000, &vec![7u8; 65_535]));
    assert_eq!(big.len(), 65_540);
    decoder.extend(&big).unwrap();
    assert_eq!(decoder.next_frame().unwrap().unwrap().bytes.len(), 65_539);
    let message = stun(65_532, 3);
    decoder.extend(&message).unwrap();
    assert_eq!(decoder.next_frame().unwrap().unwrap().bytes.len(), 65_552);
}

#[test]
fn garbage_is_an_error() {
    for garbage in [
        &[0x80u8, 0, 0, 0][..],
        &[0xFF],
        &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01], // a TLS ClientHello on the TCP port
        &[0x00, 0x01, 0x00, 0x02],                         // STUN length not a multiple of 4
    ] {
        let mut decoder = StreamDecoder::new(1024);
        decoder.extend(garbage).unwrap();
        assert!(decoder.next_frame().is_err(), "{garbage:02x?}");
    }
}

#[test]
fn pseudo_random_input_never_panics_and_buffer_stays_bounded() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..2000 {
        let mut decoder = StreamDecoder::new(256);
        for _ in 0..20 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 300) as usize;
            let chunk: Vec<u8> = (0..len)
                .map(|i| (state >> (i % 56)) as u8 & if i == 0 { 0x7F } else { 0xFF })
                .collect();
            let chunk = &chunk[..chunk.len().min(decoder.room())];
            if decoder.extend(chunk).is_err() {
                break;
            }
            let mut failed = false;
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => assert!(frame.bytes.len() <= 256),
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
            assert!(decoder.buffered() < decoder.max_frame());
            assert!(decoder.room() > decoder.max_frame());
        }
    }
}

#[test]
fn more_than_the_room_is_refused() {
    let mut decoder = StreamDecoder::new(32);
    let room = decoder.room();
    assert_eq!(room, 64);
    assert_eq!(
        decoder.extend(&vec![0u8; room + 1]),
        Err(StreamError::Overflow {
            given: room + 1,
            room
        })
    );
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn padding_helper() {
    assert_eq!(
        pad_channel_data(vec![1, 2, 3, 4, 5]),
        vec![1, 2, 3, 4, 5, 0, 0, 0]
    );
    assert_eq!(pad_channel_data(vec![1, 2, 3, 4]), vec![1, 2, 3, 4]);
}
