//! One task per known peer: owns its connections, sends the application's messages in order on
//! one stream, and turns the peer's acknowledgements into `delivered` events.
//!
//! # Streams on a peer connection (docs/PROTOCOL.md section 5)
//! Each side opens at most one unidirectional *message* stream (first byte [`STREAM_MESSAGES`])
//! carrying `u32 length | payload` records, and, once it receives messages, one unidirectional
//! *ack* stream (first byte [`STREAM_ACKS`]) carrying `u64` cumulative counts of messages handed to
//! its application. Every message given to the task ends in exactly one `delivered` or `failed`
//! event: failed when no connection can be made, when the connection it was sent on closes (or
//! its message stream breaks) before its acknowledgement arrived, or when the node stops first.
//! Every `failed` reason starts with a code word ([`fail_code`], docs/PROTOCOL.md 1.1).
//!
//! # Concurrency
//! A dial does not block the task: acknowledgements, closes and a connection the peer opens to
//! us meanwhile are handled while it runs, and the peer's connection ends the dial at once.
//! A stop (`PeerContext::stop`) interrupts dials, stream writes and the wait for
//! acknowledgements; everything the task holds then fails with `shutdown:`.
//!
//! # Bounds
//! At most [`MAX_IN_FLIGHT`] messages wait for acknowledgement per peer; beyond that the task stops
//! taking messages, which stops stdin. At most [`MAX_CONNECTIONS_PER_PEER`] connections per
//! peer. The receiving half ([`super::peer_streams`]) bounds what a peer may make us hold.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use p2pnat_proto::app::Event;
use p2pnat_proto::PeerId;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tracing::Instrument as _;

use super::app_io::Outputs;
use super::dial::Dialler;
use super::paths::{Paths, PeerPathState};

/// First byte of a message stream.
pub const STREAM_MESSAGES: u8 = 0x01;
/// First byte of an acknowledgement stream.
pub const STREAM_ACKS: u8 = 0x02;
/// Most messages awaiting acknowledgement per peer.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Most queued messages written to the stream in one call.
pub const MAX_BATCH: usize = 256;
/// A batch stops growing once it holds this many payload bytes.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Payloads smaller than this are copied, with the length prefixes, into one chunk per batch.
/// quinn keeps every written chunk as a segment of its send buffer and looks segments up one by
/// one when it builds a packet: with a chunk per 64-byte message and per prefix, that lookup took
/// 22% of a sending node's time (`perf`, 64-byte message rate).
pub const COALESCE_BELOW: usize = 4096;
/// Capacity of a peer's queue of outgoing messages.
pub const PEER_QUEUE: usize = 64;
/// QUIC application error code: protocol violation by the peer.
pub const CLOSE_PROTOCOL_ERROR: u32 = 2;

/// Most QUIC connections kept per peer; a new one beyond it closes the oldest that carries no
/// messages of ours (a peer reconnecting after a restart is normal, hundreds are not).
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;

/// The first word of every `failed` reason (docs/PROTOCOL.md section 1.1).
pub mod fail_code {
    /// The connection closed, or its message stream broke, before delivery was confirmed.
    pub const CONNECTION_LOST: &str = "connection-lost";
    /// The node shut down (signal, `quit`, end of stdin, stdout closed) first.
    pub const SHUTDOWN: &str = "shutdown";
    /// The node holds no room for another peer or connection attempt.
    pub const BUSY: &str = "busy";
}

/// A message for a peer, with the stdin budget it holds until written.
#[derive(Debug)]
pub struct Outgoing {
    pub msg_id: u64,
    pub payload: Vec<u8>,
    pub permit: OwnedSemaphorePermit,
}

/// Control inputs of a peer task.
#[derive(Debug)]
pub enum PeerControl {
    Connect,
    Disconnect,
    Incoming(quinn::Connection),
    Acked {
        connection: usize,
        count: u64,
    },
    Closed {
        connection: usize,
        reason: String,
    },
    /// A second after a connection closed: forget its virtual address unless a live connection
    /// uses it again (see [`PeerTask::closed`]).
    ReleaseIfUnused(std::net::SocketAddr),
}

/// What `list` and `status` report of a peer, and what eviction looks at.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub connecting: bool,
    /// The connection messages go out on (the first live one), for its path and statistics.
    pub connection: Option<quinn::Connection>,
    pub connections: usize,
    pub remote: Option<std::net::SocketAddr>,
    /// The path kind last reported (`direct` or `relayed`).
    pub path: Option<&'static str>,
    /// Messages taken from the core and not yet delivered or failed.
    pub pending: usize,
    /// Last connect, send, acknowledgement or received message.
    pub last_active: Instant,
}

impl PeerStatus {
    fn new() -> Self {
        PeerStatus {
            connecting: false,
            connection: None,
            connections: 0,
            remote: None,
            path: None,
            pending: 0,
            last_active: Instant::now(),
        }
    }

    pub fn connected(&self) -> bool {
        self.connection.is_some()
    }
}

/// The core's handle on a peer task.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    pub messages: mpsc::Sender<Outgoing>,
    pub control: mpsc::Sender<PeerControl>,
    pub status: Arc<Mutex<PeerStatus>>,
}

impl PeerHandle {
    /// Nothing would be lost if the task went away now: no queued or unconfirmed message, no
    /// dial running.
    pub fn evictable(&self) -> bool {
        let status = self.status.lock().expect("status lock");
        status.pending == 0
            && !status.connecting
            && self.messages.capacity() == self.messages.max_capacity()
    }
}

/// Shared context of peer tasks.
#[derive(Debug, Clone)]
pub struct PeerContext {
    pub dialler: Dialler,
    pub outputs: Outputs,
    pub max_message: usize,
    /// Becomes true when the node must stop at once (a signal, stdout closed, or the graceful
    /// wait ran out): queued messages fail instead of being sent, and nobody waits for
    /// acknowledgements any more.
    pub stop: watch::Receiver<bool>,
}

/// Completes once `stop` is true (never, if its sender is gone without a stop).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Starts the task for `peer`.
pub fn spawn_peer(context: PeerContext, peer: PeerId) -> (PeerHandle, tokio::task::JoinHandle<()>) {
    let (messages_tx, messages_rx) = mpsc::channel(PEER_QUEUE);
    let (control_tx, control_rx) = mpsc::channel(64);
    let status = Arc::new(Mutex::new(PeerStatus::new()));
    let handle = PeerHandle {
        messages: messages_tx,
        control: control_tx.clone(),
        status: status.clone(),
    };
    let path_state = context.dialler.paths.subscribe(peer);
    let stop = context.stop.clone();
    let task = PeerTask {
        context,
        peer,
        path_state,
        reported: None,
        control_tx,
        status,
        connections: Vec::new(),
        sender: None,
        stop,
    };
    let span = tracing::info_span!("peer", peer = %peer.short());
    let join = tokio::spawn(task.run(messages_rx, control_rx).instrument(span));
    (handle, join)
}

struct ActiveSender {
    connection: usize,
    stream: quinn::SendStream,
    /// msg_ids sent and not yet acknowledged, oldest first.
    in_flight: VecDeque<u64>,
    /// Messages sent on this stream so far.
    sent: u64,
}

struct PeerTask {
    context: PeerContext,
    peer: PeerId,
    /// What the path agent says about this peer.
    path_state: watch::Receiver<PeerPathState>,
    /// The path last told to the application (`connected` or `path` event).
    reported: Option<p2pnat_proto::path::Path>,
    control_tx: mpsc::Sender<PeerControl>,
    status: Arc<Mutex<PeerStatus>>,
    /// Oldest first.
    connections: Vec<quinn::Connection>,
    sender: Option<ActiveSender>,
    stop: watch::Receiver<bool>,
}

/// How a dial ended.
enum Dialled {
    /// A connection exists (ours, or the peer's that arrived meanwhile).
    Connected,
    Failed(String),
}

impl PeerTask {
    async fn run(
        mut self,
        mut messages: mpsc::Receiver<Outgoing>,
        mut control: mpsc::Receiver<PeerControl>,
    ) {
        let mut stop = self.stop.clone();
        loop {
            let can_send = self
                .sender
                .as_ref()
                .is_none_or(|s| s.in_flight.len() < MAX_IN_FLIGHT);
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                Some(input) = control.recv() => self.handle_control(input, &mut control).await,
                Ok(()) = self.path_state.changed() => self.path_changed().await,
                message = messages.recv(), if can_send => match message {
                    Some(message) => self.send(message, &mut messages, &mut control).await,
                    None => break,
                },
            }
        }
        self.finish(messages, control).await;
    }

    /// After the core let go (or at a stop): wait (bounded, and not at all once stopping) for
    /// outstanding acknowledgements, fail whatever is left, then close and forget connections.
    async fn finish(
        mut self,
        mut messages: mpsc::Receiver<Outgoing>,
        mut control: mpsc::Receiver<PeerControl>,
    ) {
        let mut stop = self.stop.clone();
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(5));
        tokio::pin!(deadline);
        while self
            .sender
            .as_ref()
            .is_some_and(|s| !s.in_flight.is_empty())
        {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                Some(input) = control.recv() => match input {
                    PeerControl::Acked { connection, count } => self.acked(connection, count).await,
                    PeerControl::Closed { connection, reason } => self.closed(connection, reason).await,
                    PeerControl::ReleaseIfUnused(vaddr) => self.release_if_unused(vaddr),
                    PeerControl::Incoming(connection) => connection.close(0u32.into(), b"quit"),
                    PeerControl::Connect | PeerControl::Disconnect => {}
                },
                _ = &mut deadline => break,
            }
        }
        let reason = format!(
            "{}: node shutting down before delivery was confirmed",
            fail_code::SHUTDOWN
        );
        if let Some(mut sender) = self.sender.take() {
            let _ = sender.stream.reset(0u32.into());
            self.fail_all(sender.in_flight, &reason).await;
        }
        messages.close();
        let not_sent = format!(
            "{}: node shutting down before the message was sent",
            fail_code::SHUTDOWN
        );
        while let Some(queued) = messages.recv().await {
            self.fail(queued.msg_id, &not_sent).await;
        }
        for connection in &self.connections {
            close_then_release(connection, &self.context.dialler.paths, b"quit");
        }
        let paths = &self.context.dialler.paths;
        if !self.connections.is_empty() {
            paths.set_connected(self.peer, false);
        }
        self.connections.clear();
        *self.status.lock().expect("status lock") = PeerStatus::new();
    }

    async fn handle_control(
        &mut self,
        input: PeerControl,
        control: &mut mpsc::Receiver<PeerControl>,
    ) {
        match input {
            PeerControl::Connect => {
                if self.live_connection().is_none() {
                    if let Dialled::Failed(e) = self.dial(control).await {
                        self.context
                            .outputs
                            .error(
                                "unreachable",
                                format!("cannot connect to {}: {e}", self.peer),
                            )
                            .await;
                    }
                }
            }
            PeerControl::Disconnect => {
                for connection in &self.connections {
                    connection.close(0u32.into(), b"disconnect requested");
                }
            }
            PeerControl::Incoming(connection) => self.add_connection(connection).await,
            PeerControl::Acked { connection, count } => self.acked(connection, count).await,
            PeerControl::Closed { connection, reason } => self.closed(connection, reason).await,
            PeerControl::ReleaseIfUnused(vaddr) => self.release_if_unused(vaddr),
        }
    }

    /// The agent changed this peer's path: tell the application about a new path under a live
    /// connection (re-punches are the re-punch task's, `dial::repunch`).
    async fn path_changed(&mut self) {
        let state = self.path_state.borrow_and_update().clone();
        let Some(reported) = self.reported else {
            return; // not connected: the dial reads the state itself
        };
        let current = state.selected.unwrap_or(reported);
        self.reported = Some(current);
        if current != reported {
            {
                let mut status = self.status.lock().expect("status lock");
                status.remote = Some(current.remote);
                status.path = Some(current.kind.as_str());
            }
            self.context
                .outputs
                .event(Event::Path {
                    peer: self.peer,
                    path: current.kind.as_str(),
                    remote: current.remote,
                })
                .await;
        }
    }

    /// The first connection that is not closed or closing.
    fn live_connection(&self) -> Option<&quinn::Connection> {
        self.connections.iter().find(|c| c.close_reason().is_none())
    }

    /// Dials the peer. Control inputs keep being handled meanwhile: a connection the peer
    /// opens to us ends the dial at once and is used instead; `disconnect` and a stop cancel it.
    async fn dial(&mut self, control: &mut mpsc::Receiver<PeerControl>) -> Dialled {
        self.status.lock().expect("status lock").connecting = true;
        let dialler = self.context.dialler.clone();
        let peer = self.peer;
        let dial = async move { dialler.dial(peer).await };
        tokio::pin!(dial);
        let mut stop = self.stop.clone();
        let outcome = loop {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => {
                    break Err(format!("{}: node shutting down while connecting", fail_code::SHUTDOWN));
                }
                Some(input) = control.recv() => match input {
                    PeerControl::Incoming(connection) => {
                        tracing::debug!("the peer connected while we were dialling; using its connection");
                        self.add_connection(connection).await;
                        break Ok(None);
                    }
                    PeerControl::Disconnect => {
                        break Err("disconnected: disconnect requested while connecting".to_string());
                    }
                    PeerControl::Connect => {}
                    PeerControl::Acked { connection, count } => self.acked(connection, count).await,
                    PeerControl::Closed { connection, reason } => self.closed(connection, reason).await,
                    PeerControl::ReleaseIfUnused(vaddr) => self.release_if_unused(vaddr),
                },
                result = &mut dial => break result.map(Some).map_err(|e| e.to_string()),
            }
        };
        self.status.lock().expect("status lock").connecting = false;
        match outcome {
            Ok(Some(connection)) => {
                self.add_connection(connection).await;
                Dialled::Connected
            }
            Ok(None) => Dialled::Connected,
            Err(reason) => Dialled::Failed(reason),
        }
    }

    async fn add_connection(&mut self, connection: quinn::Connection) {
        let first = self.live_connection().is_none();
        tokio::spawn(
            super::peer_streams::receive(
                connection.clone(),
                self.peer,
                self.context.outputs.clone(),
                self.control_tx.clone(),
                self.context.max_message,
                self.status.clone(),
            )
            .in_current_span(),
        );
        self.connections.push(connection.clone());
        self.limit_connections();
        if first {
            let paths = &self.context.dialler.paths;
            paths.set_connected(self.peer, true);
            let path = paths.selected(connection.remote_address());
            let remote = path.map_or(connection.remote_address(), |p| p.remote);
            let kind = path.map_or("direct", |p| p.kind.as_str());
            self.path_state.borrow_and_update();
            if let Some(path) = path {
                self.reported = Some(path);
            }
            {
                let mut status = self.status.lock().expect("status lock");
                status.connection = Some(connection.clone());
                status.remote = Some(remote);
                status.path = Some(kind);
                status.last_active = Instant::now();
            }
            tracing::info!(%remote, "connected");
            self.context
                .outputs
                .event(Event::Connected {
                    peer: self.peer,
                    path: kind,
                    remote,
                })
                .await;
        }
        self.status.lock().expect("status lock").connections = self.connections.len();
    }

    /// Keeps at most [`MAX_CONNECTIONS_PER_PEER`]: closes the oldest that carries no messages
    /// of ours (its `Closed` arrives later and is handled as any other).
    fn limit_connections(&mut self) {
        let sending = self.sender.as_ref().map(|s| s.connection);
        let live: Vec<&quinn::Connection> = self
            .connections
            .iter()
            .filter(|c| c.close_reason().is_none())
            .collect();
        if live.len() <= MAX_CONNECTIONS_PER_PEER {
            return;
        }
        if let Some(oldest) = live.iter().find(|c| Some(c.stable_id()) != sending) {
            tracing::info!(
                connections = live.len(),
                "too many connections from one peer; closing the oldest"
            );
            oldest.close(0u32.into(), b"too many connections");
        }
    }

    fn set_pending(&self, delta: isize) {
        let mut status = self.status.lock().expect("status lock");
        status.pending = status.pending.saturating_add_signed(delta);
        status.last_active = Instant::now();
    }

    async fn send(
        &mut self,
        first: Outgoing,
        queue: &mut mpsc::Receiver<Outgoing>,
        control: &mut mpsc::Receiver<PeerControl>,
    ) {
        self.set_pending(1);
        if self.live_connection().is_none() {
            if let Dialled::Failed(reason) = self.dial(control).await {
                tracing::info!("dial failed: {reason}");
                self.fail(first.msg_id, &reason).await;
                // Everything already queued was meant for the same unreachable peer.
                while let Ok(queued) = queue.try_recv() {
                    self.set_pending(1);
                    self.fail(queued.msg_id, &reason).await;
                }
                return;
            }
        }
        if self.sender.as_ref().is_none_or(|s| {
            !self
                .connections
                .iter()
                .any(|c| c.stable_id() == s.connection && c.close_reason().is_none())
        }) {
            if let Some(old) = self.sender.take() {
                // Its connection is closing: its `Closed` would fail these later; fail them now.
                self.fail_all(
                    old.in_flight,
                    &format!(
                        "{}: connection closed before delivery was confirmed",
                        fail_code::CONNECTION_LOST
                    ),
                )
                .await;
            }
            if let Err(e) = self.open_sender().await {
                self.fail(first.msg_id, &e).await;
                return;
            }
        }
        let sender = self.sender.as_mut().expect("sender opened above");
        // Take whatever else is already queued (bounded) and write it in one call: fewer wakeups
        // per message when the application sends many small ones.
        let mut batch = vec![first];
        let mut batch_bytes = batch[0].payload.len();
        while batch.len() < MAX_BATCH
            && batch_bytes < MAX_BATCH_BYTES
            && sender.in_flight.len() + batch.len() < MAX_IN_FLIGHT
        {
            match queue.try_recv() {
                Ok(next) => {
                    batch_bytes += next.payload.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        self.set_pending(batch.len() as isize - 1);
        let sender = self.sender.as_mut().expect("sender opened above");
        let mut chunks = Vec::new();
        let mut msg_ids = Vec::with_capacity(batch.len());
        let mut permits = Vec::with_capacity(batch.len());
        // Length prefixes and small payloads are copied into one buffer; a large payload goes
        // as its own chunk, uncopied.
        let mut coalesced =
            BytesMut::with_capacity(batch_bytes.min(MAX_BATCH_BYTES) + 4 * batch.len());
        for outgoing in batch {
            coalesced.extend_from_slice(&(outgoing.payload.len() as u32).to_be_bytes());
            if outgoing.payload.len() < COALESCE_BELOW {
                coalesced.extend_from_slice(&outgoing.payload);
            } else {
                chunks.push(coalesced.split().freeze());
                chunks.push(Bytes::from(outgoing.payload));
            }
            msg_ids.push(outgoing.msg_id);
            permits.push(outgoing.permit);
        }
        if !coalesced.is_empty() {
            chunks.push(coalesced.freeze());
        }
        let mut stop = self.stop.clone();
        let written = tokio::select! {
            biased;
            _ = stopped(&mut stop) => Err(format!(
                "{}: node shutting down before the message was sent",
                fail_code::SHUTDOWN
            )),
            result = sender.stream.write_all_chunks(&mut chunks) => result.map_err(|e| format!(
                "{}: the message stream broke: {e}",
                fail_code::CONNECTION_LOST
            )),
        };
        drop(permits);
        match written {
            Ok(()) => {
                sender.sent += msg_ids.len() as u64;
                sender.in_flight.extend(msg_ids);
            }
            Err(reason) => {
                // The stream is unusable: never write to it again. Its connection carries a
                // broken message sequence, so it closes too; the next message dials afresh.
                let broken = self.sender.take().expect("sender in use above");
                let mut broken_stream = broken.stream;
                let _ = broken_stream.reset(0u32.into());
                if let Some(connection) = self
                    .connections
                    .iter()
                    .find(|c| c.stable_id() == broken.connection)
                {
                    tracing::warn!("{reason}; closing the connection");
                    connection.close(CLOSE_PROTOCOL_ERROR.into(), b"message stream broken");
                }
                self.fail_all(broken.in_flight, &reason).await;
                for msg_id in msg_ids {
                    self.fail(msg_id, &reason).await;
                }
            }
        }
    }

    async fn open_sender(&mut self) -> Result<(), String> {
        let lost = |e: &dyn std::fmt::Display| {
            format!("{}: cannot open a stream: {e}", fail_code::CONNECTION_LOST)
        };
        let connection = self
            .live_connection()
            .cloned()
            .ok_or_else(|| lost(&"no live connection"))?;
        let mut stop = self.stop.clone();
        let opened = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return Err(format!(
                "{}: node shutting down before the message was sent",
                fail_code::SHUTDOWN
            )),
            opened = connection.open_uni() => opened,
        };
        let mut stream = opened.map_err(|e| lost(&e))?;
        stream
            .write_all(&[STREAM_MESSAGES])
            .await
            .map_err(|e| lost(&e))?;
        self.sender = Some(ActiveSender {
            connection: connection.stable_id(),
            stream,
            in_flight: VecDeque::new(),
            sent: 0,
        });
        Ok(())
    }

    async fn acked(&mut self, connection: usize, count: u64) {
        let Some(sender) = self.sender.as_mut().filter(|s| s.connection == connection) else {
            return;
        };
        let acked_before = sender.sent - sender.in_flight.len() as u64;
        if count > sender.sent {
            tracing::warn!(
                count,
                sent = sender.sent,
                "peer acknowledged more than was sent"
            );
        }
        let newly = count.min(sender.sent).saturating_sub(acked_before);
        let delivered: Vec<u64> = sender.in_flight.drain(..newly as usize).collect();
        self.set_pending(-(delivered.len() as isize));
        for msg_id in delivered {
            self.context
                .outputs
                .event(Event::Delivered {
                    msg_id,
                    peer: self.peer,
                })
                .await;
        }
    }

    fn release_if_unused(&mut self, vaddr: std::net::SocketAddr) {
        if !self.connections.iter().any(|c| c.remote_address() == vaddr) {
            self.context.dialler.paths.release(vaddr, false);
        }
    }

    async fn closed(&mut self, connection: usize, reason: String) {
        let vaddr = self
            .connections
            .iter()
            .find(|c| c.stable_id() == connection)
            .map(|c| c.remote_address());
        self.connections.retain(|c| c.stable_id() != connection);
        if let Some(vaddr) = vaddr {
            // Keep the path table bounded: forget a virtual address no live connection uses,
            // but a second later: a connection we closed still sends its CONNECTION_CLOSE over
            // the path (freed at once, the peer would only learn of the close when its idle
            // timeout or a stateless reset told it, seconds later).
            let control = self.control_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let _ = control.send(PeerControl::ReleaseIfUnused(vaddr)).await;
            });
        }
        if self
            .sender
            .as_ref()
            .is_some_and(|s| s.connection == connection)
        {
            let sender = self.sender.take().expect("checked above");
            self.fail_all(
                sender.in_flight,
                &format!(
                    "{}: connection closed before delivery was confirmed: {reason}",
                    fail_code::CONNECTION_LOST
                ),
            )
            .await;
        }
        let live = self.live_connection().cloned();
        {
            let mut status = self.status.lock().expect("status lock");
            status.connections = self.connections.len();
            status.connection = live.clone();
        }
        if self.connections.is_empty() {
            self.reported = None;
            self.context.dialler.paths.set_connected(self.peer, false);
            {
                let mut status = self.status.lock().expect("status lock");
                status.remote = None;
                status.path = None;
            }
            tracing::info!("disconnected: {reason}");
            self.context
                .outputs
                .event(Event::Disconnected {
                    peer: self.peer,
                    reason,
                })
                .await;
        }
    }

    /// Emits `failed` for a message this task took (and counts it as no longer pending).
    async fn fail(&self, msg_id: u64, reason: &str) {
        self.set_pending(-1);
        self.context
            .outputs
            .event(Event::Failed {
                msg_id,
                peer: self.peer.to_text(),
                reason: reason.to_string(),
            })
            .await;
    }

    async fn fail_all(&self, msg_ids: VecDeque<u64>, reason: &str) {
        for msg_id in msg_ids {
            self.fail(msg_id, reason).await;
        }
    }
}

/// Closes `connection` (application code 0, `reason`) and frees its virtual address a second
/// after the close completes: the CONNECTION_CLOSE must still reach the peer over the path, and
/// an address freed at once would drop it (the peer would then wait for its idle timeout).
pub(super) fn close_then_release(
    connection: &quinn::Connection,
    paths: &Arc<Paths>,
    reason: &[u8],
) {
    connection.close(0u32.into(), reason);
    let (connection, paths) = (connection.clone(), paths.clone());
    tokio::spawn(async move {
        connection.closed().await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        paths.release(connection.remote_address(), false);
    });
}
