//! Control over TLS on TCP (ALPN `p2pnat-rendezvous-tls/1`, docs/PROTOCOL.md section 7): the
//! frames of `p2pnat_proto::control_stream` on one connection, the requests handled by
//! `requests` exactly as over QUIC.
//!
//! One request is handled at a time, in order: the next is not read until the response is
//! written, so a client that does not read its responses stops being read (TCP backpressure),
//! and nothing grows. Pushes wait in the connection's own queue, at most `max_buffered` bytes;
//! past that they are dropped (logged), never blocking the requester that caused them. A
//! connection that sends nothing for the idle timeout, or whose one write takes longer than
//! [`WRITE_STALL`], is closed; its registration goes with it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use p2pnat::rendezvous_tls::read_frame;
use p2pnat_proto::control::{self, Push};
use p2pnat_proto::control_stream::{encode_frame, FrameKind};
use p2pnat_proto::PeerId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::metrics::{Conn, METRICS};
use crate::requests::{respond, Link, Owner};
use crate::server::State;
use crate::turn_stream::{out_queue, StreamLimits, StreamOut, WRITE_STALL};

/// Queues `push` as a push frame; `false` when the connection's queue is full or closed.
pub fn queue_push(out: &StreamOut, push: &Push) -> bool {
    out.try_queue(encode_frame(FrameKind::Push, 0, &control::encode(push)))
}

/// Serves one authenticated control connection of `peer` until it closes.
pub async fn serve<S>(
    stream: S,
    peer: PeerId,
    remote: SocketAddr,
    state: Arc<State>,
    limits: StreamLimits,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let span = tracing::info_span!("node", peer = %peer, %remote, over = "tls");
    async move {
        let (pushes, mut push_rx) = out_queue(limits.max_buffered);
        let me = Owner {
            conn: state.next_conn.fetch_add(1, Ordering::Relaxed),
            link: Link::Tls {
                remote,
                pushes: Arc::new(pushes),
            },
        };
        tracing::debug!("connected");
        let _counted = METRICS.connection(Conn::TlsControl);
        let (mut reader, mut writer) = tokio::io::split(stream);
        // One request at a time: the reader waits until the previous one is answered.
        let (requests, mut request_rx) = mpsc::channel::<(u32, Vec<u8>)>(1);
        let read = async {
            loop {
                let frame = match tokio::time::timeout(limits.idle_timeout, read_frame(&mut reader))
                    .await
                {
                    Err(_) => return "idle".to_string(),
                    Ok(Ok(Some(frame))) => frame,
                    Ok(Ok(None)) => return "closed by the node".to_string(),
                    Ok(Err(e)) => return format!("read failed: {e}"),
                };
                let (header, payload) = frame;
                if header.kind != FrameKind::Request {
                    return format!("unexpected {:?} frame from the node", header.kind);
                }
                if requests.send((header.id, payload)).await.is_err() {
                    return "writer gone".to_string();
                }
            }
        };
        let serve = async {
            loop {
                let frame = tokio::select! {
                    Some((id, payload)) = request_rx.recv() => {
                        let response = respond(&state, peer, &me, &payload);
                        encode_frame(FrameKind::Response, id, &control::encode(&response))
                    }
                    Some(push) = push_rx.recv() => push,
                    else => return "queues closed".to_string(),
                };
                match tokio::time::timeout(WRITE_STALL, writer.write_all(&frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return format!("write failed: {e}"),
                    Err(_) => return "write stalled".to_string(),
                }
            }
        };
        let reason = tokio::select! {
            reason = read => reason,
            reason = serve => reason,
        };
        tracing::debug!("connection closed: {reason}");
        drop(push_rx);
        if state.connection_closed(&peer, &me) {
            tracing::info!("unregistered (connection closed)");
        }
    }
    .instrument(span)
    .await;
}
