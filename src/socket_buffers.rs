//! Kernel buffer sizes of a UDP socket that carries bulk QUIC (the node's one socket, the
//! rendezvous's).
//!
//! Linux gives a UDP socket `net.core.rmem_default` (usually 208 KiB) of receive buffer. On a
//! fast path that is well under a millisecond of data: when the receiving task is not scheduled
//! for that long (a busy machine, two cores, the application's own work), the kernel drops
//! datagrams, QUIC retransmits them and the sender's congestion controller backs off. Measured
//! on loopback with 208 KiB: about 5% of a BBR bulk transfer's packets dropped
//! (docs/PERFORMANCE.md, "Socket buffers"). Like quic-go and Tailscale's magicsock, the node
//! asks for a larger buffer ([`DEFAULT_SOCKET_BUFFER`]) on both directions: first with
//! `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` (allowed with `CAP_NET_ADMIN`, e.g. as root or under the
//! systemd unit), else with `SO_RCVBUF`/`SO_SNDBUF`, which the kernel caps at
//! `net.core.rmem_max`/`wmem_max`.
//!
//! # Limits
//! The buffers are kernel memory used only while the process lags behind the network: at most
//! the size asked for per direction (the kernel accounts twice that, for its bookkeeping). Only
//! the main socket is enlarged, never the birthday method's short-lived extra sockets.

use std::os::fd::AsFd;

/// Buffer asked for per direction unless `--socket-buffer` says otherwise: 4 MiB (measured, see
/// the module doc).
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// The buffer sizes a socket got, in bytes as asked for (Linux reports twice the size it
/// grants; this is the granted size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSizes {
    pub receive: usize,
    pub send: usize,
}

/// Asks for `wanted` bytes of receive and send buffer on `socket` (0: leave the system's
/// default) and returns what it got. Never fails: a socket keeps working with a smaller buffer,
/// so a refusal is logged (with the sysctl that would allow more) and the sizes returned say
/// what there is.
pub fn enlarge(socket: &impl AsFd, wanted: usize) -> BufferSizes {
    let sock = socket2::SockRef::from(socket);
    if wanted > 0 {
        let wanted_c = libc::c_int::try_from(wanted).unwrap_or(libc::c_int::MAX);
        if !force(socket, libc::SO_RCVBUFFORCE, wanted_c) {
            let _ = sock.set_recv_buffer_size(wanted);
        }
        if !force(socket, libc::SO_SNDBUFFORCE, wanted_c) {
            let _ = sock.set_send_buffer_size(wanted);
        }
    }
    let granted = |reported: std::io::Result<usize>| reported.map(halve).unwrap_or(0);
    let sizes = BufferSizes {
        receive: granted(sock.recv_buffer_size()),
        send: granted(sock.send_buffer_size()),
    };
    if wanted > 0 && (sizes.receive < wanted || sizes.send < wanted) {
        tracing::info!(
            wanted_kib = wanted / 1024,
            receive_kib = sizes.receive / 1024,
            send_kib = sizes.send / 1024,
            "UDP socket buffers smaller than asked for; fast transfers may lose packets. \
             Allow more with `sysctl -w net.core.rmem_max={wanted} net.core.wmem_max={wanted}` \
             or run with CAP_NET_ADMIN"
        );
    } else {
        tracing::debug!(
            receive_kib = sizes.receive / 1024,
            send_kib = sizes.send / 1024,
            "UDP socket buffers"
        );
    }
    sizes
}

/// Linux reports twice the granted size (it adds room for its own bookkeeping).
fn halve(reported: usize) -> usize {
    if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    }
}

/// `setsockopt` of a `*FORCE` option; `false` if refused (no `CAP_NET_ADMIN`) or unsupported.
#[cfg(target_os = "linux")]
fn force(socket: &impl AsFd, option: libc::c_int, bytes: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd borrowed for the call, and a pointer to a c_int with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn force(_socket: &impl AsFd, _option: i32, _bytes: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_and_reports_what_the_kernel_granted() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = enlarge(&socket, 0);
        assert!(before.receive > 0 && before.send > 0, "{before:?}");
        // Under the kernels' default rmem_max/wmem_max (208 KiB), so granted exactly with or
        // without privileges.
        let sizes = enlarge(&socket, 96 * 1024);
        assert_eq!(sizes.receive, 96 * 1024, "{sizes:?}");
        assert_eq!(sizes.send, 96 * 1024, "{sizes:?}");
        // The socket still works.
        socket.send_to(b"x", socket.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(socket.recv_from(&mut buf).unwrap().0, 1);
    }
}
