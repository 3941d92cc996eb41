//! Test harness: real `p2p-rendezvous` and `p2p-node` binaries on loopback, driven through their
//! stdin/stdout exactly as an application would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod stranger;

use p2pnat_proto::app::{encode_frame, encode_send_frame, FRAME_COMMAND, FRAME_EVENT, FRAME_RECV};

/// Generous bound for anything to happen; only stops a broken test from hanging.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn node_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_p2p-node"))
}

pub fn rendezvous_binary() -> PathBuf {
    let path = node_binary().with_file_name("p2p-rendezvous");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test-all.sh does)",
        path.display()
    );
    path
}

/// A running rendezvous; killed on drop.
pub struct Rendezvous {
    pub child: Child,
    pub addr: String,
    pub id: String,
    /// The TLS port's address, when the test asked for one with `--tls-listen`.
    pub tls_addr: Option<String>,
    _dir: tempfile::TempDir,
}

impl Rendezvous {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", extra)
    }

    /// Starts a rendezvous on `listen`. Its built-in TURN server gets a port of its own on the
    /// same IP (tests run in parallel: the default 3479 would be taken) unless `extra` says
    /// otherwise. The TLS port is off (`--no-tls`: its default, 443, is shared) unless `extra`
    /// gives `--tls-listen`; then its address is read from the rendezvous's second line.
    pub fn start_on(listen: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let turn_given = extra
            .iter()
            .any(|arg| arg.starts_with("--turn-listen") || *arg == "--no-turn");
        let ip = listen.rsplit_once(':').map_or("127.0.0.1", |(ip, _)| ip);
        let turn_listen = format!("{ip}:0");
        let default_turn: &[&str] = if turn_given {
            &[]
        } else {
            &["--turn-listen", &turn_listen]
        };
        let tls_given = extra
            .iter()
            .any(|arg| arg.starts_with("--tls-listen") || *arg == "--no-tls");
        let wants_tls = extra.iter().any(|arg| arg.starts_with("--tls-listen"));
        let default_tls: &[&str] = if tls_given { &[] } else { &["--no-tls"] };
        let mut child = Command::new(rendezvous_binary())
            .args(["--listen", listen, "--identity"])
            .arg(dir.path().join("rv.key"))
            .args(default_turn)
            .args(default_tls)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words.first(),
            Some(&"listening"),
            "rendezvous said {line:?}"
        );
        let tls_addr = wants_tls.then(|| {
            let mut tls_line = String::new();
            stdout.read_line(&mut tls_line).unwrap();
            tls_line
                .strip_prefix("tls listening ")
                .unwrap_or_else(|| panic!("rendezvous said {tls_line:?}"))
                .trim()
                .to_string()
        });
        Rendezvous {
            child,
            addr: words[1].to_string(),
            id: words[2].to_string(),
            tls_addr,
            _dir: dir,
        }
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Something a framed-mode node wrote on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Recv { peer: String, payload: Vec<u8> },
    Event(String),
}

/// A running node in framed mode; killed on drop.
pub struct Node {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub id: String,
    pub ready: String,
    pub outputs: mpsc::Receiver<Out>,
    /// Output frames the test has not consumed yet are held up to a bound; past it the reader
    /// stops reading the node's stdout, as a slow application would.
    /// Keeps events that a wait skipped over, in order.
    pub backlog: Vec<Out>,
    pub dir: tempfile::TempDir,
}

fn read_frames(mut stdout: impl Read, tx: mpsc::SyncSender<Out>) {
    loop {
        let mut header = [0u8; 5];
        if stdout.read_exact(&mut header).is_err() {
            return;
        }
        let length = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
        let mut body = vec![0u8; length - 1];
        if stdout.read_exact(&mut body).is_err() {
            return;
        }
        let out = match header[4] {
            FRAME_RECV => {
                let id_len = body[0] as usize;
                let peer = String::from_utf8(body[1..1 + id_len].to_vec()).unwrap();
                Out::Recv {
                    peer,
                    payload: body[1 + id_len..].to_vec(),
                }
            }
            FRAME_EVENT => Out::Event(String::from_utf8(body).unwrap()),
            other => panic!("node wrote an unknown frame type {other:#x}"),
        };
        if tx.send(out).is_err() {
            return;
        }
    }
}

impl Node {
    pub fn start(rendezvous: &Rendezvous, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, rendezvous, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, rendezvous: &Rendezvous, extra: &[&str]) -> Self {
        Self::start_bounded(dir, &rendezvous.addr, extra, 1_000_000)
    }

    /// Starts a node whose unconsumed outputs are held only up to `bound` frames.
    pub fn start_bounded(
        dir: tempfile::TempDir,
        rendezvous: &str,
        extra: &[&str],
        bound: usize,
    ) -> Self {
        let mut child = Command::new(node_binary())
            .args(["--io", "frames", "--listen", "127.0.0.1:0", "--rendezvous"])
            .arg(rendezvous)
            .arg("--identity")
            .arg(dir.path().join("node.key"))
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::sync_channel(bound);
        std::thread::spawn(move || read_frames(stdout, tx));
        let stdin = child.stdin.take();
        let mut node = Node {
            child,
            stdin,
            id: String::new(),
            ready: String::new(),
            outputs: rx,
            backlog: Vec::new(),
            dir,
        };
        let ready = node.wait_event(|e| e.starts_with("ready "));
        node.id = ready.split_whitespace().nth(1).unwrap().to_string();
        node.ready = ready;
        node
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    pub fn send(&mut self, msg_id: u64, peer: &str, payload: &[u8]) {
        self.write(&encode_send_frame(msg_id, peer, payload));
    }

    pub fn command(&mut self, line: &str) {
        self.write(&encode_frame(FRAME_COMMAND, line.as_bytes()));
    }

    /// The next output, from the backlog first.
    pub fn next(&mut self, timeout: Duration) -> Option<Out> {
        if !self.backlog.is_empty() {
            return Some(self.backlog.remove(0));
        }
        self.outputs.recv_timeout(timeout).ok()
    }

    /// Waits for an event matching `matches`; other outputs are kept in the backlog.
    pub fn wait_event(&mut self, matches: impl Fn(&str) -> bool) -> String {
        if let Some(pos) = self
            .backlog
            .iter()
            .position(|o| matches!(o, Out::Event(e) if matches(e)))
        {
            let Out::Event(event) = self.backlog.remove(pos) else {
                unreachable!()
            };
            return event;
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.outputs.recv_timeout(left) {
                Ok(Out::Event(event)) if matches(&event) => return event,
                Ok(other) => self.backlog.push(other),
                Err(_) => panic!(
                    "no matching event within {PATIENCE:?}; saw {}",
                    summary(&self.backlog)
                ),
            }
        }
    }

    /// Waits for `count` payloads from anyone, in arrival order; events are kept in the backlog.
    pub fn wait_recvs(&mut self, count: usize) -> Vec<(String, Vec<u8>)> {
        let mut received = Vec::with_capacity(count);
        let mut kept = Vec::new();
        for out in std::mem::take(&mut self.backlog) {
            match out {
                Out::Recv { peer, payload } if received.len() < count => {
                    received.push((peer, payload))
                }
                other => kept.push(other),
            }
        }
        self.backlog = kept;
        let deadline = Instant::now() + PATIENCE;
        while received.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.outputs.recv_timeout(left) {
                Ok(Out::Recv { peer, payload }) => received.push((peer, payload)),
                Ok(other) => self.backlog.push(other),
                Err(_) => panic!(
                    "only {} of {count} payloads arrived; saw {}",
                    received.len(),
                    summary(&self.backlog)
                ),
            }
        }
        received
    }

    /// Closes stdin (the node quits) and waits for the exit status.
    pub fn quit(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node did not exit after stdin closed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A short description of outputs for failure messages: the count and the last few.
pub fn summary(outputs: &[Out]) -> String {
    let tail: Vec<String> = outputs
        .iter()
        .rev()
        .take(6)
        .rev()
        .map(|o| match o {
            Out::Event(e) => e.chars().take(160).collect(),
            Out::Recv { peer, payload } => format!("recv from {peer}: {} bytes", payload.len()),
        })
        .collect();
    format!("{} outputs, last: {tail:?}", outputs.len())
}
