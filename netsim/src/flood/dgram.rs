//! The flood's datagram transport: throw-away identities that register with control
//! datagrams (docs/PROTOCOL.md section 4.1), as nodes do, each driven by its own
//! `p2pnat_proto::rv::client` machine, several of them sharing one UDP socket.
//!
//! One [`DgramSocket`] per flooding socket: its task reads what the rendezvous sends, hands
//! each datagram to the machine whose transaction ID it answers (pushes: by session), runs
//! the machines' timers and sends what they queue. [`DgramSocket::run`] starts one operation
//! and waits for its end; [`DgramSocket::raw`] sends a hand-made datagram (a request under a
//! session nobody holds) and waits for whatever answers its ID.

use super::client::ClientError;
use p2pnat::identity::Identity;
use p2pnat_proto::control::{RefusalCode, Response};
use p2pnat_proto::rv::client::{Client, ClientConfig, ClientEvent, OpId, Outcome, StartError};
use p2pnat_proto::rv::wire::{self, Datagram, Id};
use p2pnat_proto::PeerId;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// The flooders' timers: a flooder is patient (the junk can fill the rendezvous's socket
/// buffer), so it retransmits every 0.5 s, doubling up to 2 s, for as long as a QUIC flooder
/// waits for an answer ([`super::client::REQUEST_TIMEOUT`]).
pub fn flood_config() -> ClientConfig {
    ClientConfig {
        rto: Duration::from_millis(500),
        max_rto: Duration::from_secs(2),
        deadline: super::client::REQUEST_TIMEOUT,
    }
}

/// What one socket sent and received.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DgramStats {
    pub sent: u64,
    pub received: u64,
    /// Register datagrams sent again under an ID already sent (retransmissions, and Registers
    /// signed again under a fresh cookie): each may reach the registry once more.
    pub register_resends: u64,
    /// Request datagrams sent again (the rendezvous acts on a sequence number once).
    pub request_resends: u64,
    /// Cookies that answered a Register (its cookie was stale or missing).
    pub register_cookies: u64,
    /// Refusals `RateLimited` received, every copy: the rendezvous answers each copy of a
    /// Register it refuses (and counts each), the first one ends the operation.
    pub rate_limited: u64,
    /// Hand-made requests under no session, with their retransmissions ([`DgramSocket::raw`]).
    pub raw_sent: u64,
    /// Datagrams that answered nothing in flight (late copies) or that a machine dropped.
    pub dropped: u64,
    /// Pushes received (the flooders expect none).
    pub pushes: u64,
}

struct Inner {
    clients: Vec<Client>,
    /// Which client each transaction ID belongs to, and the kind sent under it.
    by_id: HashMap<Id, (usize, u8)>,
    sent_ids: HashSet<Id>,
    waiters: HashMap<(usize, OpId), oneshot::Sender<Outcome>>,
    raw: HashMap<Id, oneshot::Sender<Vec<u8>>>,
    /// Per client: its peer ID, its session number once registered, and its first Request
    /// as sent.
    peers: Vec<PeerId>,
    sessions: Vec<Option<u64>>,
    first_request: Vec<Option<Vec<u8>>>,
    stats: DgramStats,
}

impl Inner {
    /// Takes what client `index` queued and the events it produced.
    fn drain(&mut self, index: usize) -> Vec<Vec<u8>> {
        while let Some(event) = self.clients[index].poll_event() {
            match event {
                ClientEvent::Done { op, outcome } => {
                    if let Some(waiter) = self.waiters.remove(&(index, op)) {
                        let _ = waiter.send(outcome);
                    }
                }
                ClientEvent::Push(_) => self.stats.pushes += 1,
            }
        }
        let mut out = Vec::new();
        while let Some(datagram) = self.clients[index].poll_transmit() {
            if let Some(id) = id_of(&datagram) {
                let kind = datagram[5];
                if !self.sent_ids.insert(id) {
                    match kind {
                        wire::KIND_REGISTER => self.stats.register_resends += 1,
                        wire::KIND_REQUEST => self.stats.request_resends += 1,
                        _ => {}
                    }
                }
                if kind == wire::KIND_REQUEST && self.first_request[index].is_none() {
                    self.first_request[index] = Some(datagram.clone());
                }
                self.by_id.insert(id, (index, kind));
            }
            out.push(datagram);
        }
        out
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.stats.received += 1;
        let Some(id) = id_of(bytes) else {
            self.stats.dropped += 1;
            return Vec::new();
        };
        if let Some(waiter) = self.raw.remove(&id) {
            let _ = waiter.send(bytes.to_vec());
            return Vec::new();
        }
        let index = match wire::decode(bytes) {
            Ok(Datagram::Push { session, .. }) => {
                self.sessions.iter().position(|s| *s == Some(session))
            }
            Ok(Datagram::Registered {
                session: 0, body, ..
            }) => {
                if matches!(
                    wire::decode_body::<Response>(body),
                    Ok(Response::Refused {
                        code: RefusalCode::RateLimited,
                        ..
                    })
                ) {
                    self.stats.rate_limited += 1;
                }
                self.by_id.get(&id).map(|(index, _)| *index)
            }
            _ => self.by_id.get(&id).map(|(index, _)| *index),
        };
        let Some(index) = index else {
            self.stats.dropped += 1;
            return Vec::new();
        };
        if bytes[5] == wire::KIND_COOKIE
            && self.by_id.get(&id).map(|(_, kind)| *kind) == Some(wire::KIND_REGISTER)
        {
            self.stats.register_cookies += 1;
        }
        let was_registered = self.clients[index].is_registered();
        if self.clients[index]
            .handle_datagram(now, from, bytes)
            .is_err()
        {
            self.stats.dropped += 1;
        }
        if !was_registered && self.clients[index].is_registered() {
            if let Ok(Datagram::Registered { session, .. }) = wire::decode(bytes) {
                self.sessions[index] = Some(session);
            }
        }
        self.drain(index)
    }

    fn tick(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for index in 0..self.clients.len() {
            if self.clients[index]
                .poll_timeout()
                .is_some_and(|at| at <= now)
            {
                self.clients[index].handle_timeout(now);
                out.extend(self.drain(index));
            }
        }
        out
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.clients.iter().filter_map(Client::poll_timeout).min()
    }
}

fn id_of(datagram: &[u8]) -> Option<Id> {
    wire::is_control(datagram)
        .then(|| datagram.get(6..wire::HEADER)?.try_into().ok())
        .flatten()
}

/// One flooding UDP socket and the machines of the identities that share it.
pub struct DgramSocket {
    socket: tokio::net::UdpSocket,
    server: SocketAddr,
    inner: Mutex<Inner>,
    wake: Notify,
}

impl DgramSocket {
    /// Wraps `socket` (call inside the tokio runtime) and starts its task, which runs until
    /// the returned handle is aborted.
    pub fn start(
        socket: std::net::UdpSocket,
        server: SocketAddr,
    ) -> std::io::Result<(Arc<DgramSocket>, tokio::task::JoinHandle<()>)> {
        socket.set_nonblocking(true)?;
        let me = Arc::new(DgramSocket {
            socket: tokio::net::UdpSocket::from_std(socket)?,
            server,
            inner: Mutex::new(Inner {
                clients: Vec::new(),
                by_id: HashMap::new(),
                sent_ids: HashSet::new(),
                waiters: HashMap::new(),
                raw: HashMap::new(),
                peers: Vec::new(),
                sessions: Vec::new(),
                first_request: Vec::new(),
                stats: DgramStats::default(),
            }),
            wake: Notify::new(),
        });
        let task = tokio::spawn(me.clone().drive());
        Ok((me, task))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("datagram socket lock")
    }

    /// Adds a machine for `identity`; returns its index.
    pub fn add(&self, config: ClientConfig, identity: &Identity) -> usize {
        let mut seed = [0u8; 32];
        // Transaction IDs need only be unguessable off-path; a failure leaves them
        // predictable, not wrong.
        let _ = getrandom::getrandom(&mut seed);
        let mut inner = self.lock();
        inner.clients.push(Client::new(
            config,
            identity.signing_key().clone(),
            self.server,
            seed,
        ));
        inner.peers.push(identity.peer_id());
        inner.sessions.push(None);
        inner.first_request.push(None);
        inner.clients.len() - 1
    }

    async fn send_all(&self, datagrams: Vec<Vec<u8>>) {
        for datagram in datagrams {
            if self.socket.send_to(&datagram, self.server).await.is_ok() {
                self.lock().stats.sent += 1;
            }
        }
    }

    /// Starts an operation on machine `index` and waits for its outcome.
    pub async fn run(
        &self,
        index: usize,
        start: impl FnOnce(&mut Client, Instant) -> Result<OpId, StartError>,
    ) -> Result<Outcome, ClientError> {
        let (tx, rx) = oneshot::channel();
        let out = {
            let mut inner = self.lock();
            let op = start(&mut inner.clients[index], Instant::now())
                .map_err(|e| ClientError::Stream(e.to_string()))?;
            inner.waiters.insert((index, op), tx);
            inner.drain(index)
        };
        self.send_all(out).await;
        self.wake.notify_one();
        rx.await
            .map_err(|_| ClientError::Stream("the socket's task ended".into()))
    }

    /// Sends `datagram` (a control datagram of ours) at 0, 0.5, 1.5, 3.5 s ... (doubling up
    /// to 2 s, as [`flood_config`]) until a datagram with its ID arrives, for at most
    /// `deadline`; returns that answer.
    pub async fn raw(&self, datagram: Vec<u8>, deadline: Duration) -> Option<Vec<u8>> {
        let id = id_of(&datagram)?;
        let (tx, mut rx) = oneshot::channel();
        self.lock().raw.insert(id, tx);
        let config = flood_config();
        let end = tokio::time::Instant::now() + deadline;
        let mut gap = config.rto;
        loop {
            if self.socket.send_to(&datagram, self.server).await.is_ok() {
                let mut inner = self.lock();
                inner.stats.sent += 1;
                inner.stats.raw_sent += 1;
            }
            let wait = (tokio::time::Instant::now() + gap).min(end);
            match tokio::time::timeout_at(wait, &mut rx).await {
                Ok(answer) => return answer.ok(),
                Err(_) if wait >= end => break,
                Err(_) => gap = (gap * 2).min(config.max_rto),
            }
        }
        self.lock().raw.remove(&id);
        None
    }

    pub fn is_registered(&self, index: usize) -> bool {
        self.lock().clients[index].is_registered()
    }

    pub fn stats(&self) -> DgramStats {
        self.lock().stats
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// (peer, session, its first Request as sent) of every registered machine: material for
    /// the junk (forged tags, replays).
    pub fn sessions(&self) -> Vec<(PeerId, u64, Option<Vec<u8>>)> {
        let inner = self.lock();
        (0..inner.clients.len())
            .filter_map(|i| {
                let session = inner.sessions[i]?;
                Some((inner.peers[i], session, inner.first_request[i].clone()))
            })
            .collect()
    }

    async fn drive(self: Arc<Self>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let next = self.lock().next_timeout();
            let timer = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let out = tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        let from = p2pnat_proto::path::normalize(from);
                        self.lock().receive(Instant::now(), from, &buf[..len])
                    }
                    Err(_) => Vec::new(),
                },
                _ = timer => self.lock().tick(Instant::now()),
                _ = self.wake.notified() => Vec::new(),
            };
            self.send_all(out).await;
        }
    }
}
