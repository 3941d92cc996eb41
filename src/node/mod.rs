//! The node runtime: wires the socket, QUIC endpoint, rendezvous client, peer tasks and
//! stdin/stdout together.
//!
//! Tasks and the channels between them (all bounded):
//! - stdin reader -> core: [`app_io::Input`] (capacity 64, payload bytes bounded by the stdin
//!   budget; when full the reader waits, so stdin stops);
//! - core -> peer task: messages (capacity [`peer::PEER_QUEUE`]) and control;
//! - acceptor -> peer task: incoming connections;
//! - everyone -> stdout writer: [`app_io::Output`] (capacity 256, plus a byte budget).

pub mod app_io;
pub mod dial;
pub mod nat_detection;
pub mod paths;
pub mod peer;
pub mod peer_streams;
pub mod rendezvous_client;
pub mod rendezvous_dgram;
pub mod rendezvous_session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2pnat_proto::app::{Command, Event, HELP};
use p2pnat_proto::control::MAX_LOCAL_ADDRS;
use p2pnat_proto::nat::{NatProbeConfig, NatReport};
use p2pnat_proto::path::{AgentConfig, PathAgent};
use p2pnat_proto::PeerId;
use tokio::sync::{mpsc, Semaphore};

use crate::identity::Identity;
use crate::socket::{self, NodeSocket};
use crate::tls;
use app_io::{Input, IoMode, Outputs};
use peer::{Outgoing, PeerContext, PeerControl, PeerHandle};
use rendezvous_client::RendezvousTarget;

/// Most peers a node keeps a task for unless `--max-peers` says otherwise.
pub const DEFAULT_MAX_PEERS: u64 = 1024;

/// Settings of one node run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub identity: Identity,
    pub rendezvous: RendezvousTarget,
    /// Which transports the rendezvous may be reached over (`--rendezvous-over`), and its TLS
    /// port (`--rendezvous-tls`; default: its host, port 443).
    pub rendezvous_over: rendezvous_session::RendezvousOver,
    pub rendezvous_tls: Option<String>,
    pub listen: SocketAddr,
    pub io: IoMode,
    pub max_message: usize,
    /// Most peer tasks (`--max-peers`); see [`Peers::get_or_spawn`].
    pub max_peers: usize,
    /// Timing and limits of the path agent (checks, heartbeats).
    pub paths: AgentConfig,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// QUIC keep-alive interval; `None` disables keep-alives (NAT mappings may then expire).
    pub keepalive: Option<Duration>,
    pub congestion: socket::CongestionControl,
    /// Allocate on the relay the rendezvous offers (`--no-relay` turns it off).
    pub relay: bool,
    /// Kernel buffer asked for per direction on the node's socket, bytes (0: the system's
    /// default; [`crate::socket_buffers`]).
    pub socket_buffer: usize,
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The peers a node knows, shared by the core and the acceptor.
struct Peers {
    context: PeerContext,
    /// Most peer tasks at once (at least 1).
    max_peers: usize,
    handles: Mutex<Option<HashMap<PeerId, PeerHandle>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Peers {
    /// The peer's handle, starting its task if needed. Refused when shutting down, or when
    /// `max_peers` tasks all hold work; otherwise an idle task (the least recently active one
    /// with nothing queued, unconfirmed or dialling) makes room: throw-away identities that
    /// connect once cannot lock the node out of new peers.
    fn get_or_spawn(&self, peer: PeerId) -> Result<PeerHandle, &'static str> {
        let mut guard = self.handles.lock().expect("peers lock");
        let handles = guard.as_mut().ok_or("shutdown: node is shutting down")?;
        if let Some(handle) = handles.get(&peer) {
            return Ok(handle.clone());
        }
        if handles.len() >= self.max_peers {
            let idlest = handles
                .iter()
                .filter(|(_, handle)| handle.evictable())
                .min_by_key(|(_, handle)| handle.status.lock().expect("status lock").last_active)
                .map(|(id, _)| *id);
            let Some(idlest) = idlest else {
                return Err("busy: all peer slots hold undelivered messages");
            };
            // Dropping the handle ends the task: it closes its connections and frees its paths.
            handles.remove(&idlest);
            tracing::info!(evicted = %idlest.short(), "peer table full; evicted the idlest peer");
        }
        let (handle, join) = peer::spawn_peer(self.context.clone(), peer);
        handles.insert(peer, handle.clone());
        let mut tasks = self.tasks.lock().expect("tasks lock");
        tasks.retain(|task| !task.is_finished());
        tasks.push(join);
        Ok(handle)
    }

    fn snapshot(&self) -> Vec<(PeerId, peer::PeerStatus)> {
        let guard = self.handles.lock().expect("peers lock");
        let mut list: Vec<_> = guard
            .iter()
            .flatten()
            .map(|(id, handle)| (*id, handle.status.lock().expect("status lock").clone()))
            .collect();
        list.sort_by_key(|(id, _)| *id);
        list
    }
}

fn local_addresses(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let mut addrs: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|interface| interface.ip())
        .filter(|ip| matches!(ip, IpAddr::V4(_)))
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect();
    // Non-loopback first: they are the useful ones beyond this host.
    addrs.sort_by_key(|a| a.ip().is_loopback());
    addrs.truncate(MAX_LOCAL_ADDRS);
    addrs
}

/// Runs a node until `quit`, end of stdin, or SIGINT/SIGTERM.
pub async fn run(config: NodeConfig) -> Result<(), NodeError> {
    let own = config.identity.peer_id();
    let std_socket =
        std::net::UdpSocket::bind(config.listen).map_err(|source| NodeError::Bind {
            addr: config.listen,
            source,
        })?;
    crate::socket_buffers::enlarge(&std_socket, config.socket_buffer);
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
    let agent = Arc::new(Mutex::new(PathAgent::new(
        config.identity.path_secret(),
        config.paths,
        seed,
    )));
    let (paths, repunch_requests) = paths::Paths::new(agent.clone());
    let (socket, side_rx) = NodeSocket::new(std_socket, Some(agent.clone()))?;
    let bound = quinn::AsyncUdpSocket::local_addr(&*socket)?;
    // One QUIC configuration for every path, one for direct paths to loopback addresses
    // (`datagram_size`: a larger MTU discovery bound); otherwise the same.
    let transport = |max_udp_payload| {
        socket::transport_config(
            config.idle_timeout,
            config.keepalive,
            config.congestion,
            max_udp_payload,
        )
    };
    let ethernet = transport(crate::datagram_size::ETHERNET_MAX_UDP_PAYLOAD);
    let loopback = transport(crate::datagram_size::LOOPBACK_MAX_UDP_PAYLOAD);
    let server_crypto = tls::server_crypto(&config.identity, tls::ALPN_PEER)?;
    let mut server_config = quinn::ServerConfig::with_crypto(server_crypto);
    server_config.transport_config(ethernet.clone());
    // Paths change beneath the virtual address, where quinn cannot see them: the path agent
    // owns migration. quinn only ever sees virtual addresses (real ones are dropped unless they
    // start a handshake), so what its migration can still follow is a change from one of a
    // peer's virtual addresses to another: a handshake that arrived from an unknown source got
    // an address of its own before the peer's routes were known, and later packets of the same
    // connection come under the peer's main address. Following that keeps the connection.
    server_config.migration(true);
    let mut loopback_server = server_config.clone();
    loopback_server.transport_config(loopback.clone());
    let endpoint = socket::endpoint(socket.clone(), Some(server_config))?;
    let client_crypto = tls::client_crypto(&config.identity, tls::ALPN_PEER, false)?;
    let mut peer_client = quinn::ClientConfig::new(client_crypto.clone());
    peer_client.transport_config(ethernet);
    let mut loopback_client = quinn::ClientConfig::new(client_crypto);
    loopback_client.transport_config(loopback);

    // A stop (SIGINT/SIGTERM, stdout closed, or the graceful wait running out) makes every
    // part fail what it holds at once. The signal listeners exist from here on, once: a signal
    // that arrives while the core waits under backpressure is not lost.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signals = crate::process::ShutdownSignals::install();
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            if signals.recv().await {
                tracing::info!("signal received; shutting down");
                let _ = stop_tx.send(true);
            }
        });
    }
    let (outputs, output_rx) = Outputs::new(256, config.max_message.saturating_mul(2).max(1));
    let writer = tokio::spawn(app_io::write_outputs(
        config.io,
        output_rx,
        crate::process::async_stdout(),
    ));

    let local_addrs = local_addresses(bound);
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (push_tx, push_rx) = mpsc::channel(16);
    let (nat_tx, nat_rx) = tokio::sync::watch::channel(NatReport::UNKNOWN);
    let (nat_registered_tx, mut nat_registered) = tokio::sync::watch::channel(NatReport::UNKNOWN);
    let (relayed_tx, relayed_rx) = tokio::sync::watch::channel(None);
    let (offer_tx, offer_rx) = tokio::sync::watch::channel(None);
    let (relayed_registered_tx, mut relayed_registered) = tokio::sync::watch::channel(None);
    if config.relay {
        tokio::spawn(crate::relay::drive(crate::relay::RelayDriver {
            link: socket.relay().clone(),
            socket: socket.clone(),
            agent,
            offers: offer_rx,
            relayed: relayed_tx,
            shutdown: shutdown_rx.clone(),
            config: Default::default(),
            session: Default::default(),
            expires_unix: Default::default(),
            outputs: outputs.clone(),
            failing: Default::default(),
        }));
    }
    let (rendezvous, first_registration) = rendezvous_client::spawn(rendezvous_client::Keeper {
        target: config.rendezvous.clone(),
        over: config.rendezvous_over,
        tls_address: config.rendezvous_tls.clone(),
        identity: config.identity.clone(),
        socket: socket.clone(),
        local_addrs: local_addrs.clone(),
        nat: nat_rx,
        nat_registered: nat_registered_tx,
        outputs: outputs.clone(),
        shutdown: shutdown_rx,
        pushes: push_tx,
        relayed: relayed_rx,
        turn: offer_tx,
        relayed_registered: relayed_registered_tx,
        sessions: 0,
    });
    let stun_answers = Arc::new(dial::StunRoutes::default());
    tokio::spawn(paths::drive(
        paths.clone(),
        socket.clone(),
        stun_answers.clone(),
        side_rx,
    ));
    let dialler = dial::Dialler {
        own,
        endpoint: endpoint.clone(),
        paths: paths.clone(),
        client_config: peer_client,
        loopback_client_config: loopback_client,
        rendezvous: rendezvous.clone(),
        check_timeout: config.paths.check_timeout,
        handshake_timeout: config.handshake_timeout,
    };
    tokio::spawn(dial::answer_punch_requests(paths.clone(), push_rx));
    tokio::spawn(dial::repunch(dialler.clone(), repunch_requests));
    let peers = Arc::new(Peers {
        context: PeerContext {
            dialler,
            outputs: outputs.clone(),
            max_message: config.max_message,
            stop: stop_rx.clone(),
        },
        max_peers: config.max_peers.max(1),
        handles: Mutex::new(Some(HashMap::new())),
        tasks: Mutex::new(Vec::new()),
    });

    // `ready` is always the first event; a rendezvous problem follows it.
    let (registration, problem) =
        match tokio::time::timeout(Duration::from_secs(6), first_registration).await {
            Ok(Ok(Ok(registration))) => (Some(registration), None),
            Ok(Ok(Err(reason))) => (None, Some(format!("{reason}; still trying"))),
            _ => (
                None,
                Some("no answer from the rendezvous yet; still trying".to_string()),
            ),
        };
    let nat = match &registration {
        // Over TLS the network drops UDP: there is no UDP mapping to detect.
        Some(registration) if registration.over == "tls" => NatReport::UNKNOWN,
        Some(registration) => {
            let mut servers = vec![registration.server];
            servers.extend(&registration.stun_alternates);
            nat_detection::detect(
                &socket,
                &stun_answers,
                local_addrs.clone(),
                &servers,
                registration.inbound_probe,
                NatProbeConfig::default(),
            )
            .await
        }
        None => NatReport::UNKNOWN,
    };
    // The rendezvous (and through it every peer) learns the report at once: a peer behind a
    // symmetric NAT needs it to choose the birthday method, a bare Linux NAT to check first.
    let _ = nat_tx.send(nat);
    paths.set_own_nat(nat);
    if registration.is_some() {
        // Peers that look this node up right after `ready` must see its NAT behaviour.
        let recorded = nat_registered.wait_for(|recorded| *recorded == nat);
        if tokio::time::timeout(Duration::from_secs(2), recorded)
            .await
            .is_err()
        {
            tracing::debug!("NAT behaviour not yet registered; it follows with the next refresh");
        }
    }
    let offered_relay = registration.as_ref().is_some_and(|r| r.relay.is_some());
    if config.relay && offered_relay {
        // Peers behind NATs no punch opens reach this node through its relay from the start.
        let recorded = relayed_registered.wait_for(|recorded| recorded.is_some());
        if tokio::time::timeout(Duration::from_secs(2), recorded)
            .await
            .is_err()
        {
            tracing::info!("no relay allocation yet; it is registered once it exists");
        }
    }
    let relay = *relayed_registered.borrow();
    let over = registration.as_ref().map(|r| r.over);
    let observed = registration.map(|r| r.observed);
    outputs
        .event(Event::Ready {
            id: own,
            local: local_addrs,
            observed,
            nat: nat.mapping,
            inbound: nat.inbound,
            relay,
            over,
        })
        .await;
    if let Some(problem) = problem {
        outputs.error("rendezvous", problem).await;
    }

    tokio::spawn(accept_connections(
        endpoint.clone(),
        Arc::new(loopback_server),
        peers.clone(),
    ));

    let (input_tx, mut input_rx) = mpsc::channel(64);
    let stdin_budget = Arc::new(Semaphore::new(config.max_message.saturating_mul(2).max(1)));
    let reader = tokio::spawn(app_io::read_inputs(
        config.io,
        crate::process::async_stdin(),
        input_tx,
        outputs.clone(),
        config.max_message,
        stdin_budget,
    ));

    let mut writer = writer;
    let mut stop = stop_rx.clone();
    let mut writer_done = false;
    loop {
        tokio::select! {
            input = input_rx.recv() => match input {
                Some(Input::Quit) | None => break,
                Some(Input::Command(Command::Quit)) => break,
                Some(input) => handle_input(own, input, &peers, &outputs, &stop_rx).await,
            },
            _ = peer::stopped(&mut stop) => break,
            _ = &mut writer => {
                tracing::info!("stdout closed; shutting down");
                writer_done = true;
                let _ = stop_tx.send(true);
                break;
            }
        }
    }
    shut_down(Shutdown {
        peers: &peers,
        outputs: &outputs,
        input_rx: &mut input_rx,
        reader,
        stop: &stop_tx,
    })
    .await;
    let _ = shutdown_tx.send(true);
    if let Some(session) = rendezvous.current() {
        // Peers looking this node up from now on learn it is gone (at most
        // UNREGISTER_WAIT more to quit).
        rendezvous_client::unregister(&session).await;
        session.close(b"quit");
    }
    endpoint.close(0u32.into(), b"quit");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    outputs.finish().await;
    drop(outputs);
    if !writer_done {
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    }
    Ok(())
}

/// How long a graceful end (`quit`, end of stdin) waits for peers to send what was queued and
/// have it confirmed, before it stops them.
pub const GRACEFUL_WAIT: Duration = Duration::from_secs(30);
/// How long stopped peer tasks get to report what they held.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

struct Shutdown<'a> {
    peers: &'a Peers,
    outputs: &'a Outputs,
    input_rx: &'a mut mpsc::Receiver<Input>,
    reader: tokio::task::JoinHandle<()>,
    stop: &'a tokio::sync::watch::Sender<bool>,
}

/// Ends the node's work so that every send read from stdin gets its one terminal event before
/// stdout finishes: sends not yet handed to a peer fail at once; peer tasks send what they
/// were given (unless stopping) and report every message; only then does stdout finish.
async fn shut_down(shutdown: Shutdown<'_>) {
    let Shutdown {
        peers,
        outputs,
        input_rx,
        reader,
        stop,
    } = shutdown;
    let not_sent = |msg_id, peer| Event::Failed {
        msg_id,
        peer,
        reason: "shutdown: node shutting down before the message was sent".into(),
    };
    // Inputs read but not handled: nothing after `quit` is acted on.
    input_rx.close();
    while let Some(input) = input_rx.recv().await {
        if let Input::Send {
            msg_id, peer_text, ..
        } = input
        {
            outputs.event(not_sent(msg_id, peer_text)).await;
        }
    }
    // A reader blocked handing over a send reports it itself once the channel is closed; a
    // reader blocked on stdin holds nothing.
    let _ = tokio::time::timeout(Duration::from_millis(500), reader).await;
    let handles = peers.handles.lock().expect("peers lock").take();
    drop(handles);
    let tasks: Vec<_> = std::mem::take(&mut *peers.tasks.lock().expect("tasks lock"));
    let deadline = tokio::time::Instant::now() + GRACEFUL_WAIT;
    let mut stopped_at = None;
    for mut task in tasks {
        if stopped_at.is_none() {
            if tokio::time::timeout_at(deadline, &mut task).await.is_ok() {
                continue;
            }
            tracing::info!("peers still busy after {GRACEFUL_WAIT:?}; stopping them");
            let _ = stop.send(true);
            stopped_at = Some(tokio::time::Instant::now() + STOP_WAIT);
        }
        let limit = stopped_at.expect("set above");
        if tokio::time::timeout_at(limit, task).await.is_err() {
            // Only a stdout nobody reads can hold a stopped task this long.
            tracing::warn!("a peer task did not finish within {STOP_WAIT:?} of the stop");
        }
    }
}

async fn handle_input(
    own: PeerId,
    input: Input,
    peers: &Peers,
    outputs: &Outputs,
    stop: &tokio::sync::watch::Receiver<bool>,
) {
    match input {
        Input::Send {
            msg_id,
            peer_text,
            payload,
            permit,
        } => {
            let fail = |reason: String| Event::Failed {
                msg_id,
                peer: peer_text.clone(),
                reason,
            };
            let peer = match peer_text.parse::<PeerId>() {
                Ok(peer) => peer,
                Err(e) => return outputs.event(fail(format!("bad-peer-id: {e}"))).await,
            };
            if peer == own {
                return outputs
                    .event(fail("self: cannot send to this node's own ID".into()))
                    .await;
            }
            let handle = match peers.get_or_spawn(peer) {
                Ok(handle) => handle,
                Err(reason) => return outputs.event(fail(reason.into())).await,
            };
            let outgoing = Outgoing {
                msg_id,
                payload,
                permit,
            };
            // The peer's queue may stay full (backpressure) as long as the peer is slow: a stop
            // must still get through.
            let mut stop = stop.clone();
            tokio::select! {
                biased;
                sent = handle.messages.send(outgoing) => if sent.is_err() {
                    outputs.event(fail("shutdown: the peer's task ended".into())).await;
                },
                _ = peer::stopped(&mut stop) => {
                    outputs.event(fail("shutdown: node shutting down before the message was sent".into())).await;
                }
            }
        }
        Input::Command(command) => handle_command(own, command, peers, outputs).await,
        Input::Quit => {}
    }
}

async fn handle_command(own: PeerId, command: Command, peers: &Peers, outputs: &Outputs) {
    match command {
        // The stdin reader turns sends into Input::Send, and the core loop ends on quit.
        Command::Send { .. } | Command::Quit => {
            tracing::error!(?command, "command reached the wrong handler; ignored")
        }
        Command::Connect(peer) | Command::Disconnect(peer) if peer == own => {
            outputs.error("self", "that is this node's own ID").await
        }
        Command::Connect(peer) => match peers.get_or_spawn(peer) {
            Ok(handle) => {
                let _ = handle.control.send(PeerControl::Connect).await;
            }
            Err(reason) => outputs.error("internal", reason).await,
        },
        Command::Disconnect(peer) => {
            let handle = peers
                .handles
                .lock()
                .expect("peers lock")
                .as_ref()
                .and_then(|h| h.get(&peer).cloned());
            match handle {
                Some(handle) => {
                    let _ = handle.control.send(PeerControl::Disconnect).await;
                }
                None => {
                    outputs
                        .error("unknown-peer", format!("no connection to {peer}"))
                        .await
                }
            }
        }
        Command::List => {
            let list = peers.snapshot();
            let count = list.len();
            for (peer, status) in list {
                outputs
                    .event(Event::Peer {
                        peer,
                        state: state_word(&status),
                        path: status.path.filter(|_| status.connected()),
                        remote: status.remote,
                    })
                    .await;
            }
            outputs.event(Event::Peers(count)).await;
        }
        Command::Status => {
            let list = peers.snapshot();
            let count = list.len();
            for (peer, status) in list {
                let stats = status.connection.as_ref().map(|c| c.stats());
                let report = p2pnat_proto::app::PeerReport {
                    peer,
                    state: state_word(&status),
                    path: status.path.filter(|_| status.connected()),
                    remote: status.remote,
                    rtt: stats.as_ref().map(|s| s.path.rtt),
                    sent_bytes: stats.as_ref().map_or(0, |s| s.udp_tx.bytes),
                    received_bytes: stats.as_ref().map_or(0, |s| s.udp_rx.bytes),
                    pending: status.pending,
                    connections: status.connections,
                };
                outputs.event(Event::Status(report)).await;
            }
            outputs.event(Event::Peers(count)).await;
        }
        Command::Id => outputs.event(Event::Id(own)).await,
        Command::Help => {
            for line in HELP {
                outputs.event(Event::Help(line)).await;
            }
        }
    }
}

fn state_word(status: &peer::PeerStatus) -> &'static str {
    if status.connected() {
        "connected"
    } else if status.connecting {
        "connecting"
    } else {
        "idle"
    }
}

/// Accepts QUIC connections, learns who dialled from the handshake, and hands each connection to
/// its peer's task.
/// `loopback_server`: the endpoint's server configuration with the MTU discovery bound of a
/// direct path to a loopback address, for handshakes that arrive on one.
async fn accept_connections(
    endpoint: quinn::Endpoint,
    loopback_server: Arc<quinn::ServerConfig>,
    peers: Arc<Peers>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let peers = peers.clone();
        let loopback_server = loopback_server.clone();
        tokio::spawn(async move {
            let paths = &peers.context.dialler.paths;
            let vaddr = incoming.remote_address();
            let accepting =
                if paths.max_udp_payload(vaddr) == crate::datagram_size::LOOPBACK_MAX_UDP_PAYLOAD {
                    incoming.accept_with(loopback_server)
                } else {
                    incoming.accept()
                };
            let connecting = match accepting {
                Ok(connecting) => connecting,
                Err(e) => {
                    tracing::debug!(%vaddr, "incoming handshake refused: {e}");
                    paths.release(vaddr, true);
                    return;
                }
            };
            let connection = match connecting.await {
                Ok(connection) => connection,
                Err(e) => {
                    tracing::debug!(%vaddr, "incoming handshake failed: {e}");
                    // A dial to the same peer may share this address; then it is not ours to free.
                    paths.release(vaddr, true);
                    return;
                }
            };
            let Some(peer) = tls::peer_id_of(&connection) else {
                connection.close(1u32.into(), b"no identity");
                paths.release(vaddr, false);
                return;
            };
            paths.bind_incoming(vaddr, peer);
            match peers.get_or_spawn(peer) {
                Ok(handle) => {
                    let _ = handle.control.send(PeerControl::Incoming(connection)).await;
                }
                Err(reason) => {
                    tracing::info!(peer = %peer.short(), "incoming connection refused: {reason}");
                    peer::close_then_release(&connection, paths, reason.as_bytes());
                }
            }
        });
    }
}
