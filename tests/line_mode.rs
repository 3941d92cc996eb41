//! Line mode, as a person at a terminal uses it: text commands in, event lines out.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{node_binary, Node, Rendezvous, PATIENCE};

#[test]
fn line_mode_sends_receives_escapes_and_reports_errors() {
    let rendezvous = Rendezvous::start(&[]);
    let mut framed = Node::start(&rendezvous, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(node_binary())
        .args(["--io", "lines", "--listen", "127.0.0.1:0", "--rendezvous"])
        .arg(&rendezvous.addr)
        .arg("--identity")
        .arg(dir.path().join("id.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_matching = |prefix: &str| -> String {
        loop {
            let line = lines.recv_timeout(PATIENCE).expect("node went quiet");
            if line.starts_with(prefix) {
                return line;
            }
        }
    };
    let ready = next_matching("ready ");
    let own = ready.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        ready.contains(" local=") && ready.contains(" observed=127.0.0.1:"),
        "{ready}"
    );

    // Bad input first: each gets its error line and the node carries on.
    writeln!(stdin, "dance").unwrap();
    assert!(next_matching("error ").starts_with("error unknown-command"));
    writeln!(stdin, "send shortid hello").unwrap();
    assert!(next_matching("error ").starts_with("error bad-peer-id"));
    stdin.write_all(&vec![b'x'; 70 * 1024]).unwrap();
    writeln!(stdin).unwrap();
    assert!(next_matching("error ").starts_with("error bad-command line longer than"));

    // A text message out, delivered; a binary-ish one in, escaped.
    writeln!(stdin, "send {} hello from a terminal", framed.id).unwrap();
    let got = framed.wait_recvs(1);
    assert_eq!(got[0], (own.clone(), b"hello from a terminal".to_vec()));
    assert_eq!(
        next_matching("delivered "),
        format!("delivered 1 {}", framed.id)
    );
    framed.send(9, &own, b"two\nlines \\ and \xff");
    assert_eq!(
        next_matching("recv "),
        format!("recv {} two\\nlines \\\\ and \u{fffd}", framed.id)
    );
    writeln!(stdin, "list").unwrap();
    assert!(next_matching("peer ").starts_with(&format!("peer {} connected direct ", framed.id)));
    assert_eq!(next_matching("peers "), "peers 1");
    writeln!(stdin, "help").unwrap();
    assert!(next_matching("help ").starts_with("help send <peer_id> <text>"));
    writeln!(stdin, "quit").unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "quit did not end the node"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}
