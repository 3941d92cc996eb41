//! The node <-> rendezvous control protocol over project datagrams (docs/PROTOCOL.md section
//! 4.1): what nodes use over UDP, on their one socket, instead of a QUIC connection each.
//!
//! - [`wire`]: the datagram codec (framing, tags, signatures' coverage);
//! - [`client`]: the node's machine (cookie, signed registration, requests under a session,
//!   retransmission, push acks);
//! - [`server`]: the rendezvous's machine (stateless cookies, signature and tag checks,
//!   sessions with anti-replay windows, pushes resent until acknowledged);
//! - [`verify`]: Register signature checks, one at a time or many at once.
//!
//! Both are sans-IO: time and random seeds come in, datagrams and events go out.

pub mod client;
pub mod server;
pub mod verify;
pub mod wire;

#[cfg(test)]
mod tests;
