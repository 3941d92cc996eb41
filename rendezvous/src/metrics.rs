//! The rendezvous's Prometheus metrics (`prometheus-client`), served by `http` on
//! `--metrics-listen`.
//!
//! One process-wide [`Metrics`] ([`METRICS`]): every counter and gauge is an atomic, and every
//! labelled series is created once here and kept as a handle, so recording is one atomic
//! operation with no lock. The TURN driver's per-datagram path records nothing itself: its
//! machine's counters ([`TurnStats`]) are copied over once per batch ([`TurnSync`]).
//!
//! Names (all prefixed `p2pnat_rendezvous_`): `registrations_total`, `registered_peers`,
//! `lookups_total{result}`, `punch_requests_total{result}`, `relay_allocations`,
//! `relay_allocations_created_total`, `relay_bytes_total{direction}`, `drops_total{component,reason}`,
//! `connections{kind}`. docs/ARCHITECTURE.md lists what each counts.

use std::sync::LazyLock;

use p2pnat_proto::turn::server::TurnStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    component: &'static str,
    reason: &'static str,
}

/// Where something was dropped or refused, and why. Each pair is one `drops_total` series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A new registration over the per-IP rate limit.
    RegisterRateLimit,
    /// A registration refused because the registry is full.
    RegisterQuota,
    /// A registration with too many local addresses.
    RegisterMalformed,
    /// A control request that does not decode.
    ControlMalformed,
    /// A QUIC handshake that failed, or a connection without a peer identity.
    QuicAuthFailure,
    /// A QUIC connection over `--max-connections`.
    QuicQuota,
    /// A punch request not pushed: the requester's key or IP asked too often.
    PunchRateLimit,
    /// A punch request not pushed: the requester's reported address is not a unicast one.
    PunchForbiddenAddress,
    /// A TCP connection (TLS port, TURN over TCP) over the total or per-IP limit.
    TcpQuota,
    /// A TLS handshake that failed or timed out, or control without a peer identity.
    TlsAuthFailure,
    /// A STUN datagram that is not a Binding request we answer.
    StunMalformed,
    /// A poke (inbound probe) over its per-IP rate limit.
    PokeRateLimit,
    /// A control datagram that does not decode (framing or body).
    DatagramMalformed,
    /// A control datagram that failed authentication: stale cookie (answered with a fresh
    /// one), bad signature or tag, unknown session (answered Unknown), replay.
    DatagramAuthFailure,
    /// A push not sent as a datagram: too many pushes waiting for acknowledgement.
    DatagramPushQuota,
    /// A Register dropped: too many waiting for their signature check.
    DatagramVerifyQueue,
}

impl Dropped {
    const ALL: [Dropped; 16] = [
        Dropped::RegisterRateLimit,
        Dropped::RegisterQuota,
        Dropped::RegisterMalformed,
        Dropped::ControlMalformed,
        Dropped::QuicAuthFailure,
        Dropped::QuicQuota,
        Dropped::PunchRateLimit,
        Dropped::PunchForbiddenAddress,
        Dropped::TcpQuota,
        Dropped::TlsAuthFailure,
        Dropped::StunMalformed,
        Dropped::PokeRateLimit,
        Dropped::DatagramMalformed,
        Dropped::DatagramAuthFailure,
        Dropped::DatagramPushQuota,
        Dropped::DatagramVerifyQueue,
    ];

    fn labels(self) -> DropLabels {
        let (component, reason) = match self {
            Dropped::RegisterRateLimit => ("registration", "rate_limit"),
            Dropped::RegisterQuota => ("registration", "quota"),
            Dropped::RegisterMalformed => ("registration", "malformed"),
            Dropped::ControlMalformed => ("control", "malformed"),
            Dropped::QuicAuthFailure => ("quic", "auth_failure"),
            Dropped::QuicQuota => ("quic", "quota"),
            Dropped::PunchRateLimit => ("punch", "rate_limit"),
            Dropped::PunchForbiddenAddress => ("punch", "forbidden_address"),
            Dropped::TcpQuota => ("tcp", "quota"),
            Dropped::TlsAuthFailure => ("tls", "auth_failure"),
            Dropped::StunMalformed => ("stun", "malformed"),
            Dropped::PokeRateLimit => ("poke", "rate_limit"),
            Dropped::DatagramMalformed => ("datagram", "malformed"),
            Dropped::DatagramAuthFailure => ("datagram", "auth_failure"),
            Dropped::DatagramPushQuota => ("datagram", "push_quota"),
            Dropped::DatagramVerifyQueue => ("datagram", "verify_queue"),
        };
        DropLabels { component, reason }
    }
}

/// TURN drops, copied from the machine's and the driver's counters.
#[derive(Debug, Clone, Copy)]
enum TurnDrop {
    RateLimit,
    Malformed,
    AuthFailure,
    Quota,
    Forbidden,
    NoAllocation,
    QueueFull,
    Oversize,
    SendFailed,
}

impl TurnDrop {
    const ALL: [TurnDrop; 9] = [
        TurnDrop::RateLimit,
        TurnDrop::Malformed,
        TurnDrop::AuthFailure,
        TurnDrop::Quota,
        TurnDrop::Forbidden,
        TurnDrop::NoAllocation,
        TurnDrop::QueueFull,
        TurnDrop::Oversize,
        TurnDrop::SendFailed,
    ];

    fn reason(self) -> &'static str {
        match self {
            TurnDrop::RateLimit => "rate_limit",
            TurnDrop::Malformed => "malformed",
            TurnDrop::AuthFailure => "auth_failure",
            TurnDrop::Quota => "quota",
            TurnDrop::Forbidden => "forbidden",
            TurnDrop::NoAllocation => "no_allocation",
            TurnDrop::QueueFull => "queue_full",
            TurnDrop::Oversize => "oversize",
            TurnDrop::SendFailed => "send_failed",
        }
    }
}

/// Kinds of connection counted by the `connections` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    QuicControl,
    TlsControl,
    TurnTcp,
    TurnTls,
}

impl Conn {
    const ALL: [Conn; 4] = [
        Conn::QuicControl,
        Conn::TlsControl,
        Conn::TurnTcp,
        Conn::TurnTls,
    ];

    fn kind(self) -> &'static str {
        match self {
            Conn::QuicControl => "quic_control",
            Conn::TlsControl => "tls_control",
            Conn::TurnTcp => "turn_tcp",
            Conn::TurnTls => "turn_tls",
        }
    }
}

/// Every metric of the rendezvous. See the module documentation.
pub struct Metrics {
    registry: Registry,
    pub registrations: Counter,
    pub registered_peers: Gauge,
    pub lookups_found: Counter,
    pub lookups_not_found: Counter,
    pub punch_pushed: Counter,
    pub punch_not_pushed: Counter,
    pub relay_allocations: Gauge,
    relay_allocations_total: Counter,
    relay_bytes_to_peers: Counter,
    relay_bytes_to_clients: Counter,
    drops: Vec<(Dropped, Counter)>,
    turn_drops: Vec<(TurnDrop, Counter)>,
    connections: Vec<(Conn, Gauge)>,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("p2pnat_rendezvous");
        let registrations = Counter::default();
        registry.register(
            "registrations",
            "Registrations accepted (new and refreshes)",
            registrations.clone(),
        );
        let registered_peers = Gauge::default();
        registry.register(
            "registered_peers",
            "Peers registered now",
            registered_peers.clone(),
        );
        let lookups = Family::<ResultLabel, Counter>::default();
        registry.register(
            "lookups",
            "Lookup requests, by result (found, not_found)",
            lookups.clone(),
        );
        let punches = Family::<ResultLabel, Counter>::default();
        registry.register(
            "punch_requests",
            "Connect (punch) requests, by result (pushed to the target, or not_pushed: \
             target absent, rate limited or forbidden address)",
            punches.clone(),
        );
        let relay_allocations = Gauge::default();
        registry.register(
            "relay_allocations",
            "TURN allocations now",
            relay_allocations.clone(),
        );
        let relay_allocations_total = Counter::default();
        registry.register(
            "relay_allocations_created",
            "TURN allocations created",
            relay_allocations_total.clone(),
        );
        let bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "relay_bytes",
            "Relayed payload bytes: to_peers (from clients, out of relay sockets) and \
             to_clients (from peers, out to TURN clients)",
            bytes.clone(),
        );
        let drops = Family::<DropLabels, Counter>::default();
        registry.register(
            "drops",
            "Requests, datagrams and connections dropped or refused, by component and reason",
            drops.clone(),
        );
        let connections = Family::<KindLabel, Gauge>::default();
        registry.register(
            "connections",
            "Connections open now, by kind (quic_control, tls_control, turn_tcp, turn_tls)",
            connections.clone(),
        );
        let result = |family: &Family<ResultLabel, Counter>, result| {
            family.get_or_create(&ResultLabel { result }).clone()
        };
        let direction = |direction| bytes.get_or_create(&DirectionLabel { direction }).clone();
        Metrics {
            registrations,
            registered_peers,
            lookups_found: result(&lookups, "found"),
            lookups_not_found: result(&lookups, "not_found"),
            punch_pushed: result(&punches, "pushed"),
            punch_not_pushed: result(&punches, "not_pushed"),
            relay_allocations,
            relay_allocations_total,
            relay_bytes_to_peers: direction("to_peers"),
            relay_bytes_to_clients: direction("to_clients"),
            drops: Dropped::ALL
                .iter()
                .map(|d| (*d, drops.get_or_create(&d.labels()).clone()))
                .collect(),
            turn_drops: TurnDrop::ALL
                .iter()
                .map(|d| {
                    let labels = DropLabels {
                        component: "turn",
                        reason: d.reason(),
                    };
                    (*d, drops.get_or_create(&labels).clone())
                })
                .collect(),
            connections: Conn::ALL
                .iter()
                .map(|c| {
                    let gauge = connections.get_or_create(&KindLabel { kind: c.kind() });
                    (*c, gauge.clone())
                })
                .collect(),
            registry,
        }
    }

    /// Counts one drop.
    pub fn count_drop(&self, what: Dropped) {
        if let Some((_, counter)) = self.drops.iter().find(|(d, _)| *d == what) {
            counter.inc();
        }
    }

    /// A connection of `kind` opened; the guard counts it closed when dropped.
    pub fn connection(&'static self, kind: Conn) -> ConnectionGuard {
        let gauge = self.gauge(kind);
        gauge.inc();
        ConnectionGuard { gauge }
    }

    fn gauge(&self, kind: Conn) -> Gauge {
        self.connections
            .iter()
            .find(|(c, _)| *c == kind)
            .map(|(_, g)| g.clone())
            .unwrap_or_default()
    }

    /// The text exposition (OpenMetrics text, which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        out
    }
}

/// Counts one open connection; dropping it counts it closed.
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl std::ops::Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Copies the TURN driver's counters into [`METRICS`]: call [`TurnSync::sync`] once per batch
/// with the machine's stats and the driver's own drop counts; only the increase since the last
/// call is added.
#[derive(Debug, Default)]
pub struct TurnSync {
    last: TurnStats,
    last_driver: DriverDrops,
}

/// The TURN driver's own drop counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct DriverDrops {
    pub oversize: u64,
    pub send: u64,
    pub stream: u64,
}

impl TurnSync {
    pub fn sync(&mut self, stats: &TurnStats, allocations: usize, driver: DriverDrops) {
        let m = &*METRICS;
        let (old, old_driver) = (&self.last, self.last_driver);
        let up = |new: u64, old: u64| new.saturating_sub(old);
        m.relay_allocations
            .set(i64::try_from(allocations).unwrap_or(i64::MAX));
        m.relay_allocations_total
            .inc_by(up(stats.allocations_created, old.allocations_created));
        m.relay_bytes_to_peers
            .inc_by(up(stats.bytes_to_peers, old.bytes_to_peers));
        m.relay_bytes_to_clients
            .inc_by(up(stats.bytes_to_clients, old.bytes_to_clients));
        for (what, counter) in &m.turn_drops {
            let n = match what {
                TurnDrop::RateLimit => up(stats.dropped_rate_limited, old.dropped_rate_limited),
                TurnDrop::Malformed => up(stats.dropped_malformed, old.dropped_malformed),
                TurnDrop::AuthFailure => {
                    up(stats.unauthorized, old.unauthorized)
                        + up(stats.dropped_unauthenticated, old.dropped_unauthenticated)
                }
                TurnDrop::Quota => up(stats.refused_quota, old.refused_quota),
                TurnDrop::Forbidden => up(stats.refused_forbidden, old.refused_forbidden),
                TurnDrop::NoAllocation => {
                    up(stats.dropped_no_allocation, old.dropped_no_allocation)
                        + up(stats.dropped_no_permission, old.dropped_no_permission)
                        + up(stats.dropped_unexpected, old.dropped_unexpected)
                }
                TurnDrop::QueueFull => {
                    up(stats.dropped_queue_full, old.dropped_queue_full)
                        + up(driver.stream, old_driver.stream)
                }
                TurnDrop::Oversize => up(driver.oversize, old_driver.oversize),
                TurnDrop::SendFailed => up(driver.send, old_driver.send),
            };
            if n > 0 {
                counter.inc_by(n);
            }
        }
        self.last = stats.clone();
        self.last_driver = driver;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_sync_adds_only_the_increase() {
        let before = METRICS.relay_bytes_to_peers.get();
        let mut sync = TurnSync::default();
        let mut stats = TurnStats {
            bytes_to_peers: 100,
            ..TurnStats::default()
        };
        sync.sync(&stats, 1, DriverDrops::default());
        stats.bytes_to_peers = 150;
        sync.sync(&stats, 1, DriverDrops::default());
        sync.sync(&stats, 1, DriverDrops::default());
        // Other tests in this process may relay too: at least our 150 were added.
        assert!(METRICS.relay_bytes_to_peers.get() >= before + 150);
        let text = METRICS.encode();
        assert!(text.contains("p2pnat_rendezvous_relay_bytes_total{direction=\"to_peers\"}"));
        assert!(text.contains("component=\"turn\",reason=\"oversize\""));
    }
}
