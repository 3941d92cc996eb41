//! The agent's side of the virtual-address table: incoming handshakes joining a peer, releasing
//! addresses, the address to dial, and routing a peer's paths to its addresses.

use std::net::SocketAddr;
use std::time::Instant;

use super::agent::PathAgent;
use super::pairs::PairState;
use super::table::PathTableFull;
use super::{normalize, LocalSocketId, Path};
use crate::PeerId;

impl PathAgent {
    /// The virtual address a QUIC datagram from `remote` on `local` is shown under. An unknown
    /// source gets one only when it starts a handshake (`initial`), so stray packets cannot
    /// fill the table. A handshake from a pair being checked for a peer is shown under that
    /// peer's address (the pair becomes a route): a second, anonymous address would split the
    /// peer's packets between two addresses as soon as its path changes, and quinn drops a
    /// connection's packets that arrive under another address. If the peer has no path yet,
    /// that pair becomes its provisional path, so quinn's answer has somewhere to go (without
    /// it, quinn retries only after about a second).
    pub fn vaddr_for_source(
        &mut self,
        now: Instant,
        local: LocalSocketId,
        remote: SocketAddr,
        initial: bool,
    ) -> Result<Option<SocketAddr>, PathTableFull> {
        if let Some(vaddr) = self.table.vaddr_for_route(local, remote) {
            return Ok(Some(vaddr));
        }
        if !initial {
            return Ok(None);
        }
        let candidate = self.peers.iter().find_map(|(peer, state)| {
            state
                .pairs
                .iter()
                .find(|p| p.path.local == local && p.path.remote == remote)
                .map(|p| (*peer, p.path))
        });
        if let Some((peer, path)) = candidate {
            self.route_to_peer(peer, path, false);
            if self.peers.get(&peer).is_some_and(|s| s.selected.is_none()) {
                self.select(now, peer, path, None, true);
            }
            if let Some(vaddr) = self.table.vaddr_for_route(local, remote) {
                return Ok(Some(vaddr));
            }
        }
        self.table.vaddr_for_incoming(local, remote).map(Some)
    }

    /// An incoming handshake on `vaddr` proved it is `peer`: the address joins the peer's,
    /// and follows its selected path from now on.
    pub fn bind_incoming(&mut self, now: Instant, vaddr: SocketAddr, peer: PeerId) {
        let vaddr = normalize(vaddr);
        self.table.bind_peer(vaddr, peer);
        let own_path = self.table.selected(vaddr);
        let Ok(state) = self.peer_state(now, peer) else {
            return;
        };
        if !state.vaddrs.contains(&vaddr) {
            state.vaddrs.push(vaddr);
        }
        let selected = state.selected;
        match (selected, own_path) {
            (Some(path), _) => {
                self.table.select(vaddr, path);
            }
            (None, Some(path)) => {
                // The handshake's own path works (it carried the handshake): adopt it.
                let state = self.peers.get_mut(&peer).expect("created above");
                state.selected = Some(path);
                if let Some(pair) =
                    state.pair_or_insert(path.local, path.remote, self.config.max_pairs)
                {
                    pair.state = PairState::Succeeded;
                    pair.last_reply = Some(now);
                }
                for other in state.vaddrs.clone() {
                    self.table.select(other, path);
                }
            }
            (None, None) => {}
        }
    }

    /// Frees `vaddr` (its last connection closed). The peer's state goes with its last address;
    /// otherwise its other addresses take over the routes.
    pub fn release(&mut self, vaddr: SocketAddr) {
        let vaddr = normalize(vaddr);
        let peer = self.table.peer(vaddr);
        self.table.release(vaddr);
        let Some(peer) = peer else {
            return;
        };
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.vaddrs.retain(|v| *v != vaddr);
        if state.vaddrs.is_empty() {
            if let Some(state) = self.peers.remove(&peer) {
                self.close_sockets(state.sockets);
            }
        } else if let Some(path) = state.selected {
            self.route_to_peer(peer, path, true);
        }
    }

    /// The address to dial `peer` at: the one its selected path's route leads to (an incoming
    /// handshake from the peer may hold it: quinn then carries both connections there).
    pub fn dial_vaddr(&self, peer: &PeerId) -> Option<SocketAddr> {
        let state = self.peers.get(peer)?;
        let routed = state
            .selected
            .and_then(|path| self.table.vaddr_for_route(path.local, path.remote))
            .filter(|owner| state.vaddrs.contains(owner));
        routed.or_else(|| state.vaddrs.first().copied())
    }

    /// Routes `path` to `peer`'s addresses, and selects it for them if `select`. A route held by
    /// an anonymous address (a handshake from there, identity not yet proven) is adopted with
    /// it: the address joins the peer's and keeps the route, because that handshake comes from
    /// the peer (the check on this path authenticated it), and quinn must keep receiving it
    /// under the address it started on.
    pub(super) fn route_to_peer(&mut self, peer: PeerId, path: Path, select: bool) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let owner = self.table.vaddr_for_route(path.local, path.remote);
        if let Some(owner) = owner {
            if !state.vaddrs.contains(&owner) && self.table.peer(owner).is_none() {
                self.table.bind_peer(owner, peer);
                state.vaddrs.push(owner);
            }
        }
        // The current owner, if it is the peer's, goes last and so keeps the route.
        let mut order = state.vaddrs.clone();
        if let Some(index) = owner.and_then(|o| order.iter().position(|v| *v == o)) {
            let owner = order.remove(index);
            order.push(owner);
        }
        for vaddr in order {
            if select {
                self.table.select(vaddr, path);
            } else {
                self.table.add_route(vaddr, path);
            }
        }
    }
}
