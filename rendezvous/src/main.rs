//! `p2p-rendezvous`: the one server a p2pnat user runs publicly.
//!
//! On one UDP port it answers STUN Binding requests and accepts QUIC connections from nodes, which
//! register (authenticated by the TLS handshake) and look each other up. Extra `--stun-listen`
//! addresses answer STUN only (a second address lets clients detect their NAT's mapping
//! behaviour). Prints `listening <addr> <rendezvous_peer_id>` on stdout once ready; logs go to
//! stderr (`RUST_LOG` sets the level). SIGINT/SIGTERM shut it down cleanly.

mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use p2pnat_proto::registry::RegistryLimits;

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
}

fn main() -> std::process::ExitCode {
    p2pnat::process::init_logging("info");
    let args = Args::parse();
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
        relay_offer: None,
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
