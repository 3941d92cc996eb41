//! The built-in TURN server's tokio driver: sockets and time around
//! [`p2pnat_proto::turn::server::TurnServer`].
//!
//! One task owns the machine and reads every UDP socket itself: the listener (`--turn-listen`,
//! default: the rendezvous's --listen IP, port 3479) and each allocation's relay socket (bound
//! to `relay_ip:0`). It drains a ready socket with non-blocking batched receives (recvmmsg and
//! GRO, [`crate::turn_udp`]), up to [`BATCH`] datagrams a turn, into one set of buffers. A
//! relay socket has a small task that only waits for it to become readable and names it on one
//! bounded channel ([`RELAY_READY`]), then waits until the driver has drained it: one hop per
//! batch, not per datagram, and no copy. Datagrams waiting are the kernel's (the socket's
//! receive buffer; beyond it the kernel drops them). Relayed data takes the machine's direct
//! path (no allocation per datagram); consecutive datagrams from one socket to one destination
//! and of one size leave as one segmented send (GSO) at the end of the batch. Sends are
//! non-blocking: a full socket buffer drops the datagrams (UDP semantics), it never stalls the
//! machine.
//!
//! TURN clients over TCP (a listener on the UDP listener's port number) and TLS (handed over by
//! the TLS port) each have a task of their own (`turn_stream`): their frames reach this task
//! over one bounded channel, and what the machine sends them goes to their own byte-bounded
//! queue without waiting (dropped and counted when full).
//!
//! Why not port 3478: the rendezvous's QUIC and STUN own it, and TURN ChannelData (first byte
//! 0x40-0x4F) cannot be told from QUIC short-header packets (0x40-0x7F) on one port: a node
//! talks both to the same server address, so the two services need two ports (RFC 9443).
//!
//! Who may be relayed to: the observed IP of a registered peer (the policy given to [`spawn`],
//! asked for every CreatePermission and ChannelBind), or another allocation on this server
//! (relay to relay). For the latter the permission is for `relay_ip`, and this driver only sends
//! to `relay_ip` ports that are live relay sockets, unless `relay_ip` is itself a registered
//! peer's: other services of this host are never reachable through the relay.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p2pnat_proto::path::normalize;
use p2pnat_proto::turn::credentials::SharedSecret;
use p2pnat_proto::turn::server::{
    AllocationId, Client, ClientTransport, Family, Output, RelayBindError, TurnServer,
    TurnServerConfig, Via,
};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::limits::ConnectionLimiter;
use crate::turn_stream::{StreamEvent, StreamLimits, StreamLink, StreamOut, STREAM_EVENTS};
use crate::turn_udp::{BatchSocket, Outbox, RecvBufs, Segmented};

/// Relay sockets named as readable and waiting for the driver. Each relay's task names it at
/// most once until the driver has drained it, so this is never the limit below 4,096
/// allocations; beyond, a task waits for room (nothing is lost: the datagrams wait in the
/// kernel).
pub const RELAY_READY: usize = 4096;
/// Datagrams read from one socket before the driver looks at its other inputs.
pub const BATCH: usize = 256;
/// Largest datagram a peer may send to a relayed address; larger ones are dropped and counted.
/// Relayed traffic is QUIC packets of at most about 1,500 bytes.
const RELAY_MAX_DATAGRAM: usize = 4096;
/// Tries to find an even port when a client asks for EVEN-PORT.
const EVEN_PORT_TRIES: usize = 16;

/// The resolved settings of the built-in TURN server.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub listen: SocketAddr,
    /// Whether failing to bind `listen` stops the rendezvous (the address was given) or only
    /// disables TURN with an error in the log (the default address was busy).
    pub listen_required: bool,
    /// The IP relay sockets are bound to, and reported to clients.
    pub relay_ip: IpAddr,
    pub secret: SharedSecret,
    pub config: TurnServerConfig,
    /// Limits of TURN clients over TCP and TLS.
    pub stream: StreamLimits,
    /// Kernel buffer asked for per direction on the UDP listener (0: the system's default).
    pub socket_buffer: usize,
}

/// A running built-in TURN server.
#[derive(Clone)]
pub struct TurnHandle {
    /// The UDP listener's address.
    pub udp: SocketAddr,
    /// Hands TLS connections (from the TLS port) to the server.
    pub streams: StreamLink,
}

/// The relay IP when none is given: the listen IP if specific, else the first non-loopback IPv4
/// address of this host's interfaces, else IPv4 loopback.
pub fn default_relay_ip(listen: IpAddr) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|interface| interface.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A fresh random secret (64 hex digits), for when no `--turn-secret-file` is given.
pub fn random_secret() -> Result<SharedSecret, TurnError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| TurnError::Random(e.to_string()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    SharedSecret::new(hex.as_bytes()).map_err(|e| TurnError::Random(e.to_string()))
}

/// Whether `ip` is a registered peer's (the rendezvous's registry answers).
pub type PeerIpPolicy = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Why the TURN server could not start.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("cannot bind the TURN listener {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no randomness for the TURN secret: {0}")]
    Random(String),
}

/// Binds the listeners (UDP, and TCP on the same port) and spawns the server task; returns
/// them, or `None` when the default address was busy and TURN is off (logged). The TCP listener
/// is optional unless its port was given: a busy TCP port is logged and TURN goes on over UDP.
/// TCP connections count against `limiter`.
pub fn spawn(
    settings: TurnSettings,
    policy: PeerIpPolicy,
    limiter: Arc<ConnectionLimiter>,
) -> Result<Option<TurnHandle>, TurnError> {
    let bound = std::net::UdpSocket::bind(settings.listen).and_then(|socket| {
        p2pnat::socket_buffers::enlarge(&socket, settings.socket_buffer);
        BatchSocket::new(socket)
    });
    let listener = match bound {
        Ok(listener) => listener,
        Err(source) if !settings.listen_required => {
            tracing::error!(addr = %settings.listen, "built-in TURN server off: cannot bind: {source}");
            return Ok(None);
        }
        Err(source) => {
            return Err(TurnError::Bind {
                addr: settings.listen,
                source,
            })
        }
    };
    let local = listener.local_addr().map_err(|source| TurnError::Bind {
        addr: settings.listen,
        source,
    })?;
    let mut seed = [0u8; 8];
    getrandom::getrandom(&mut seed).map_err(|e| TurnError::Random(e.to_string()))?;
    let machine = TurnServer::new(
        settings.config.clone(),
        settings.secret.clone(),
        u64::from_le_bytes(seed),
    );
    let (relay_tx, relay_rx) = mpsc::channel(RELAY_READY);
    let (stream_tx, stream_rx) = mpsc::channel(STREAM_EVENTS);
    let link = StreamLink::new(stream_tx, settings.stream);
    let tcp = match std::net::TcpListener::bind(local)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
    {
        Ok(listener) => {
            let bound = listener.local_addr().ok();
            tokio::spawn(accept_tcp(listener, link.clone(), limiter));
            bound
        }
        Err(source) if settings.listen_required && settings.listen.port() != 0 => {
            return Err(TurnError::Bind {
                addr: local,
                source,
            });
        }
        Err(e) => {
            tracing::error!(addr = %local, "TURN over TCP off: cannot bind: {e}");
            None
        }
    };
    tracing::info!(addr = %local, tcp = ?tcp, relay_ip = %settings.relay_ip, "turn listening {local}");
    let driver = Driver {
        machine,
        listener,
        outbox: Outbox::new(),
        relay_ip: settings.relay_ip,
        relays: HashMap::new(),
        relay_tx,
        policy,
        oversize_drops: 0,
        send_drops: 0,
        streams: HashMap::new(),
        stream_drops: 0,
    };
    tokio::spawn(driver.run(relay_rx, stream_rx));
    Ok(Some(TurnHandle {
        udp: local,
        streams: link,
    }))
}

/// Accepts TURN clients over plain TCP.
async fn accept_tcp(
    listener: tokio::net::TcpListener,
    link: StreamLink,
    limiter: Arc<ConnectionLimiter>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::debug!("TURN TCP accept error: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let from = normalize(from);
        let Ok(permit) = limiter.admit(Instant::now().into_std(), from.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = Client {
            transport: ClientTransport::Tcp,
            addr: from,
        };
        tokio::spawn(link.clone().serve(stream, client, permit));
    }
}

struct Relay {
    socket: Arc<BatchSocket>,
    /// Its readiness task ([`watch_relay`]), and how the driver tells it the socket is drained.
    task: JoinHandle<()>,
    drained: Arc<Notify>,
}

struct Driver {
    machine: TurnServer,
    listener: BatchSocket,
    /// Relayed datagrams waiting to leave together (sent at the end of each batch).
    outbox: Outbox<Via>,
    relay_ip: IpAddr,
    relays: HashMap<SocketAddr, Relay>,
    /// Where relay sockets' tasks name the sockets that became readable.
    relay_tx: mpsc::Sender<SocketAddr>,
    policy: PeerIpPolicy,
    /// Datagrams to relayed addresses dropped for being over [`RELAY_MAX_DATAGRAM`].
    oversize_drops: u64,
    /// Datagrams not sent (socket buffer full, or a forbidden destination).
    send_drops: u64,
    /// TCP and TLS clients' outbound queues, with the connection number that opened each.
    streams: HashMap<Client, (u64, StreamOut)>,
    /// Messages for stream clients dropped because their queue was full.
    stream_drops: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Driver {
    async fn run(
        mut self,
        mut relay_rx: mpsc::Receiver<SocketAddr>,
        mut stream_rx: mpsc::Receiver<StreamEvent>,
    ) {
        let _alive = crate::http::loop_guard("TURN");
        let mut metrics = crate::metrics::TurnSync::default();
        let mut bufs = RecvBufs::new();
        // The message for a client, reused for every relayed datagram.
        let mut out = Vec::with_capacity(RELAY_MAX_DATAGRAM + 64);
        let mut stats_due = Instant::now() + Duration::from_secs(60);
        // One timer, moved when the deadline changes (not a new one per wakeup).
        let sleep = tokio::time::sleep_until(stats_due);
        tokio::pin!(sleep);
        loop {
            let wake = self
                .machine
                .poll_timeout()
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                .min(stats_due);
            if sleep.deadline() != wake {
                sleep.as_mut().reset(wake);
            }
            tokio::select! {
                ready = self.listener.readable() => match ready {
                    Ok(()) => self.drain_listener(&mut bufs),
                    Err(e) => tracing::debug!("TURN listener error: {e}"),
                },
                Some(relayed) = relay_rx.recv() => self.drain_relay(relayed, &mut bufs, &mut out),
                Some(event) = stream_rx.recv() => self.stream_event(event),
                () = &mut sleep => {
                    self.machine.handle_timeout(Instant::now().into_std());
                    if Instant::now() >= stats_due {
                        stats_due = Instant::now() + Duration::from_secs(60);
                        tracing::debug!(
                            stats = ?self.machine.stats(),
                            oversize_drops = self.oversize_drops,
                            send_drops = self.send_drops,
                            stream_drops = self.stream_drops,
                            stream_clients = self.streams.len(),
                            allocations = self.machine.allocation_count(),
                            "TURN counters"
                        );
                    }
                }
            }
            self.drain();
            // Once per batch, never per datagram: a copy of the machine's counters.
            metrics.sync(
                self.machine.stats(),
                self.machine.allocation_count(),
                crate::metrics::DriverDrops {
                    oversize: self.oversize_drops,
                    send: self.send_drops,
                    stream: self.stream_drops,
                },
            );
        }
    }

    /// Up to about [`BATCH`] datagrams from the UDP listener. ChannelData joins the outbox of
    /// its relay socket; anything else is answered through the machine's outputs, drained after
    /// each message so that what leaves keeps the order in which it came.
    fn drain_listener(&mut self, bufs: &mut RecvBufs) {
        let allowed = self.allowed();
        let now = Instant::now().into_std();
        let unix = unix_now();
        let mut handled = 0;
        while handled < BATCH {
            let filled = match self.listener.try_recv(bufs) {
                Ok(filled) => filled,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("TURN listener receive error: {e}");
                    handled += 1;
                    continue;
                }
            };
            for i in 0..filled {
                let (from, messages) = bufs.datagrams(i);
                let client = Client::udp(normalize(from));
                for message in messages {
                    handled += 1;
                    match self
                        .machine
                        .handle_client_message_direct(now, unix, client, message, &allowed)
                    {
                        Ok(Some(to)) => self.relay_out(Via::Relay(to.relayed), to.peer, to.data),
                        Ok(None) => self.drain(),
                        Err(reason) => {
                            tracing::trace!(from = %client.addr, "TURN message dropped: {reason}");
                            self.drain();
                        }
                    }
                }
            }
        }
        self.flush();
    }

    /// Up to about [`BATCH`] datagrams from the relay socket `relayed`, each for its client;
    /// then its task may wait for the next.
    fn drain_relay(&mut self, relayed: SocketAddr, bufs: &mut RecvBufs, out: &mut Vec<u8>) {
        // A socket released since it was named has nothing to drain.
        let Some(relay) = self.relays.get(&relayed) else {
            return;
        };
        let (socket, drained) = (relay.socket.clone(), relay.drained.clone());
        let now = Instant::now().into_std();
        let mut handled = 0;
        while handled < BATCH {
            let filled = match socket.try_recv(bufs) {
                Ok(filled) => filled,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors (port unreachable) surface here on Linux: not fatal.
                Err(e) => {
                    tracing::trace!(%relayed, "relay receive error: {e}");
                    handled += 1;
                    continue;
                }
            };
            for i in 0..filled {
                let (peer, datagrams) = bufs.datagrams(i);
                let peer = normalize(peer);
                for datagram in datagrams {
                    handled += 1;
                    if datagram.len() > RELAY_MAX_DATAGRAM {
                        self.oversize_drops += 1;
                        continue;
                    }
                    match self
                        .machine
                        .handle_relay_datagram_into(now, relayed, peer, datagram, out)
                    {
                        Ok(client) if client.transport.is_stream() => {
                            self.queue_to_stream(client, std::mem::take(out));
                        }
                        Ok(client) => {
                            self.relay_out(Via::Client(ClientTransport::Udp), client.addr, out);
                        }
                        Err(reason) => {
                            tracing::trace!(%relayed, %peer, "relayed datagram dropped: {reason}");
                        }
                    }
                }
            }
        }
        self.flush();
        drained.notify_one();
    }

    /// Puts relayed `data` in the outbox: it joins what waits there for the same socket and
    /// destination (checked when that send started), or what waits is sent and a new send
    /// starts once the destination and the socket are checked.
    fn relay_out(&mut self, from: Via, to: SocketAddr, data: &[u8]) {
        if self.outbox.joins(from, to, data.len()) {
            self.outbox.push(data);
            return;
        }
        self.flush();
        let max = match from {
            Via::Relay(relayed) => {
                if !self.may_send_to(to) {
                    self.send_drops += 1;
                    tracing::debug!(%to, "relay to this host refused");
                    return;
                }
                match self.relays.get(&relayed) {
                    Some(relay) => relay.socket.max_segments(),
                    None => return,
                }
            }
            Via::Client(_) => self.listener.max_segments(),
        };
        self.outbox.start(from, to, data, max);
    }

    /// Sends what waits in the outbox.
    fn flush(&mut self) {
        let Driver {
            outbox,
            listener,
            relays,
            send_drops,
            ..
        } = self;
        outbox.flush(|batch: Segmented<'_, Via>| {
            let socket = match batch.from {
                Via::Relay(relayed) => match relays.get(&relayed) {
                    Some(relay) => &*relay.socket,
                    None => return,
                },
                Via::Client(_) => listener,
            };
            let segment_size = (batch.count > 1).then_some(batch.stride);
            if let Err(e) = socket.try_send(batch.to, batch.bytes, segment_size) {
                *send_drops += batch.count as u64;
                tracing::trace!(to = %batch.to, count = batch.count, "TURN datagrams not sent: {e}");
            }
        });
    }

    /// Queues `message` for a TCP or TLS client's connection.
    fn queue_to_stream(&mut self, client: Client, message: Vec<u8>) {
        let queued = self
            .streams
            .get(&client)
            .is_some_and(|(_, queue)| queue.try_queue(message));
        if !queued {
            self.stream_drops += 1;
        }
    }

    /// Who may be relayed to: registered peers' IPs and the relay IP (see the module docs).
    fn allowed(&self) -> impl Fn(IpAddr) -> bool {
        let policy = self.policy.clone();
        let relay_ip = self.relay_ip;
        move |ip: IpAddr| ip == relay_ip || policy(ip)
    }

    fn client_message(&mut self, from: Client, message: &[u8]) {
        let allowed = self.allowed();
        let now = Instant::now().into_std();
        if let Err(reason) =
            self.machine
                .handle_client_message(now, unix_now(), from, message, &allowed)
        {
            tracing::trace!(from = %from.addr, transport = ?from.transport, "TURN message dropped: {reason}");
        }
    }

    fn stream_event(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Opened { client, conn, out } => {
                // A new connection from an address still listed: the old one is gone.
                if self.streams.insert(client, (conn, out)).is_some() {
                    self.machine.client_closed(client);
                }
            }
            StreamEvent::Frame { client, bytes } => self.client_message(client, &bytes),
            StreamEvent::Closed { client, conn } => {
                if self.streams.get(&client).is_some_and(|(c, _)| *c == conn) {
                    self.streams.remove(&client);
                    self.machine.client_closed(client);
                }
            }
        }
    }

    /// Sends what waits in the outbox, then carries out the machine's outputs.
    fn drain(&mut self) {
        self.flush();
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Transmit(transmit) => {
                    let socket = match transmit.from {
                        Via::Client(ClientTransport::Udp) => &self.listener,
                        Via::Client(transport) => {
                            let client = Client {
                                transport,
                                addr: transmit.to,
                            };
                            let queued = self
                                .streams
                                .get(&client)
                                .is_some_and(|(_, out)| out.try_queue(transmit.contents));
                            if !queued {
                                self.stream_drops += 1;
                            }
                            continue;
                        }
                        Via::Relay(relayed) => {
                            if !self.may_send_to(transmit.to) {
                                self.send_drops += 1;
                                tracing::debug!(to = %transmit.to, "relay to this host refused");
                                continue;
                            }
                            match self.relays.get(&relayed) {
                                Some(relay) => &relay.socket,
                                None => continue,
                            }
                        }
                    };
                    if let Err(e) = socket.try_send(transmit.to, &transmit.contents, None) {
                        self.send_drops += 1;
                        tracing::trace!(to = %transmit.to, "TURN datagram not sent: {e}");
                    }
                }
                Output::BindRelay {
                    id,
                    family,
                    even_port,
                } => {
                    let result = self.bind_relay(id, family, even_port);
                    self.machine
                        .relay_bound(Instant::now().into_std(), id, result);
                }
                Output::ReleaseRelay { id, relayed } => {
                    if let Some(relay) = self.relays.remove(&relayed) {
                        relay.task.abort();
                        tracing::debug!(%id, %relayed, "relay released");
                    }
                }
            }
        }
    }

    /// Relay sockets send to the relay IP only at live relay sockets (relay to relay), unless
    /// a registered peer has that IP.
    fn may_send_to(&self, to: SocketAddr) -> bool {
        to.ip() != self.relay_ip || self.relays.contains_key(&to) || (self.policy)(to.ip())
    }

    fn bind_relay(
        &mut self,
        id: AllocationId,
        family: Family,
        even_port: bool,
    ) -> Result<SocketAddr, RelayBindError> {
        let matches = match family {
            Family::V4 => self.relay_ip.is_ipv4(),
            Family::V6 => self.relay_ip.is_ipv6(),
        };
        if !matches {
            return Err(RelayBindError::FamilyUnsupported);
        }
        let tries = if even_port { EVEN_PORT_TRIES } else { 1 };
        // Sockets with odd ports are kept until the end so the OS does not hand them back.
        let mut odd = Vec::new();
        let mut chosen = None;
        for _ in 0..tries {
            let socket = match std::net::UdpSocket::bind(SocketAddr::new(self.relay_ip, 0)) {
                Ok(socket) => socket,
                Err(e) => {
                    tracing::warn!(relay_ip = %self.relay_ip, "cannot bind a relay socket: {e}");
                    return Err(RelayBindError::NoPort);
                }
            };
            let port = socket.local_addr().map_or(1, |a| a.port());
            if !even_port || port % 2 == 0 {
                chosen = Some(socket);
                break;
            }
            odd.push(socket);
        }
        drop(odd);
        let socket = chosen
            .and_then(|s| BatchSocket::new(s).ok())
            .ok_or(RelayBindError::NoPort)?;
        let relayed = socket.local_addr().map_err(|_| RelayBindError::NoPort)?;
        let socket = Arc::new(socket);
        let drained = Arc::new(Notify::new());
        let task = tokio::spawn(watch_relay(
            socket.clone(),
            relayed,
            self.relay_tx.clone(),
            drained.clone(),
        ));
        self.relays.insert(
            relayed,
            Relay {
                socket,
                task,
                drained,
            },
        );
        tracing::debug!(%id, %relayed, "relay bound");
        Ok(relayed)
    }
}

/// Names `relayed` to the driver whenever its socket becomes readable, then waits until the
/// driver has drained it (the driver reads the datagrams itself).
async fn watch_relay(
    socket: Arc<BatchSocket>,
    relayed: SocketAddr,
    ready: mpsc::Sender<SocketAddr>,
    drained: Arc<Notify>,
) {
    loop {
        if let Err(e) = socket.readable().await {
            tracing::debug!(%relayed, "relay socket error: {e}");
            return;
        }
        if ready.send(relayed).await.is_err() {
            return;
        }
        drained.notified().await;
    }
}

#[cfg(test)]
#[path = "turn_tests.rs"]
mod tests;
