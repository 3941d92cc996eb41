//! `quinn-pipe`: the smallest quinn 0.11 pipe, the ceiling for p2pnat's shape (stdin -> one QUIC
//! stream -> stdout, nothing else): no rendezvous, no path agent, no framing, no acknowledgements.
//! It uses p2pnat's own TLS (ed25519 certificates, TLS 1.3, ring) and, unless `--quinn-defaults`,
//! p2pnat's transport configuration (`p2pnat::socket::transport_config`: windows, congestion
//! controller) and stdin/stdout handling (`p2pnat::process::async_stdin`: pipes registered with
//! the reactor) and socket layer (`p2pnat::socket::NodeSocket` without a path agent: the same
//! socket buffers, datagram sizes and segmented sends, real addresses).
//!
//! ```text
//! quinn-pipe listen [--bind 127.0.0.1:0]          # stderr: "listening <addr> <peer_id>"
//! quinn-pipe connect <addr> <peer_id>             # stdin goes to the listener's stdout
//! options: --congestion auto|bbr|cubic (auto, as p2p-node)   --flow-window BYTES (as p2p-node's)
//!          --quinn-defaults (quinn's own TransportConfig instead)
//! ```
//! The listener takes one connection and one stream, writes it to stdout and exits when it ends.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use p2pnat::identity::Identity;
use p2pnat::socket::CongestionControl;
use p2pnat::tls;

const ALPN: &[u8] = b"quinn-pipe/1";
const CHUNK: usize = 256 * 1024;

struct Options {
    congestion: CongestionControl,
    quinn_defaults: bool,
    bind: SocketAddr,
    positional: Vec<String>,
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        congestion: CongestionControl::Auto,
        quinn_defaults: false,
        bind: "127.0.0.1:0".parse().unwrap(),
        positional: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--congestion" => {
                options.congestion = match args.next().as_deref() {
                    Some("auto") => CongestionControl::Auto,
                    Some("cubic") => CongestionControl::Cubic,
                    Some("bbr") => CongestionControl::Bbr,
                    other => return Err(format!("--congestion auto|cubic|bbr, not {other:?}")),
                }
            }
            "--quinn-defaults" => options.quinn_defaults = true,
            "--flow-window" => p2pnat::socket::set_flow_window(
                args.next()
                    .and_then(|a| a.parse().ok())
                    .ok_or("--flow-window needs a byte count")?,
            ),
            "--bind" => {
                options.bind = args
                    .next()
                    .and_then(|a| a.parse().ok())
                    .ok_or("--bind needs an address")?
            }
            _ => options.positional.push(arg),
        }
    }
    Ok(options)
}

/// p2p-node's transport configuration for a path to `peer` (MTU discovery bound included:
/// `p2pnat::datagram_size`), or quinn's defaults with `--quinn-defaults`.
fn transport(options: &Options, peer: SocketAddr) -> Arc<quinn::TransportConfig> {
    if options.quinn_defaults {
        Arc::new(quinn::TransportConfig::default())
    } else {
        p2pnat::socket::transport_config(
            Duration::from_secs(30),
            Some(Duration::from_secs(5)),
            options.congestion,
            p2pnat::datagram_size::max_udp_payload(peer, false),
        )
    }
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1).collect()) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("quinn-pipe: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    // On the runtime's workers, as p2p-node runs, not on this thread.
    let pipe = async move {
        match options.positional.first().map(String::as_str) {
            Some("listen") => listen(&options).await,
            Some("connect") if options.positional.len() == 3 => connect(&options).await,
            _ => Err("usage: quinn-pipe listen [--bind ADDR] | connect ADDR PEER_ID".into()),
        }
    };
    let result = runtime
        .block_on(async { tokio::spawn(pipe).await })
        .unwrap_or_else(|e| Err(format!("the pipe task failed: {e}").into()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quinn-pipe: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn listen(options: &Options) -> Result<(), BoxError> {
    let identity = Identity::generate()?;
    let mut server = quinn::ServerConfig::with_crypto(tls::server_crypto(&identity, ALPN)?);
    server.transport_config(transport(options, "192.0.2.1:1".parse()?));
    let endpoint = endpoint(options.bind, Some(server.clone()))?;
    eprintln!(
        "listening {} {}",
        endpoint.local_addr()?,
        identity.peer_id()
    );
    let incoming = endpoint.accept().await.ok_or("endpoint closed")?;
    server.transport_config(transport(options, incoming.remote_address()));
    let connection = incoming.accept_with(Arc::new(server))?.await?;
    let mut stream = connection.accept_uni().await?;
    // The node's own stdout handling (a pipe registered with the reactor, a 64 KiB buffer
    // written out whenever the stream has nothing more at hand), so that the ratio to p2p-node
    // measures the layers in between, not the I/O at the ends.
    let mut stdout = tokio::io::BufWriter::with_capacity(CHUNK, p2pnat::process::async_stdout());
    tokio::io::copy(&mut stream, &mut stdout).await?;
    stdout.flush().await?;
    connection.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    Ok(())
}

/// p2p-node's socket layer without its path agent (`p2pnat::socket::NodeSocket`: default
/// socket buffers, datagram sizes, segmented sends; real addresses, no virtual ones), so that
/// the ratio to p2p-node measures the layers above the socket.
fn endpoint(
    bind: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, BoxError> {
    let socket = std::net::UdpSocket::bind(bind)?;
    p2pnat::socket_buffers::enlarge(&socket, p2pnat::socket_buffers::DEFAULT_SOCKET_BUFFER);
    // No STUN or project datagrams are expected: their side channel is dropped.
    let (socket, _side) = p2pnat::socket::NodeSocket::new(socket, None)?;
    Ok(p2pnat::socket::endpoint(socket, server)?)
}

async fn connect(options: &Options) -> Result<(), BoxError> {
    let addr: SocketAddr = options.positional[1].parse()?;
    let peer = &options.positional[2];
    let identity = Identity::generate()?;
    let mut client = quinn::ClientConfig::new(tls::client_crypto(&identity, ALPN, false)?);
    client.transport_config(transport(options, addr));
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let endpoint = endpoint(bind, None)?;
    let connection = endpoint.connect_with(client, addr, peer)?.await?;
    let mut stream = connection.open_uni().await?;
    let mut buf = vec![0u8; CHUNK];
    let mut stdin = p2pnat::process::async_stdin();
    loop {
        let n = stdin.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).await?;
    }
    stream.finish()?;
    // The listener closes the connection once it has written everything.
    connection.closed().await;
    endpoint.wait_idle().await;
    Ok(())
}
