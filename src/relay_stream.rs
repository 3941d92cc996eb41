//! The relay link's stream transport: TURN over TLS (RFC 8656 section 3.1, ALPN `stun.turn`,
//! RFC 7443) to the rendezvous's TLS port, for networks that drop UDP (issue 13,
//! docs/PROTOCOL.md sections 6 and 7).
//!
//! One [`StreamConnection`] per allocation: one task connects (TCP, then TLS 1.3; the server's
//! key checked as the control connection checks it: pinned, it must equal; unpinned, any ed25519
//! key; no client certificate, the TURN credentials authenticate) and then
//! - writes every message queued on its [`StreamOut`] (the client's requests from the relay
//!   driver, relayed data from the socket's send path), ChannelData padded to a multiple of 4
//!   ([`stream_frame`]). The queue is bounded ([`STREAM_QUEUE_BYTES`],
//!   [`STREAM_QUEUE_MESSAGES`]) and never waited on: a full queue drops the message (the
//!   caller counts it), so a slow TCP path never blocks quinn's send path or the driver;
//! - reads frames with the sans-IO [`StreamDecoder`] (a buffer of twice [`STREAM_MAX_FRAME`],
//!   allocated once) and hands each to [`RelayLink::receive`], exactly as a UDP datagram from
//!   the server would be: checks and STUN go to the socket's side channel on local socket
//!   `RELAY`; relayed QUIC waits in the link's queue and quinn's receive is woken for it.
//!
//! A malformed stream (the decoder cannot go on), a read or write error, a write that does not
//! finish within [`WRITE_STALL`], or the server closing ends the connection; the driver hears it
//! as [`StreamEvent::Closed`] (its allocation is gone with it) and reconnects with backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2pnat_proto::turn::stream::{pad_channel_data, StreamDecoder, StreamError};
use p2pnat_proto::PeerId;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::byte_queue::{byte_queue, ByteQueue, ByteQueueRx};
use crate::relay::RelayLink;
use crate::rendezvous_tls::ALPN_TURN;
use crate::socket::NodeSocket;
use crate::tls::{provider, PeerServerVerifier, TlsSetupError};

/// Bytes waiting to be written to the connection at most; more are dropped (as the rendezvous
/// bounds its side, `--tls-max-buffered`).
pub const STREAM_QUEUE_BYTES: usize = 256 * 1024;
/// Messages waiting to be written at most (beside the byte bound).
pub const STREAM_QUEUE_MESSAGES: usize = 4096;
/// Largest frame read or written (a STUN message or padded ChannelData): the built-in TURN
/// server's limit for frames from a client (docs/PROTOCOL.md section 7).
pub const STREAM_MAX_FRAME: usize = 8192;
/// Largest relayed payload over the stream: the largest Send indication with an IPv6 peer
/// (48 bytes of framing, payload padded to 4) fits [`STREAM_MAX_FRAME`]. quinn's datagrams
/// (at most 1,452 bytes) are framed whole; there is no path MTU on a TCP stream.
pub const STREAM_MAX_PAYLOAD: usize = STREAM_MAX_FRAME - 48;
/// One write to the connection that does not finish within this closes it.
pub const WRITE_STALL: Duration = Duration::from_secs(30);
/// How long a closing connection gets to write what is queued (the deallocation) at shutdown.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Bytes read from the stream at once.
const READ_CHUNK: usize = 8192;
/// Queued messages are written together, up to this many bytes per write.
const WRITE_BATCH: usize = 64 * 1024;

/// The stream form of a TURN message built for UDP: ChannelData (first byte 0x40-0x7F) padded
/// with zeros to a multiple of 4 (RFC 8656 section 12.5); STUN messages are already aligned
/// and are returned as they are.
pub fn stream_frame(message: Vec<u8>) -> Vec<u8> {
    match message.first() {
        Some(0x40..=0x7F) => pad_channel_data(message),
        _ => message,
    }
}

/// The sending side of a connection's outbound queue; cheap to clone. Never waits.
#[derive(Debug, Clone)]
pub struct StreamOut(ByteQueue);

fn out_queue() -> (StreamOut, ByteQueueRx) {
    let (out, rx) = byte_queue(STREAM_QUEUE_BYTES, STREAM_QUEUE_MESSAGES);
    (StreamOut(out), rx)
}

impl StreamOut {
    /// Queues a TURN message (UDP form; ChannelData is padded here) unless
    /// [`STREAM_QUEUE_BYTES`] or [`STREAM_QUEUE_MESSAGES`] are already waiting or the
    /// connection is gone. `false`: dropped, the caller counts it.
    pub fn try_queue(&self, message: Vec<u8>) -> bool {
        self.0.try_queue(stream_frame(message))
    }
}

/// What a connection tells the relay driver: at most one `Connected`, then one `Closed`.
#[derive(Debug)]
pub enum StreamEvent {
    /// TCP and TLS are up: allocate now.
    Connected { local: SocketAddr },
    /// The connection is over (or was never made); any allocation on it is gone.
    Closed(StreamClosed),
}

/// Why the TLS connection to the TURN server could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StreamConnectError {
    #[error(transparent)]
    Setup(#[from] TlsSetupError),
    #[error(transparent)]
    Dial(#[from] crate::rendezvous_tls::TlsDialError),
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamClosed {
    #[error(transparent)]
    Connect(#[from] StreamConnectError),
    #[error("closed by the server")]
    ByServer,
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("a write did not finish within {} s", WRITE_STALL.as_secs())]
    WriteStalled,
    #[error("malformed stream from the server: {0}")]
    Malformed(#[from] StreamError),
    #[error("closed locally")]
    Local,
    #[error("the connection task ended unexpectedly")]
    TaskGone,
}

/// TLS for TURN over TLS to the rendezvous's TLS port: TLS 1.3, ALPN `stun.turn`, the server's
/// key checked as over QUIC (`pinned`: must equal; else any ed25519 key), no client
/// certificate.
pub fn client_config(pinned: Option<PeerId>) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerServerVerifier {
            provider,
            accept_any_key: pinned.is_none(),
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_TURN.to_vec()];
    Ok(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(
    addr: SocketAddr,
    pinned: Option<PeerId>,
) -> Result<(Tls, SocketAddr), StreamConnectError> {
    let config = client_config(pinned)?;
    Ok(crate::rendezvous_tls::dial(config, addr, pinned).await?)
}

/// One TURN-over-TLS connection and its task. Dropping it aborts the task (the TCP connection
/// closes, and the server ends the allocation with it); [`StreamConnection::close`] lets it
/// write what is queued first.
#[derive(Debug)]
pub struct StreamConnection {
    /// `None` once closing: the writer ends when every [`StreamOut`] is gone.
    out: Option<StreamOut>,
    events: mpsc::Receiver<StreamEvent>,
    task: Option<tokio::task::JoinHandle<()>>,
    addr: SocketAddr,
}

impl Drop for StreamConnection {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl StreamConnection {
    /// Starts connecting to `addr`. Messages may be queued at once; they are written once the
    /// connection is up.
    pub fn spawn(
        addr: SocketAddr,
        pinned: Option<PeerId>,
        link: Arc<RelayLink>,
        socket: Arc<NodeSocket>,
    ) -> Self {
        let (out, rx) = out_queue();
        let (events_tx, events) = mpsc::channel(2);
        let task = tokio::spawn(async move {
            let closed = match connect(addr, pinned).await {
                Err(e) => StreamClosed::Connect(e),
                Ok((tls, local)) => {
                    let _ = events_tx.send(StreamEvent::Connected { local }).await;
                    serve(tls, &link, &socket, rx).await
                }
            };
            let _ = events_tx.send(StreamEvent::Closed(closed)).await;
        });
        StreamConnection {
            out: Some(out),
            events,
            task: Some(task),
            addr,
        }
    }

    /// The TURN server's TLS address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The queue to write to this connection (none once closing).
    pub fn out(&self) -> Option<StreamOut> {
        self.out.clone()
    }

    /// The connection's next event; [`StreamClosed::TaskGone`] if its task ended without one.
    pub async fn next_event(&mut self) -> StreamEvent {
        self.events
            .recv()
            .await
            .unwrap_or(StreamEvent::Closed(StreamClosed::TaskGone))
    }

    /// Closes the connection after writing what is queued (at most [`CLOSE_GRACE`]). Other
    /// clones of its [`StreamOut`] must be dropped first, or it waits out the grace.
    pub async fn close(mut self) {
        self.out = None;
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// Moves frames both ways until either side ends. See the module documentation.
async fn serve<S>(
    stream: S,
    link: &RelayLink,
    socket: &NodeSocket,
    mut rx: ByteQueueRx,
) -> StreamClosed
where
    S: AsyncRead + AsyncWrite,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        while let Some(first) = rx.recv().await {
            batch.clear();
            batch.extend_from_slice(&first);
            while batch.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Some(message) => batch.extend_from_slice(&message),
                    None => break,
                }
            }
            let written = async {
                writer.write_all(&batch).await?;
                writer.flush().await
            };
            match tokio::time::timeout(WRITE_STALL, written).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return StreamClosed::Write(e),
                Err(_) => return StreamClosed::WriteStalled,
            }
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, writer.shutdown()).await;
        StreamClosed::Local
    };
    let read = async {
        let mut decoder = StreamDecoder::new(STREAM_MAX_FRAME);
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let room = decoder.room().min(buf.len());
            let n = match reader.read(&mut buf[..room]).await {
                Ok(0) => return StreamClosed::ByServer,
                Ok(n) => n,
                Err(e) => return StreamClosed::Read(e),
            };
            if let Err(e) = decoder.extend(&buf[..n]) {
                return StreamClosed::Malformed(e);
            }
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        if let Some(datagram) = link.receive(frame.bytes) {
                            socket.deliver_side(datagram);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return StreamClosed::Malformed(e),
                }
            }
            if link.has_quic() {
                socket.wake_receiver();
            }
        }
    };
    tokio::select! {
        closed = read => closed,
        closed = write => closed,
    }
}

#[cfg(test)]
mod tests {
    use p2pnat_proto::turn::channel_data;
    use p2pnat_proto::turn::stream::FrameKind;

    use super::*;

    #[test]
    fn channel_data_is_padded_and_decodes_back_whole() {
        let stun = {
            let mut binding = vec![0x00, 0x11, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
            binding.extend_from_slice(&[7; 12]);
            binding
        };
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for len in 0..9 {
            let message = channel_data::encode(0x4000 + len as u16, &vec![len as u8 + 1; len]);
            let framed = stream_frame(message.clone());
            assert_eq!(framed.len() % 4, 0, "payload of {len}");
            assert_eq!(framed.len(), (4 + len).next_multiple_of(4));
            assert_eq!(&framed[..message.len()], &message[..]);
            assert!(framed[message.len()..].iter().all(|&b| b == 0));
            wire.extend_from_slice(&framed);
            sent.push((FrameKind::ChannelData, message));
            // A STUN message between them is left as it is.
            assert_eq!(stream_frame(stun.clone()), stun);
            wire.extend_from_slice(&stun);
            sent.push((FrameKind::Stun, stun.clone()));
        }
        let mut decoder = StreamDecoder::new(STREAM_MAX_FRAME);
        let mut got = Vec::new();
        // Fed in odd-sized pieces, as TCP may deliver them.
        for piece in wire.chunks(7) {
            decoder.extend(piece).unwrap();
            while let Some(frame) = decoder.next_frame().unwrap() {
                got.push((frame.kind, frame.bytes.to_vec()));
            }
        }
        assert_eq!(got, sent);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn the_largest_payload_fits_a_frame_either_way() {
        let payload = vec![0u8; STREAM_MAX_PAYLOAD];
        let channel = stream_frame(channel_data::encode(0x4000, &payload));
        assert!(channel.len() <= STREAM_MAX_FRAME);
        // The framing STREAM_MAX_PAYLOAD leaves room for is a Send indication's with an IPv6
        // peer (the larger), and the payload needs no padding.
        assert_eq!(
            STREAM_MAX_FRAME - STREAM_MAX_PAYLOAD,
            p2pnat_proto::turn::client::overhead_send_indication(true)
        );
        assert_eq!(STREAM_MAX_PAYLOAD % 4, 0);
    }

    #[tokio::test]
    async fn the_connection_pads_what_it_writes_and_closes_on_a_malformed_stream() {
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (socket, _side) = NodeSocket::new(std_socket, None).unwrap();
        let link = socket.relay().clone();
        let (ours, mut server) = tokio::io::duplex(4096);
        let (out, rx) = out_queue();
        let task = tokio::spawn(async move { serve(ours, &link, &socket, rx).await });

        // A 5-byte ChannelData payload leaves as 4 + 5 bytes and 3 of padding.
        assert!(out.try_queue(channel_data::encode(0x4001, b"hello")));
        let mut wire = [0xEE; 12];
        server.read_exact(&mut wire).await.unwrap();
        assert_eq!(&wire, b"\x40\x01\x00\x05hello\x00\x00\x00");

        // A frame that starts neither STUN nor ChannelData ends the connection.
        server.write_all(&[0xFF, 0, 0, 0]).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("closed in time")
            .unwrap();
        assert!(
            matches!(
                closed,
                StreamClosed::Malformed(StreamError::UnknownFrame(0xFF))
            ),
            "{closed:?}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_waiting() {
        let (out, mut rx) = out_queue();
        let message = vec![0x00; 1000];
        let accepted = (0..1000).filter(|_| out.try_queue(message.clone())).count();
        assert_eq!(accepted, STREAM_QUEUE_BYTES / 1000);
        assert!(!out.try_queue(message.clone()));
        // Taking one out makes room for one more.
        assert!(rx.recv().await.is_some());
        assert!(out.try_queue(message));
        drop(rx);
        assert!(
            !out.try_queue(vec![0; 4]),
            "a gone connection takes nothing"
        );
    }
}
