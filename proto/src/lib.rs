//! Sans-IO protocol logic of p2pnat.
//!
//! Nothing in this crate opens a socket, reads a clock or draws randomness: time (`now`) and random
//! values are passed in by the caller, and outputs are returned as values (datagrams to send,
//! events, deadlines). The tokio layer in the `p2pnat` crate only moves bytes and time.
//!
//! Modules:
//! - [`peer_id`]: the peer identity (an ed25519 public key) and its text form;
//! - [`demux`]: the pure function that splits datagrams on the node's one UDP socket;
//! - [`nat`]: NAT mapping-behaviour detection with STUN;
//! - [`netcheck`]: what `p2p-node netcheck`'s observations mean (filtering, hairpinning,
//!   port-mapping answers);
//! - [`stun`]: STUN Binding request/response codec (RFC 8489);
//! - [`control`]: the versioned node <-> rendezvous control messages;
//! - [`control_stream`]: their framing over one TLS stream (the rendezvous's TLS port);
//! - [`rv`]: the control protocol over project datagrams (what nodes use over UDP);
//! - [`registry`]: the rendezvous peer registry state machine (TTL, limits, rate limiting);
//! - [`rate_limit`]: bounded token buckets per key;
//! - [`path`]: the path agent (authenticated checks, path selection, heartbeats) and the
//!   virtual-address table beneath quinn;
//! - [`sim`]: a deterministic virtual-time network simulator with NAT models, for tests;
//! - [`turn`]: TURN (RFC 8656) relay client and server machines, ChannelData framing and
//!   REST-API credentials;
//! - [`app`]: the stdin/stdout application interface codec (frames, command lines, events).

pub mod app;
pub mod control;
pub mod control_stream;
pub mod demux;
pub mod nat;
pub mod netcheck;
pub mod path;
pub mod peer_id;
pub mod rate_limit;
pub mod registry;
pub mod rv;
pub mod sim;
pub mod stun;
pub mod turn;

pub use peer_id::{PeerId, PeerIdError};
