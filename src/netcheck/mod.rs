//! `p2p-node netcheck`: what this host's network looks like from the rendezvous, in the manner
//! of Tailscale's netcheck. Every probe uses a fresh socket of its own and a throw-away
//! identity, so a node running beside it is not disturbed.
//!
//! How each field is found (docs/PROTOCOL.md section 4 for the rendezvous's side):
//! - `udp`, `ipv4`, `rendezvous_udp.rtt_ms`: a STUN Binding round trip to the rendezvous.
//! - `ipv6`: the same to the rendezvous's IPv6 address, when its name has one.
//! - `registration`: a registration over QUIC (over the TLS port when UDP did not answer),
//!   which tells the STUN alternates, the inbound probe and the relay offered.
//! - `mapping`: the node's own NAT detection ([`p2pnat_proto::nat::NatProbe`]) from a fresh
//!   socket to the rendezvous and each alternate.
//! - `hairpinning`: a datagram from a second socket to that socket's public address arrives
//!   or not.
//! - `filtering`: pokes from the rendezvous's inbound probe before and after the socket sent to
//!   the probe's IP ([`p2pnat_proto::netcheck`]).
//! - `rendezvous_tls`: TCP connect and TLS handshake to the TLS port.
//! - `relay`: a TURN allocation over UDP with the offered credentials, released at once.
//! - `port_mapping`: NAT-PMP, PCP and UPnP (SSDP) asked at the default gateway.

mod human;
pub mod portmap;
pub mod services;
pub mod udp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use p2pnat_proto::nat::NatBehaviour;
use p2pnat_proto::netcheck::{classify_filtering, nat_type_name, FilteringBehaviour};
use serde::Serialize;

use crate::node::rendezvous_client::RendezvousTarget;
use crate::node::rendezvous_session::DEFAULT_TLS_PORT;
use udp::{fresh_socket, random_transaction, Probe};

/// `p2p-node netcheck` options (the rendezvous is the global `--rendezvous`).
#[derive(Debug, Clone, clap::Args)]
pub struct NetcheckArgs {
    /// Print the report as one JSON object (for programs) instead of text.
    #[arg(long)]
    pub json: bool,
    /// The rendezvous's TLS port, `host:port` [default: the rendezvous's host, port 443].
    #[arg(long = "tls")]
    pub tls: Option<String>,
    /// Gateway to ask for port mapping (NAT-PMP, PCP, UPnP) [default: the IPv4 default route's].
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
    /// Do not ask any gateway about port mapping.
    #[arg(long, conflicts_with = "gateway")]
    pub no_portmap: bool,
}

/// Why netcheck could not run at all (anything it can measure becomes part of the report).
#[derive(Debug, thiserror::Error)]
pub enum NetcheckError {
    #[error("cannot resolve the rendezvous {address}: {reason}")]
    Resolve { address: String, reason: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// One round trip to the rendezvous: the handshake and one request.
#[derive(Debug, Clone, Serialize)]
pub struct Rtt {
    pub handshake_ms: f64,
    pub request_ms: f64,
}

/// A STUN address of the rendezvous and what it answered.
#[derive(Debug, Clone, Serialize)]
pub struct StunServer {
    pub address: SocketAddr,
    pub mapped: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UdpCheck {
    pub address: SocketAddr,
    pub reachable: bool,
    pub rtt_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    /// `udp` (QUIC) or `tls`.
    pub over: &'static str,
    pub observed: SocketAddr,
    #[serde(flatten)]
    pub rtt: Rtt,
    pub relay_offered: bool,
    pub inbound_probe: Option<SocketAddr>,
}

/// Everything netcheck found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rendezvous: String,
    /// The rendezvous answered at all (UDP, or its TLS port): the exit status is 0 then.
    pub reachable: bool,
    /// UDP works to the rendezvous.
    pub udp: bool,
    /// Public IPv4 address and port (of a fresh socket) as the rendezvous saw it.
    pub ipv4: Option<SocketAddr>,
    pub ipv6: Option<SocketAddr>,
    pub mapping: &'static str,
    pub filtering: &'static str,
    /// A one-word-ish summary ("port-restricted cone", "symmetric", "no NAT, open").
    pub nat_type: &'static str,
    pub hairpinning: Option<bool>,
    pub rendezvous_udp: UdpCheck,
    pub stun_servers: Vec<StunServer>,
    pub registration: Option<Registration>,
    pub rendezvous_tls: services::TlsCheck,
    pub relay: Option<services::RelayCheck>,
    pub port_mapping: portmap::PortMapping,
    pub port_mapping_available: bool,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

async fn resolve(address: &str) -> Result<Vec<SocketAddr>, NetcheckError> {
    let found = tokio::net::lookup_host(address)
        .await
        .map_err(|e| NetcheckError::Resolve {
            address: address.to_string(),
            reason: e.to_string(),
        })?;
    Ok(found.collect())
}

/// This host's IPv4 addresses with `port`: a mapped address among them means no NAT.
fn local_addresses(port: u16) -> Vec<SocketAddr> {
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|interface| interface.ip())
        .filter(IpAddr::is_ipv4)
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// A STUN round trip from a fresh socket: (mapped, rtt).
async fn stun_once(server: SocketAddr) -> Option<(SocketAddr, Duration)> {
    let socket = fresh_socket(server.ip()).await.ok()?;
    Probe::new(socket, None)
        .exchange(server, random_transaction())
        .await
}

/// Runs every probe against `target` and gathers the report.
pub async fn run(target: &RendezvousTarget, args: &NetcheckArgs) -> Result<Report, NetcheckError> {
    let found = resolve(&target.address).await?;
    let udp_addr = found
        .iter()
        .copied()
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| NetcheckError::Resolve {
            address: target.address.clone(),
            reason: "no IPv4 address".into(),
        })?;
    let v6_addr = found.iter().copied().find(SocketAddr::is_ipv6);
    let tls_addr =
        match &args.tls {
            Some(address) => resolve(address).await?.into_iter().next().ok_or_else(|| {
                NetcheckError::Resolve {
                    address: address.clone(),
                    reason: "no address".into(),
                }
            })?,
            None => SocketAddr::new(udp_addr.ip(), DEFAULT_TLS_PORT),
        };
    let gateway = if args.no_portmap {
        None
    } else {
        args.gateway.or_else(portmap::default_gateway)
    };
    let mut notes = Vec::new();

    let (main, tls, port_mapping, v6) = tokio::join!(
        stun_once(udp_addr),
        services::check_tls(tls_addr, target.pinned),
        portmap::probe(gateway),
        async {
            match v6_addr {
                Some(addr) => stun_once(addr).await,
                None => None,
            }
        },
    );
    if v6_addr.is_none() {
        notes.push("IPv6 not checked: the rendezvous's name has no IPv6 address".into());
    }
    if args.no_portmap {
        notes.push("port mapping not checked (--no-portmap)".into());
    } else if gateway.is_none() {
        notes.push("port mapping not checked: no IPv4 default gateway".into());
    }
    let udp = main.is_some();
    let offered = if udp || tls.reachable {
        match services::register(target.pinned, udp_addr, tls_addr, udp).await {
            Ok(offered) => Some(offered),
            Err(e) => {
                notes.push(format!("registration: {e}"));
                None
            }
        }
    } else {
        None
    };

    let mut servers = vec![udp_addr];
    let mut mapping = None;
    let mut filtering = FilteringBehaviour::Unknown;
    let mut relay = None;
    if let (true, Some(offered)) = (udp, &offered) {
        servers.extend(&offered.stun_alternates);
        let alternate = offered.inbound_probe.and_then(|probe| {
            offered
                .stun_alternates
                .iter()
                .copied()
                .find(|a| a.ip() == probe.ip())
        });
        let mapping_probe = async {
            let socket = fresh_socket(udp_addr.ip()).await?;
            let local = local_addresses(socket.local_addr()?.port());
            let mut probe = Probe::new(socket, None);
            Ok::<_, std::io::Error>(udp::mapping(&mut probe, local, &servers).await)
        };
        let filtering_probe = async {
            if offered.inbound_probe.is_none() {
                return Ok(Default::default());
            }
            let socket = fresh_socket(udp_addr.ip()).await?;
            let mut probe = Probe::new(socket, offered.inbound_probe);
            Ok::<_, std::io::Error>(udp::filtering(&mut probe, udp_addr, alternate).await)
        };
        let relay_probe = async {
            match &offered.turn {
                Some((server, username, password)) => {
                    Some(services::check_relay(*server, username.clone(), password.clone()).await)
                }
                None => None,
            }
        };
        let (m, f, r) = tokio::join!(mapping_probe, filtering_probe, relay_probe);
        mapping = Some(m?);
        filtering = classify_filtering(f?);
        relay = r;
        if offered.stun_alternates.is_empty() {
            notes.push(
                "mapping unknown: the rendezvous offers no alternate STUN address (--stun-listen)"
                    .into(),
            );
        }
        if offered.inbound_probe.is_none() {
            notes.push("filtering unknown: the rendezvous has no inbound probe (it needs a --stun-listen address)".into());
        }
        if offered.turn.is_none() {
            notes.push("relay not checked: the rendezvous offers none".into());
        }
    } else if offered.is_some() {
        notes.push("UDP does not reach the rendezvous: mapping, filtering, hairpinning and the relay over UDP not measured".into());
    }
    let behaviour = mapping
        .as_ref()
        .map_or(NatBehaviour::Unknown, |m| m.behaviour);
    let port_mapping_available = port_mapping.available();
    Ok(Report {
        rendezvous: target.address.clone(),
        reachable: udp || tls.reachable || offered.is_some(),
        udp,
        ipv4: main.map(|(mapped, _)| mapped),
        ipv6: v6.map(|(mapped, _)| mapped),
        mapping: behaviour.as_str(),
        filtering: filtering.as_str(),
        nat_type: nat_type_name(behaviour, filtering),
        hairpinning: mapping.as_ref().and_then(|m| m.hairpin),
        rendezvous_udp: UdpCheck {
            address: udp_addr,
            reachable: udp,
            rtt_ms: main.map(|(_, rtt)| millis(rtt)),
        },
        stun_servers: mapping
            .map(|m| {
                m.answers
                    .into_iter()
                    .map(|(address, mapped)| StunServer { address, mapped })
                    .collect()
            })
            .unwrap_or_default(),
        registration: offered.map(|o| Registration {
            over: o.over,
            observed: o.observed,
            rtt: services::registration_rtt(&o),
            relay_offered: o.turn.is_some(),
            inbound_probe: o.inbound_probe,
        }),
        rendezvous_tls: tls,
        relay,
        port_mapping,
        port_mapping_available,
        notes,
    })
}

/// The subcommand: runs, prints, and returns 0 when the rendezvous could be reached at all.
pub fn main(target: &RendezvousTarget, args: &NetcheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("p2p-node netcheck: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(target, args));
    runtime.shutdown_timeout(Duration::from_millis(100));
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("p2p-node netcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("p2p-node netcheck: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", human::render(&report));
    }
    if report.reachable {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
