//! Interop: coturn's `turnutils_uclient` against the rendezvous's built-in TURN server, with
//! REST-API credentials, relaying to coturn's `turnutils_peer` (an echo server): the client
//! over UDP, over TCP (`-t`) and over TLS (`-S`, on the rendezvous's TLS port).
//!
//! Skipped (with a note on stderr) when coturn's tools are missing and the test cannot install
//! them; under `CI=true` as root it must run (`scripts/install-deps.sh` installs coturn).
//!
//! `turnutils_uclient` runs with `-c` (one allocation, no RTCP pair): without it, it asks for
//! EVEN-PORT with a port reservation, which the built-in server refuses with 508 (no
//! reservations).

mod common;

use std::io::Read;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Node, Rendezvous};
use p2pnat_proto::turn::credentials::SharedSecret;

const SECRET: &str = "interop-secret-7f3a";
const MESSAGES: usize = 20;

/// A child killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `turnutils_uclient` with `args` for at most 60 s; returns (success, stdout+stderr).
fn uclient(args: &[&str]) -> (bool, String) {
    let mut child = Guard(
        Command::new("turnutils_uclient")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(child);
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    match status {
        Some(status) => (status.success(), text),
        None => (false, format!("{text}\n[timed out after 60 s]")),
    }
}

/// Parses `tot_send_msgs=N, tot_recv_msgs=M` and `Total lost packets L` from uclient's report.
fn report(text: &str) -> Option<(usize, usize, usize)> {
    let number_after = |key: &str| -> Option<usize> {
        let at = text.rfind(key)? + key.len();
        let digits: String = text[at..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    Some((
        number_after("tot_send_msgs=")?,
        number_after("tot_recv_msgs=")?,
        number_after("Total lost packets")?,
    ))
}

/// Whether coturn's test tools are installed; under CI as root they must be (else this fails).
fn coturn_tools_present() -> bool {
    if have("turnutils_uclient") && have("turnutils_peer") {
        return true;
    }
    let must = std::env::var("CI").is_ok_and(|v| v == "true") && is_root();
    assert!(
        !must,
        "coturn's turnutils_uclient/turnutils_peer are missing under CI as root: run scripts/install-deps.sh"
    );
    eprintln!("turn_interop skipped: coturn's turnutils_uclient is not installed (scripts/install-deps.sh as root installs it)");
    false
}

/// The shared TURN secret, in a file the rendezvous reads.
fn write_secret(dir: &std::path::Path) -> std::path::PathBuf {
    let secret_file = dir.join("turn-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    secret_file
}

#[test]
fn coturn_uclient_through_the_built_in_turn_server() {
    if !coturn_tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write_secret(dir.path());
    let turn_port = free_udp_port();
    let peer_port = free_udp_port();
    let turn_listen = format!("127.0.0.1:{turn_port}");
    // Relay sockets on 127.0.0.2: another IP than the peers' (127.0.0.1), so that relay-to-relay
    // permissions (for the relay's own IP) do not open 127.0.0.1 by themselves.
    let rendezvous = Rendezvous::start(&[
        "--turn-listen",
        &turn_listen,
        "--turn-relay-ip",
        "127.0.0.2",
        "--turn-secret-file",
        secret_file.to_str().unwrap(),
    ]);
    let _peer = Guard(
        Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let port = turn_port.to_string();
    let peer = peer_port.to_string();
    let count = MESSAGES.to_string();
    let common_args = |user: &'static str| -> Vec<String> {
        [
            "-c",
            "-n",
            &count,
            "-l",
            "120",
            "-p",
            &port,
            "-e",
            "127.0.0.1",
            "-r",
            &peer,
            "-W",
            SECRET,
            "-u",
            user,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>| {
        let mut args = args;
        args.push("127.0.0.1".to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        uclient(&refs)
    };

    // No peer registered yet: 127.0.0.1 is nobody's, the relay refuses the permission.
    let (ok, text) = run(common_args("early"));
    assert!(!ok, "uclient succeeded with no registered peer:\n{text}");
    assert!(text.contains("403"), "expected 403 Forbidden:\n{text}");
    assert!(
        report(&text).is_none_or(|(_, received, _)| received == 0),
        "{text}"
    );

    // A node registers from 127.0.0.1: relaying toward that IP is now allowed.
    let _node = Node::start(&rendezvous, &[]);

    // Channels (ChannelBind, ChannelData both ways), with the REST secret (-W).
    let (ok, text) = run(common_args("alice"));
    assert!(ok, "uclient with channels failed:\n{text}");
    assert_eq!(report(&text), Some((MESSAGES, MESSAGES, 0)), "{text}");

    // Send and Data indications (-s), with credentials computed here (-u/-w), checking our
    // REST-API scheme against coturn's client.
    let issued = SharedSecret::new(SECRET.as_bytes())
        .unwrap()
        .issue("bob", unix_now(), 3600);
    let mut args: Vec<String> = common_args("unused")
        .into_iter()
        .take(11) // up to and including the peer port; -W and -u replaced below
        .collect();
    args.extend(["-s", "-u", &issued.username, "-w", &issued.password].map(String::from));
    let (ok, text) = run(args);
    assert!(ok, "uclient with Send/Data failed:\n{text}");
    assert_eq!(report(&text), Some((MESSAGES, MESSAGES, 0)), "{text}");
}

/// A port free for both UDP and TCP on 127.0.0.1 (TURN over TCP listens on the UDP port).
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let port = free_udp_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The same as the UDP test, with the client on TCP (`-t`, the TURN port) and on TLS (`-S`,
/// the rendezvous's TLS port, where no ALPN means TURN): relayed side UDP, REST credentials.
#[test]
fn coturn_uclient_over_tcp_and_tls() {
    if !coturn_tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret_file = write_secret(dir.path());
    let turn_port = free_udp_and_tcp_port();
    let peer_port = free_udp_port();
    let turn_listen = format!("127.0.0.1:{turn_port}");
    let rendezvous = Rendezvous::start(&[
        "--turn-listen",
        &turn_listen,
        "--turn-relay-ip",
        "127.0.0.2",
        "--turn-secret-file",
        secret_file.to_str().unwrap(),
        "--tls-listen",
        "127.0.0.1:0",
    ]);
    let tls_port = rendezvous
        .tls_addr
        .as_deref()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(_, port)| port.to_string())
        .expect("TLS port");
    let _peer = Guard(
        Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let peer = peer_port.to_string();
    let count = MESSAGES.to_string();
    // `flags` first (-t, -S, -s), then the common options, as in the UDP test.
    let run = |flags: &[&str], port: &str, length: &str, user: &str| {
        let mut args: Vec<&str> = flags.to_vec();
        args.extend([
            "-c",
            "-n",
            &count,
            "-l",
            length,
            "-p",
            port,
            "-e",
            "127.0.0.1",
            "-r",
            &peer,
            "-W",
            SECRET,
            "-u",
            user,
            "127.0.0.1",
        ]);
        uclient(&args)
    };
    let tcp_port = turn_port.to_string();

    // No peer registered yet: 403 over TCP as over UDP.
    let (ok, text) = run(&["-t"], &tcp_port, "120", "early");
    assert!(
        !ok,
        "uclient over TCP succeeded with no registered peer:\n{text}"
    );
    assert!(text.contains("403"), "expected 403 Forbidden:\n{text}");

    let _node = Node::start(&rendezvous, &[]);

    // TCP, channels: ChannelData both ways over the stream.
    let (ok, text) = run(&["-t"], &tcp_port, "120", "alice");
    assert!(ok, "uclient over TCP with channels failed:\n{text}");
    assert_eq!(report(&text), Some((MESSAGES, MESSAGES, 0)), "{text}");
    // TCP, channels, a length that is not a multiple of 4: padding both ways (RFC 8656 12.5).
    let (ok, text) = run(&["-t"], &tcp_port, "121", "alice");
    assert!(
        ok,
        "uclient over TCP with padded channel data failed:\n{text}"
    );
    assert_eq!(report(&text), Some((MESSAGES, MESSAGES, 0)), "{text}");
    // TCP, Send and Data indications.
    let (ok, text) = run(&["-t", "-s"], &tcp_port, "120", "bob");
    assert!(ok, "uclient over TCP with Send/Data failed:\n{text}");
    assert_eq!(report(&text), Some((MESSAGES, MESSAGES, 0)), "{text}");
    // TLS on the rendezvous's TLS port (no ALPN: TURN), channels.
    let (ok, text) = run(&["-t", "-S"], &tls_port, "120", "carol");
    assert!(ok, "uclient over TLS with channels failed:\n{text}");
    assert_eq!(report(&text), Some((MESSAGES, MESSAGES, 0)), "{text}");
    // TLS, Send and Data indications.
    let (ok, text) = run(&["-t", "-S", "-s"], &tls_port, "120", "dave");
    assert!(ok, "uclient over TLS with Send/Data failed:\n{text}");
    assert_eq!(report(&text), Some((MESSAGES, MESSAGES, 0)), "{text}");
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
