//! The coturn cell: two peers behind symmetric NATs (they never punch) connect through coturn's
//! `turnserver` instead of the rendezvous's built-in TURN server. coturn runs on a host of its
//! own on the lab internet ([`COTURN_HOST`]), UDP only, without a configuration file (`-n`),
//! with REST-API credentials (`--use-auth-secret`); the rendezvous is started with
//! `--turn-url turn:<coturn>:3478 --turn-secret-file <file>` holding the same secret, so the
//! credentials it hands the nodes are coturn's. Everything listens on lab addresses only.

use crate::lab::{Lab, LabProcess};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The host coturn runs on (a public host of the cell's lab).
pub const COTURN_HOST: &str = "turn";
/// coturn's listening port.
pub const COTURN_PORT: u16 = 3478;
/// The peer ranges coturn may relay to: the lab's documentation ranges (coturn would refuse
/// private ones; these are listed so that no default of its own gets in the way).
const ALLOWED_PEERS: [&str; 3] = [
    "192.0.2.0-192.0.2.255",
    "198.51.100.0-198.51.100.255",
    "203.0.113.0-203.0.113.255",
];

/// A running coturn and what the rendezvous needs to offer it.
pub struct Coturn {
    pub process: LabProcess,
    pub addr: SocketAddrV4,
    /// Arguments for p2p-rendezvous: `--turn-url ... --turn-secret-file ...`.
    pub rendezvous_args: Vec<String>,
}

/// Whether `turnserver` can be run.
pub fn installed() -> bool {
    Command::new("turnserver")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Starts `turnserver` on `host` with a fresh shared secret (written to `dir/turn.secret`,
/// its log to `dir/turnserver.log`) and waits until it answers a STUN Binding request; the
/// error says why it could not (a lab problem of the cell).
pub fn start(lab: &Lab, host: &str, dir: &Path) -> Result<Coturn, String> {
    if !installed() {
        return Err(
            "coturn's `turnserver` is not installed (scripts/install-deps.sh installs \
                    it; CI has it): the coturn cell cannot run"
                .into(),
        );
    }
    let ip: Ipv4Addr = lab.addr(host).map_err(|e| e.to_string())?;
    let addr = SocketAddrV4::new(ip, COTURN_PORT);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let secret = format!("netsim-{:x}-{nanos:x}", std::process::id());
    let secret_file = dir.join("turn.secret");
    std::fs::write(&secret_file, &secret).map_err(|e| format!("writing the secret: {e}"))?;
    let log = dir.join("turnserver.log");
    let out = std::fs::File::create(dir.join("turnserver.stdout")).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = lab.command(host, "turnserver").map_err(|e| e.to_string())?;
    cmd.arg("-n")
        .arg(format!("--listening-ip={ip}"))
        .arg(format!("--relay-ip={ip}"))
        .arg(format!("--listening-port={COTURN_PORT}"))
        .args([
            "--use-auth-secret",
            &format!("--static-auth-secret={secret}"),
        ])
        .args(["--realm=p2pnat", "--no-tls", "--no-dtls", "--no-tcp"])
        .args([
            "--no-tcp-relay",
            "--no-cli",
            "--no-auth-pings",
            "--no-rfc5780",
        ])
        .args(["--min-port=49152", "--max-port=65535"])
        .args(ALLOWED_PEERS.map(|r| format!("--allowed-peer-ip={r}")))
        .arg(format!("--log-file={}", log.display()))
        .args(["--simple-log", "--no-stdout-log", "--verbose"])
        .arg(format!("--userdb={}", dir.join("turndb").display()))
        .arg(format!(
            "--pidfile={}",
            dir.join("turnserver.pid").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start turnserver: {e}"))?;
    let mut process = LabProcess { child };
    wait_listening(lab, host, addr, &mut process, Duration::from_secs(10))?;
    Ok(Coturn {
        process,
        addr,
        rendezvous_args: vec![
            "--turn-url".into(),
            format!("turn:{ip}:{COTURN_PORT}"),
            "--turn-secret-file".into(),
            secret_file.display().to_string(),
        ],
    })
}

/// Sends STUN Binding requests to coturn from inside `host` until one is answered.
fn wait_listening(
    lab: &Lab,
    host: &str,
    addr: SocketAddrV4,
    process: &mut LabProcess,
    timeout: Duration,
) -> Result<(), String> {
    let any: SocketAddr = "0.0.0.0:0".parse().expect("literal");
    let socket = lab.udp_socket(host, any).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut n = 0u8;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = process.child.try_wait() {
            return Err(format!(
                "turnserver exited at start ({status}); see turnserver.log in the cell's logs"
            ));
        }
        n = n.wrapping_add(1);
        let txid = [n; 12];
        let _ = socket.send_to(&crate::stun::binding_request(&txid), addr);
        let mut buf = [0u8; 1500];
        if let Ok((len, _)) = socket.recv_from(&mut buf) {
            if crate::stun::parse_binding_success(&buf[..len], &txid).is_some() {
                return Ok(());
            }
        }
    }
    Err(format!(
        "turnserver did not answer STUN on {addr} within {} s",
        timeout.as_secs()
    ))
}
