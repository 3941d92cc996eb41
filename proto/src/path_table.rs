//! Virtual peer addresses and the paths beneath them (design brief, principle 3).
//!
//! quinn sees every peer at a stable *virtual address* in `240.0.0.0/4` (reserved, never routed),
//! port 1. The socket layer translates: an outgoing QUIC datagram to a virtual address goes out on
//! that address's current [`Path`]; an incoming datagram from a known path is shown to quinn as
//! coming from the virtual address. A path is a pair (local socket, remote address), so that later
//! work can add punched paths on extra sockets and relayed paths without changing this shape.
//!
//! A virtual address is created either for a peer we dial ([`PathTable::vaddr_for_peer`]) or for an
//! unknown source that starts a QUIC handshake ([`PathTable::vaddr_for_incoming`]); the latter is
//! bound to a peer once the handshake proves who it is. The table holds at most `capacity` virtual
//! addresses; [`PathTable::release`] frees one.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::PeerId;

/// Identifies one of the node's local UDP sockets. `0` is the main socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalSocketId(pub u16);

/// How a path reaches the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    Direct,
}

impl PathKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
        }
    }
}

/// One way of reaching a peer: from a local socket to a remote address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    pub local: LocalSocketId,
    pub remote: SocketAddr,
    pub kind: PathKind,
}

/// The table is full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path table full: {0} virtual addresses in use")]
pub struct PathTableFull(pub usize);

#[derive(Debug)]
struct VirtualPeer {
    peer: Option<PeerId>,
    path: Option<Path>,
}

const VIRTUAL_BASE: u32 = 0xF000_0000; // 240.0.0.0
const VIRTUAL_PORT: u16 = 1;

/// Converts an IPv4-mapped IPv6 address (as a dual-stack quinn endpoint reports it) to IPv4.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

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
    by_path: HashMap<(LocalSocketId, SocketAddr), SocketAddr>,
    by_peer: HashMap<PeerId, SocketAddr>,
}

impl PathTable {
    /// A table holding at most `capacity` virtual addresses.
    pub fn new(capacity: usize) -> Self {
        PathTable {
            capacity: capacity.min((1 << 28) - 1),
            next_index: 1,
            peers: HashMap::new(),
            by_path: HashMap::new(),
            by_peer: HashMap::new(),
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
                slot.insert(VirtualPeer { peer, path: None });
                if let Some(peer) = peer {
                    self.by_peer.insert(peer, vaddr);
                }
                return Ok(vaddr);
            }
        }
    }

    /// The virtual address we dial `peer` at, created if needed.
    pub fn vaddr_for_peer(&mut self, peer: PeerId) -> Result<SocketAddr, PathTableFull> {
        match self.by_peer.get(&peer) {
            Some(vaddr) => Ok(*vaddr),
            None => self.allocate(Some(peer)),
        }
    }

    /// The virtual address that datagrams from `remote` on `local` are shown under, if any.
    pub fn vaddr_for_path(&self, local: LocalSocketId, remote: SocketAddr) -> Option<SocketAddr> {
        self.by_path.get(&(local, normalize(remote))).copied()
    }

    /// A virtual address for an unknown source starting a handshake, with the path it came on.
    pub fn vaddr_for_incoming(
        &mut self,
        local: LocalSocketId,
        remote: SocketAddr,
    ) -> Result<SocketAddr, PathTableFull> {
        if let Some(vaddr) = self.vaddr_for_path(local, remote) {
            return Ok(vaddr);
        }
        let vaddr = self.allocate(None)?;
        self.set_path(
            vaddr,
            Path {
                local,
                remote,
                kind: PathKind::Direct,
            },
        );
        Ok(vaddr)
    }

    /// Makes `path` the current path of `vaddr`. A path belongs to one virtual address at a time.
    /// Returns false if `vaddr` is unknown.
    pub fn set_path(&mut self, vaddr: SocketAddr, mut path: Path) -> bool {
        let vaddr = normalize(vaddr);
        path.remote = normalize(path.remote);
        let Some(entry) = self.peers.get_mut(&vaddr) else {
            return false;
        };
        if let Some(old) = entry.path.replace(path) {
            self.by_path.remove(&(old.local, old.remote));
        }
        if let Some(previous_owner) = self.by_path.insert((path.local, path.remote), vaddr) {
            if previous_owner != vaddr {
                if let Some(other) = self.peers.get_mut(&previous_owner) {
                    other.path = None;
                }
            }
        }
        true
    }

    /// The virtual address to dial `peer` at over `path`, with the path set and the peer bound.
    ///
    /// If the peer is dialling us at the same moment, its handshake already has a virtual address
    /// on this path ([`PathTable::vaddr_for_incoming`]); that one is shared rather than a second
    /// allocated, because a path belongs to one virtual address and the two would otherwise take
    /// it from each other, leaving one handshake with no path.
    pub fn vaddr_for_dial(
        &mut self,
        peer: PeerId,
        path: Path,
    ) -> Result<SocketAddr, PathTableFull> {
        let vaddr = match self.vaddr_for_path(path.local, path.remote) {
            Some(existing) if self.peer(existing).is_none_or(|p| p == peer) => existing,
            _ => self.vaddr_for_peer(peer)?,
        };
        self.bind_peer(vaddr, peer);
        self.set_path(vaddr, path);
        Ok(vaddr)
    }

    /// Records that the handshake on `vaddr` proved it is `peer`.
    pub fn bind_peer(&mut self, vaddr: SocketAddr, peer: PeerId) {
        let vaddr = normalize(vaddr);
        if let Some(entry) = self.peers.get_mut(&vaddr) {
            entry.peer = Some(peer);
            self.by_peer.entry(peer).or_insert(vaddr);
        }
    }

    /// The current path of `vaddr`.
    pub fn path(&self, vaddr: SocketAddr) -> Option<Path> {
        self.peers
            .get(&normalize(vaddr))
            .and_then(|entry| entry.path)
    }

    /// The peer `vaddr` belongs to, once known.
    pub fn peer(&self, vaddr: SocketAddr) -> Option<PeerId> {
        self.peers
            .get(&normalize(vaddr))
            .and_then(|entry| entry.peer)
    }

    /// Forgets `vaddr` and its path.
    pub fn release(&mut self, vaddr: SocketAddr) {
        let vaddr = normalize(vaddr);
        if let Some(entry) = self.peers.remove(&vaddr) {
            if let Some(path) = entry.path {
                if self.by_path.get(&(path.local, path.remote)) == Some(&vaddr) {
                    self.by_path.remove(&(path.local, path.remote));
                }
            }
            if let Some(peer) = entry.peer {
                if self.by_peer.get(&peer) == Some(&vaddr) {
                    self.by_peer.remove(&peer);
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

    fn direct(remote: &str) -> Path {
        Path {
            local: LocalSocketId(0),
            remote: remote.parse().unwrap(),
            kind: PathKind::Direct,
        }
    }

    #[test]
    fn dialled_peer_keeps_its_vaddr_while_the_path_changes() {
        let mut table = PathTable::new(8);
        let peer = PeerId([1; 32]);
        let vaddr = table.vaddr_for_peer(peer).unwrap();
        assert!(is_virtual(vaddr));
        assert_eq!(table.vaddr_for_peer(peer).unwrap(), vaddr);
        assert!(table.set_path(vaddr, direct("192.0.2.1:1000")));
        let local = LocalSocketId(0);
        let first: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        assert_eq!(table.vaddr_for_path(local, first), Some(vaddr));
        table.set_path(vaddr, direct("198.51.100.1:2000"));
        assert_eq!(table.vaddr_for_path(local, first), None);
        assert_eq!(table.path(vaddr).unwrap().remote.port(), 2000);
        assert_eq!(table.peer(vaddr), Some(peer));
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
        assert_eq!(
            table.vaddr_for_incoming(LocalSocketId(0), "192.0.2.10:5".parse().unwrap()),
            Err(PathTableFull(1))
        );
        table.bind_peer(vaddr, PeerId([2; 32]));
        assert_eq!(table.vaddr_for_peer(PeerId([2; 32])), Ok(vaddr));
        table.release(vaddr);
        assert!(table.is_empty());
        assert_eq!(table.vaddr_for_path(LocalSocketId(0), remote), None);
    }

    #[test]
    fn simultaneous_dial_shares_the_handshake_vaddr() {
        // Their Initial arrives before our probe finished: it got an anonymous address.
        let mut table = PathTable::new(8);
        let peer = PeerId([7; 32]);
        let remote = "192.0.2.4:9".parse().unwrap();
        let incoming = table.vaddr_for_incoming(LocalSocketId(0), remote).unwrap();
        let dialled = table.vaddr_for_dial(peer, direct("192.0.2.4:9")).unwrap();
        assert_eq!(dialled, incoming, "one address, so neither loses the path");
        assert_eq!(table.path(incoming), Some(direct("192.0.2.4:9")));
        assert_eq!(table.peer(incoming), Some(peer));
        // A path owned by a different, proven peer is not shared.
        let other = table
            .vaddr_for_dial(PeerId([8; 32]), direct("192.0.2.4:9"))
            .unwrap();
        assert_ne!(other, incoming);
        assert_eq!(table.path(incoming), None);
    }

    #[test]
    fn a_path_moves_to_its_newest_owner() {
        let mut table = PathTable::new(8);
        let a = table.vaddr_for_peer(PeerId([1; 32])).unwrap();
        let b = table.vaddr_for_peer(PeerId([2; 32])).unwrap();
        table.set_path(a, direct("192.0.2.1:1"));
        table.set_path(b, direct("192.0.2.1:1"));
        assert_eq!(table.path(a), None);
        assert_eq!(
            table.vaddr_for_path(LocalSocketId(0), "192.0.2.1:1".parse().unwrap()),
            Some(b)
        );
        assert!(!is_virtual("10.0.0.1:1".parse().unwrap()));
    }
}
