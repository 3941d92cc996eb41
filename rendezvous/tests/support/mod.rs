//! Test harness for the `p2p-rendezvous` binary on loopback: start it, read its address lines,
//! scrape its metrics address, and talk to its TLS control port as a node would.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use p2pnat_proto::control::Request;
use p2pnat_proto::nat::NatReport;

/// The binary under test: this build's, or `$P2P_RENDEZVOUS_BIN` (e.g. a release build, for
/// the figures in docs/PERFORMANCE.md).
pub fn binary() -> String {
    std::env::var("P2P_RENDEZVOUS_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_p2p-rendezvous").to_string())
}

/// A running rendezvous on loopback (TLS port, TURN and metrics on OS-chosen ports); killed on
/// drop.
pub struct Rendezvous {
    pub child: Child,
    pub quic: SocketAddr,
    pub id: String,
    pub tls: SocketAddr,
    pub metrics: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Rendezvous {
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--turn-listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--identity",
            ])
            .arg(dir.path().join("rv.key"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = || {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let first = line();
        assert_eq!(
            first.first().map(String::as_str),
            Some("listening"),
            "{first:?}"
        );
        let tls = line();
        assert_eq!(tls[..2], ["tls", "listening"], "{tls:?}");
        let metrics = line();
        assert_eq!(metrics[..2], ["metrics", "listening"], "{metrics:?}");
        Rendezvous {
            child,
            quic: first[1].parse().unwrap(),
            id: first[2].clone(),
            tls: tls[2].parse().unwrap(),
            metrics: metrics[2].parse().unwrap(),
            _dir: dir,
        }
    }

    /// The rendezvous's metrics, parsed with a Prometheus text-format parser.
    pub fn scrape(&self) -> Scrape {
        let (status, body) = http(self.metrics, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(status, 200, "{body}");
        let lines = body.lines().map(|l| Ok(l.to_string()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("metrics parse"))
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scrape.
pub struct Scrape(pub prometheus_parse::Scrape);

impl Scrape {
    /// The value of the sample `name` whose labels include all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let sample = self
            .0
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: unexpected {other:?}"),
        }
    }
}

/// Sends `request` raw to `addr` and returns the status code and body of the answer.
pub fn http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (status, body.to_string())
}

/// A registration as a node sends it.
pub fn register(local_addrs: Vec<SocketAddr>) -> Request {
    Request::Register {
        local_addrs,
        nat: NatReport::UNKNOWN,
        relayed: None,
    }
}
