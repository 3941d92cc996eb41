//! Drives the sans-IO [`NatProbe`] on the node's socket (STUN Binding requests to the rendezvous
//! and its alternate STUN addresses, answers routed back by transaction ID) and the
//! [`InboundProbe`] on a throw-away socket.

use std::net::SocketAddr;
use std::sync::Arc;

use p2pnat_proto::nat::{
    InboundBehaviour, InboundProbe, NatBehaviour, NatProbe, NatProbeConfig, NatReport,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dial::StunRoutes;
use crate::socket::NodeSocket;

fn random_transaction() -> [u8; 12] {
    let mut id = [0u8; 12];
    getrandom::getrandom(&mut id).expect("the OS random source works");
    id
}

/// Detects the NAT in front of `socket`: its mapping behaviour (`servers[0]` is the rendezvous,
/// the rest its alternate STUN addresses), and, for an endpoint-independent NAT with the
/// rendezvous's `inbound_probe`, what unsolicited inbound does to it. Takes at most about
/// twice `config.timeout`.
pub async fn detect(
    socket: &NodeSocket,
    routes: &Arc<StunRoutes>,
    local: Vec<SocketAddr>,
    servers: &[SocketAddr],
    inbound_probe: Option<SocketAddr>,
    config: NatProbeConfig,
) -> NatReport {
    let mapping = detect_mapping(socket, routes, local, servers, config).await;
    let inbound = match (mapping, servers.first(), inbound_probe) {
        (NatBehaviour::EndpointIndependent, Some(server), Some(probe)) => {
            let bind_ip = quinn::AsyncUdpSocket::local_addr(socket)
                .map(|a| a.ip())
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
            detect_inbound(bind_ip, *server, probe, config).await
        }
        _ => InboundBehaviour::Unknown,
    };
    tracing::info!(%mapping, %inbound, "NAT behaviour detected");
    NatReport { mapping, inbound }
}

async fn detect_mapping(
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
    behaviour
}

/// Runs the sans-IO [`InboundProbe`] from a throw-away socket on `bind_ip` (the main socket's
/// mapping must not be disturbed: see `p2pnat_proto::nat`).
async fn detect_inbound(
    bind_ip: std::net::IpAddr,
    server: SocketAddr,
    probe_addr: SocketAddr,
    config: NatProbeConfig,
) -> InboundBehaviour {
    let socket = match tokio::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::debug!("no socket for the inbound probe: {e}");
            return InboundBehaviour::Unknown;
        }
    };
    let mut probe = InboundProbe::new(
        Instant::now().into_std(),
        server,
        probe_addr,
        [random_transaction(), random_transaction()],
        config,
    );
    let mut buf = [0u8; 512];
    loop {
        while let Some((to, bytes)) = probe.poll_transmit(Instant::now().into_std()) {
            if let Err(e) = socket.send_to(&bytes, to).await {
                tracing::debug!(%to, "inbound probe request not sent: {e}");
            }
        }
        if let Some(behaviour) = probe.poll_event() {
            return behaviour;
        }
        let Some(deadline) = probe.poll_timeout() else {
            return InboundBehaviour::Unknown;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => probe.handle_timeout(Instant::now().into_std()),
            received = socket.recv_from(&mut buf) => {
                let Ok((len, _)) = received else { continue };
                // The poke itself and anything else that is not an answer is dropped here.
                if let Ok(response) = p2pnat_proto::stun::parse_binding_response(&buf[..len]) {
                    probe.handle_response(Instant::now().into_std(), response);
                }
            }
        }
    }
}
