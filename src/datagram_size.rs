//! How large QUIC datagrams may grow: the ceiling of quinn's MTU discovery per path, and the
//! splitting of segmented sends the kernel would refuse.
//!
//! quinn probes the path for larger datagrams (DPLPMTUD, RFC 8899) up to an upper bound and
//! falls back on loss (its black-hole detection). The bound is Ethernet's
//! ([`ETHERNET_MAX_UDP_PAYLOAD`], quinn's default) on every path but one kind: a *direct path to
//! a loopback address* (a peer on the same host) gets [`LOOPBACK_MAX_UDP_PAYLOAD`]. Loopback
//! carries 64 KiB datagrams, nothing between the two ends can change, and 45 times fewer
//! packets per byte take most of the per-packet work (packet building, acknowledgements,
//! system calls) off a bulk transfer (docs/PERFORMANCE.md, "Loopback datagrams"). Relayed
//! paths keep Ethernet's bound even when the relay is on loopback: the relay forwards to a
//! network.
//!
//! # Invariants
//! - Every endpoint advertises [`LOOPBACK_MAX_UDP_PAYLOAD`] as its `max_udp_payload_size`
//!   (what it can receive); what a peer sends is bounded by the peer's own discovery bound.
//! - quinn sizes its receive buffers as advertised payload x receive segments x batch; the
//!   socket reports [`RECEIVE_SEGMENTS`] so that each buffer (128 KiB) still holds a whole
//!   GRO batch of 1,452-byte datagrams (up to the kernel's default 64 KiB `gro_max_size`) and
//!   the total stays at 4 MiB.
//! - A segmented send (UDP GSO) never exceeds [`MAX_GSO_BYTES`]; [`split_for_gso`] cuts larger
//!   ones (quinn builds up to 10 segments, 640 KiB of 64 KiB datagrams).

use std::net::SocketAddr;

use quinn::udp::Transmit;

/// quinn's default MTU discovery bound: 1,500 (Ethernet) minus IPv6 and UDP headers.
pub const ETHERNET_MAX_UDP_PAYLOAD: u16 = 1452;
/// The largest UDP payload (IPv6; IPv4's is 65,507, which discovery then settles below).
pub const LOOPBACK_MAX_UDP_PAYLOAD: u16 = 65527;
/// What the socket tells quinn about receive segments (see the module invariants).
pub const RECEIVE_SEGMENTS: usize = 2;
/// Most bytes in one segmented send: one IPv4 packet's 65,535 less headers, with margin.
pub const MAX_GSO_BYTES: usize = 65_000;

/// The MTU discovery bound for a path to `remote` (`relayed`: through the relay).
pub fn max_udp_payload(remote: SocketAddr, relayed: bool) -> u16 {
    if !relayed && p2pnat_proto::path::normalize(remote).ip().is_loopback() {
        LOOPBACK_MAX_UDP_PAYLOAD
    } else {
        ETHERNET_MAX_UDP_PAYLOAD
    }
}

/// `transmit` as sends the kernel accepts: itself when it is one datagram or small enough,
/// else consecutive runs of whole segments of at most [`MAX_GSO_BYTES`] each.
pub fn split_for_gso<'a>(transmit: &'a Transmit<'a>) -> impl Iterator<Item = Transmit<'a>> + 'a {
    let per_send = match transmit.segment_size {
        Some(size) if size > 0 && transmit.contents.len() > MAX_GSO_BYTES => {
            (MAX_GSO_BYTES / size).max(1) * size
        }
        _ => transmit.contents.len().max(1),
    };
    transmit
        .contents
        .chunks(per_send)
        .map(move |contents| Transmit {
            destination: transmit.destination,
            ecn: transmit.ecn,
            contents,
            // Segmentation only where a send holds more than one datagram.
            segment_size: transmit.segment_size.filter(|size| contents.len() > *size),
            src_ip: transmit.src_ip,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmit(contents: &[u8], segment_size: Option<usize>) -> Transmit<'_> {
        Transmit {
            destination: "127.0.0.1:9".parse().unwrap(),
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        }
    }

    #[test]
    fn small_or_unsegmented_transmits_stay_whole() {
        let bytes = vec![7u8; 10 * 1452];
        let t = transmit(&bytes, Some(1452));
        let parts: Vec<_> = split_for_gso(&t).collect();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].contents.len(), 10 * 1452);
        assert_eq!(parts[0].segment_size, Some(1452));
        let one = vec![1u8; 65_527];
        let t = transmit(&one, None);
        let parts: Vec<_> = split_for_gso(&t).collect();
        assert_eq!((parts.len(), parts[0].contents.len()), (1, 65_527));
    }

    #[test]
    fn large_segmented_transmits_split_on_segment_boundaries() {
        // quinn's 10 segments of 65,000-byte datagrams, the last one short.
        let mut bytes = vec![0u8; 9 * 65_000 + 100];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i / 65_000) as u8;
        }
        let t = transmit(&bytes, Some(65_000));
        let parts: Vec<_> = split_for_gso(&t).collect();
        assert_eq!(parts.len(), 10);
        for (i, part) in parts.iter().enumerate() {
            assert!(part.contents.len() <= MAX_GSO_BYTES);
            assert!(part.contents.iter().all(|b| *b == i as u8), "part {i}");
            // One datagram each: no segmentation asked for.
            assert_eq!(part.segment_size, None);
        }
        // 8,952-byte segments: 7 per send (62,664 bytes), and the rest.
        let bytes = vec![0u8; 10 * 8952];
        let t = transmit(&bytes, Some(8952));
        let sizes: Vec<_> = split_for_gso(&t).map(|p| p.contents.len()).collect();
        assert_eq!(sizes, vec![7 * 8952, 3 * 8952]);
        let reassembled: usize = sizes.iter().sum();
        assert_eq!(reassembled, bytes.len());
    }

    #[test]
    fn only_direct_loopback_paths_get_the_loopback_bound() {
        let lo: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        let lan: SocketAddr = "192.168.1.2:4000".parse().unwrap();
        assert_eq!(max_udp_payload(lo, false), LOOPBACK_MAX_UDP_PAYLOAD);
        assert_eq!(max_udp_payload(mapped, false), LOOPBACK_MAX_UDP_PAYLOAD);
        assert_eq!(
            max_udp_payload("[::1]:4000".parse().unwrap(), false),
            LOOPBACK_MAX_UDP_PAYLOAD
        );
        assert_eq!(max_udp_payload(lo, true), ETHERNET_MAX_UDP_PAYLOAD);
        assert_eq!(max_udp_payload(lan, false), ETHERNET_MAX_UDP_PAYLOAD);
    }
}
