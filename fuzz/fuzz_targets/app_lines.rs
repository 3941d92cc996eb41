//! Line mode (docs/PROTOCOL.md section 1): the input is cut into lines at `\n` and each line
//! (lossily UTF-8, as the node's `read_lines` does) goes to `app::parse_command_line`.
//! Invariants: lines longer than `MAX_COMMAND_LINE` are never parsed; a `send` payload is a
//! suffix of its line; a parsed peer ID prints back to text that parses to the same ID; the
//! escaped form of a payload (`escape_line_payload`, how `recv` lines carry it) holds no line
//! break.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use p2pnat_proto::app::{escape_line_payload, parse_command_line, Command, MAX_COMMAND_LINE};
use p2pnat_proto::PeerId;

fn same_peer(peer: &PeerId) {
    assert_eq!(PeerId::from_str(&peer.to_text()).as_ref(), Ok(peer));
}

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        if line.len() > MAX_COMMAND_LINE {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        let escaped = escape_line_payload(line);
        assert!(!escaped.contains('\n') && !escaped.contains('\r'));
        match parse_command_line(&text) {
            Ok(Command::Send { peer, payload }) => {
                assert!(text
                    .strip_suffix('\r')
                    .unwrap_or(&text)
                    .as_bytes()
                    .ends_with(&payload));
                same_peer(&peer);
            }
            Ok(Command::Connect(peer) | Command::Disconnect(peer)) => same_peer(&peer),
            Ok(_) => {}
            Err(e) => assert!(!e.code().is_empty()),
        }
    }
});
