//! TURN clients over TCP (`--turn-listen`'s port) and TLS (the TLS port, ALPN `stun.turn` or
//! none): one task per connection between the byte stream and the TURN driver's one loop.
//!
//! - Inbound: the task cuts the stream into frames with the sans-IO
//!   [`StreamDecoder`] (frames of at most [`MAX_TURN_FRAME`] bytes) and hands each to the driver
//!   over one bounded channel shared by all connections ([`STREAM_EVENTS`]); when it is full the
//!   task waits, which stops reading that connection (TCP backpressure), never the driver.
//!   Malformed framing closes the connection (logged).
//! - Outbound: the driver puts messages on the connection's own queue with
//!   [`StreamOut::try_queue`], which never waits: past `max_buffered` bytes (default 256 KiB)
//!   a message is dropped and counted. So a slow client loses its own traffic and never stalls
//!   the driver or other clients (as DERP's and iroh-relay's per-client queues do).
//! - A connection silent (nothing received) for the idle timeout, or whose one write does not
//!   finish within [`WRITE_STALL`], is closed; its allocation goes with it
//!   (`TurnServer::client_closed`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use p2pnat::byte_queue::{byte_queue, ByteQueue, ByteQueueRx};
use p2pnat_proto::turn::server::Client;
use p2pnat_proto::turn::stream::StreamDecoder;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// Largest TURN frame accepted from a stream client (a STUN message or padded ChannelData).
/// Relayed datagrams are at most 4,096 bytes (`turn::RELAY_RECV_BUFFER`), QUIC packets about
/// 1,500; the decoder holds twice this per connection.
pub const MAX_TURN_FRAME: usize = 8192;
/// Frames from all stream connections waiting for the driver.
pub const STREAM_EVENTS: usize = 1024;
/// Messages queued for one connection at most (beside the byte bound).
const OUT_MESSAGES: usize = 4096;
/// A single write that takes longer than this closes the connection.
pub const WRITE_STALL: Duration = Duration::from_secs(30);
/// Bytes read from the stream at once.
const READ_CHUNK: usize = 8192;

/// Settings of stream clients.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Bytes queued for one connection at most (default 256 KiB).
    pub max_buffered: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

/// What the connection tasks tell the driver.
pub enum StreamEvent {
    Opened {
        client: Client,
        conn: u64,
        out: StreamOut,
    },
    Frame {
        client: Client,
        bytes: Vec<u8>,
    },
    Closed {
        client: Client,
        conn: u64,
    },
}

/// The driver's side of one connection's outbound queue (also the push queue of a TLS control
/// connection): [`StreamOut::try_queue`] never waits.
pub type StreamOut = ByteQueue;

/// A queue of at most `max_buffered` bytes (and [`OUT_MESSAGES`] messages) waiting to be
/// written to one connection.
pub fn out_queue(max_buffered: usize) -> (StreamOut, ByteQueueRx) {
    byte_queue(max_buffered, OUT_MESSAGES)
}

/// Where connection tasks send their events: the TURN driver's channel.
#[derive(Clone)]
pub struct StreamLink {
    pub events: mpsc::Sender<StreamEvent>,
    pub limits: StreamLimits,
    next_conn: Arc<AtomicU64>,
}

impl StreamLink {
    pub fn new(events: mpsc::Sender<StreamEvent>, limits: StreamLimits) -> Self {
        StreamLink {
            events,
            limits,
            next_conn: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Serves one TURN client connection until it closes. `permit` (its slot in the
    /// connection limits) is held until then.
    pub async fn serve<S, P>(self, stream: S, client: Client, permit: P)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let _permit = permit;
        let _counted = crate::metrics::METRICS.connection(match client.transport {
            p2pnat_proto::turn::server::ClientTransport::Tls => crate::metrics::Conn::TurnTls,
            _ => crate::metrics::Conn::TurnTcp,
        });
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (out, mut rx) = out_queue(self.limits.max_buffered);
        if self
            .events
            .send(StreamEvent::Opened { client, conn, out })
            .await
            .is_err()
        {
            return;
        }
        let (mut reader, mut writer) = tokio::io::split(stream);
        let write = async {
            while let Some(message) = rx.recv().await {
                match tokio::time::timeout(WRITE_STALL, writer.write_all(&message)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return format!("write failed: {e}"),
                    Err(_) => return "write stalled".to_string(),
                }
            }
            "driver gone".to_string()
        };
        let read = async {
            let mut decoder = StreamDecoder::new(MAX_TURN_FRAME);
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                let room = decoder.room().min(buf.len());
                let n = match tokio::time::timeout(
                    self.limits.idle_timeout,
                    reader.read(&mut buf[..room]),
                )
                .await
                {
                    Err(_) => return "idle".to_string(),
                    Ok(Ok(0)) => return "closed by the client".to_string(),
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => return format!("read failed: {e}"),
                };
                if let Err(e) = decoder.extend(&buf[..n]) {
                    return format!("malformed stream: {e}");
                }
                loop {
                    let bytes = match decoder.next_frame() {
                        Ok(Some(frame)) => frame.bytes.to_vec(),
                        Ok(None) => break,
                        Err(e) => return format!("malformed stream: {e}"),
                    };
                    let event = StreamEvent::Frame { client, bytes };
                    if self.events.send(event).await.is_err() {
                        return "driver gone".to_string();
                    }
                }
            }
        };
        let reason = tokio::select! {
            reason = read => reason,
            reason = write => reason,
        };
        tracing::debug!(client = %client.addr, transport = ?client.transport, "TURN stream connection ended: {reason}");
        let _ = self.events.send(StreamEvent::Closed { client, conn }).await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use p2pnat_proto::turn::server::ClientTransport;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn client(port: u16) -> Client {
        Client {
            transport: ClientTransport::Tcp,
            addr: SocketAddr::from(([192, 0, 2, 1], port)),
        }
    }

    async fn opened(events: &mut mpsc::Receiver<StreamEvent>) -> StreamOut {
        match events.recv().await {
            Some(StreamEvent::Opened { out, .. }) => out,
            _ => panic!("expected Opened"),
        }
    }

    #[tokio::test]
    async fn a_slow_client_loses_its_own_traffic_and_stalls_nobody() {
        let (events_tx, mut events) = mpsc::channel(16);
        let link = StreamLink::new(
            events_tx,
            StreamLimits {
                max_buffered: 16 * 1024,
                idle_timeout: Duration::from_secs(30),
            },
        );
        // The slow client never reads; its pipe holds 1 KiB.
        let (_slow_end, slow_server) = tokio::io::duplex(1024);
        tokio::spawn(link.clone().serve(slow_server, client(1), ()));
        let slow = opened(&mut events).await;
        let (mut fast_end, fast_server) = tokio::io::duplex(1024);
        tokio::spawn(link.clone().serve(fast_server, client(2), ()));
        let fast = opened(&mut events).await;

        // try_queue never waits: once 16 KiB wait (plus what the writer took), it refuses.
        let accepted = (0..100).filter(|_| slow.try_queue(vec![7; 1000])).count();
        assert!(
            (16..=19).contains(&accepted),
            "{accepted} KB accepted for a client that reads nothing"
        );
        assert!(!slow.try_queue(vec![7; 1000]));

        // Another client is served meanwhile.
        assert!(fast.try_queue(b"hello".to_vec()));
        let mut got = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), fast_end.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"hello");

        // Its frames reach the driver; garbage ends its connection.
        let binding = [
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        fast_end.write_all(&binding).await.unwrap();
        match events.recv().await {
            Some(StreamEvent::Frame {
                client: from,
                bytes,
            }) => {
                assert_eq!((from, bytes.as_slice()), (client(2), &binding[..]));
            }
            _ => panic!("expected the frame"),
        }
        fast_end.write_all(&[0xFF; 4]).await.unwrap();
        match events.recv().await {
            Some(StreamEvent::Closed { client: from, .. }) => assert_eq!(from, client(2)),
            _ => panic!("expected Closed"),
        }
        assert!(fast.is_closed());
        assert!(!slow.is_closed());
    }
}
