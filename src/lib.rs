//! p2pnat: reach a peer by its public key.
//!
//! The tokio layer of the node (the protocol logic is in the sans-IO `p2pnat-proto` crate).
//! See docs/ARCHITECTURE.md for how the pieces fit.

pub mod byte_queue;
pub mod datagram_size;
pub mod identity;
pub mod netcheck;
pub mod node;
pub mod process;
pub mod relay;
pub mod relay_stream;
pub mod rendezvous_tls;
pub mod socket;
pub mod socket_buffers;
pub mod tls;
pub mod transport_config;
