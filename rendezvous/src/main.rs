//! `p2p-rendezvous`: the one server a p2pnat user runs publicly.
//!
//! On one UDP port it answers STUN Binding requests and accepts QUIC connections from nodes, which
//! register (authenticated by the TLS handshake) and look each other up. Extra `--stun-listen`
//! addresses answer STUN only (a second address lets clients detect their NAT's mapping
//! behaviour). A built-in TURN server (RFC 8656 over UDP, REST-API credentials from a shared
//! secret) listens on `--turn-listen` and relays only toward registered peers (`--no-turn` turns
//! it off); it also takes TURN clients over TCP on the same port. The TLS port (`--tls-listen`,
//! default port 443) serves nodes whose network drops UDP: control over TLS and TURN over TLS,
//! chosen by ALPN (`--no-tls` turns it off). Prints `listening <addr> <rendezvous_peer_id>` on
//! stdout once ready, then `tls listening <addr>` if the TLS port is up; logs go to stderr
//! (`RUST_LOG` sets the level). SIGINT/SIGTERM shut it down cleanly.

mod control_quic;
mod control_tls;
mod limits;
mod requests;
mod server;
mod tls_port;
mod turn;
mod turn_stream;
mod turn_udp;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use p2pnat_proto::registry::RegistryLimits;
use p2pnat_proto::turn::credentials::SharedSecret;
use p2pnat_proto::turn::server::TurnServerConfig;

#[derive(Debug, Parser)]
#[command(
    name = "p2p-rendezvous",
    version,
    about = "p2pnat rendezvous: STUN responder and authenticated peer registry"
)]
struct Args {
    /// UDP address for QUIC and STUN.
    #[arg(long, default_value = "0.0.0.0:3478")]
    listen: SocketAddr,
    /// Extra STUN-only UDP address (repeatable), e.g. a second IP for NAT behaviour detection.
    #[arg(long = "stun-listen")]
    stun_listen: Vec<SocketAddr>,
    /// Identity key file (created with mode 0600 if missing).
    /// [default: $XDG_CONFIG_HOME/p2pnat/rendezvous.key]
    #[arg(long)]
    identity: Option<PathBuf>,
    /// Seconds a registration lives without a refresh.
    #[arg(long, default_value_t = 120)]
    registration_ttl: u64,
    /// Most peers registered at once.
    #[arg(long, default_value_t = 100_000)]
    max_registrations: usize,
    /// Most simultaneous node connections.
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// New registrations one source IP may make in a burst.
    #[arg(long, default_value_t = 20)]
    new_per_ip_burst: u32,
    /// Milliseconds for one source IP to earn one more new registration.
    #[arg(long, default_value_t = 200)]
    new_per_ip_interval_ms: u64,
    /// Seconds of silence after which a node connection is dropped.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
    /// Punch requests one node may cause in a burst (each makes another node probe it).
    #[arg(long, default_value_t = 32)]
    punch_burst: u32,
    /// Milliseconds for one node to earn one more punch request.
    #[arg(long, default_value_t = 250)]
    punch_interval_ms: u64,
    /// Turns the built-in TURN server off (nodes are offered no relay unless `--turn-url`).
    #[arg(long)]
    no_turn: bool,
    /// Offer nodes this external TURN server (e.g. coturn with `use-auth-secret`) instead of
    /// the built-in one: `turn:HOST[:PORT]` (port 3478 if absent). Needs `--turn-secret-file`
    /// holding the server's `static-auth-secret`.
    #[arg(long, requires = "turn_secret_file")]
    turn_url: Option<String>,
    /// Seconds the TURN credentials handed to nodes work (each registration refresh brings
    /// fresh ones).
    #[arg(long, default_value_t = 3600)]
    turn_credential_ttl: u64,
    /// UDP address of the built-in TURN server (not the QUIC port: ChannelData and QUIC short
    /// headers overlap). Failing to bind it stops the rendezvous when given; when not given and
    /// port 3479 on the --listen IP is busy, TURN is off (logged).
    /// [default: the --listen IP, port 3479]
    #[arg(long)]
    turn_listen: Option<SocketAddr>,
    /// IP relay sockets bind to and report. [default: the TURN listen IP if specific, else the
    /// first non-loopback IPv4 interface address, else 127.0.0.1]
    #[arg(long)]
    turn_relay_ip: Option<IpAddr>,
    /// File holding the TURN REST-API shared secret (coturn's `static-auth-secret`), so that a
    /// coturn can share it. [default: a random secret, in memory only]
    #[arg(long)]
    turn_secret_file: Option<PathBuf>,
    /// TURN REALM.
    #[arg(long, default_value = "p2pnat")]
    turn_realm: String,
    /// Most TURN allocations at once (over it: 508 Insufficient Capacity).
    #[arg(long, default_value_t = 1024)]
    turn_max_allocations: usize,
    /// Most TURN allocations per user, i.e. per peer (over it: 486 Allocation Quota Reached).
    #[arg(long, default_value_t = 8)]
    turn_max_allocations_per_user: usize,
    /// Relayed bytes a second per allocation, both directions together (0: no limit).
    #[arg(long, default_value_t = 4_000_000)]
    turn_max_bps: u64,
    /// Longest TURN allocation lifetime granted, in seconds.
    #[arg(long, default_value_t = 3600)]
    turn_max_lifetime: u64,
    /// TCP address of the TLS port, for nodes on networks that drop UDP: control over TLS
    /// (ALPN p2pnat-rendezvous-tls/1) and TURN over TLS (ALPN stun.turn or none). Failing to
    /// bind it stops the rendezvous when given; when not given and the default cannot be bound
    /// (port 443 needs privileges), the TLS port is off (logged).
    /// [default: the --listen IP, port 443]
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// Turns the TLS port off.
    #[arg(long, conflicts_with = "tls_listen")]
    no_tls: bool,
    /// Most TCP connections at once: the TLS port's and TURN over TCP's together (over it a
    /// new connection is closed at once).
    #[arg(long, default_value_t = 4096)]
    tls_max_connections: usize,
    /// Most TCP connections at once from one source IP (TLS port and TURN over TCP together).
    #[arg(long, default_value_t = 16)]
    tls_max_per_ip: usize,
    /// Bytes waiting to be written to one TCP or TLS connection at most (TURN data and pushes
    /// beyond it are dropped, so a slow client never stalls others).
    #[arg(long, default_value_t = 262_144)]
    tls_max_buffered: usize,
    /// Seconds a TLS handshake may take.
    #[arg(long, default_value_t = 10)]
    tls_handshake_timeout: u64,
    /// Seconds a TCP or TLS connection may send nothing before it is closed.
    #[arg(long, default_value_t = 600)]
    tls_idle_timeout: u64,
}

/// The TLS port's port when `--tls-listen` is not given.
const DEFAULT_TLS_PORT: u16 = 443;

/// Per-connection limits of TCP and TLS connections.
fn stream_limits(args: &Args) -> turn_stream::StreamLimits {
    turn_stream::StreamLimits {
        max_buffered: args.tls_max_buffered.max(4096),
        idle_timeout: Duration::from_secs(args.tls_idle_timeout.max(1)),
    }
}

/// The TLS port's settings (`None` with `--no-tls`).
fn tls_settings(args: &Args) -> Option<tls_port::TlsPortSettings> {
    if args.no_tls {
        return None;
    }
    Some(tls_port::TlsPortSettings {
        listen: args
            .tls_listen
            .unwrap_or_else(|| SocketAddr::new(args.listen.ip(), DEFAULT_TLS_PORT)),
        required: args.tls_listen.is_some(),
        max_connections: args.tls_max_connections.max(1),
        max_per_ip: args.tls_max_per_ip.max(1),
        handshake_timeout: Duration::from_secs(args.tls_handshake_timeout.max(1)),
        stream: stream_limits(args),
    })
}

/// The TURN settings from the flags (`None` with `--no-turn`).
/// The built-in TURN server's port when `--turn-listen` is not given.
const DEFAULT_TURN_PORT: u16 = 3479;

fn turn_settings(args: &Args) -> Result<Option<turn::TurnSettings>, String> {
    if args.no_turn || args.turn_url.is_some() {
        return Ok(None);
    }
    let listen = args
        .turn_listen
        .unwrap_or_else(|| SocketAddr::new(args.listen.ip(), DEFAULT_TURN_PORT));
    let secret = match &args.turn_secret_file {
        Some(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            SharedSecret::new(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => turn::random_secret().map_err(|e| e.to_string())?,
    };
    let defaults = TurnServerConfig::default();
    Ok(Some(turn::TurnSettings {
        listen,
        listen_required: args.turn_listen.is_some(),
        relay_ip: args
            .turn_relay_ip
            .unwrap_or_else(|| turn::default_relay_ip(listen.ip())),
        secret,
        config: TurnServerConfig {
            realm: args.turn_realm.clone(),
            max_allocations: args.turn_max_allocations,
            max_allocations_per_user: args.turn_max_allocations_per_user,
            max_bytes_per_sec: args.turn_max_bps,
            max_lifetime: Duration::from_secs(args.turn_max_lifetime.max(1)),
            ..defaults
        },
        stream: stream_limits(args),
    }))
}

/// The external TURN server from `--turn-url`, if given.
fn external_turn(args: &Args) -> Result<Option<server::RelayOffering>, String> {
    let Some(url) = &args.turn_url else {
        return Ok(None);
    };
    let hostport = url
        .strip_prefix("turn:")
        .ok_or_else(|| format!("--turn-url {url:?}: only turn: (UDP) URLs are supported"))?;
    let hostport = hostport.split('?').next().unwrap_or(hostport);
    let with_port = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_string()
    } else {
        format!("{hostport}:3478")
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
        .map_err(|e| format!("--turn-url {url:?}: {e}"))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| format!("--turn-url {url:?}: no IPv4 address"))?;
    let path = args
        .turn_secret_file
        .as_ref()
        .ok_or("--turn-url needs --turn-secret-file")?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = SharedSecret::new(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(server::RelayOffering {
        server: p2pnat_proto::control::TurnServerAddr::Addr(addr),
        secret,
        credential_lifetime: Duration::from_secs(args.turn_credential_ttl.max(60)),
    }))
}

fn main() -> std::process::ExitCode {
    p2pnat::process::init_logging("info");
    let args = Args::parse();
    let (turn, relay_offer) =
        match turn_settings(&args).and_then(|t| Ok((t, external_turn(&args)?))) {
            Ok(both) => both,
            Err(e) => {
                eprintln!("p2p-rendezvous: {e}");
                return std::process::ExitCode::from(2);
            }
        };
    let tls = tls_settings(&args);
    let identity_path = match p2pnat::identity::path_or_default(args.identity, "rendezvous.key") {
        Ok(path) => path,
        Err(e) => {
            eprintln!("p2p-rendezvous: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let config = server::ServerConfig {
        listen: args.listen,
        stun_listen: args.stun_listen,
        identity_path,
        limits: RegistryLimits {
            max_registrations: args.max_registrations,
            ttl: Duration::from_secs(args.registration_ttl.max(1)),
            new_per_ip_burst: args.new_per_ip_burst,
            new_per_ip_interval: Duration::from_millis(args.new_per_ip_interval_ms),
            ..RegistryLimits::default()
        },
        max_connections: args.max_connections,
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        punch_burst: args.punch_burst,
        punch_interval: Duration::from_millis(args.punch_interval_ms),
        relay_offer,
        turn_credential_lifetime: Duration::from_secs(args.turn_credential_ttl.max(60)),
        turn,
        tls,
        tcp_limits: (args.tls_max_connections.max(1), args.tls_max_per_ip.max(1)),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("p2p-rendezvous: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2p-rendezvous: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
