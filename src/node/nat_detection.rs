//! Drives the sans-IO [`NatProbe`] on the node's socket: STUN Binding requests to the rendezvous
//! and its alternate STUN addresses, answers routed back by transaction ID.

use std::net::SocketAddr;
use std::sync::Arc;

use p2pnat_proto::nat::{NatBehaviour, NatProbe, NatProbeConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dial::StunRoutes;
use crate::socket::NodeSocket;

fn random_transaction() -> [u8; 12] {
    let mut id = [0u8; 12];
    getrandom::getrandom(&mut id).expect("the OS random source works");
    id
}

/// Detects the NAT mapping behaviour in front of `socket`. `servers[0]` is the rendezvous, the
/// rest its alternate STUN addresses. Takes at most `config.timeout`.
pub async fn detect(
    socket: &NodeSocket,
    routes: &Arc<StunRoutes>,
    local: Vec<SocketAddr>,
    servers: &[SocketAddr],
    config: NatProbeConfig,
) -> NatBehaviour {
    let mut probe = NatProbe::new(
        Instant::now().into_std(),
        local,
        servers,
        random_transaction,
        config,
    );
    let transactions: Vec<[u8; 12]> = probe.transactions().collect();
    let (tx, mut rx) = mpsc::channel(16);
    if routes.insert_all(&transactions, &tx).is_err() {
        return NatBehaviour::Unknown;
    }
    let behaviour = loop {
        while let Some((server, bytes)) = probe.poll_transmit(Instant::now().into_std()) {
            if let Err(e) = socket.send_raw(server, &bytes) {
                tracing::debug!(%server, "STUN request not sent: {e}");
            }
        }
        if let Some(behaviour) = probe.poll_event() {
            break behaviour;
        }
        let Some(deadline) = probe.poll_timeout() else {
            break NatBehaviour::Unknown;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => probe.handle_timeout(Instant::now().into_std()),
            Some(response) = rx.recv() => probe.handle_response(response),
        }
    };
    routes.remove_all(&transactions, &tx);
    tracing::info!(%behaviour, "NAT mapping behaviour detected");
    behaviour
}
