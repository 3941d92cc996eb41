//! Framed stdin (docs/PROTOCOL.md section 1): a byte stream of `length: u32, type: u8, body`
//! frames, walked exactly as the node's reader (`read_frames` in src/node/app_io.rs) does, with
//! the proto decoders it calls: `app::parse_send_header` for SEND bodies (only the bytes it
//! needs are read first), `app::parse_command_line` for COMMAND bodies. The first input byte
//! picks the message limit (`--max-message`), so the too-large path is reached.
//! Invariants: the SEND header never claims more than the body; a header whose peer ID is UTF-8
//! re-encodes byte for byte (`encode_send_frame`); nothing is read before its length is checked
//! against the limit (payload <= max_message, command <= MAX_COMMAND_LINE); a line-mode `send`
//! payload is a suffix of its command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pnat_proto::app::{
    encode_send_frame, parse_command_line, parse_send_header, Command, FRAME_COMMAND, FRAME_SEND,
    MAX_COMMAND_LINE, SEND_FIXED_HEADER,
};

/// Takes `n` bytes, `None` at the end of the stream (the reader stops there).
fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

fn run(mut input: &[u8], max_message: usize) -> Option<()> {
    loop {
        let frame_start = input;
        let length = take(&mut input, 4)?;
        let length = u32::from_be_bytes(length.try_into().unwrap()) as usize;
        if length == 0 {
            continue;
        }
        let frame_type = take(&mut input, 1)?[0];
        let body_len = length - 1;
        match frame_type {
            FRAME_SEND => {
                let mut prefix = take(&mut input, body_len.min(SEND_FIXED_HEADER))?.to_vec();
                if body_len >= SEND_FIXED_HEADER {
                    let id_len = usize::from(prefix[8]).min(body_len - SEND_FIXED_HEADER);
                    prefix.extend_from_slice(take(&mut input, id_len)?);
                }
                let header = match parse_send_header(&prefix, body_len) {
                    Ok(header) => header,
                    Err(_) => {
                        take(&mut input, body_len - prefix.len())?;
                        continue;
                    }
                };
                assert!(header.header_len <= body_len);
                assert_eq!(header.header_len, prefix.len());
                let payload_len = body_len - header.header_len;
                if payload_len > max_message {
                    take(&mut input, payload_len)?;
                    continue;
                }
                let payload = take(&mut input, payload_len)?;
                if let Ok(peer) = std::str::from_utf8(&prefix[SEND_FIXED_HEADER..]) {
                    assert_eq!(peer, header.peer_text);
                    let frame = encode_send_frame(header.msg_id, peer, payload);
                    assert_eq!(frame[..], frame_start[..4 + length]);
                }
            }
            FRAME_COMMAND => {
                if body_len > MAX_COMMAND_LINE {
                    take(&mut input, body_len)?;
                    continue;
                }
                let body = take(&mut input, body_len)?;
                let Ok(line) = std::str::from_utf8(body) else {
                    continue;
                };
                if let Ok(Command::Send { payload, .. }) = parse_command_line(line) {
                    assert!(line
                        .strip_suffix('\r')
                        .unwrap_or(line)
                        .as_bytes()
                        .ends_with(&payload));
                }
            }
            _ => {
                take(&mut input, body_len)?;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, stream)) = data.split_first() else {
        return;
    };
    // 0 to 255 bytes, or the default 16 MiB for 255.
    let max_message = match limit {
        255 => p2pnat_proto::app::DEFAULT_MAX_MESSAGE,
        n => usize::from(n),
    };
    let _ = run(stream, max_message);
});
