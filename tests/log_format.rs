//! `p2p-node --log-format json`: every stderr line is one JSON object (tracing-subscriber's JSON
//! format), for log collectors. The rendezvous's side is in rendezvous/tests/ops.rs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn node_json_logs_are_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    // No rendezvous answers on 127.0.0.1:9; the node logs its attempts at debug level.
    let mut child = Command::new(common::node_binary())
        .args(["--log-format", "json", "--listen", "127.0.0.1:0"])
        .args(["--rendezvous", "127.0.0.1:9", "--rendezvous-over", "udp"])
        .arg("--identity")
        .arg(dir.path().join("id.key"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut parsed = 0;
    for line in stderr.lines().take(3) {
        let line = line.unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
        parsed += 1;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(parsed > 0, "the node logged nothing at debug level");
}
