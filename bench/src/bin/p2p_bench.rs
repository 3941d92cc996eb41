//! `p2p-bench`: scripts/bench.sh's driver. Runs p2p-node, the in-repo quinn pipe and (when given)
//! dumbpipe side by side on loopback, interleaved over several rounds, and writes the medians and
//! ratios as markdown, JSON and an SVG bar chart. It measures; it never asserts on a figure.
//!
//! Every tool gets the same session per round:
//! 1. connect to first byte: p2p-node from a `SEND` to a peer it has never connected to (lookup,
//!    punch, checks, QUIC handshake) until the peer's application has the byte; the pipes from
//!    starting the connecting process (it then dials and handshakes) until the listener's stdout
//!    has the byte;
//! 2. idle RSS: both ends' VmRSS, connected, after a second of silence;
//! 3. one-way latency: 64 bytes written to the sender's stdin until they are read from the
//!    receiver's stdout, one at a time (p50, p99);
//! 4. (p2p-node only) 64-byte message rate: that many `SEND` frames written as fast as the node
//!    takes them, until the last `RECV`;
//! 5. bulk: the same bytes through stdin -> stdout (p2p-node: 1 MiB messages), MiB/s;
//! 6. loaded RSS: both ends' VmHWM (peak) after the bulk.
//!
//! The Python wrapper's JSON rate runs `bench/python_json.py` once per round against its own
//! rendezvous: its bulk API (`send_many` / `message_batches`, the figure the target is read
//! against) and its per-message API (`send_message(wait=False)` / `messages()`), each until every
//! message is received and every send confirmed `delivered`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use p2pnat_proto::app::{encode_send_frame, FRAME_RECV};

#[path = "p2p_bench/report.rs"]
mod report;
use report::*;

const PATIENCE: Duration = Duration::from_secs(60);

type Error = Box<dyn std::error::Error>;

#[derive(Clone)]
struct Options {
    node: PathBuf,
    rendezvous: PathBuf,
    pipe: PathBuf,
    dumbpipe: Option<PathBuf>,
    python_script: Option<PathBuf>,
    rounds: usize,
    bulk_mib: usize,
    small_messages: usize,
    latency_samples: usize,
    python_messages: usize,
    out: PathBuf,
    node_args: Vec<String>,
    pipe_args: Vec<String>,
    label: String,
    extra_json: Vec<PathBuf>,
    notes: Option<PathBuf>,
    /// `--node-variant NAME=ARGS`: p2p-node again with ARGS added, as tool "p2p-node NAME".
    node_variants: Vec<(String, Vec<String>)>,
}

fn usage() -> ! {
    eprintln!(
        "usage: p2p-bench --node BIN --rendezvous BIN --pipe BIN [--dumbpipe BIN] [--python-script FILE]\n\
         \t[--rounds N] [--bulk-mib N] [--small N] [--latency N] [--python-messages N] [--out DIR]\n\
         \t[--node-arg ARG]... [--pipe-arg ARG]... [--label TEXT] [--include JSON]... [--include-notes MD]\n\
         \t[--node-variant NAME=ARGS]..."
    );
    std::process::exit(2)
}

fn parse_options() -> Options {
    let mut o = Options {
        node: PathBuf::new(),
        rendezvous: PathBuf::new(),
        pipe: PathBuf::new(),
        dumbpipe: None,
        python_script: None,
        rounds: 3,
        bulk_mib: 512,
        small_messages: 200_000,
        latency_samples: 2000,
        python_messages: 20_000,
        out: PathBuf::from("reports/bench"),
        node_args: Vec::new(),
        pipe_args: Vec::new(),
        label: String::new(),
        extra_json: Vec::new(),
        notes: None,
        node_variants: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--node" => o.node = value().into(),
            "--rendezvous" => o.rendezvous = value().into(),
            "--pipe" => o.pipe = value().into(),
            "--dumbpipe" => o.dumbpipe = Some(value().into()),
            "--python-script" => o.python_script = Some(value().into()),
            "--rounds" => o.rounds = value().parse().unwrap_or_else(|_| usage()),
            "--bulk-mib" => o.bulk_mib = value().parse().unwrap_or_else(|_| usage()),
            "--small" => o.small_messages = value().parse().unwrap_or_else(|_| usage()),
            "--latency" => o.latency_samples = value().parse().unwrap_or_else(|_| usage()),
            "--python-messages" => o.python_messages = value().parse().unwrap_or_else(|_| usage()),
            "--out" => o.out = value().into(),
            "--node-arg" => o.node_args.push(value()),
            "--pipe-arg" => o.pipe_args.push(value()),
            "--label" => o.label = value(),
            "--include" => o.extra_json.push(value().into()),
            "--include-notes" => o.notes = Some(value().into()),
            "--node-variant" => {
                let v = value();
                let (name, rest) = v.split_once('=').unwrap_or((&v, ""));
                o.node_variants.push((
                    name.to_string(),
                    rest.split_whitespace().map(String::from).collect(),
                ));
            }
            _ => usage(),
        }
    }
    if o.node.as_os_str().is_empty()
        || o.rendezvous.as_os_str().is_empty()
        || o.pipe.as_os_str().is_empty()
    {
        usage()
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Processes

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A child killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
    /// Waits up to `patience` for the child to exit by itself.
    fn wait_exit(&mut self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// What a reader thread saw on a child's stdout.
enum Seen {
    /// Payload bytes (a RECV frame's payload, or a raw read), and when.
    Bytes(usize, Instant),
    /// A framed-mode event line.
    Event(String),
}

/// Reads a raw byte stream, reporting each read's size.
fn raw_reader(mut stdout: impl Read + Send + 'static) -> Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(Seen::Bytes(n, Instant::now())).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads p2p-node's framed stdout (docs/PROTOCOL.md 1.2).
fn frame_reader(stdout: impl Read + Send + 'static) -> Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = BufReader::with_capacity(256 * 1024, stdout);
        let mut body = Vec::new();
        loop {
            let mut header = [0u8; 5];
            if stdout.read_exact(&mut header).is_err() {
                return;
            }
            let length = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
            body.resize(length.saturating_sub(1), 0);
            if stdout.read_exact(&mut body).is_err() {
                return;
            }
            let seen = if header[4] == FRAME_RECV {
                let id_len = body.first().copied().unwrap_or(0) as usize;
                Seen::Bytes(body.len().saturating_sub(1 + id_len), Instant::now())
            } else {
                Seen::Event(String::from_utf8_lossy(&body).into_owned())
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits until `total` payload bytes have arrived; returns when the last did.
fn wait_bytes(rx: &Receiver<Seen>, total: u64) -> Result<Instant, Error> {
    let mut got = 0u64;
    let mut last = Instant::now();
    while got < total {
        match rx.recv_timeout(PATIENCE)? {
            Seen::Bytes(n, at) => {
                got += n as u64;
                last = at;
            }
            Seen::Event(e) if e.starts_with("error") || e.starts_with("failed") => {
                return Err(format!("node: {e}").into())
            }
            Seen::Event(_) => {}
        }
    }
    Ok(last)
}

fn wait_event(rx: &Receiver<Seen>, prefix: &str) -> Result<String, Error> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left)? {
            Seen::Event(e) if e.starts_with(prefix) => return Ok(e),
            _ => {}
        }
    }
}

/// Drains a receiver in the background (the sending node's `delivered` events).
fn drain(rx: Receiver<Seen>) {
    std::thread::spawn(move || while rx.recv().is_ok() {});
}

/// Writes `chunks` (already encoded) from a thread; returns the stdin when done.
fn write_in_thread(
    mut stdin: ChildStdin,
    chunks: impl Iterator<Item = Vec<u8>> + Send + 'static,
) -> std::thread::JoinHandle<std::io::Result<ChildStdin>> {
    std::thread::spawn(move || {
        for chunk in chunks {
            stdin.write_all(&chunk)?;
        }
        stdin.flush()?;
        Ok(stdin)
    })
}

// ---------------------------------------------------------------------------------------------
// One session per tool

/// What one session measured.
#[derive(Default)]
struct Session {
    first_byte_ms: Option<f64>,
    idle_rss_mib: Option<f64>,
    latency_p50_us: Option<f64>,
    latency_p99_us: Option<f64>,
    small_msgs_per_s: Option<f64>,
    bulk_mib_s: Option<f64>,
    loaded_rss_mib: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The ends of a connected pipe-like tool: where bytes go in, and what comes out.
trait Ends {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error>;
    fn rx(&self) -> &Receiver<Seen>;
    fn pids(&self) -> [u32; 2];
}

fn latency(ends: &mut dyn Ends, samples: usize, record: &[u8]) -> Result<(f64, f64), Error> {
    let mut us = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        ends.write(record)?;
        let at = wait_bytes(ends.rx(), 64)?;
        us.push(at.duration_since(start).as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    Ok((percentile(&us, 0.5), percentile(&us, 0.99)))
}

fn rss_sum(pids: [u32; 2], field: &str) -> f64 {
    mib(pids.iter().map(|pid| proc_kib(*pid, field)).sum())
}

// --- p2p-node

struct Rendezvous {
    _proc: Proc,
    addr: String,
}

fn start_rendezvous(o: &Options, dir: &Path, extra: &[&str]) -> Result<Rendezvous, Error> {
    let mut child = Command::new(&o.rendezvous)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--turn-listen",
            "127.0.0.1:0",
            "--no-tls",
        ])
        .arg("--identity")
        .arg(dir.join("rendezvous.key"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let addr = line
        .strip_prefix("listening ")
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| format!("rendezvous said {line:?}"))?
        .to_string();
    Ok(Rendezvous {
        _proc: Proc(child),
        addr,
    })
}

struct Node {
    proc: Proc,
    stdin: Option<ChildStdin>,
    rx: Receiver<Seen>,
    id: String,
}

fn start_node(o: &Options, rendezvous: &str, key: &Path, extra: &[String]) -> Result<Node, Error> {
    let mut child = Command::new(&o.node)
        .args([
            "--io",
            "frames",
            "--listen",
            "127.0.0.1:0",
            "--rendezvous",
            rendezvous,
        ])
        .arg("--identity")
        .arg(key)
        .args(&o.node_args)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdin = child.stdin.take();
    let rx = frame_reader(child.stdout.take().unwrap());
    let proc = Proc(child);
    let ready = wait_event(&rx, "ready ")?;
    let id = ready
        .split_whitespace()
        .nth(1)
        .ok_or("ready without an id")?
        .to_string();
    Ok(Node {
        proc,
        stdin,
        rx,
        id,
    })
}

/// The sending node: its process and stdin; its stdout is drained by a thread.
struct Sender {
    proc: Proc,
    stdin: Option<ChildStdin>,
}

struct NodeEnds {
    a: Sender,
    b: Node,
    msg_id: u64,
}

impl Ends for NodeEnds {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.msg_id += 1;
        let frame = encode_send_frame(self.msg_id, &self.b.id, bytes);
        let stdin = self.a.stdin.as_mut().ok_or("stdin taken")?;
        stdin.write_all(&frame)?;
        stdin.flush()?;
        Ok(())
    }
    fn rx(&self) -> &Receiver<Seen> {
        &self.b.rx
    }
    fn pids(&self) -> [u32; 2] {
        [self.a.proc.pid(), self.b.proc.pid()]
    }
}

impl NodeEnds {
    /// Sends `count` messages of `size` bytes as fast as the node takes them; seconds until the
    /// receiving application had them all.
    fn stream(&mut self, count: usize, size: usize) -> Result<f64, Error> {
        let stdin = self.a.stdin.take().ok_or("stdin taken")?;
        let peer = self.b.id.clone();
        let first = self.msg_id + 1;
        self.msg_id += count as u64;
        let payload = vec![0x5a; size];
        // Small messages are encoded 1,000 to a write, so that the driver is not the limit.
        let per_write = (65536 / (size + 64)).max(1);
        let chunks = (0..count.div_ceil(per_write)).map(move |w| {
            let mut chunk = Vec::new();
            for i in w * per_write..((w + 1) * per_write).min(count) {
                chunk.extend(encode_send_frame(first + i as u64, &peer, &payload));
            }
            chunk
        });
        let start = Instant::now();
        let writer = write_in_thread(stdin, chunks);
        let last = wait_bytes(&self.b.rx, (count * size) as u64)?;
        self.a.stdin = Some(writer.join().map_err(|_| "writer panicked")??);
        Ok(last.duration_since(start).as_secs_f64())
    }
}

fn node_session(o: &Options, dir: &Path, extra: &[String]) -> Result<Session, Error> {
    let mut s = Session::default();
    let rendezvous = start_rendezvous(o, dir, &[])?;
    let a = start_node(o, &rendezvous.addr, &dir.join("a.key"), extra)?;
    let b = start_node(o, &rendezvous.addr, &dir.join("b.key"), extra)?;
    drain(a.rx);
    let mut ends = NodeEnds {
        a: Sender {
            proc: a.proc,
            stdin: a.stdin,
        },
        b,
        msg_id: 0,
    };
    let start = Instant::now();
    ends.write(b"x")?;
    let at = wait_bytes(&ends.b.rx, 1)?;
    s.first_byte_ms = Some(at.duration_since(start).as_secs_f64() * 1e3);
    std::thread::sleep(Duration::from_secs(1));
    s.idle_rss_mib = Some(rss_sum(ends.pids(), "VmRSS:"));
    let (p50, p99) = latency(&mut ends, o.latency_samples, &[0x5a; 64])?;
    s.latency_p50_us = Some(p50);
    s.latency_p99_us = Some(p99);
    let secs = ends.stream(o.small_messages, 64)?;
    s.small_msgs_per_s = Some(o.small_messages as f64 / secs);
    let secs = ends.stream(o.bulk_mib, 1024 * 1024)?;
    s.bulk_mib_s = Some(o.bulk_mib as f64 / secs);
    s.loaded_rss_mib = Some(rss_sum(ends.pids(), "VmHWM:"));
    drop(ends);
    drop(rendezvous);
    Ok(s)
}

// --- the pipes: quinn-pipe and dumbpipe (stdin of the connecting side -> stdout of the listener)

struct PipeEnds {
    listener: Proc,
    connector: Proc,
    stdin: Option<ChildStdin>,
    rx: Receiver<Seen>,
}

impl Ends for PipeEnds {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let stdin = self.stdin.as_mut().ok_or("stdin taken")?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }
    fn rx(&self) -> &Receiver<Seen> {
        &self.rx
    }
    fn pids(&self) -> [u32; 2] {
        [self.connector.pid(), self.listener.pid()]
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Pipe {
    Quinn,
    Dumb,
}

fn pipe_session(o: &Options, which: Pipe) -> Result<Session, Error> {
    let mut s = Session::default();
    let (bin, listen_args): (&Path, Vec<String>) = match which {
        Pipe::Quinn => (&o.pipe, {
            let mut a = vec!["listen".to_string()];
            a.extend(o.pipe_args.iter().cloned());
            a
        }),
        Pipe::Dumb => (
            o.dumbpipe.as_deref().ok_or("no dumbpipe")?,
            vec!["listen".into(), "--ipv4-addr".into(), "127.0.0.1:0".into()],
        ),
    };
    let mut child = Command::new(bin)
        .args(&listen_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let rx = raw_reader(child.stdout.take().unwrap());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let listener = Proc(child);
    // quinn-pipe: "listening <addr> <peer_id>"; dumbpipe: "dumbpipe connect <ticket>".
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let connect_args: Vec<String> = loop {
        let line = line_rx.recv_timeout(PATIENCE)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match (which, words.as_slice()) {
            (Pipe::Quinn, ["listening", addr, id]) => {
                let mut a = vec!["connect".to_string(), addr.to_string(), id.to_string()];
                a.extend(o.pipe_args.iter().cloned());
                break a;
            }
            (Pipe::Dumb, ["dumbpipe", "connect", ticket]) => {
                break vec![
                    "connect".into(),
                    ticket.to_string(),
                    "--ipv4-addr".into(),
                    "127.0.0.1:0".into(),
                ]
            }
            _ => {}
        }
    };
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(&connect_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let stdin = child.stdin.take();
    let mut ends = PipeEnds {
        listener,
        connector: Proc(child),
        stdin,
        rx,
    };
    ends.write(b"x")?;
    let at = wait_bytes(&ends.rx, 1)?;
    s.first_byte_ms = Some(at.duration_since(start).as_secs_f64() * 1e3);
    std::thread::sleep(Duration::from_secs(1));
    s.idle_rss_mib = Some(rss_sum(ends.pids(), "VmRSS:"));
    let (p50, p99) = latency(&mut ends, o.latency_samples, &[0x5a; 64])?;
    s.latency_p50_us = Some(p50);
    s.latency_p99_us = Some(p99);
    let stdin = ends.stdin.take().ok_or("stdin taken")?;
    let total = o.bulk_mib * 1024 * 1024;
    let chunk = vec![0x5a; 256 * 1024];
    let start = Instant::now();
    let writer = write_in_thread(stdin, (0..total / chunk.len()).map(move |_| chunk.clone()));
    let last = wait_bytes(&ends.rx, total as u64)?;
    s.bulk_mib_s = Some(o.bulk_mib as f64 / last.duration_since(start).as_secs_f64());
    s.loaded_rss_mib = Some(rss_sum(ends.pids(), "VmHWM:"));
    drop(writer.join());
    let _ = ends.connector.wait_exit(Duration::from_secs(2));
    Ok(s)
}

// --- the Python wrapper

/// The script's bulk-API rate (`messages_per_s`) and its per-message-API rate, if it ran that.
fn python_session(o: &Options, dir: &Path) -> Result<(f64, Option<f64>), Error> {
    let script = o.python_script.as_ref().ok_or("no script")?;
    let rendezvous = start_rendezvous(o, dir, &[])?;
    let out = Command::new("python3")
        .arg(script)
        .args([
            "--node",
            &o.node.to_string_lossy(),
            "--rendezvous",
            &rendezvous.addr,
        ])
        .args(["--count", &o.python_messages.to_string(), "--dir"])
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", script.display(), out.status).into());
    }
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let bulk = value["messages_per_s"]
        .as_f64()
        .ok_or("no messages_per_s in the script's output")?;
    Ok((bulk, value["per_message_messages_per_s"].as_f64()))
}

// ---------------------------------------------------------------------------------------------
// Rounds, medians, reports

const NODE: &str = "p2p-node";
const QUINN: &str = "quinn-pipe";
const DUMB: &str = "dumbpipe";

/// samples[metric][tool] = one value per round.
type Samples = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

fn record(samples: &mut Samples, tool: &str, s: &Session) {
    let mut put = |metric: &str, v: Option<f64>| {
        if let Some(v) = v {
            samples
                .entry(metric.to_string())
                .or_default()
                .entry(tool.to_string())
                .or_default()
                .push(v);
        }
    };
    put("first_byte_ms", s.first_byte_ms);
    put("idle_rss_mib", s.idle_rss_mib);
    put("latency_p50_us", s.latency_p50_us);
    put("latency_p99_us", s.latency_p99_us);
    put("small_msgs_per_s", s.small_msgs_per_s);
    put("bulk_mib_s", s.bulk_mib_s);
    put("loaded_rss_mib", s.loaded_rss_mib);
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let o = parse_options();
    let started = utc_now();
    std::fs::create_dir_all(&o.out).expect("output directory");
    let work = o.out.join("work");
    let mut samples = Samples::new();
    let mut failures = 0usize;
    let mut tools: Vec<String> = vec![NODE.to_string()];
    for (name, _) in &o.node_variants {
        tools.push(format!("{NODE} {name}"));
    }
    tools.push(QUINN.to_string());
    if o.dumbpipe.is_some() {
        tools.push(DUMB.to_string());
    }
    for round in 0..o.rounds {
        // Interleaved: every tool once per round, the order rotated from round to round.
        let mut order = tools.clone();
        order.rotate_left(round % tools.len());
        for tool in order {
            let tool = tool.as_str();
            let dir = work.join(format!("round{round}-{}", tool.replace(' ', "-")));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("work directory");
            let variant = o
                .node_variants
                .iter()
                .find(|(name, _)| tool.strip_prefix("p2p-node ") == Some(name.as_str()));
            let result = match (tool, variant) {
                (_, Some((_, extra))) => node_session(&o, &dir, extra),
                (NODE, None) => node_session(&o, &dir, &[]),
                (QUINN, None) => pipe_session(&o, Pipe::Quinn),
                _ => pipe_session(&o, Pipe::Dumb),
            };
            match result {
                Ok(s) => {
                    eprintln!(
                        "round {} {tool}: bulk {:.1} MiB/s, first byte {:.2} ms, latency p50 {:.0} us p99 {:.0} us{}, RSS idle {:.1} MiB peak {:.1} MiB",
                        round + 1,
                        s.bulk_mib_s.unwrap_or(f64::NAN),
                        s.first_byte_ms.unwrap_or(f64::NAN),
                        s.latency_p50_us.unwrap_or(f64::NAN),
                        s.latency_p99_us.unwrap_or(f64::NAN),
                        s.small_msgs_per_s.map_or(String::new(), |r| format!(", 64 B {r:.0} msg/s")),
                        s.idle_rss_mib.unwrap_or(f64::NAN),
                        s.loaded_rss_mib.unwrap_or(f64::NAN),
                    );
                    record(&mut samples, tool, &s);
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("round {} {tool}: failed: {e}", round + 1)
                }
            }
        }
        if o.python_script.is_some() {
            let dir = work.join(format!("round{round}-python"));
            let _ = std::fs::create_dir_all(&dir);
            match python_session(&o, &dir) {
                Ok((rate, per_message)) => {
                    eprintln!(
                        "round {} python JSON: {rate:.0} msg/s (bulk API){}",
                        round + 1,
                        per_message
                            .map_or(String::new(), |r| format!(", {r:.0} msg/s per message"))
                    );
                    for (key, value) in [
                        ("python_json_msgs_per_s", Some(rate)),
                        ("python_json_per_message_msgs_per_s", per_message),
                    ] {
                        if let Some(value) = value {
                            samples
                                .entry(key.into())
                                .or_default()
                                .entry(NODE.into())
                                .or_default()
                                .push(value);
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("round {} python: failed: {e}", round + 1)
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let r = report(&o, &samples, o.rounds, &started);
    let title = format!(
        "p2p-node against the others, medians of {} round(s) ({started} UTC)",
        o.rounds
    );
    std::fs::write(o.out.join("bench.md"), &r.markdown).expect("bench.md");
    std::fs::write(
        o.out.join("bench.json"),
        serde_json::to_string_pretty(&r.json).unwrap() + "\n",
    )
    .expect("bench.json");
    std::fs::write(o.out.join("bench.svg"), svg(&r.bars, &title)).expect("bench.svg");
    print!("{}", r.markdown);
    // A session that did not run is a failure (the smoke run in CI checks that every tool
    // works); figures themselves are never judged here.
    if failures > 0 {
        eprintln!("p2p-bench: {failures} session(s) failed");
        std::process::exit(1);
    }
}
