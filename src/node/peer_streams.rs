//! The receiving half of a peer connection (docs/PROTOCOL.md section 5): accepts the peer's
//! streams, hands received payloads to stdout, and acknowledges them; reports acknowledgements
//! of our own messages and the connection's end to the peer task.
//!
//! # Bounds
//! - At most one message stream and one ack stream per connection; more is a protocol violation
//!   and closes the connection.
//! - A message announced larger than `--max-message` closes the connection.
//! - Received bytes take room in the shared stdout budget *as they arrive*, never on the
//!   announced length alone: a peer that announces large messages and sends nothing holds none
//!   of it. A message that stops moving for [`MESSAGE_STALL_TIMEOUT`] closes the connection,
//!   which frees what it held.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p2pnat_proto::PeerId;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tracing::Instrument as _;

use super::app_io::Outputs;
use super::peer::{PeerControl, PeerStatus, CLOSE_PROTOCOL_ERROR, STREAM_ACKS, STREAM_MESSAGES};

/// A message whose bytes stop arriving for this long closes its connection.
pub const MESSAGE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts the peer's streams on one connection until it closes, then reports `Closed`.
pub(super) async fn receive(
    connection: quinn::Connection,
    peer: PeerId,
    outputs: Outputs,
    control: mpsc::Sender<PeerControl>,
    max_message: usize,
    status: Arc<Mutex<PeerStatus>>,
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
            let messages = MessageReader {
                connection: connection.clone(),
                peer,
                outputs: outputs.clone(),
                max_message,
                status: status.clone(),
            };
            tokio::spawn(messages.run(stream).in_current_span());
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

/// Reads one connection's message stream.
struct MessageReader {
    connection: quinn::Connection,
    peer: PeerId,
    outputs: Outputs,
    max_message: usize,
    status: Arc<Mutex<PeerStatus>>,
}

/// Why a message stream stopped.
#[derive(Debug, thiserror::Error)]
enum ReadMessageError {
    #[error("message stream ended: {0}")]
    Ended(#[from] std::io::Error),
    #[error("a message of {length} bytes, over --max-message {max}")]
    TooLarge { length: usize, max: usize },
    #[error("no bytes of a started message for {0:?}")]
    Stalled(Duration),
    #[error("stdout is gone")]
    StdoutGone,
}

impl MessageReader {
    /// Reads `u32 length | payload` records, hands each payload to stdout, and acknowledges the
    /// count of payloads handed over.
    async fn run(self, stream: quinn::RecvStream) {
        let (count_tx, count_rx) = watch::channel(0u64);
        tokio::spawn(send_acks(self.connection.clone(), count_rx).in_current_span());
        // Small messages are read from a buffer rather than with two stream reads each.
        let mut stream = tokio::io::BufReader::with_capacity(64 * 1024, stream);
        let mut count = 0u64;
        loop {
            match self.read_one(&mut stream).await {
                Ok(()) => {
                    count += 1;
                    // Acknowledged once per burst: deferred only while the next message is
                    // already complete in the buffer (handled without waiting), so an ack never
                    // waits for bytes still to arrive.
                    if !next_message_buffered(stream.buffer()) {
                        let _ = count_tx.send(count);
                        self.status.lock().expect("status lock").last_active = Instant::now();
                    }
                }
                Err(ReadMessageError::Ended(e)) => {
                    tracing::debug!("message stream ended: {e}");
                    return;
                }
                Err(ReadMessageError::StdoutGone) => return,
                Err(e) => {
                    tracing::warn!("peer broke the message stream: {e}; closing connection");
                    let code = match e {
                        ReadMessageError::TooLarge { .. } => "too-large",
                        _ => "protocol",
                    };
                    self.outputs
                        .error(
                            code,
                            format!("peer {} sent {e}; connection closed", self.peer),
                        )
                        .await;
                    self.connection
                        .close(CLOSE_PROTOCOL_ERROR.into(), b"message stream violation");
                    return;
                }
            }
        }
    }

    async fn read_one(
        &self,
        stream: &mut tokio::io::BufReader<quinn::RecvStream>,
    ) -> Result<(), ReadMessageError> {
        let length = stream.read_u32().await? as usize;
        if length > self.max_message {
            return Err(ReadMessageError::TooLarge {
                length,
                max: self.max_message,
            });
        }
        // Room in the stdout budget is taken for bytes that arrived, never for the announcement.
        let mut permit: Option<OwnedSemaphorePermit> = None;
        let mut payload = Vec::with_capacity(length.min(64 * 1024));
        while payload.len() < length {
            // Only an empty buffer waits (and only then is a stall timer set up).
            if stream.buffer().is_empty() {
                let filled = tokio::time::timeout(MESSAGE_STALL_TIMEOUT, stream.fill_buf())
                    .await
                    .map_err(|_| ReadMessageError::Stalled(MESSAGE_STALL_TIMEOUT))?;
                if filled?.is_empty() {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                }
            }
            let take = stream.buffer().len().min(length - payload.len());
            let more = self.outputs.reserve(take).await;
            match permit.as_mut() {
                Some(held) => held.merge(more),
                None => permit = Some(more),
            }
            payload.extend_from_slice(&stream.buffer()[..take]);
            stream.consume(take);
        }
        let permit = match permit {
            Some(permit) => permit,
            None => self.outputs.reserve(0).await, // an empty message
        };
        if !self.outputs.recv(self.peer, payload, permit).await {
            return Err(ReadMessageError::StdoutGone);
        }
        Ok(())
    }
}

/// Whether `buffered` starts with a whole `u32 length | payload` record.
fn next_message_buffered(buffered: &[u8]) -> bool {
    match buffered.get(..4) {
        Some(prefix) => {
            let length = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
            buffered.len() - 4 >= length
        }
        None => false,
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
