//! Drives one `p2p-node` in framed mode (docs/PROTOCOL.md 1.2) inside a lab host.
//!
//! A reader thread parses stdout frames and timestamps them as they arrive; a writer thread
//! owns stdin, so the matrix never blocks on a node that stops reading (backpressure) and can
//! always give up at its own deadline.

use crate::error::{NetsimError, Result};
use crate::lab::{Lab, LabProcess};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

const FRAME_SEND: u8 = 0x01;
const FRAME_COMMAND: u8 = 0x02;
const FRAME_RECV: u8 = 0x81;
const FRAME_EVENT: u8 = 0x82;
/// Largest stdout frame the reader accepts (the node's default --max-message plus headers).
const MAX_FRAME: usize = 16 * 1024 * 1024 + 512;

/// Something the node wrote on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An event line, e.g. `connected <peer> direct <addr>`.
    Event(String),
    /// A received payload.
    Recv { peer: String, payload: Vec<u8> },
    /// stdout ended or carried something that is not a frame of the protocol.
    Broken(String),
}

/// An output with the time the reader thread saw it.
#[derive(Debug, Clone)]
pub struct Timed {
    pub at: Instant,
    pub output: Output,
}

/// Encodes a SEND frame.
pub fn send_frame(msg_id: u64, peer: &str, payload: &[u8]) -> Vec<u8> {
    let body_len = 1 + 8 + 1 + peer.len() + payload.len();
    let mut f = Vec::with_capacity(4 + body_len);
    f.extend_from_slice(&(body_len as u32).to_be_bytes());
    f.push(FRAME_SEND);
    f.extend_from_slice(&msg_id.to_be_bytes());
    f.push(peer.len() as u8);
    f.extend_from_slice(peer.as_bytes());
    f.extend_from_slice(payload);
    f
}

/// Encodes a COMMAND frame.
pub fn command_frame(line: &str) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + line.len());
    f.extend_from_slice(&(1 + line.len() as u32).to_be_bytes());
    f.push(FRAME_COMMAND);
    f.extend_from_slice(line.as_bytes());
    f
}

/// Reads one stdout frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(reader: &mut impl Read) -> std::io::Result<Option<Output>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Ok(Some(Output::Broken(format!("frame length {len}"))));
    }
    let mut frame = vec![0u8; len];
    reader.read_exact(&mut frame)?;
    let body = &frame[1..];
    Ok(Some(match frame[0] {
        FRAME_EVENT => Output::Event(String::from_utf8_lossy(body).into_owned()),
        FRAME_RECV if !body.is_empty() && body.len() > usize::from(body[0]) => {
            let id_len = usize::from(body[0]);
            Output::Recv {
                peer: String::from_utf8_lossy(&body[1..1 + id_len]).into_owned(),
                payload: body[1 + id_len..].to_vec(),
            }
        }
        other => Output::Broken(format!("frame type {other:#x} of {len} bytes")),
    }))
}

/// A running node.
pub struct NodeProcess {
    pub host: String,
    /// Everything the node has written so far, in order.
    pub history: Vec<Timed>,
    outputs: Receiver<Timed>,
    input: Option<Sender<Vec<u8>>>,
    _process: LabProcess,
}

impl NodeProcess {
    /// Starts `program args...` in `host` with stdin/stdout piped and stderr to `stderr_log`.
    pub fn start(
        lab: &Lab,
        host: &str,
        program: &Path,
        args: &[String],
        stderr_log: &Path,
    ) -> Result<Self> {
        let log = File::create(stderr_log)
            .map_err(|e| NetsimError::io(format!("creating {}", stderr_log.display()), e))?;
        let mut cmd = lab.command(host, program)?;
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd
            .spawn()
            .map_err(|e| NetsimError::io(format!("starting {} in {host}", program.display()), e))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let (out_tx, out_rx) = mpsc::channel();
        std::thread::spawn(move || loop {
            let (output, end) = match read_frame(&mut stdout) {
                Ok(Some(o @ Output::Broken(_))) => (o, true),
                Ok(Some(o)) => (o, false),
                Ok(None) => (Output::Broken("stdout closed".into()), true),
                Err(e) => (Output::Broken(format!("reading stdout: {e}")), true),
            };
            let timed = Timed {
                at: Instant::now(),
                output,
            };
            if out_tx.send(timed).is_err() || end {
                return;
            }
        });
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for frame in in_rx {
                if stdin.write_all(&frame).and_then(|_| stdin.flush()).is_err() {
                    return;
                }
            }
        });
        Ok(NodeProcess {
            host: host.to_string(),
            history: Vec::new(),
            outputs: out_rx,
            input: Some(in_tx),
            _process: LabProcess { child },
        })
    }

    /// Queues a SEND frame; returns when it is queued, not when the node has read it.
    pub fn send(&self, msg_id: u64, peer: &str, payload: &[u8]) {
        self.write(send_frame(msg_id, peer, payload));
    }

    /// Queues a COMMAND frame.
    pub fn command(&self, line: &str) {
        self.write(command_frame(line));
    }

    fn write(&self, frame: Vec<u8>) {
        if let Some(input) = &self.input {
            let _ = input.send(frame);
        }
    }

    /// Closes stdin (the node treats it as `quit`).
    pub fn close_stdin(&mut self) {
        self.input = None;
    }

    /// Collects outputs until `f` finds what it wants in the history (checked from the start,
    /// so earlier outputs count) or `deadline` passes.
    pub fn wait_for<T>(
        &mut self,
        deadline: Instant,
        mut f: impl FnMut(&[Timed]) -> Option<T>,
    ) -> Option<T> {
        loop {
            if let Some(found) = f(&self.history) {
                return Some(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            match self.outputs.recv_timeout(deadline - now) {
                Ok(timed) => self.history.push(timed),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    return f(&self.history);
                }
            }
        }
    }

    /// Takes whatever has arrived without waiting.
    pub fn drain(&mut self) {
        while let Ok(timed) = self.outputs.try_recv() {
            self.history.push(timed);
        }
    }

    /// Event lines whose first word is `name`, with their times.
    pub fn events(&self, name: &str) -> Vec<(Instant, Vec<String>)> {
        self.history
            .iter()
            .filter_map(|t| match &t.output {
                Output::Event(line) => {
                    let words: Vec<String> = line.split(' ').map(str::to_string).collect();
                    (words.first().map(String::as_str) == Some(name)).then_some((t.at, words))
                }
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_reader() {
        let mut stream = Vec::new();
        let event = b"connected abc direct 192.0.2.1:5";
        stream.extend_from_slice(&(1 + event.len() as u32).to_be_bytes());
        stream.push(FRAME_EVENT);
        stream.extend_from_slice(event);
        let mut recv = vec![3u8];
        recv.extend_from_slice(b"abc");
        recv.extend_from_slice(&[0, 1, 2, 255]);
        stream.extend_from_slice(&(1 + recv.len() as u32).to_be_bytes());
        stream.push(FRAME_RECV);
        stream.extend_from_slice(&recv);
        let mut r = stream.as_slice();
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some(Output::Event("connected abc direct 192.0.2.1:5".into()))
        );
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some(Output::Recv {
                peer: "abc".into(),
                payload: vec![0, 1, 2, 255]
            })
        );
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn send_and_command_frames_follow_the_protocol() {
        let f = send_frame(0x0102, "pp", b"xy");
        assert_eq!(&f[..4], &(1 + 8 + 1 + 2 + 2u32).to_be_bytes());
        assert_eq!(f[4], FRAME_SEND);
        assert_eq!(&f[5..13], &0x0102u64.to_be_bytes());
        assert_eq!(f[13], 2);
        assert_eq!(&f[14..], b"ppxy");
        let c = command_frame("list");
        assert_eq!(c, [0, 0, 0, 5, FRAME_COMMAND, b'l', b'i', b's', b't']);
    }

    #[test]
    fn garbage_is_reported_not_trusted() {
        let mut r: &[u8] = &[0, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut r).unwrap(),
            Some(Output::Broken(_))
        ));
        let mut r: &[u8] = &[0, 0, 0, 2, 0x99, 1];
        assert!(matches!(
            read_frame(&mut r).unwrap(),
            Some(Output::Broken(_))
        ));
    }
}
