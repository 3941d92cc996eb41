//! The application interface of `p2p-node` (docs/PROTOCOL.md section 1), as pure codecs:
//! command-line parsing, event lines, frame headers and the line-mode payload escaping.
//! Reading and writing the actual stdin/stdout streams is the node's job.

use std::fmt::Write as _;
use std::str::FromStr;

use crate::{PeerId, PeerIdError};

/// Frame type: stdin `SEND`.
pub const FRAME_SEND: u8 = 0x01;
/// Frame type: stdin `COMMAND`.
pub const FRAME_COMMAND: u8 = 0x02;
/// Frame type: stdout `RECV`.
pub const FRAME_RECV: u8 = 0x81;
/// Frame type: stdout `EVENT`.
pub const FRAME_EVENT: u8 = 0x82;
/// Default limit of one message's payload: 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Longest command line or `COMMAND` frame body accepted (a line-mode `send` included).
pub const MAX_COMMAND_LINE: usize = 64 * 1024;
/// Size of a `SEND` frame body before the peer ID: `msg_id` (8) + `id_len` (1).
pub const SEND_FIXED_HEADER: usize = 9;

/// A command from the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Send { peer: PeerId, payload: Vec<u8> },
    Connect(PeerId),
    Disconnect(PeerId),
    List,
    Status,
    Id,
    Help,
    Quit,
}

/// Why a command line was refused; `code()` is the event's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("empty command")]
    Empty,
    #[error("unknown command {0:?}; try 'help'")]
    Unknown(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("bad peer ID {text:?}: {reason}")]
    BadPeerId { text: String, reason: PeerIdError },
}

impl CommandError {
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Empty | CommandError::Unknown(_) => "unknown-command",
            CommandError::Usage(_) => "bad-command",
            CommandError::BadPeerId { .. } => "bad-peer-id",
        }
    }
}

/// One line of help per command, as sent in `help` events.
pub const HELP: &[&str] = &[
    "send <peer_id> <text>  send text to a peer (connects first if needed)",
    "connect <peer_id>      look a peer up and connect",
    "disconnect <peer_id>   close the connection to a peer",
    "list                   list known peers",
    "status                 each peer's path, round-trip time, bytes and pending messages",
    "id                     print this node's peer ID",
    "help                   this list",
    "quit                   close connections and exit",
];

fn parse_peer(text: &str) -> Result<PeerId, CommandError> {
    PeerId::from_str(text).map_err(|reason| CommandError::BadPeerId {
        text: text.chars().take(80).collect(),
        reason,
    })
}

/// Parses one command line (without its newline; a trailing `\r` is ignored).
pub fn parse_command_line(line: &str) -> Result<Command, CommandError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let trimmed = line.trim_start();
    let (word, rest) = match trimmed.split_once(' ') {
        Some((word, rest)) => (word, rest),
        None => (trimmed, ""),
    };
    let single_peer = |usage| {
        let arg = rest.trim();
        if arg.is_empty() || arg.contains(' ') {
            return Err(CommandError::Usage(usage));
        }
        parse_peer(arg)
    };
    let no_args = |command: Command, usage| {
        if rest.trim().is_empty() {
            Ok(command)
        } else {
            Err(CommandError::Usage(usage))
        }
    };
    match word {
        "" => Err(CommandError::Empty),
        "send" => {
            let (peer, text) = rest.split_once(' ').unwrap_or((rest, ""));
            if peer.is_empty() {
                return Err(CommandError::Usage("send <peer_id> <text>"));
            }
            Ok(Command::Send {
                peer: parse_peer(peer)?,
                payload: text.as_bytes().to_vec(),
            })
        }
        "connect" => single_peer("connect <peer_id>").map(Command::Connect),
        "disconnect" => single_peer("disconnect <peer_id>").map(Command::Disconnect),
        "list" => no_args(Command::List, "list"),
        "status" => no_args(Command::Status, "status"),
        "id" => no_args(Command::Id, "id"),
        "help" => no_args(Command::Help, "help"),
        "quit" | "exit" => no_args(Command::Quit, "quit"),
        other => Err(CommandError::Unknown(other.chars().take(40).collect())),
    }
}

/// The parsed start of a `SEND` frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendHeader {
    pub msg_id: u64,
    /// The peer ID text as given; parsing it is a separate step so that a bad ID can still be
    /// reported with its `msg_id`.
    pub peer_text: String,
    /// Bytes of the frame body taken by the header (payload follows).
    pub header_len: usize,
}

/// A malformed frame; the event code is `bad-frame`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame with length 0 (a frame holds at least its type byte)")]
    Empty,
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("SEND frame body of {0} bytes is shorter than its header")]
    ShortSend(usize),
    #[error("COMMAND frame of {0} bytes exceeds the {MAX_COMMAND_LINE}-byte limit")]
    CommandTooLong(usize),
    #[error("COMMAND frame is not UTF-8")]
    CommandNotUtf8,
}

/// Parses the start of a `SEND` body. `prefix` must hold at least
/// `min(body_len, SEND_FIXED_HEADER + 255)` bytes of the body.
pub fn parse_send_header(prefix: &[u8], body_len: usize) -> Result<SendHeader, FrameError> {
    if body_len < SEND_FIXED_HEADER || prefix.len() < SEND_FIXED_HEADER {
        return Err(FrameError::ShortSend(body_len));
    }
    let msg_id = u64::from_be_bytes(prefix[0..8].try_into().expect("length checked"));
    let id_len = usize::from(prefix[8]);
    let header_len = SEND_FIXED_HEADER + id_len;
    if body_len < header_len || prefix.len() < header_len {
        return Err(FrameError::ShortSend(body_len));
    }
    let peer_text = String::from_utf8_lossy(&prefix[SEND_FIXED_HEADER..header_len]).into_owned();
    Ok(SendHeader {
        msg_id,
        peer_text,
        header_len,
    })
}

/// Encodes a `SEND` frame (used by tests and clients).
pub fn encode_send_frame(msg_id: u64, peer: &str, payload: &[u8]) -> Vec<u8> {
    let id = peer.as_bytes();
    let id_len = u8::try_from(id.len()).expect("peer ID text fits in 255 bytes");
    let length = 1 + SEND_FIXED_HEADER + id.len() + payload.len();
    let mut out = Vec::with_capacity(4 + length);
    out.extend_from_slice(&(length as u32).to_be_bytes());
    out.push(FRAME_SEND);
    out.extend_from_slice(&msg_id.to_be_bytes());
    out.push(id_len);
    out.extend_from_slice(id);
    out.extend_from_slice(payload);
    out
}

/// Encodes a frame of `frame_type` around `body`.
pub fn encode_frame(frame_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    out.push(frame_type);
    out.extend_from_slice(body);
    out
}

/// The frame header (length, type, id_len, peer ID) that precedes a `RECV` payload, so the payload
/// itself is written without being copied.
pub fn recv_frame_header(peer: &PeerId, payload_len: usize) -> Vec<u8> {
    let id = peer.to_text();
    let length = 1 + 1 + id.len() + payload_len;
    let mut out = Vec::with_capacity(6 + id.len());
    out.extend_from_slice(&(length as u32).to_be_bytes());
    out.push(FRAME_RECV);
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
    out
}

/// Escapes a payload for a line-mode `recv` line: invalid UTF-8 becomes U+FFFD, and `\`, newline
/// and carriage return become `\\`, `\n`, `\r`.
pub fn escape_line_payload(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// An event for the application (docs/PROTOCOL.md 1.1). [`Event::to_line`] gives its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ready {
        id: PeerId,
        local: Vec<std::net::SocketAddr>,
        observed: Option<std::net::SocketAddr>,
        nat: crate::nat::NatBehaviour,
        inbound: crate::nat::InboundBehaviour,
        /// The node's relayed address (its TURN allocation), once it has one.
        relay: Option<std::net::SocketAddr>,
        /// How the node reaches the rendezvous: `udp` (QUIC), `tls` (TCP, UDP blocked), or
        /// `None` while it does not.
        over: Option<&'static str>,
    },
    Registered {
        observed: std::net::SocketAddr,
        over: &'static str,
    },
    Connected {
        peer: PeerId,
        path: &'static str,
        remote: std::net::SocketAddr,
    },
    /// The path under a live connection changed.
    Path {
        peer: PeerId,
        path: &'static str,
        remote: std::net::SocketAddr,
    },
    Disconnected {
        peer: PeerId,
        reason: String,
    },
    Delivered {
        msg_id: u64,
        peer: PeerId,
    },
    /// `peer` is the text the application gave, which may not be a valid ID.
    Failed {
        msg_id: u64,
        peer: String,
        reason: String,
    },
    Peer {
        peer: PeerId,
        state: &'static str,
        path: Option<&'static str>,
        remote: Option<std::net::SocketAddr>,
    },
    /// One peer's state, in answer to `status`.
    Status(PeerReport),
    Peers(usize),
    Id(PeerId),
    Help(&'static str),
    Error {
        code: &'static str,
        message: String,
    },
}

/// What `status` reports of one peer (docs/PROTOCOL.md 1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    pub peer: PeerId,
    /// `connected`, `connecting` or `idle`.
    pub state: &'static str,
    /// `direct` or `relayed`; `None` when not connected.
    pub path: Option<&'static str>,
    pub remote: Option<std::net::SocketAddr>,
    /// QUIC's smoothed round-trip estimate on the connection messages use.
    pub rtt: Option<std::time::Duration>,
    /// UDP bytes (QUIC packets, headers included) sent and received on that connection.
    pub sent_bytes: u64,
    pub received_bytes: u64,
    /// Messages taken for this peer and not yet `delivered` or `failed`.
    pub pending: usize,
    /// Open QUIC connections to the peer.
    pub connections: usize,
}

impl std::fmt::Display for PeerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let remote = self.remote.map_or("-".to_string(), |a| a.to_string());
        let rtt = self.rtt.map_or("-".to_string(), |rtt| {
            format!("{:.3}", rtt.as_secs_f64() * 1000.0)
        });
        write!(
            f,
            "status {} state={} path={} remote={remote} rtt_ms={rtt} sent_bytes={} received_bytes={} pending={} connections={}",
            self.peer,
            self.state,
            self.path.unwrap_or("-"),
            self.sent_bytes,
            self.received_bytes,
            self.pending,
            self.connections
        )
    }
}

impl Event {
    /// The event line, without a newline. Free text is the last field and never holds a newline.
    pub fn to_line(&self) -> String {
        let one_line = |text: &str| text.replace(['\n', '\r'], " ");
        let mut line = String::new();
        let _ = match self {
            Event::Ready {
                id,
                local,
                observed,
                nat,
                inbound,
                relay,
                over,
            } => {
                let local: Vec<String> = local.iter().map(|a| a.to_string()).collect();
                let observed = observed.map_or("-".to_string(), |a| a.to_string());
                let relay = relay.map_or("-".to_string(), |a| a.to_string());
                write!(
                    line,
                    "ready {id} local={} observed={observed} nat={nat} inbound={inbound} relay={relay} over={}",
                    local.join(","),
                    over.unwrap_or("-")
                )
            }
            Event::Registered { observed, over } => {
                write!(line, "registered {observed} over={over}")
            }
            Event::Connected { peer, path, remote } => {
                write!(line, "connected {peer} {path} {remote}")
            }
            Event::Path { peer, path, remote } => write!(line, "path {peer} {path} {remote}"),
            Event::Disconnected { peer, reason } => {
                write!(line, "disconnected {peer} {}", one_line(reason))
            }
            Event::Delivered { msg_id, peer } => write!(line, "delivered {msg_id} {peer}"),
            Event::Failed {
                msg_id,
                peer,
                reason,
            } => {
                let peer: String = peer.chars().filter(|c| !c.is_whitespace()).collect();
                let peer = if peer.is_empty() { "-".into() } else { peer };
                write!(line, "failed {msg_id} {peer} {}", one_line(reason))
            }
            Event::Peer {
                peer,
                state,
                path,
                remote,
            } => {
                let remote = remote.map_or("-".to_string(), |a| a.to_string());
                write!(line, "peer {peer} {state} {} {remote}", path.unwrap_or("-"))
            }
            Event::Status(report) => write!(line, "{report}"),
            Event::Peers(count) => write!(line, "peers {count}"),
            Event::Id(id) => write!(line, "id {id}"),
            Event::Help(text) => write!(line, "help {text}"),
            Event::Error { code, message } => write!(line, "error {code} {}", one_line(message)),
        };
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> PeerId {
        PeerId([5; 32])
    }

    #[test]
    fn parses_commands() {
        let text = id().to_text();
        assert_eq!(
            parse_command_line(&format!("send {text} hello  world\r")),
            Ok(Command::Send {
                peer: id(),
                payload: b"hello  world".to_vec()
            })
        );
        assert_eq!(
            parse_command_line(&format!("send {text}")),
            Ok(Command::Send {
                peer: id(),
                payload: vec![]
            })
        );
        assert_eq!(
            parse_command_line(&format!("connect {text}")),
            Ok(Command::Connect(id()))
        );
        assert_eq!(parse_command_line("list"), Ok(Command::List));
        assert_eq!(parse_command_line("  quit "), Ok(Command::Quit));
    }

    #[test]
    fn rejects_bad_commands_with_codes() {
        assert_eq!(
            parse_command_line("").unwrap_err().code(),
            "unknown-command"
        );
        assert_eq!(
            parse_command_line("fly").unwrap_err().code(),
            "unknown-command"
        );
        assert_eq!(
            parse_command_line("send").unwrap_err().code(),
            "bad-command"
        );
        assert_eq!(
            parse_command_line("list x").unwrap_err().code(),
            "bad-command"
        );
        assert_eq!(
            parse_command_line("connect").unwrap_err().code(),
            "bad-command"
        );
        assert_eq!(
            parse_command_line("send nope hi").unwrap_err().code(),
            "bad-peer-id"
        );
    }

    #[test]
    fn send_header_checks_lengths() {
        let frame = encode_send_frame(42, &id().to_text(), b"payload");
        let body = &frame[5..];
        let header = parse_send_header(body, body.len()).unwrap();
        assert_eq!(header.msg_id, 42);
        assert_eq!(header.peer_text, id().to_text());
        assert_eq!(&body[header.header_len..], b"payload");
        for len in 0..(SEND_FIXED_HEADER + 52) {
            assert_eq!(
                parse_send_header(&body[..len], len),
                Err(FrameError::ShortSend(len))
            );
        }
    }

    #[test]
    fn event_lines_and_escaping() {
        let failed = Event::Failed {
            msg_id: 7,
            peer: "bad id".into(),
            reason: "two\nlines".into(),
        };
        assert_eq!(failed.to_line(), "failed 7 badid two lines");
        let ready = Event::Ready {
            id: id(),
            local: vec![
                "127.0.0.1:5".parse().unwrap(),
                "10.0.0.1:5".parse().unwrap(),
            ],
            observed: None,
            nat: crate::nat::NatBehaviour::Unknown,
            inbound: crate::nat::InboundBehaviour::MovesPort,
            relay: None,
            over: None,
        };
        assert_eq!(
            ready.to_line(),
            format!(
                "ready {} local=127.0.0.1:5,10.0.0.1:5 observed=- nat=unknown inbound=moves-port relay=- over=-",
                id()
            )
        );
        assert_eq!(
            escape_line_payload(b"a\\b\nc\r\xff"),
            "a\\\\b\\nc\\r\u{fffd}"
        );
        let header = recv_frame_header(&id(), 3);
        assert_eq!(
            u32::from_be_bytes(header[0..4].try_into().unwrap()),
            1 + 1 + 52 + 3
        );
        assert_eq!(header[4], FRAME_RECV);
        assert_eq!(header.len(), 4 + 1 + 1 + 52);
    }
}
