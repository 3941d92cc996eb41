//! TURN (RFC 8656) over UDP, TCP and TLS: the relay a node falls back to when no direct path works.
//!
//! - [`channel_data`]: the 4-byte ChannelData framing (stun-rs encodes the STUN methods and
//!   attributes, not this);
//! - [`credentials`]: the REST-API username/password scheme coturn calls `use-auth-secret`;
//! - [`client`]: the sans-IO TURN client (allocation, refreshes, permissions, channels);
//! - [`server`]: the sans-IO TURN server behind the rendezvous's built-in relay;
//! - [`stream`]: cutting a TCP/TLS byte stream into STUN and ChannelData messages.
//!
//! The client and server state machines live beside these and are sans-IO like the rest of the
//! crate: time and randomness are passed in, datagrams and deadlines come out.

pub mod channel_data;
pub mod client;
pub mod credentials;
pub mod server;
pub mod stream;
