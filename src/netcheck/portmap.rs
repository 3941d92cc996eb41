//! Is port mapping available? One NAT-PMP request, one PCP ANNOUNCE (both to the gateway's
//! port 5351) and one unicast SSDP search (port 1900), answers awaited for [`PORTMAP_WAIT`].
//! Nothing answering means "not available": netcheck says so rather than guessing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use p2pnat_proto::netcheck::{
    is_ssdp_answer, nat_pmp_request, parse_port_mapping_answer, pcp_announce_request, ssdp_search,
    PortMappingAnswer, PORT_MAPPING_PORT, SSDP_PORT,
};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// How long answers are awaited.
pub const PORTMAP_WAIT: Duration = Duration::from_millis(500);

/// What answered.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PortMapping {
    /// The gateway asked (`None`: no IPv4 default route, nothing was asked).
    pub gateway: Option<Ipv4Addr>,
    pub nat_pmp: bool,
    pub pcp: bool,
    pub upnp: bool,
    /// The public address a NAT-PMP server reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<Ipv4Addr>,
}

impl PortMapping {
    pub fn available(&self) -> bool {
        self.nat_pmp || self.pcp || self.upnp
    }
}

/// The IPv4 default gateway from the kernel's routing table (`/proc/net/route`), if any.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    gateway_from_route_table(&table)
}

/// Parses `/proc/net/route`: the gateway of the first default route (destination 0, gateway
/// in host byte order as hex; this host is little-endian or big-endian alike because the
/// kernel writes the address's bytes as a native u32).
fn gateway_from_route_table(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 || fields[1] != "00000000" {
            return None;
        }
        let raw = u32::from_str_radix(fields[2], 16).ok()?;
        (raw != 0).then(|| Ipv4Addr::from(raw.to_ne_bytes()))
    })
}

/// Asks `gateway` (never anything else) and waits [`PORTMAP_WAIT`] for answers.
pub async fn probe(gateway: Option<Ipv4Addr>) -> PortMapping {
    let mut found = PortMapping {
        gateway,
        ..PortMapping::default()
    };
    let Some(gateway) = gateway else {
        return found;
    };
    let socket = match UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::debug!("no socket for the port-mapping probe: {e}");
            return found;
        }
    };
    let pmp = SocketAddr::new(gateway.into(), PORT_MAPPING_PORT);
    let ssdp = SocketAddr::new(gateway.into(), SSDP_PORT);
    // PCP wants the client's own address: the one the kernel picks to reach the gateway.
    let client = match socket.connect(pmp).await.and_then(|_| socket.local_addr()) {
        Ok(SocketAddr::V4(local)) => *local.ip(),
        _ => Ipv4Addr::UNSPECIFIED,
    };
    // Unconnect by connecting to nothing is not portable; use a second socket for the rest.
    let other = match UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::debug!("no socket for the port-mapping probe: {e}");
            return found;
        }
    };
    let sends: [(&[u8], SocketAddr); 3] = [
        (&nat_pmp_request(), pmp),
        (&pcp_announce_request(client), pmp),
        (&ssdp_search(ssdp), ssdp),
    ];
    for (bytes, to) in sends {
        if let Err(e) = other.send_to(bytes, to).await {
            tracing::debug!(%to, "port-mapping probe not sent: {e}");
        }
    }
    drop(socket);
    let until = Instant::now() + PORTMAP_WAIT;
    let mut buf = [0u8; 2048];
    while let Ok(received) = tokio::time::timeout_at(until, other.recv_from(&mut buf)).await {
        let Ok((len, from)) = received else { continue };
        if from.ip() != IpAddr::V4(gateway) {
            tracing::debug!(%from, "port-mapping answer from another host dropped");
            continue;
        }
        let datagram = &buf[..len];
        match from.port() {
            PORT_MAPPING_PORT => match parse_port_mapping_answer(datagram) {
                Some(PortMappingAnswer::NatPmp { external }) => {
                    found.nat_pmp = true;
                    found.external = found.external.or(external);
                }
                Some(PortMappingAnswer::Pcp { .. }) => found.pcp = true,
                None => tracing::debug!(%from, "malformed port-mapping answer dropped"),
            },
            _ if is_ssdp_answer(datagram) => found.upnp = true,
            _ => tracing::debug!(%from, "unexpected answer to the port-mapping probe dropped"),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_gives_the_gateway() {
        let gateway = Ipv4Addr::new(192, 168, 1, 1);
        let hex = format!("{:08X}", u32::from_ne_bytes(gateway.octets()));
        let table = format!(
            "Iface\tDestination\tGateway\tFlags\n\
             eth0\t0001A8C0\t00000000\t0001\n\
             eth0\t00000000\t{hex}\t0003\n"
        );
        assert_eq!(gateway_from_route_table(&table), Some(gateway));
        assert_eq!(gateway_from_route_table("Iface\tDestination\n"), None);
        assert_eq!(gateway_from_route_table("header\neth0 00000000 zz\n"), None);
    }
}
