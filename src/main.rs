//! `p2p-node`: one process per peer. Reach a peer by its public key; exchange bytes through
//! stdin/stdout (docs/PROTOCOL.md). Logs go to stderr (`RUST_LOG` sets the level).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use p2pnat::identity::Identity;
use p2pnat::node::app_io::IoMode;
use p2pnat::node::rendezvous_client::RendezvousTarget;
use p2pnat::node::{self, NodeConfig};
use p2pnat_proto::path::AgentConfig;

#[derive(Debug, Parser)]
#[command(
    name = "p2p-node",
    version,
    about = "p2pnat node: reach a peer by its public key"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Rendezvous server, `host:port` or `<rendezvous_peer_id>@host:port` to pin its key.
    #[arg(long, default_value = "127.0.0.1:3478", global = true)]
    rendezvous: RendezvousTarget,
    /// How to reach the rendezvous: `auto` (QUIC over UDP, and its TLS port over TCP when UDP
    /// does not answer within a second), `udp` or `tls`.
    #[arg(long, default_value = "auto")]
    rendezvous_over: p2pnat::node::rendezvous_session::RendezvousOver,
    /// The rendezvous's TLS port, `host:port` [default: the rendezvous's host, port 443].
    #[arg(long)]
    rendezvous_tls: Option<String>,
    /// Identity key file (created with mode 0600 if missing).
    /// [default: $XDG_CONFIG_HOME/p2pnat/identity.key]
    #[arg(long, global = true)]
    identity: Option<PathBuf>,
    /// Local UDP address of the node's one socket.
    #[arg(long, default_value = "0.0.0.0:0")]
    listen: SocketAddr,
    /// stdin/stdout format: `frames` for programs, `lines` for people.
    #[arg(long, value_enum, default_value_t = IoMode::Lines)]
    io: IoMode,
    /// Largest message payload in bytes, sent or received.
    #[arg(long, default_value_t = p2pnat_proto::app::DEFAULT_MAX_MESSAGE)]
    max_message: usize,
    /// Milliseconds to probe a peer's addresses before giving up.
    #[arg(long, default_value_t = 5000)]
    probe_timeout_ms: u64,
    /// Seconds of silence after which a connection is considered dead.
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
    /// Seconds between QUIC keep-alives, which hold NAT mappings open; 0 disables them.
    #[arg(long, default_value_t = 5)]
    keepalive_secs: u64,
    /// QUIC congestion control: `auto` (Cubic on a direct path to a loopback address, BBR on
    /// every other: each where it measured best, docs/PERFORMANCE.md), `bbr` (model-based; far
    /// better on long and lossy links) or `cubic` (loss-based, quinn's default).
    #[arg(long, value_enum, default_value_t = p2pnat::socket::CongestionControl::Auto)]
    congestion: p2pnat::socket::CongestionControl,
    /// QUIC flow-control window W in bytes: per stream W, per connection 2 W received and not
    /// yet read, W sent and not yet acknowledged (so at most 3 W held per peer).
    #[arg(long, default_value_t = p2pnat::socket::DEFAULT_FLOW_WINDOW,
          value_parser = clap::value_parser!(u64).range(65536..=1073741824))]
    flow_window: u64,
    /// Most peers the node keeps state for (a task, paths, connections). When all hold work
    /// (queued, unconfirmed or dialling), new peers are refused with `busy`; otherwise the
    /// idlest peer makes room. Lower it to bound memory on a small device.
    #[arg(long, default_value_t = p2pnat::node::DEFAULT_MAX_PEERS,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_peers: u64,
    /// Never use the relay the rendezvous offers (peers that cannot be reached directly are
    /// then unreachable).
    #[arg(long)]
    no_relay: bool,
    /// Use only relayed paths (for measuring and testing the relay; both peers should say so).
    #[arg(long, conflicts_with = "no_relay")]
    relay_only: bool,
    /// Kernel buffer in bytes asked for each direction of the node's UDP socket (0: the
    /// system's default). Without CAP_NET_ADMIN the kernel caps it at net.core.rmem_max and
    /// wmem_max; the node says so at info level.
    #[arg(long, default_value_t = p2pnat::socket_buffers::DEFAULT_SOCKET_BUFFER as u64,
          value_parser = clap::value_parser!(u64).range(0..=1073741824))]
    socket_buffer: u64,
    /// Log format on stderr: `text` or `json` (one JSON object a line).
    #[arg(long, value_enum, default_value_t = p2pnat::process::LogFormat::Text, global = true)]
    log_format: p2pnat::process::LogFormat,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Print this node's peer ID (creating the identity if needed) and exit.
    Id,
    /// Report what the network looks like from here (NAT, filtering, relay, round trips), exit.
    Netcheck(p2pnat::netcheck::NetcheckArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    p2pnat::process::init_logging("warn", args.log_format);
    if let Some(Sub::Netcheck(netcheck)) = &args.command {
        return p2pnat::netcheck::main(&args.rendezvous, netcheck);
    }
    let path = p2pnat::identity::path_or_default(args.identity.clone(), "identity.key");
    let identity = match path.and_then(|path| Identity::load_or_create(&path)) {
        Ok(identity) => identity,
        Err(e) => {
            eprintln!("p2p-node: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Sub::Id) = args.command {
        println!("{}", identity.peer_id());
        return ExitCode::SUCCESS;
    }
    if args.max_message == 0 || args.max_message > u32::MAX as usize / 2 {
        eprintln!(
            "p2p-node: --max-message must be between 1 and {}",
            u32::MAX / 2
        );
        return ExitCode::from(2);
    }
    p2pnat::socket::set_flow_window(args.flow_window);
    let config = NodeConfig {
        identity,
        rendezvous: args.rendezvous,
        rendezvous_over: args.rendezvous_over,
        rendezvous_tls: args.rendezvous_tls,
        listen: args.listen,
        io: args.io,
        max_message: args.max_message,
        max_peers: args.max_peers as usize,
        paths: AgentConfig {
            check_timeout: Duration::from_millis(args.probe_timeout_ms.max(1)),
            relay_only: args.relay_only,
            ..AgentConfig::default()
        }
        .sized_for_peers(args.max_peers as usize),
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        keepalive: (args.keepalive_secs > 0).then(|| Duration::from_secs(args.keepalive_secs)),
        congestion: args.congestion,
        relay: !args.no_relay,
        socket_buffer: args.socket_buffer as usize,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("p2p-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The node runs as a task on the runtime's workers, not on this thread: its hand-offs to
    // the stdin reader, the peer tasks and the stdout writer then stay among the workers.
    let result = runtime.block_on(async { tokio::spawn(node::run(config)).await });
    // stdin may still be blocked in a read; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("p2p-node: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("p2p-node: the node task failed: {e}");
            ExitCode::FAILURE
        }
    }
}
