//! A hand-driven QUIC peer for tests that need a peer to misbehave: it speaks the node's TLS
//! (mutual, ed25519 identities) and ALPN, connects straight to a node's address, and then does
//! whatever the test says with the streams (docs/PROTOCOL.md section 5).

use std::net::SocketAddr;
use std::sync::Arc;

use p2pnat::identity::Identity;
use p2pnat::tls;

/// STREAM_MESSAGES and STREAM_ACKS (src/node/peer.rs).
pub const STREAM_MESSAGES: u8 = 0x01;
pub const STREAM_ACKS: u8 = 0x02;

pub struct Stranger {
    pub identity: Identity,
    pub endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
}

impl Stranger {
    /// A stranger with `identity` on its own loopback socket (inside a tokio runtime).
    pub fn new(identity: Identity) -> Self {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let crypto = tls::client_crypto(&identity, tls::ALPN_PEER, false).unwrap();
        let config = quinn::ClientConfig::new(crypto);
        endpoint.set_default_client_config(config.clone());
        Stranger {
            identity,
            endpoint,
            config,
        }
    }

    pub fn id(&self) -> String {
        self.identity.peer_id().to_text()
    }

    /// Connects to the node `node_id` listening on `addr`.
    pub async fn connect(&self, addr: SocketAddr, node_id: &str) -> quinn::Connection {
        self.endpoint
            .connect_with(self.config.clone(), addr, node_id)
            .unwrap()
            .await
            .expect("handshake with the node")
    }
}

/// The first `local=` address of a node's `ready` event.
pub fn node_addr(ready: &str) -> SocketAddr {
    let local = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("local="))
        .expect("ready has local=");
    local.split(',').next().unwrap().parse().unwrap()
}

/// Reads `u32 length | payload` records from a message stream (after its type byte) and
/// acknowledges each on an ack stream, as a well-behaved node would; returns the payloads.
pub async fn receive_and_ack(connection: &quinn::Connection, count: usize) -> Vec<Vec<u8>> {
    let mut stream = connection.accept_uni().await.expect("message stream");
    let mut kind = [0u8; 1];
    stream.read_exact(&mut kind).await.unwrap();
    assert_eq!(kind[0], STREAM_MESSAGES);
    let mut acks = connection.open_uni().await.unwrap();
    acks.write_all(&[STREAM_ACKS]).await.unwrap();
    let mut payloads = Vec::new();
    while payloads.len() < count {
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).await.unwrap();
        let mut payload = vec![0u8; u32::from_be_bytes(length) as usize];
        stream.read_exact(&mut payload).await.unwrap();
        payloads.push(payload);
        acks.write_all(&(payloads.len() as u64).to_be_bytes())
            .await
            .unwrap();
    }
    payloads
}

pub fn runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    )
}
