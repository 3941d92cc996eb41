//! The data path of [`TurnServer`]: ChannelData and Send indications toward peers, datagrams
//! from peers toward clients. Each direction has a queued form (the result goes through
//! [`TurnServer::poll_output`]) and a direct form for the driver's hot path, which borrows the
//! input or writes into the caller's buffer instead of allocating: the same checks, the same
//! counters, the same bytes.

use std::net::SocketAddr;
use std::time::Instant;

use super::allocation::Allocation;
use super::{wire, AllocationId, Client, DropReason, PeerPolicy, TurnServer, TurnStats, Via};
use crate::path::normalize;

/// What a client's ChannelData asks relayed: `data` (a slice of the ChannelData message) from
/// the relay socket bound to `relayed` to `peer`. Never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToPeer<'a> {
    pub relayed: SocketAddr,
    pub peer: SocketAddr,
    pub data: &'a [u8],
}

/// Whether `message` from a client is ChannelData (channels 0x4000-0x7FFF, see
/// `wire::LEGACY_CHANNEL_MAX`) rather than STUN.
fn is_channel_data(message: &[u8]) -> bool {
    message
        .first()
        .is_some_and(|byte| (0x40..=0x7F).contains(byte))
}

impl TurnServer {
    /// [`Self::handle_client_message`] for the driver's hot path: ChannelData is not queued but
    /// returned (`Ok(Some)`: send `data` from that relay socket to `peer`); everything else is
    /// handled exactly as by `handle_client_message` (`Ok(None)`; drain the outputs).
    pub fn handle_client_message_direct<'a>(
        &mut self,
        now: Instant,
        unix_now: u64,
        from: Client,
        message: &'a [u8],
        policy: &dyn PeerPolicy,
    ) -> Result<Option<ToPeer<'a>>, DropReason> {
        if !is_channel_data(message) {
            return self
                .handle_client_message(now, unix_now, from, message, policy)
                .map(|()| None);
        }
        match self.channel_data_target(now, from, message) {
            // Empty ChannelData is counted as relayed, and nothing is sent (as when queued).
            Ok(to) => Ok(Some(to).filter(|to| !to.data.is_empty())),
            Err(reason) => {
                self.count_drop(reason);
                Err(reason)
            }
        }
    }

    /// [`Self::handle_relay_datagram`] for the driver's hot path: the message for the client
    /// (ChannelData, padded for a stream client, or a Data indication) replaces `out`'s
    /// contents instead of being queued (`out` is left empty when the datagram is refused);
    /// returns the client to send it to.
    pub fn handle_relay_datagram_into(
        &mut self,
        now: Instant,
        relayed: SocketAddr,
        from_peer: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Client, DropReason> {
        out.clear();
        let result = self.relay_to_client_into(now, relayed, from_peer, datagram, out);
        if let Err(reason) = result {
            out.clear();
            self.count_drop(reason);
        }
        result
    }

    pub(super) fn client_channel_data(
        &mut self,
        now: Instant,
        from: Client,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let to = self.channel_data_target(now, from, datagram)?;
        self.transmit(Via::Relay(to.relayed), to.peer, to.data.to_vec());
        Ok(())
    }

    fn channel_data_target<'a>(
        &mut self,
        now: Instant,
        from: Client,
        datagram: &'a [u8],
    ) -> Result<ToPeer<'a>, DropReason> {
        let (channel, data) = wire::decode_channel_data(datagram).ok_or(DropReason::Malformed)?;
        // One look-up of each table on this path (it runs for every relayed datagram).
        let id = *self.by_client.get(&from).ok_or(DropReason::NoAllocation)?;
        let allocation = self.allocations.get_mut(&id).expect("indexed allocation");
        let relayed = allocation.relayed().ok_or(DropReason::NoAllocation)?;
        let peer = allocation
            .channel_peer(now, channel)
            .ok_or(DropReason::NoChannel)?;
        admit_to_peer(allocation, &mut self.stats, now, peer, data.len())?;
        Ok(ToPeer {
            relayed,
            peer,
            data,
        })
    }

    pub(super) fn relay_to_peer(
        &mut self,
        now: Instant,
        id: AllocationId,
        relayed: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), DropReason> {
        let allocation = self.allocations.get_mut(&id).expect("indexed allocation");
        admit_to_peer(allocation, &mut self.stats, now, peer, data.len())?;
        self.transmit(Via::Relay(relayed), peer, data.to_vec());
        Ok(())
    }

    pub(super) fn relay_to_client(
        &mut self,
        now: Instant,
        relayed: SocketAddr,
        from_peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), DropReason> {
        let mut contents = Vec::new();
        let client = self.relay_to_client_into(now, relayed, from_peer, data, &mut contents)?;
        self.transmit_to_client(client, contents);
        Ok(())
    }

    /// Appends the message for the client to `out` (left as it was when refused).
    fn relay_to_client_into(
        &mut self,
        now: Instant,
        relayed: SocketAddr,
        from_peer: SocketAddr,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Client, DropReason> {
        let from_peer = normalize(from_peer);
        let id = *self
            .by_relay
            .get(&relayed)
            .ok_or(DropReason::NoAllocation)?;
        let allocation = self.allocations.get_mut(&id).expect("indexed allocation");
        if !allocation.has_permission(now, from_peer.ip()) {
            return Err(DropReason::NoPermission);
        }
        if data.len() > usize::from(u16::MAX) {
            return Err(DropReason::Malformed);
        }
        if !allocation.bucket.take(now, data.len()) {
            return Err(DropReason::RateLimited);
        }
        let client = allocation.client;
        match allocation.peer_channel(now, from_peer) {
            Some(channel) => {
                let start = out.len();
                wire::write_channel_data(channel, data, out);
                // Over TCP and TLS, ChannelData is padded to a multiple of 4 (RFC 8656 12.5).
                if client.transport.is_stream() {
                    let padded = start + (out.len() - start).next_multiple_of(4);
                    out.resize(padded, 0);
                }
            }
            None => {
                let transaction = self.next_indication_id();
                let indication = wire::data_indication(transaction, from_peer, data)
                    .ok_or(DropReason::Malformed)?;
                out.extend_from_slice(&indication);
            }
        }
        self.stats.relayed_to_clients += 1;
        self.stats.bytes_to_clients += data.len() as u64;
        Ok(client)
    }
}

/// Permission, byte budget and counters of `len` bytes toward `peer`.
fn admit_to_peer(
    allocation: &mut Allocation,
    stats: &mut TurnStats,
    now: Instant,
    peer: SocketAddr,
    len: usize,
) -> Result<(), DropReason> {
    if peer.port() == 0 || !allocation.has_permission(now, peer.ip()) {
        return Err(DropReason::NoPermission);
    }
    if !allocation.bucket.take(now, len) {
        return Err(DropReason::RateLimited);
    }
    stats.relayed_to_peers += 1;
    stats.bytes_to_peers += len as u64;
    Ok(())
}
