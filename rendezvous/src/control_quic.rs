//! Control over QUIC: one bidirectional stream per request (docs/PROTOCOL.md section 4). The
//! requests themselves are handled in `requests`, shared with TLS.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use p2pnat::tls;
use p2pnat_proto::control::{self, MAX_CONTROL_MESSAGE};
use p2pnat_proto::PeerId;
use tracing::Instrument as _;

use crate::metrics::{Conn, Dropped, METRICS};
use crate::requests::{respond, Link, Owner};
use crate::server::State;

/// Counts a QUIC connection in [`State::connections`] from its acceptance (before its
/// handshake) until it ends, whichever way: the `--max-connections` check then sees handshakes
/// in flight too, and the cap is exact.
pub struct Slot(Arc<State>);

impl Slot {
    pub fn take(state: &Arc<State>) -> Slot {
        state.connections.fetch_add(1, Ordering::Relaxed);
        Slot(state.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one accepted QUIC connection; `_slot` is its place under `--max-connections`.
pub async fn serve_connection(incoming: quinn::Incoming, state: Arc<State>, _slot: Slot) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(e) => {
            METRICS.count_drop(Dropped::QuicAuthFailure);
            tracing::debug!(%remote, "handshake failed: {e}");
            return;
        }
    };
    let Some(peer) = tls::peer_id_of(&connection) else {
        METRICS.count_drop(Dropped::QuicAuthFailure);
        connection.close(1u32.into(), b"no peer identity");
        return;
    };
    let span = tracing::info_span!("node", peer = %peer, %remote);
    let me = Owner {
        conn: state.next_conn.fetch_add(1, Ordering::Relaxed),
        link: Link::Quic(connection.clone()),
    };
    let counted = METRICS.connection(Conn::QuicControl);
    async {
        tracing::debug!("connected");
        let reason = loop {
            match connection.accept_bi().await {
                Ok((send, recv)) => {
                    let me = me.clone();
                    let state = state.clone();
                    tokio::spawn(
                        async move {
                            if let Err(e) = serve_request(&me, peer, send, recv, &state).await {
                                tracing::debug!("request failed: {e}");
                            }
                        }
                        .in_current_span(),
                    );
                }
                Err(e) => break e,
            }
        };
        tracing::debug!("connection closed: {reason}");
        if state.connection_closed(&peer, &me) {
            tracing::info!("unregistered (connection closed)");
        }
    }
    .instrument(span)
    .await;
    drop(counted);
}

#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("reading request: {0}")]
    Read(#[from] quinn::ReadToEndError),
    #[error("writing response: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
}

async fn serve_request(
    me: &Owner,
    peer: PeerId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    state: &State,
) -> Result<(), RequestError> {
    let bytes = recv.read_to_end(MAX_CONTROL_MESSAGE).await?;
    let response = respond(state, peer, me, &bytes);
    send.write_all(&control::encode(&response)).await?;
    send.finish()?;
    Ok(())
}
