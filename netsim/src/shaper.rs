//! Delay and bandwidth for one link, in userspace (this kernel has no `tc netem`).
//!
//! A shaped link runs through its own namespace holding two veth ends, `a0` (towards the
//! host) and `a1` (towards the upstream segment), with no addresses. One thread per
//! direction reads whole Ethernet frames from one end with an `AF_PACKET` socket, holds each
//! for the configured delay, paces them to the configured rate, and writes them to the other
//! end. ARP and everything else passes unchanged. Sockets use `PACKET_VNET_HDR`, so offloaded
//! frames (GSO super-packets, partial checksums) cross unchanged and are finished by the
//! kernel as usual; `PACKET_IGNORE_OUTGOING` keeps a socket from reading what it sent.
//!
//! Bounded: each direction queues at most [`MAX_QUEUE_BYTES`]; frames beyond are dropped
//! (tail drop, like a router's buffer). Parameters can be changed while frames flow.

use crate::error::{NetsimError, Result};
use crate::netns;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most bytes one direction holds (delay line plus rate queue) before dropping frames.
pub const MAX_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Kernel receive buffer of each shaper socket.
const RECEIVE_BUFFER_BYTES: libc::c_int = 8 * 1024 * 1024;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Size of `struct virtio_net_hdr` that precedes each frame with PACKET_VNET_HDR.
const VNET_HDR_LEN: usize = 10;
const MAX_FRAME: usize = 65536 + VNET_HDR_LEN + 64;

/// Live parameters of a shaped link (both directions).
#[derive(Debug, Default)]
pub struct ShaperParams {
    delay_us: AtomicU64,
    /// Bits per second; 0 = unlimited.
    rate_bps: AtomicU64,
}

impl ShaperParams {
    pub fn set(&self, delay: Duration, rate_kbit: u32) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
        self.rate_bps
            .store(u64::from(rate_kbit) * 1000, Ordering::Relaxed);
    }
    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }
    fn rate_bps(&self) -> u64 {
        self.rate_bps.load(Ordering::Relaxed)
    }
}

/// The two forwarding threads of one shaped link. Dropping stops and joins them.
#[derive(Debug)]
pub struct Shaper {
    pub params: Arc<ShaperParams>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Shaper {
    /// Starts forwarding between `a0` and `a1` inside namespace `netns`.
    pub fn start(netns: &str, params: Arc<ShaperParams>) -> Result<Self> {
        let a0 = Arc::new(netns::in_netns(netns, || packet_socket("a0"))?);
        let a1 = Arc::new(netns::in_netns(netns, || packet_socket("a1"))?);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (from, to, name) in [(&a0, &a1, "up"), (&a1, &a0, "down")] {
            let (from, to, stop, params) = (from.clone(), to.clone(), stop.clone(), params.clone());
            let handle = std::thread::Builder::new()
                .name(format!("netsim-shaper-{name}"))
                .spawn(move || forward(&from, &to, &params, &stop))
                .map_err(|e| NetsimError::io("starting a shaper thread", e))?;
            threads.push(handle);
        }
        Ok(Shaper {
            params,
            stop,
            threads,
        })
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// An AF_PACKET socket bound to `interface` in the calling thread's namespace.
fn packet_socket(interface: &str) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the returned fd is owned by OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto)) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we exclusively own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(interface).map_err(io::Error::other)?;
    // SAFETY: name is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let one: libc::c_int = 1;
    for opt in [PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING] {
        // SAFETY: setsockopt with a pointer to a c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // A large receive buffer, so a burst waits for the forwarding thread instead of being
    // dropped when the machine is busy (root may exceed rmem_max with the FORCE option).
    let rcvbuf: libc::c_int = RECEIVE_BUFFER_BYTES;
    // SAFETY: setsockopt with a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&rcvbuf as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an all-zero sockaddr_ll is valid; the fields we need are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: bind with a properly sized sockaddr_ll.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

struct Held {
    release: Instant,
    frame: Vec<u8>,
}

/// Forwards frames from `from` to `to` until `stop` is set.
fn forward(from: &OwnedFd, to: &OwnedFd, params: &ShaperParams, stop: &AtomicBool) {
    let mut queue: VecDeque<Held> = VecDeque::new();
    let mut queued_bytes = 0usize;
    // When the (virtual) wire is free again for the next frame, for rate limiting.
    let mut wire_free = Instant::now();
    let mut buf = vec![0u8; MAX_FRAME];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|h| h.release <= now) {
            let held = queue.pop_front().expect("front exists");
            queued_bytes -= held.frame.len();
            // SAFETY: sending a buffer we own on a bound packet socket.
            unsafe {
                libc::send(
                    to.as_raw_fd(),
                    held.frame.as_ptr().cast(),
                    held.frame.len(),
                    0,
                )
            };
        }
        let wait = queue
            .front()
            .map_or(Duration::from_millis(50), |h| {
                h.release.saturating_duration_since(now)
            })
            .min(Duration::from_millis(50));
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = wait.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: poll on one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, timeout_ms) } <= 0 {
            continue;
        }
        loop {
            // SAFETY: receiving into a buffer we own, without blocking.
            let n = unsafe {
                libc::recv(
                    from.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            if queued_bytes + n > MAX_QUEUE_BYTES {
                continue; // tail drop
            }
            // Serialise at the rate (queueing behind earlier frames), then propagate.
            let arrived = Instant::now();
            let mut release = arrived;
            let wire_bits = n.saturating_sub(VNET_HDR_LEN) as u64 * 8;
            if let Some(nanos) = (wire_bits * 1_000_000_000).checked_div(params.rate_bps()) {
                wire_free = wire_free.max(arrived) + Duration::from_nanos(nanos);
                release = wire_free;
            }
            release += params.delay();
            queued_bytes += n;
            queue.push_back(Held {
                release,
                frame: buf[..n].to_vec(),
            });
        }
    }
}
