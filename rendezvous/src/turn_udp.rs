//! Batched UDP for the built-in TURN server's driver: receives take many datagrams per system
//! call (recvmmsg, and GRO: a sender's segmented send arrives as one buffer of equal segments),
//! and consecutive datagrams from one socket to one destination of one size leave as one
//! segmented send (GSO). Through quinn-udp's `UdpSocketState`, as the nodes do. What goes on
//! the wire is unchanged: the same datagrams, and the sockets' don't-fragment settings as the
//! OS set them (quinn-udp sets DF for QUIC; the relay keeps forwarding what it forwarded).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Buffers of one receive call.
pub const SLOTS: usize = 8;
/// Bytes of one buffer: a UDP datagram, or GRO's coalesced segments, is at most 65,535 bytes.
pub const SLOT: usize = 65_536;
/// Most bytes of one segmented send (the kernel's limit for a UDP GSO send is 65,507 bytes of
/// payload over IPv4).
const MAX_SEGMENTED: usize = 65_000;

/// Largest datagram sent segmented: one that fits a 1,500-byte MTU (IPv4 and IPv6 headers).
/// The kernel refuses a segmented send whose segments exceed the path MTU, where a single
/// datagram would have been fragmented; larger datagrams (rare: relayed QUIC is at most 1,456
/// bytes with its ChannelData header) leave one by one as before.
fn max_segment(to: SocketAddr) -> usize {
    if to.is_ipv4() {
        1500 - 28
    } else {
        1500 - 48
    }
}

/// A UDP socket read and written in batches.
#[derive(Debug)]
pub struct BatchSocket {
    socket: UdpSocket,
    state: UdpSocketState,
}

impl BatchSocket {
    /// Takes a bound socket (made non-blocking here); needs a tokio runtime.
    pub fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        let kept = DontFragment::read(&socket);
        let state = UdpSocketState::new((&socket).into())?;
        kept.restore(&socket);
        Ok(BatchSocket {
            socket: UdpSocket::from_std(socket)?,
            state,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits until a receive may find something.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Receives what is waiting (WouldBlock when nothing is): each filled entry of `bufs`,
    /// `bufs.meta(i)` says from whom and how its segments are cut.
    pub fn try_recv(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        let RecvBufs { bytes, meta } = bufs;
        let mut chunks = bytes.chunks_mut(SLOT);
        let mut slices: [IoSliceMut; SLOTS] = std::array::from_fn(|_| {
            IoSliceMut::new(chunks.next().expect("SLOTS buffers of SLOT bytes"))
        });
        self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.socket).into(), &mut slices, &mut meta[..])
        })
    }

    /// Sends `contents` to `to`: one datagram, or with `segment_size` several of that size
    /// (the last may be shorter). Only WouldBlock is reported (quinn-udp logs the rest).
    pub fn try_send(
        &self,
        to: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        self.socket.try_io(Interest::WRITABLE, || {
            self.state.send((&self.socket).into(), &transmit)
        })
    }

    /// Datagrams one segmented send may carry (1 when the OS has no GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }
}

/// The buffers of [`BatchSocket::try_recv`]: [`SLOTS`] of [`SLOT`] bytes (512 KiB, one set
/// for the driver).
pub struct RecvBufs {
    bytes: Vec<u8>,
    meta: [RecvMeta; SLOTS],
}

impl RecvBufs {
    pub fn new() -> Self {
        RecvBufs {
            bytes: vec![0; SLOTS * SLOT],
            meta: [RecvMeta::default(); SLOTS],
        }
    }

    /// The datagrams of entry `i` (after a receive that filled more than `i`), with their
    /// sender: several when GRO coalesced them.
    pub fn datagrams(&self, i: usize) -> (SocketAddr, std::slice::Chunks<'_, u8>) {
        let meta = &self.meta[i];
        let start = i * SLOT;
        let bytes = &self.bytes[start..start + meta.len.min(SLOT)];
        (meta.addr, bytes.chunks(meta.stride.max(1)))
    }
}

/// Datagrams waiting to leave one socket for one destination, all of one size but the last.
pub struct Outbox<K> {
    from: Option<(K, SocketAddr)>,
    bytes: Vec<u8>,
    stride: usize,
    count: usize,
    /// Most datagrams in this send (the socket's segment limit).
    max: usize,
    /// A shorter datagram was added: it must be the last of this send.
    sealed: bool,
}

/// A segmented send, ready to go: from `from`, to `to`, `count` datagrams of `stride` bytes
/// (the last may be shorter) in `bytes`.
pub struct Segmented<'a, K> {
    pub from: K,
    pub to: SocketAddr,
    pub bytes: &'a [u8],
    pub stride: usize,
    pub count: usize,
}

impl<K: Copy + PartialEq> Outbox<K> {
    pub fn new() -> Self {
        Outbox {
            from: None,
            bytes: Vec::with_capacity(MAX_SEGMENTED),
            stride: 0,
            count: 0,
            max: 1,
            sealed: false,
        }
    }

    /// Whether a datagram of `len` bytes from `from` to `to` can join what is waiting: the
    /// same socket and destination (already checked by the caller when they started), not
    /// longer than the first, none shorter before it, and room left. When not, flush and
    /// [`Self::start`] anew.
    pub fn joins(&self, from: K, to: SocketAddr, len: usize) -> bool {
        self.from == Some((from, to))
            && !self.sealed
            && self.stride <= max_segment(to)
            && len <= self.stride
            && len > 0
            && self.count < self.max
            && self.bytes.len() + len <= MAX_SEGMENTED
    }

    /// Adds a datagram that [`Self::joins`] what is waiting.
    pub fn push(&mut self, datagram: &[u8]) {
        if datagram.len() < self.stride {
            self.sealed = true;
        }
        self.bytes.extend_from_slice(datagram);
        self.count += 1;
    }

    /// Starts a send (the outbox is empty: flushed) with its first datagram; at most `max`
    /// datagrams will join it.
    pub fn start(&mut self, from: K, to: SocketAddr, datagram: &[u8], max: usize) {
        debug_assert!(self.from.is_none());
        self.from = Some((from, to));
        self.stride = datagram.len();
        self.max = max;
        self.bytes.clear();
        self.bytes.extend_from_slice(datagram);
        self.count = 1;
        self.sealed = false;
    }

    /// What is waiting, if anything; the outbox is empty again once `send` returns.
    pub fn flush(&mut self, send: impl FnOnce(Segmented<'_, K>)) {
        let Some((from, to)) = self.from.take() else {
            return;
        };
        send(Segmented {
            from,
            to,
            bytes: &self.bytes,
            stride: self.stride,
            count: self.count,
        });
        self.bytes.clear();
        self.count = 0;
        self.sealed = false;
    }
}

/// The don't-fragment settings of a socket, put back after quinn-udp's set-up changed them.
struct DontFragment {
    values: Vec<(libc::c_int, libc::c_int, libc::c_int)>,
}

impl DontFragment {
    #[cfg(target_os = "linux")]
    const OPTIONS: [(libc::c_int, libc::c_int); 3] = [
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
        (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG),
    ];
    #[cfg(not(target_os = "linux"))]
    const OPTIONS: [(libc::c_int, libc::c_int); 0] = [];

    fn read(socket: &std::net::UdpSocket) -> Self {
        let fd = socket.as_raw_fd();
        let values = Self::OPTIONS
            .iter()
            .filter_map(|&(level, name)| {
                let mut value: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: `fd` is an open socket for the duration of the call; `value` and
                // `len` are valid for writes of the sizes given.
                let rc = unsafe {
                    libc::getsockopt(
                        fd,
                        level,
                        name,
                        (&mut value as *mut libc::c_int).cast(),
                        &mut len,
                    )
                };
                (rc == 0).then_some((level, name, value))
            })
            .collect();
        DontFragment { values }
    }

    fn restore(&self, socket: &std::net::UdpSocket) {
        let fd = socket.as_raw_fd();
        for &(level, name, value) in &self.values {
            // SAFETY: as in `read`; `value` is valid for reads of its size.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                tracing::debug!(level, name, "cannot restore a socket option");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn outbox_coalesces_one_destination_and_size() {
        let mut outbox = Outbox::<u8>::new();
        let mut sent = Vec::new();
        let mut record = |s: Segmented<'_, u8>| {
            sent.push((s.from, s.to, s.bytes.to_vec(), s.stride, s.count));
        };
        assert!(!outbox.joins(1, addr(1), 3));
        outbox.start(1, addr(1), b"abc", 3);
        assert!(outbox.joins(1, addr(1), 3));
        outbox.push(b"def");
        // Longer, another destination, another socket, or empty: not here.
        assert!(!outbox.joins(1, addr(1), 4));
        assert!(!outbox.joins(1, addr(2), 3));
        assert!(!outbox.joins(2, addr(1), 3));
        assert!(!outbox.joins(1, addr(1), 0));
        // A shorter one ends the send.
        outbox.push(b"g");
        assert!(!outbox.joins(1, addr(1), 1));
        outbox.flush(&mut record);
        // At most `max`.
        outbox.start(1, addr(1), b"ab", 2);
        outbox.push(b"cd");
        assert!(!outbox.joins(1, addr(1), 2));
        outbox.flush(&mut record);
        // Over a 1,500-byte MTU's worth: alone.
        outbox.start(3, addr(3), &[0; 1473], 64);
        assert!(!outbox.joins(3, addr(3), 1473));
        outbox.flush(&mut record);
        outbox.flush(&mut record);
        outbox.start(2, addr(2), b"xy", 64);
        outbox.flush(&mut record);
        assert_eq!(
            sent,
            vec![
                (1, addr(1), b"abcdefg".to_vec(), 3, 3),
                (1, addr(1), b"abcd".to_vec(), 2, 2),
                (3, addr(3), vec![0; 1473], 1473, 1),
                (2, addr(2), b"xy".to_vec(), 2, 1)
            ]
        );
    }
}
