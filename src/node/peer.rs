//! One task per known peer: owns its connections, sends the application's messages in order on
//! one stream, and turns the peer's acknowledgements into `delivered` events.
//!
//! # Streams on a peer connection (docs/PROTOCOL.md section 5)
//! Each side opens at most one unidirectional *message* stream (first byte [`STREAM_MESSAGES`])
//! carrying `u32 length | payload` records, and, once it receives messages, one unidirectional
//! *ack* stream (first byte [`STREAM_ACKS`]) carrying `u64` cumulative counts of messages handed to
//! its application. Every message given to the task ends in exactly one `delivered` or `failed`
//! event: failed when no connection can be made, or when the connection it was sent on closes
//! before its acknowledgement arrived.
//!
//! # Bounds
//! At most [`MAX_IN_FLIGHT`] messages wait for acknowledgement per peer; beyond that the task stops
//! taking messages, which stops stdin. A peer announcing a message larger than our
//! `--max-message` is a protocol violation: the connection is closed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use p2pnat_proto::app::Event;
use p2pnat_proto::PeerId;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tracing::Instrument as _;

use super::app_io::Outputs;
use super::dial::Dialler;
use super::paths::PeerPathState;

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
/// Capacity of a peer's queue of outgoing messages.
pub const PEER_QUEUE: usize = 64;
/// QUIC application error code: protocol violation by the peer.
pub const CLOSE_PROTOCOL_ERROR: u32 = 2;

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
    Acked { connection: usize, count: u64 },
    Closed { connection: usize, reason: String },
}

/// What `list` reports of a peer.
#[derive(Debug, Clone, Default)]
pub struct PeerStatus {
    pub connected: bool,
    pub connecting: bool,
    pub remote: Option<std::net::SocketAddr>,
}

/// The core's handle on a peer task.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    pub messages: mpsc::Sender<Outgoing>,
    pub control: mpsc::Sender<PeerControl>,
    pub status: Arc<Mutex<PeerStatus>>,
}

/// Shared context of peer tasks.
#[derive(Debug, Clone)]
pub struct PeerContext {
    pub dialler: Dialler,
    pub outputs: Outputs,
    pub max_message: usize,
}

/// Starts the task for `peer`.
pub fn spawn_peer(context: PeerContext, peer: PeerId) -> (PeerHandle, tokio::task::JoinHandle<()>) {
    let (messages_tx, messages_rx) = mpsc::channel(PEER_QUEUE);
    let (control_tx, control_rx) = mpsc::channel(64);
    let status = Arc::new(Mutex::new(PeerStatus::default()));
    let handle = PeerHandle {
        messages: messages_tx,
        control: control_tx.clone(),
        status: status.clone(),
    };
    let path_state = context.dialler.paths.subscribe(peer);
    let task = PeerTask {
        context,
        peer,
        path_state,
        reported: None,
        control_tx,
        status,
        connections: Vec::new(),
        sender: None,
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
    connections: Vec<quinn::Connection>,
    sender: Option<ActiveSender>,
}

impl PeerTask {
    async fn run(
        mut self,
        mut messages: mpsc::Receiver<Outgoing>,
        mut control: mpsc::Receiver<PeerControl>,
    ) {
        loop {
            let can_send = self
                .sender
                .as_ref()
                .is_none_or(|s| s.in_flight.len() < MAX_IN_FLIGHT);
            tokio::select! {
                biased;
                Some(input) = control.recv() => self.handle_control(input).await,
                Ok(()) = self.path_state.changed() => self.path_changed().await,
                message = messages.recv(), if can_send => match message {
                    Some(message) => self.send(message, &mut messages).await,
                    None => break,
                },
            }
        }
        self.finish(control).await;
    }

    /// After the core let go: wait (bounded) for outstanding acknowledgements, then close.
    async fn finish(mut self, mut control: mpsc::Receiver<PeerControl>) {
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(5));
        tokio::pin!(deadline);
        while self
            .sender
            .as_ref()
            .is_some_and(|s| !s.in_flight.is_empty())
        {
            tokio::select! {
                Some(input) = control.recv() => self.handle_control(input).await,
                _ = &mut deadline => break,
            }
        }
        if let Some(sender) = self.sender.take() {
            self.fail_all(
                sender.in_flight,
                "node shutting down before delivery was confirmed",
            )
            .await;
        }
        for connection in &self.connections {
            connection.close(0u32.into(), b"quit");
        }
    }

    async fn handle_control(&mut self, input: PeerControl) {
        match input {
            PeerControl::Connect => {
                if self.connections.is_empty() {
                    if let Err(e) = self.dial().await {
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
            self.status.lock().expect("status lock").remote = Some(current.remote);
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

    async fn dial(&mut self) -> Result<(), super::dial::DialError> {
        self.status.lock().expect("status lock").connecting = true;
        let result = self.context.dialler.dial(self.peer).await;
        self.status.lock().expect("status lock").connecting = false;
        let connection = result?;
        self.add_connection(connection).await;
        Ok(())
    }

    async fn add_connection(&mut self, connection: quinn::Connection) {
        let first = self.connections.is_empty();
        tokio::spawn(
            receive(
                connection.clone(),
                self.peer,
                self.context.outputs.clone(),
                self.control_tx.clone(),
                self.context.max_message,
            )
            .in_current_span(),
        );
        self.connections.push(connection.clone());
        if first {
            let paths = &self.context.dialler.paths;
            paths.set_connected(self.peer, true);
            let path = paths.selected(connection.remote_address());
            let remote = path.map_or(connection.remote_address(), |p| p.remote);
            self.path_state.borrow_and_update();
            if let Some(path) = path {
                self.reported = Some(path);
            }
            {
                let mut status = self.status.lock().expect("status lock");
                status.connected = true;
                status.remote = Some(remote);
            }
            tracing::info!(%remote, "connected");
            self.context
                .outputs
                .event(Event::Connected {
                    peer: self.peer,
                    path: path.map_or("direct", |p| p.kind.as_str()),
                    remote,
                })
                .await;
        }
    }

    async fn send(&mut self, first: Outgoing, queue: &mut mpsc::Receiver<Outgoing>) {
        if self.connections.is_empty() {
            if let Err(e) = self.dial().await {
                let reason = e.to_string();
                tracing::info!("dial failed: {reason}");
                self.fail(first.msg_id, &reason).await;
                // Everything already queued was meant for the same unreachable peer.
                while let Ok(queued) = queue.try_recv() {
                    self.fail(queued.msg_id, &reason).await;
                }
                return;
            }
        }
        if self.sender.is_none() {
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
        let mut chunks = Vec::with_capacity(batch.len() * 2);
        let mut msg_ids = Vec::with_capacity(batch.len());
        let mut permits = Vec::with_capacity(batch.len());
        for outgoing in batch {
            let length = (outgoing.payload.len() as u32).to_be_bytes();
            chunks.push(Bytes::copy_from_slice(&length));
            chunks.push(Bytes::from(outgoing.payload));
            msg_ids.push(outgoing.msg_id);
            permits.push(outgoing.permit);
        }
        match sender.stream.write_all_chunks(&mut chunks).await {
            Ok(()) => {
                sender.sent += msg_ids.len() as u64;
                sender.in_flight.extend(msg_ids);
            }
            Err(e) => {
                let reason = format!("connection lost while sending: {e}");
                for msg_id in msg_ids {
                    self.fail(msg_id, &reason).await;
                }
            }
        }
        drop(permits);
    }

    async fn open_sender(&mut self) -> Result<(), String> {
        let connection = self.connections[0].clone();
        let mut stream = connection
            .open_uni()
            .await
            .map_err(|e| format!("cannot open a stream: {e}"))?;
        stream
            .write_all(&[STREAM_MESSAGES])
            .await
            .map_err(|e| format!("cannot write to a stream: {e}"))?;
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

    async fn closed(&mut self, connection: usize, reason: String) {
        let vaddr = self
            .connections
            .iter()
            .find(|c| c.stable_id() == connection)
            .map(|c| c.remote_address());
        self.connections.retain(|c| c.stable_id() != connection);
        if let Some(vaddr) = vaddr {
            // Keep the path table bounded: forget a virtual address no live connection uses.
            if !self.connections.iter().any(|c| c.remote_address() == vaddr) {
                self.context.dialler.paths.release(vaddr, false);
            }
        }
        if self
            .sender
            .as_ref()
            .is_some_and(|s| s.connection == connection)
        {
            let sender = self.sender.take().expect("checked above");
            self.fail_all(
                sender.in_flight,
                &format!("connection closed before delivery was confirmed: {reason}"),
            )
            .await;
        }
        if self.connections.is_empty() {
            self.reported = None;
            self.context.dialler.paths.set_connected(self.peer, false);
            {
                let mut status = self.status.lock().expect("status lock");
                status.connected = false;
                status.remote = None;
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

    async fn fail(&self, msg_id: u64, reason: &str) {
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

/// Accepts the peer's streams on one connection until it closes, then reports `Closed`.
async fn receive(
    connection: quinn::Connection,
    peer: PeerId,
    outputs: Outputs,
    control: mpsc::Sender<PeerControl>,
    max_message: usize,
) {
    let id = connection.stable_id();
    // One stream of each kind per connection: more is a protocol violation.
    let (mut seen_messages, mut seen_acks) = (false, false);
    let reason = loop {
        let mut stream = match connection.accept_uni().await {
            Ok(stream) => stream,
            Err(e) => break e.to_string(),
        };
        let kind = match stream.read_u8().await {
            Ok(kind) => kind,
            Err(e) => {
                tracing::debug!("stream ended before its type byte: {e}");
                continue;
            }
        };
        let violation = match kind {
            STREAM_MESSAGES if seen_messages => Some("a second message stream"),
            STREAM_ACKS if seen_acks => Some("a second ack stream"),
            STREAM_MESSAGES | STREAM_ACKS => None,
            _ => Some("a stream of unknown type"),
        };
        if let Some(what) = violation {
            tracing::warn!(kind, "peer opened {what}; closing connection");
            outputs
                .error("protocol", format!("peer {peer} opened {what} ({kind})"))
                .await;
            connection.close(CLOSE_PROTOCOL_ERROR.into(), b"stream protocol violation");
            continue;
        }
        if kind == STREAM_MESSAGES {
            seen_messages = true;
            let task = receive_messages(
                connection.clone(),
                stream,
                peer,
                outputs.clone(),
                max_message,
            );
            tokio::spawn(task.in_current_span());
        } else {
            seen_acks = true;
            let control = control.clone();
            let task = async move {
                while let Ok(count) = stream.read_u64().await {
                    let acked = PeerControl::Acked {
                        connection: id,
                        count,
                    };
                    if control.send(acked).await.is_err() {
                        break;
                    }
                }
            };
            tokio::spawn(task.in_current_span());
        }
    };
    let _ = control
        .send(PeerControl::Closed {
            connection: id,
            reason,
        })
        .await;
}

/// Reads `u32 length | payload` records, hands each payload to stdout, and acknowledges the count.
async fn receive_messages(
    connection: quinn::Connection,
    stream: quinn::RecvStream,
    peer: PeerId,
    outputs: Outputs,
    max_message: usize,
) {
    let (count_tx, count_rx) = watch::channel(0u64);
    tokio::spawn(send_acks(connection.clone(), count_rx).in_current_span());
    // Small messages are read from a buffer rather than with two stream reads each.
    let mut stream = tokio::io::BufReader::with_capacity(64 * 1024, stream);
    let mut count = 0u64;
    loop {
        let length = match stream.read_u32().await {
            Ok(length) => length as usize,
            Err(e) => {
                tracing::debug!("message stream ended: {e}");
                return;
            }
        };
        if length > max_message {
            tracing::warn!(
                length,
                "peer sent a message over --max-message; closing connection"
            );
            outputs
                .error(
                    "too-large",
                    format!("peer {peer} sent a message of {length} bytes, over --max-message {max_message}; connection closed"),
                )
                .await;
            connection.close(CLOSE_PROTOCOL_ERROR.into(), b"message too large");
            return;
        }
        let permit = outputs.reserve(length).await;
        let mut payload = vec![0u8; length];
        if let Err(e) = stream.read_exact(&mut payload).await {
            tracing::debug!("message stream broke inside a message: {e}");
            return;
        }
        if !outputs.recv(peer, payload, permit).await {
            return;
        }
        count += 1;
        let _ = count_tx.send(count);
    }
}

/// Writes the latest cumulative count whenever it changes (coalescing bursts).
async fn send_acks(connection: quinn::Connection, mut counts: watch::Receiver<u64>) {
    let Ok(mut stream) = connection.open_uni().await else {
        return;
    };
    if stream.write_all(&[STREAM_ACKS]).await.is_err() {
        return;
    }
    while counts.changed().await.is_ok() {
        let count = *counts.borrow_and_update();
        if stream.write_all(&count.to_be_bytes()).await.is_err() {
            return;
        }
    }
    let _ = stream.finish();
}
