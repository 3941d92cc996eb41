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
//! stdout once ready, then `tls listening <addr>` if the TLS port is up, then `metrics listening
//! <addr>` if `--metrics-listen` is given; logs go to stderr (`RUST_LOG` sets the level,
//! `--log-format` text or JSON lines). Every flag can also come from a `P2PNAT_*` environment
//! variable or a TOML file (`--config`; see `config`). SIGINT/SIGTERM shut it down cleanly.

mod config;
mod control_dgram;
mod control_quic;
mod control_tls;
mod http;
mod limits;
mod metrics;
mod requests;
mod server;
mod tls_port;
mod turn;
mod turn_stream;
mod turn_udp;

use std::net::SocketAddr;
use std::time::Duration;

use config::Args;
use p2pnat_proto::registry::RegistryLimits;
use p2pnat_proto::turn::credentials::SharedSecret;
use p2pnat_proto::turn::server::TurnServerConfig;

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
        socket_buffer: args.socket_buffer,
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

/// Allocations of 64 KiB and more get their own mapping, returned when freed: the batched
/// signature checks' tables (about 200 KiB, for an instant, on the verifier threads;
/// `control_dgram`) then never sit in a malloc arena between long-lived registry entries.
/// Without it glibc's threshold grows past them (it follows the largest block freed) and each
/// batch left holes: 1,020 instead of 613 bytes of RSS per registered peer at 100,000.
fn keep_big_blocks_out_of_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

fn main() -> std::process::ExitCode {
    keep_big_blocks_out_of_arenas();
    let args = match Args::load_from(std::env::args_os()) {
        Ok(args) => args,
        Err(config::ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("p2p-rendezvous: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", args.to_toml());
        return std::process::ExitCode::SUCCESS;
    }
    p2pnat::process::init_logging("info", args.log_format);
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
        metrics_listen: args.metrics_listen,
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
        punch_per_ip_burst: args.punch_per_ip_burst,
        punch_per_ip_interval: Duration::from_millis(args.punch_per_ip_interval_ms),
        relay_offer,
        turn_credential_lifetime: Duration::from_secs(args.turn_credential_ttl.max(60)),
        turn,
        tls,
        tcp_limits: (args.tls_max_connections.max(1), args.tls_max_per_ip.max(1)),
        socket_buffer: args.socket_buffer,
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
