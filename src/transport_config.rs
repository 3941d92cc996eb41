//! QUIC transport settings shared by every node connection: the congestion controller (per
//! path with `auto`), the flow-control window `W`, MTU discovery's bound and the initial
//! window per path (`crate::datagram_size`). Re-exported from `crate::socket`.

use std::sync::Arc;

/// QUIC congestion controller for node connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CongestionControl {
    /// Per path, as measured (docs/PERFORMANCE.md): Cubic on a direct path to a loopback
    /// address (no delay, no loss: it moves 1.4x more than BBR there), BBR on every other.
    Auto,
    /// Loss-based (quinn's default): backs off on every loss, like TCP.
    Cubic,
    /// Model-based (experimental in quinn 0.11): far better on lossy links (docs/PERFORMANCE.md).
    Bbr,
}

/// Default flow-control window of a connection, `W` below: 16 MiB. Measured on netsim's 80 ms
/// round trip with BBR, one stream moves about 3.5 W per second (8 MiB: 28 MiB/s, 16 MiB: 37.6,
/// 32 MiB: 55.9; iperf3 TCP 38.2), so 16 MiB matches Linux TCP's default autotuning there while
/// holding at most 3 W = 48 MiB per peer; quinn's default stream window (1.25 MB) caps one
/// stream at about 15 MB/s (docs/PERFORMANCE.md, "Flow-control windows").
pub const DEFAULT_FLOW_WINDOW: u64 = 16 * 1024 * 1024;
/// Smallest and largest `--flow-window` accepted.
pub const FLOW_WINDOW_RANGE: std::ops::RangeInclusive<u64> = 64 * 1024..=1024 * 1024 * 1024;

static FLOW_WINDOW: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_FLOW_WINDOW);

/// Sets `W` for connections configured from now on (p2p-node's `--flow-window`), clamped to
/// [`FLOW_WINDOW_RANGE`].
pub fn set_flow_window(bytes: u64) {
    let bytes = bytes.clamp(*FLOW_WINDOW_RANGE.start(), *FLOW_WINDOW_RANGE.end());
    FLOW_WINDOW.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// The current `W` (see [`set_flow_window`]).
pub fn flow_window() -> u64 {
    FLOW_WINDOW.load(std::sync::atomic::Ordering::Relaxed)
}

/// Transport settings shared by every connection: keep-alives (every `keepalive`, `None` for
/// none) hold NAT mappings open; `idle_timeout` declares a silent connection dead.
///
/// Flow control, sized to a bandwidth-delay product and bounded per connection (so per peer):
/// a stream may receive `W` ([`flow_window`]) unread bytes, the whole connection `2 W` (quinn's
/// default is unbounded: 100 streams of 1.25 MB), and at most `W` bytes written by the node wait
/// in quinn for acknowledgement. Worst case held by quinn per peer: `3 W` (24 MiB by default).
///
/// `max_udp_payload`: the bound of MTU discovery on the connection's path
/// ([`crate::datagram_size::max_udp_payload`]; the loopback bound also makes
/// [`CongestionControl::Auto`] Cubic).
pub fn transport_config(
    idle_timeout: std::time::Duration,
    keepalive: Option<std::time::Duration>,
    congestion: CongestionControl,
    max_udp_payload: u16,
) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    let window = flow_window();
    let varint = |v: u64| quinn::VarInt::from_u64(v).unwrap_or(quinn::VarInt::MAX);
    transport.stream_receive_window(varint(window));
    transport.receive_window(varint(2 * window));
    transport.send_window(window);
    transport.keep_alive_interval(keepalive);
    let loopback = max_udp_payload == crate::datagram_size::LOOPBACK_MAX_UDP_PAYLOAD;
    let bbr = match congestion {
        CongestionControl::Auto => !loopback,
        CongestionControl::Cubic => false,
        CongestionControl::Bbr => true,
    };
    // On loopback the window starts at ten of the path's datagrams (RFC 9002's initial window
    // is counted in datagrams): quinn's default (14,720 bytes) is under one 64 KiB datagram,
    // and quinn 0.11 holds a connection's CONNECTION_CLOSE back while frames it still owes
    // are blocked by the window (an MTU probe in flight was enough), so the close never left.
    let initial_window = loopback.then_some(10 * u64::from(max_udp_payload));
    if bbr {
        let mut config = quinn::congestion::BbrConfig::default();
        if let Some(window) = initial_window {
            config.initial_window(window);
        }
        transport.congestion_controller_factory(Arc::new(config));
    } else if let Some(window) = initial_window {
        let mut config = quinn::congestion::CubicConfig::default();
        config.initial_window(window);
        transport.congestion_controller_factory(Arc::new(config));
    }
    transport.max_idle_timeout(idle_timeout.try_into().ok());
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(max_udp_payload);
    transport.mtu_discovery_config(Some(mtu));
    Arc::new(transport)
}
