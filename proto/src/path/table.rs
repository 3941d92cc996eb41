//! Virtual peer addresses and the paths beneath them (design brief, principle 3).
//!
//! quinn sees every peer at a stable *virtual address* in `240.0.0.0/4` (reserved, never routed),
//! port 1. The socket layer translates: an outgoing QUIC datagram to a virtual address goes out on
//! that address's *selected* [`Path`]; an incoming datagram is shown to quinn as coming from the
//! virtual address that owns its path as a *route*. A virtual address has at most one selected
//! path and up to [`MAX_ROUTES`] routes (the selected path is always one of them): while the
//! path agent moves a peer from one path to another, packets still in flight on the old path are
//! recognised, so a switch loses nothing.
//!
//! A route belongs to one virtual address at a time; given to another, it moves (newest owner
//! wins), and if it was the selected path of another *peer's* address, that address has none
//! until the agent picks one (two addresses of the same peer may both send on a path). The table holds at most `capacity` virtual addresses; [`PathTable::release`] frees one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{normalize, LocalSocketId, Path, PathKind};
use crate::PeerId;

/// Most routes (recognised incoming paths) per virtual address; the oldest non-selected route
/// is forgotten beyond it.
pub const MAX_ROUTES: usize = 8;

/// Most virtual addresses held by handshakes from unknown sources (no peer proven yet), at most a
/// quarter of the table. Beyond it the oldest such address is forgotten: a source that only
/// sends QUIC Initials (spoofed ones never complete) cannot crowd out peers, and a genuine
/// handshake completes long before 256 newer strangers push it out.
pub const MAX_ANONYMOUS: usize = 256;

/// The table is full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path table full: {0} virtual addresses in use")]
pub struct PathTableFull(pub usize);

#[derive(Debug)]
struct VirtualPeer {
    peer: Option<PeerId>,
    selected: Option<Path>,
    /// Oldest first.
    routes: Vec<Path>,
}

const VIRTUAL_BASE: u32 = 0xF000_0000; // 240.0.0.0
const VIRTUAL_PORT: u16 = 1;

/// Whether `addr` is in the virtual range (after [`normalize`]).
pub fn is_virtual(addr: SocketAddr) -> bool {
    match normalize(addr) {
        SocketAddr::V4(v4) => v4.ip().octets()[0] >= 240 && v4.port() == VIRTUAL_PORT,
        SocketAddr::V6(_) => false,
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct PathTable {
    capacity: usize,
    next_index: u32,
    peers: HashMap<SocketAddr, VirtualPeer>,
    by_route: HashMap<(LocalSocketId, SocketAddr), SocketAddr>,
    by_peer: HashMap<PeerId, SocketAddr>,
    /// Addresses given to unknown sources, oldest first (may hold released or since-bound ones).
    anonymous: std::collections::VecDeque<SocketAddr>,
}

impl PathTable {
    /// A table holding at most `capacity` virtual addresses.
    pub fn new(capacity: usize) -> Self {
        PathTable {
            capacity: capacity.min((1 << 28) - 1),
            next_index: 1,
            peers: HashMap::new(),
            by_route: HashMap::new(),
            by_peer: HashMap::new(),
            anonymous: std::collections::VecDeque::new(),
        }
    }

    fn allocate(&mut self, peer: Option<PeerId>) -> Result<SocketAddr, PathTableFull> {
        if self.peers.len() >= self.capacity {
            return Err(PathTableFull(self.peers.len()));
        }
        loop {
            let index = self.next_index;
            self.next_index = if index >= (1 << 28) - 1 { 1 } else { index + 1 };
            let vaddr = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(VIRTUAL_BASE + index)),
                VIRTUAL_PORT,
            );
            if let std::collections::hash_map::Entry::Vacant(slot) = self.peers.entry(vaddr) {
                slot.insert(VirtualPeer {
                    peer,
                    selected: None,
                    routes: Vec::new(),
                });
                if let Some(peer) = peer {
                    self.by_peer.insert(peer, vaddr);
                }
                return Ok(vaddr);
            }
        }
    }

    /// The virtual address of `peer`, created if needed.
    pub fn vaddr_for_peer(&mut self, peer: PeerId) -> Result<SocketAddr, PathTableFull> {
        match self.by_peer.get(&peer) {
            Some(vaddr) => Ok(*vaddr),
            None => self.allocate(Some(peer)),
        }
    }

    /// The virtual address that datagrams from `remote` on `local` are shown under, if any.
    pub fn vaddr_for_route(&self, local: LocalSocketId, remote: SocketAddr) -> Option<SocketAddr> {
        self.by_route.get(&(local, normalize(remote))).copied()
    }

    /// A virtual address for an unknown source starting a handshake, with its path selected.
    pub fn vaddr_for_incoming(
        &mut self,
        local: LocalSocketId,
        remote: SocketAddr,
    ) -> Result<SocketAddr, PathTableFull> {
        if let Some(vaddr) = self.vaddr_for_route(local, remote) {
            return Ok(vaddr);
        }
        let limit = MAX_ANONYMOUS.min(self.capacity / 4).max(1);
        if self.anonymous.len() >= limit {
            let peers = &self.peers;
            self.anonymous
                .retain(|v| peers.get(v).is_some_and(|entry| entry.peer.is_none()));
            while self.anonymous.len() >= limit {
                let oldest = self.anonymous.pop_front().expect("non-empty");
                self.release(oldest);
            }
        }
        let vaddr = self.allocate(None)?;
        self.anonymous.push_back(vaddr);
        self.select(
            vaddr,
            Path {
                local,
                remote,
                kind: PathKind::Direct,
            },
        );
        Ok(vaddr)
    }

    /// Lets datagrams on `path` be shown as coming from `vaddr`. False if `vaddr` is unknown.
    pub fn add_route(&mut self, vaddr: SocketAddr, mut path: Path) -> bool {
        let vaddr = normalize(vaddr);
        path.remote = normalize(path.remote);
        if !self.peers.contains_key(&vaddr) {
            return false;
        }
        let key = (path.local, path.remote);
        let owner = self.peers.get(&vaddr).and_then(|e| e.peer);
        if let Some(previous) = self.by_route.insert(key, vaddr) {
            if previous != vaddr {
                if let Some(other) = self.peers.get_mut(&previous) {
                    other.routes.retain(|p| (p.local, p.remote) != key);
                    // Another peer's address must stop sending there; an address of the same
                    // peer may keep sending on it (only receiving needs one owner).
                    let same_peer = owner.is_some() && other.peer == owner;
                    if !same_peer && other.selected.is_some_and(|p| (p.local, p.remote) == key) {
                        other.selected = None;
                    }
                }
            }
        }
        let entry = self.peers.get_mut(&vaddr).expect("checked above");
        entry.routes.retain(|p| (p.local, p.remote) != key);
        entry.routes.push(path);
        if entry.routes.len() > MAX_ROUTES {
            let selected = entry.selected;
            if let Some(oldest) = entry.routes.iter().position(|p| Some(*p) != selected) {
                let gone = entry.routes.remove(oldest);
                self.by_route.remove(&(gone.local, gone.remote));
            }
        }
        true
    }

    /// Makes `path` the selected path of `vaddr` (and one of its routes). False if unknown.
    pub fn select(&mut self, vaddr: SocketAddr, mut path: Path) -> bool {
        path.remote = normalize(path.remote);
        if !self.add_route(vaddr, path) {
            return false;
        }
        if let Some(entry) = self.peers.get_mut(&normalize(vaddr)) {
            entry.selected = Some(path);
        }
        true
    }

    /// Records that the handshake on `vaddr` proved it is `peer`.
    pub fn bind_peer(&mut self, vaddr: SocketAddr, peer: PeerId) {
        let vaddr = normalize(vaddr);
        if let Some(entry) = self.peers.get_mut(&vaddr) {
            entry.peer = Some(peer);
            self.by_peer.entry(peer).or_insert(vaddr);
        }
    }

    /// The selected path of `vaddr`.
    pub fn selected(&self, vaddr: SocketAddr) -> Option<Path> {
        self.peers
            .get(&normalize(vaddr))
            .and_then(|entry| entry.selected)
    }

    /// The peer `vaddr` belongs to, once known.
    pub fn peer(&self, vaddr: SocketAddr) -> Option<PeerId> {
        self.peers
            .get(&normalize(vaddr))
            .and_then(|entry| entry.peer)
    }

    /// The primary virtual address of `peer`, if it has one.
    pub fn vaddr_of(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.by_peer.get(peer).copied()
    }

    /// Forgets `vaddr`, its paths and routes.
    pub fn release(&mut self, vaddr: SocketAddr) {
        let vaddr = normalize(vaddr);
        if let Some(entry) = self.peers.remove(&vaddr) {
            for route in entry.routes {
                if self.by_route.get(&(route.local, route.remote)) == Some(&vaddr) {
                    self.by_route.remove(&(route.local, route.remote));
                }
            }
            if let Some(peer) = entry.peer {
                if self.by_peer.get(&peer) == Some(&vaddr) {
                    self.by_peer.remove(&peer);
                    // Another address of the same peer (a second connection) becomes primary.
                    if let Some((other, _)) = self.peers.iter().find(|(_, e)| e.peer == Some(peer))
                    {
                        self.by_peer.insert(peer, *other);
                    }
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_from_many_unknown_sources_cannot_crowd_out_peers() {
        let mut table = PathTable::new(4096);
        // Spoofed Initials from 5,000 sources, none of which ever completes a handshake.
        for i in 0..5000u32 {
            let remote = SocketAddr::from(([198, 51, (i >> 8) as u8, i as u8], 4000));
            table
                .vaddr_for_incoming(LocalSocketId(0), remote)
                .expect("an unknown source always gets an address");
        }
        assert!(
            table.len() <= MAX_ANONYMOUS,
            "{} addresses held",
            table.len()
        );
        // Peers still get addresses: the node can dial, and real handshakes are accepted.
        for i in 0..1000u16 {
            let mut key = [0u8; 32];
            key[..2].copy_from_slice(&i.to_be_bytes());
            key[2] = 1;
            table.vaddr_for_peer(PeerId(key)).expect("room for peers");
        }
        let genuine = table
            .vaddr_for_incoming(LocalSocketId(0), "203.0.113.7:5000".parse().unwrap())
            .unwrap();
        table.bind_peer(genuine, PeerId([9; 32]));
        // A proven peer is never pushed out by later strangers.
        for i in 0..1000u32 {
            let remote = SocketAddr::from(([192, 0, 2, (i % 250) as u8], 6000 + i as u16));
            table.vaddr_for_incoming(LocalSocketId(0), remote).unwrap();
        }
        assert_eq!(table.peer(genuine), Some(PeerId([9; 32])));
    }

    fn direct(remote: &str) -> Path {
        Path {
            local: LocalSocketId(0),
            remote: remote.parse().unwrap(),
            kind: PathKind::Direct,
        }
    }

    #[test]
    fn vaddr_stays_while_the_selected_path_changes_and_old_routes_still_arrive() {
        let mut table = PathTable::new(8);
        let peer = PeerId([1; 32]);
        let vaddr = table.vaddr_for_peer(peer).unwrap();
        assert!(is_virtual(vaddr));
        assert_eq!(table.vaddr_for_peer(peer).unwrap(), vaddr);
        assert!(table.select(vaddr, direct("192.0.2.1:1000")));
        let local = LocalSocketId(0);
        let first: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        table.select(vaddr, direct("198.51.100.1:2000"));
        assert_eq!(table.selected(vaddr).unwrap().remote.port(), 2000);
        assert_eq!(
            table.vaddr_for_route(local, first),
            Some(vaddr),
            "packets still in flight on the old path are recognised"
        );
        assert_eq!(table.peer(vaddr), Some(peer));
    }

    #[test]
    fn routes_are_bounded_and_the_selected_one_is_kept() {
        let mut table = PathTable::new(8);
        let vaddr = table.vaddr_for_peer(PeerId([1; 32])).unwrap();
        table.select(vaddr, direct("192.0.2.1:1"));
        for port in 2..20 {
            table.add_route(vaddr, direct(&format!("192.0.2.1:{port}")));
        }
        let local = LocalSocketId(0);
        assert_eq!(table.by_route.len(), MAX_ROUTES);
        assert_eq!(
            table.vaddr_for_route(local, "192.0.2.1:1".parse().unwrap()),
            Some(vaddr)
        );
        assert_eq!(
            table.vaddr_for_route(local, "192.0.2.1:2".parse().unwrap()),
            None
        );
        assert_eq!(
            table.vaddr_for_route(local, "192.0.2.1:19".parse().unwrap()),
            Some(vaddr)
        );
    }

    #[test]
    fn incoming_source_gets_vaddr_then_bound_and_released() {
        let mut table = PathTable::new(1);
        let remote: SocketAddr = "[::ffff:192.0.2.9]:5".parse().unwrap();
        let vaddr = table.vaddr_for_incoming(LocalSocketId(0), remote).unwrap();
        assert_eq!(
            table.vaddr_for_incoming(LocalSocketId(0), normalize(remote)),
            Ok(vaddr)
        );
        table.bind_peer(vaddr, PeerId([2; 32]));
        // Full of proven peers: a new stranger gets nothing (an unproven one would be replaced).
        assert_eq!(
            table.vaddr_for_incoming(LocalSocketId(0), "192.0.2.10:5".parse().unwrap()),
            Err(PathTableFull(1))
        );
        assert_eq!(table.vaddr_for_peer(PeerId([2; 32])), Ok(vaddr));
        table.release(vaddr);
        assert!(table.is_empty());
        assert_eq!(table.vaddr_for_route(LocalSocketId(0), remote), None);
    }

    #[test]
    fn addresses_of_one_peer_share_a_path_and_one_of_them_receives() {
        let mut table = PathTable::new(8);
        let peer = PeerId([1; 32]);
        let dialled = table.vaddr_for_peer(peer).unwrap();
        let incoming = table
            .vaddr_for_incoming(LocalSocketId(0), "192.0.2.1:1".parse().unwrap())
            .unwrap();
        table.bind_peer(incoming, peer);
        table.select(dialled, direct("192.0.2.1:1"));
        table.select(incoming, direct("192.0.2.1:1"));
        assert_eq!(table.selected(dialled), Some(direct("192.0.2.1:1")));
        assert_eq!(table.selected(incoming), Some(direct("192.0.2.1:1")));
        assert_eq!(
            table.vaddr_for_route(LocalSocketId(0), "192.0.2.1:1".parse().unwrap()),
            Some(incoming)
        );
    }

    #[test]
    fn a_route_moves_to_its_newest_owner() {
        let mut table = PathTable::new(8);
        let a = table.vaddr_for_peer(PeerId([1; 32])).unwrap();
        let b = table.vaddr_for_peer(PeerId([2; 32])).unwrap();
        table.select(a, direct("192.0.2.1:1"));
        table.select(b, direct("192.0.2.1:1"));
        assert_eq!(table.selected(a), None);
        assert_eq!(
            table.vaddr_for_route(LocalSocketId(0), "192.0.2.1:1".parse().unwrap()),
            Some(b)
        );
        assert!(!is_virtual("10.0.0.1:1".parse().unwrap()));
    }
}
