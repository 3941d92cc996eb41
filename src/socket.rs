//! The node's one UDP socket, shared by QUIC (through quinn's `AsyncUdpSocket` seam), STUN and
//! project datagrams.
//!
//! Received datagrams are split by [`p2pnat_proto::demux::classify`]: QUIC goes up to quinn; STUN
//! and project datagrams go to a bounded side channel ([`SIDE_CHANNEL_CAPACITY`]; when it is full
//! the datagram is dropped and counted, as UDP may be); anything else is logged and dropped.
//!
//! A node may also hold *extra* local sockets ([`NodeSocket::open_extra`]; the birthday method
//! needs up to 256 for a few seconds, and keeps the one its path won on). quinn sees them as
//! part of this one socket: `poll_recv` reads the main socket first, then each extra one, and
//! `try_send` sends on the socket of the path. Datagrams keep the [`LocalSocketId`] they arrived
//! on all the way to the path agent.
//!
//! With a path agent (nodes), quinn never sees a peer's real address: datagrams on a
//! route of a peer are shown as coming from the peer's virtual address, and datagrams quinn sends
//! to a virtual address go out on the path the path agent selected (`p2pnat_proto::path`). Real
//! addresses registered with [`NodeSocket::add_passthrough`] (the rendezvous) are used as they
//! are. An unknown source gets a virtual address only when it sends a QUIC Initial packet, so
//! stray packets cannot fill the table; any other QUIC packet from an unknown source is dropped
//! and counted (quinn would otherwise see a real address: a NAT rebinding is the path agent's to
//! handle, not quinn's). Without one (the rendezvous) no translation happens.
//!
//! Datagrams from the node's TURN server go to the relay link first ([`crate::relay`]); the
//! QUIC it unwraps reaches quinn from a queue, on local socket [`LocalSocketId::RELAY`], and
//! datagrams for that local socket leave wrapped for the relay. When the relay is reached over
//! TLS ([`crate::relay_stream`]) they leave on its connection instead, and what it unwraps from
//! there arrives the same way (its task wakes quinn's receive for relayed QUIC).

use std::collections::HashSet;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use p2pnat_proto::demux::{classify, DatagramKind};
use p2pnat_proto::path::{normalize, LocalSocketId, PathAgent};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;

use crate::relay::RelayLink;

pub use crate::transport_config::{
    flow_window, set_flow_window, transport_config, CongestionControl, DEFAULT_FLOW_WINDOW,
    FLOW_WINDOW_RANGE,
};

/// Capacity of the side channel carrying STUN and project datagrams to their handler.
pub const SIDE_CHANNEL_CAPACITY: usize = 1024;

/// A STUN or project datagram received on the socket.
#[derive(Debug)]
pub struct SideDatagram {
    pub kind: DatagramKind,
    /// The local socket it arrived on (0: the main one).
    pub local: LocalSocketId,
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
}

/// A rendezvous control datagram (`p2pnat_proto::rv::wire::is_control`) received on the
/// main socket, for the node's control session.
#[derive(Debug)]
pub struct ControlDatagram {
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Most extra local sockets open at once.
pub const MAX_EXTRA_SOCKETS: usize = 256;

/// Counters of dropped input, for logs and tests.
#[derive(Debug, Default)]
pub struct SocketCounters {
    pub garbage: AtomicU64,
    pub side_channel_full: AtomicU64,
    pub no_path: AtomicU64,
    /// QUIC packets from a source that is no peer's route (not a handshake start).
    pub unknown_source: AtomicU64,
}

/// A datagram's socket and address, looked up by [`NodeSocket::resolve`].
pub struct ResolvedSend {
    socket: Option<Arc<dyn AsyncUdpSocket>>,
    destination: SocketAddr,
}

impl ResolvedSend {
    /// Sends `contents` at once; a full socket buffer drops it (as the network might).
    pub fn send(&self, contents: &[u8]) -> io::Result<()> {
        let Some(socket) = &self.socket else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "socket closed"));
        };
        send_now(socket.as_ref(), self.destination, contents)
    }
}

/// One datagram outside QUIC on `socket`, to an address already in the socket's family; a full
/// socket buffer drops it (callers retransmit, as over a lossy network).
fn send_now(
    socket: &dyn AsyncUdpSocket,
    destination: SocketAddr,
    contents: &[u8],
) -> io::Result<()> {
    let transmit = Transmit {
        destination,
        ecn: None,
        contents,
        segment_size: None,
        src_ip: None,
    };
    match socket.try_send(&transmit) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        other => other,
    }
}

/// See the module documentation.
pub struct NodeSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Extra sockets, in the order opened.
    extras: RwLock<Vec<(LocalSocketId, Arc<dyn AsyncUdpSocket>)>>,
    has_extras: AtomicBool,
    next_extra: AtomicU16,
    /// The waker of quinn's endpoint driver, from its last `poll_recv` that found nothing: a
    /// newly opened extra socket has never been polled, so nothing would wake the driver for
    /// its first datagram; opening one wakes this.
    recv_waker: Mutex<Option<std::task::Waker>>,
    /// With an agent, quinn sees virtual peer addresses (nodes); without, real ones (the
    /// rendezvous).
    paths: Option<Arc<Mutex<PathAgent>>>,
    passthrough: Mutex<HashSet<SocketAddr>>,
    side: mpsc::Sender<SideDatagram>,
    /// Where rendezvous control datagrams go (the node's control session), if anywhere;
    /// without one they go to the side channel like other project datagrams.
    control: Mutex<Option<mpsc::Sender<ControlDatagram>>>,
    relay: Arc<RelayLink>,
    pub counters: SocketCounters,
}

impl fmt::Debug for NodeSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSocket")
            .field("virtual_addresses", &self.paths.is_some())
            .finish_non_exhaustive()
    }
}

fn is_quic_initial(first_byte: u8) -> bool {
    // Long header (0x80), fixed bit (0x40), packet type Initial (0b00 in 0x30).
    first_byte & 0xF0 == 0xC0
}

impl NodeSocket {
    /// Wraps a bound std socket. Returns the socket and the receiver of STUN/project datagrams.
    /// With a path agent the socket translates virtual addresses; without one it does not.
    pub fn new(
        socket: std::net::UdpSocket,
        paths: Option<Arc<Mutex<PathAgent>>>,
    ) -> io::Result<(Arc<Self>, mpsc::Receiver<SideDatagram>)> {
        let inner = quinn::default_runtime()
            .ok_or_else(|| io::Error::other("no async runtime"))?
            .wrap_udp_socket(socket)?;
        let (side, side_rx) = mpsc::channel(SIDE_CHANNEL_CAPACITY);
        let socket = NodeSocket {
            inner,
            extras: RwLock::new(Vec::new()),
            has_extras: AtomicBool::new(false),
            next_extra: AtomicU16::new(1),
            recv_waker: Mutex::new(None),
            paths,
            passthrough: Mutex::new(HashSet::new()),
            side,
            control: Mutex::new(None),
            relay: Arc::new(RelayLink::default()),
            counters: SocketCounters::default(),
        };
        Ok((Arc::new(socket), side_rx))
    }

    /// Routes rendezvous control datagrams to `route` (a new control session).
    pub fn set_control_route(&self, route: Option<mpsc::Sender<ControlDatagram>>) {
        *self.control.lock().expect("control route lock") = route;
    }

    /// Stops routing control datagrams to `route`, if it is still the one in place.
    pub fn clear_control_route(&self, route: &mpsc::Sender<ControlDatagram>) {
        let mut control = self.control.lock().expect("control route lock");
        if control.as_ref().is_some_and(|c| c.same_channel(route)) {
            *control = None;
        }
    }

    /// Hands a control datagram to the control session; false when there is none.
    fn route_control(&self, from: SocketAddr, bytes: &[u8]) -> bool {
        let control = self.control.lock().expect("control route lock");
        let Some(route) = control.as_ref() else {
            return false;
        };
        let datagram = ControlDatagram {
            from,
            bytes: bytes.to_vec(),
        };
        if route.try_send(datagram).is_err() {
            self.counters
                .side_channel_full
                .fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The relay link (the node's TURN allocation, once it has one).
    pub fn relay(&self) -> &Arc<RelayLink> {
        &self.relay
    }

    /// Lets quinn talk to `addr` by its real address (used for the rendezvous).
    pub fn add_passthrough(&self, addr: SocketAddr) {
        self.passthrough
            .lock()
            .expect("passthrough lock")
            .insert(normalize(addr));
    }

    /// Sends one datagram outside QUIC (STUN, probes) on the main socket. Best effort: if the
    /// socket is not writable right now the datagram is dropped, as the network might; callers
    /// retransmit.
    pub fn send_raw(&self, destination: SocketAddr, contents: &[u8]) -> io::Result<()> {
        self.send_raw_on(LocalSocketId(0), destination, contents)
    }

    /// As [`NodeSocket::send_raw`], on local socket `local` (a closed one drops the datagram).
    pub fn send_raw_on(
        &self,
        local: LocalSocketId,
        destination: SocketAddr,
        contents: &[u8],
    ) -> io::Result<()> {
        let destination = self.outgoing_address(normalize(destination));
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        };
        match self.send_on(local, &transmit) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    fn send_on(&self, local: LocalSocketId, transmit: &Transmit) -> io::Result<()> {
        if local == LocalSocketId::MAIN {
            return self.send_main(transmit);
        }
        if local == LocalSocketId::RELAY {
            return self.send_relayed(transmit);
        }
        match self.extra_socket(local) {
            // quinn's poller watches the main socket only: a full extra socket drops the
            // datagram as the network might, and QUIC retransmits.
            Some(socket) => match socket.try_send(transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                other => other,
            },
            None => {
                self.counters.no_path.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Sends on the main socket, cut into sends the kernel accepts
    /// ([`crate::datagram_size::split_for_gso`]). A full socket buffer after the first part
    /// drops the rest, as the network might (QUIC retransmits); before it, quinn retries.
    fn send_main(&self, transmit: &Transmit) -> io::Result<()> {
        if transmit.contents.len() <= crate::datagram_size::MAX_GSO_BYTES {
            return self.inner.try_send(transmit);
        }
        for (i, part) in crate::datagram_size::split_for_gso(transmit).enumerate() {
            match self.inner.try_send(&part) {
                Err(e) if i > 0 && e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                other => other?,
            }
        }
        Ok(())
    }

    /// Extra socket `id`, if open.
    fn extra_socket(&self, id: LocalSocketId) -> Option<Arc<dyn AsyncUdpSocket>> {
        self.extras
            .read()
            .expect("extra sockets lock")
            .iter()
            .find(|(open, _)| *open == id)
            .map(|(_, socket)| socket.clone())
    }

    /// Sends each datagram of `transmit` through the relay (wrapped for the TURN server, on
    /// the main socket). Datagrams the relay cannot take are dropped, as on a dead link.
    fn send_relayed(&self, transmit: &Transmit) -> io::Result<()> {
        let peer = normalize(transmit.destination);
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        if self.relay.on_stream() {
            // TURN over TLS: each datagram is queued for the relay's connection, never waited on.
            self.relay.send_on_stream(peer, transmit.contents, size);
            return Ok(());
        }
        let mut wrapped = Vec::with_capacity(transmit.contents.len() + 64);
        if transmit.contents.len() > size {
            // Several datagrams on a bound channel: one segmented send, as on a direct path.
            if let Some((server, stride)) =
                self.relay
                    .wrap_segments(peer, transmit.contents, size, &mut wrapped)
            {
                let outer = Transmit {
                    destination: self.outgoing_address(server),
                    ecn: transmit.ecn,
                    contents: &wrapped,
                    segment_size: Some(stride),
                    src_ip: None,
                };
                return match self.inner.try_send(&outer) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                    other => other,
                };
            }
        }
        for segment in transmit.contents.chunks(size) {
            let Some(server) = self.relay.wrap(peer, segment, &mut wrapped) else {
                continue;
            };
            let outer = Transmit {
                destination: self.outgoing_address(server),
                ecn: transmit.ecn,
                contents: &wrapped,
                segment_size: None,
                src_ip: None,
            };
            match self.inner.try_send(&outer) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Opens up to `count` extra sockets on the main socket's IP (ports chosen by the OS), at
    /// most [`MAX_EXTRA_SOCKETS`] at once. Returns the ones opened.
    pub fn open_extra(&self, count: usize) -> Vec<LocalSocketId> {
        let runtime = match quinn::default_runtime() {
            Some(runtime) => runtime,
            None => return Vec::new(),
        };
        let ip = match self.inner.local_addr() {
            Ok(addr) => addr.ip(),
            Err(_) => return Vec::new(),
        };
        let mut extras = self.extras.write().expect("extra sockets lock");
        let mut opened = Vec::new();
        while opened.len() < count && extras.len() < MAX_EXTRA_SOCKETS {
            let bound = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))
                .and_then(|socket| runtime.wrap_udp_socket(socket));
            let socket = match bound {
                Ok(socket) => socket,
                Err(e) => {
                    tracing::warn!("could not open an extra socket: {e}");
                    break;
                }
            };
            // Ids wrap around but skip the main socket's, the relay's and ids still open.
            let id = loop {
                let id = LocalSocketId(self.next_extra.fetch_add(1, Ordering::Relaxed));
                if id != LocalSocketId::MAIN
                    && id != LocalSocketId::RELAY
                    && !extras.iter().any(|(open, _)| *open == id)
                {
                    break id;
                }
            };
            extras.push((id, socket));
            opened.push(id);
        }
        self.has_extras.store(!extras.is_empty(), Ordering::Release);
        drop(extras);
        self.wake_receiver();
        opened
    }

    /// Wakes quinn's endpoint driver so that it polls [`NodeSocket::poll_recv`] again: for a
    /// newly opened extra socket, and for relayed QUIC that arrived over the relay's TLS
    /// stream (nothing on a UDP socket would wake quinn for it).
    pub(crate) fn wake_receiver(&self) {
        if let Some(waker) = self.recv_waker.lock().expect("waker lock").as_ref() {
            waker.wake_by_ref();
        }
    }

    /// Hands a STUN or project datagram that did not come from a UDP socket (unwrapped from
    /// the relay's TLS stream) to the side channel; a full channel drops it (counted).
    pub(crate) fn deliver_side(&self, datagram: SideDatagram) {
        if self.side.try_send(datagram).is_err() {
            self.counters
                .side_channel_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Looks up the socket and the on-the-wire address for a datagram to `destination` from
    /// `local` ahead of time, so that [`ResolvedSend::send`] costs one system call: a crossing
    /// sweep's timing depends on it. `RELAY` and closed sockets resolve to nothing (sent
    /// datagrams are dropped).
    pub fn resolve(&self, local: LocalSocketId, destination: SocketAddr) -> ResolvedSend {
        let socket = if local == LocalSocketId::MAIN {
            Some(self.inner.clone())
        } else {
            self.extra_socket(local)
        };
        ResolvedSend {
            socket,
            destination: self.outgoing_address(normalize(destination)),
        }
    }

    /// Closes these extra sockets (unknown ids are ignored).
    pub fn close_extra(&self, ids: &[LocalSocketId]) {
        let mut extras = self.extras.write().expect("extra sockets lock");
        extras.retain(|(id, _)| !ids.contains(id));
        self.has_extras.store(!extras.is_empty(), Ordering::Release);
    }

    /// The local address of extra socket `id`, if open.
    pub fn extra_addr(&self, id: LocalSocketId) -> Option<SocketAddr> {
        self.extra_socket(id)
            .and_then(|socket| socket.local_addr().ok())
    }

    /// Extra sockets open now.
    pub fn extra_count(&self) -> usize {
        self.extras.read().expect("extra sockets lock").len()
    }

    /// Adapts an IPv4 destination to an IPv6 (dual-stack) socket.
    fn outgoing_address(&self, destination: SocketAddr) -> SocketAddr {
        match (destination, self.inner.local_addr()) {
            (SocketAddr::V4(v4), Ok(SocketAddr::V6(_))) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            _ => destination,
        }
    }

    /// Handles one received batch entry: splits off non-QUIC segments and rewrites the source.
    /// Returns the new length of the entry's QUIC content (0 when nothing is left for quinn).
    fn filter_entry(&self, local: LocalSocketId, buf: &mut [u8], meta: &mut RecvMeta) -> usize {
        let source = normalize(meta.addr);
        let stride = meta.stride.max(1);
        let mut kept = 0;
        let mut offset = 0;
        while offset < meta.len {
            let end = (offset + stride).min(meta.len);
            let segment_len = end - offset;
            if self.relay.is_server(source) {
                if let Some(datagram) = self.relay.receive(&buf[offset..end]) {
                    if self.side.try_send(datagram).is_err() {
                        self.counters
                            .side_channel_full
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                offset = end;
                continue;
            }
            match classify(&buf[offset..end]) {
                DatagramKind::Quic => {
                    buf.copy_within(offset..end, kept);
                    kept += segment_len;
                }
                DatagramKind::Project
                    if p2pnat_proto::rv::wire::is_control(&buf[offset..end])
                        && self.route_control(source, &buf[offset..end]) => {}
                kind @ (DatagramKind::Stun | DatagramKind::Project) => {
                    let datagram = SideDatagram {
                        kind,
                        local,
                        from: source,
                        bytes: buf[offset..end].to_vec(),
                    };
                    if self.side.try_send(datagram).is_err() {
                        self.counters
                            .side_channel_full
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%source, "side channel full: dropped a STUN/probe datagram");
                    }
                }
                DatagramKind::Garbage => {
                    self.counters.garbage.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%source, len = segment_len, "dropped an unrecognised datagram");
                }
            }
            offset = end;
        }
        if kept > 0 && !self.translate_source(local, meta, source, buf[0]) {
            return 0;
        }
        kept
    }

    /// Shows a QUIC datagram as coming from its peer's virtual address. False: drop it.
    fn translate_source(
        &self,
        local: LocalSocketId,
        meta: &mut RecvMeta,
        source: SocketAddr,
        first_byte: u8,
    ) -> bool {
        let Some(paths) = &self.paths else {
            return true;
        };
        if self
            .passthrough
            .lock()
            .expect("passthrough lock")
            .contains(&source)
        {
            return true;
        }
        let initial = is_quic_initial(first_byte);
        let vaddr = paths.lock().expect("path agent lock").vaddr_for_source(
            std::time::Instant::now(),
            local,
            source,
            initial,
        );
        match vaddr {
            Ok(Some(vaddr)) => {
                meta.addr = vaddr;
                true
            }
            Ok(None) => {
                self.counters.unknown_source.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(%source, "QUIC packet from no known path dropped");
                false
            }
            Err(full) => {
                tracing::warn!(%source, "{full}: handshake from new source not accepted");
                false
            }
        }
    }
}

impl NodeSocket {
    /// Filters a received batch from `local`; true when anything is left for quinn.
    fn filter_batch(
        &self,
        local: LocalSocketId,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        count: usize,
    ) -> bool {
        let mut any_quic = false;
        for (buf, meta) in bufs.iter_mut().zip(meta.iter_mut()).take(count) {
            let kept = self.filter_entry(local, buf, meta);
            meta.len = kept;
            any_quic |= kept > 0;
        }
        any_quic
    }
}

impl NodeSocket {
    /// Fills `bufs` with relayed QUIC packets waiting in the relay link, each shown as coming
    /// from its peer's virtual address (packets of no known route are dropped). Returns how
    /// many entries were filled.
    fn relayed_batch(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let Some(packet) = self.relay.next_quic() else {
                break;
            };
            let buf = &mut bufs[filled];
            if packet.bytes.len() > buf.len() || packet.bytes.is_empty() {
                continue;
            }
            buf[..packet.bytes.len()].copy_from_slice(&packet.bytes);
            let entry = &mut meta[filled];
            entry.addr = packet.from;
            entry.len = packet.bytes.len();
            entry.stride = packet.bytes.len();
            entry.ecn = None;
            entry.dst_ip = None;
            if self.translate_source(LocalSocketId::RELAY, entry, packet.from, packet.bytes[0]) {
                filled += 1;
            }
        }
        filled
    }
}

impl AsyncUdpSocket for NodeSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Some(paths) = &self.paths else {
            return self.send_main(transmit);
        };
        if !p2pnat_proto::path::is_virtual(transmit.destination) {
            return self.send_main(transmit);
        }
        let path = paths
            .lock()
            .expect("path agent lock")
            .selected_path(transmit.destination);
        match path {
            Some(path) => {
                let rewritten = Transmit {
                    destination: self.outgoing_address(path.remote),
                    ecn: transmit.ecn,
                    contents: transmit.contents,
                    segment_size: transmit.segment_size,
                    src_ip: transmit.src_ip,
                };
                self.send_on(path.local, &rewritten)
            }
            None => {
                // No path (yet, or any more): the datagram is lost as on a dead link; QUIC
                // retransmits or times out.
                self.counters.no_path.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut progressed = false;
            // Relayed QUIC unwrapped by an earlier read first.
            let relayed = self.relayed_batch(bufs, meta);
            if relayed > 0 {
                return Poll::Ready(Ok(relayed));
            }
            // The main socket first; then the extra ones (only while any are open).
            match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(count)) => {
                    progressed = true;
                    if self.filter_batch(LocalSocketId(0), bufs, meta, count) {
                        return Poll::Ready(Ok(count));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            if self.has_extras.load(Ordering::Acquire) {
                // Read under the lock, without copying the list: nothing below takes it again.
                let extras = self.extras.read().expect("extra sockets lock");
                for (id, socket) in extras.iter() {
                    match socket.poll_recv(cx, bufs, meta) {
                        Poll::Ready(Ok(count)) => {
                            progressed = true;
                            if self.filter_batch(*id, bufs, meta, count) {
                                return Poll::Ready(Ok(count));
                            }
                        }
                        Poll::Ready(Err(e)) => {
                            tracing::debug!(socket = id.0, "extra socket receive error: {e}")
                        }
                        Poll::Pending => {}
                    }
                }
            }
            if !progressed {
                let mut waker = self.recv_waker.lock().expect("waker lock");
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        // quinn sizes each receive buffer as advertised payload x this (datagram_size).
        self.inner
            .max_receive_segments()
            .min(crate::datagram_size::RECEIVE_SEGMENTS)
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Builds a quinn endpoint on `socket` (server config optional), with the transport settings all
/// p2pnat connections share.
pub fn endpoint(
    socket: Arc<NodeSocket>,
    server: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    let mut config = quinn::EndpointConfig::default();
    // Required by the demultiplexer: QUIC packets must keep the fixed bit set (design brief, 2).
    config.grease_quic_bit(false);
    // Peers on loopback may send up to this; what each sends is bounded by its own transport
    // configuration (`transport_config`'s `max_udp_payload`).
    config
        .max_udp_payload_size(crate::datagram_size::LOOPBACK_MAX_UDP_PAYLOAD)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let runtime = quinn::default_runtime().ok_or_else(|| io::Error::other("no async runtime"))?;
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)
}

/// The real address of a connection's peer, IPv4-mapped addresses made plain (for connections by
/// real address, such as the rendezvous's).
pub fn peer_address(connection: &quinn::Connection) -> SocketAddr {
    normalize(connection.remote_address())
}
