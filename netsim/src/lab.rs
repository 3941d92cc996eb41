//! A running lab: namespaces, links, routers and the processes started in them.
//!
//! A [`Lab`] owns everything it created. Dropping it (normally, on an error path or while a
//! panic unwinds) kills every process inside its namespaces and deletes them; the CLI also
//! tears live labs down on SIGINT/SIGTERM through [`teardown_live_labs`].

use crate::error::{NetsimError, Result};
use crate::netns;
use crate::nft::{self, PortRange, UdpMapping};
use crate::shaper::{Shaper, ShaperParams};
use crate::topology::{
    Attachment, LabPlan, LinkImpairment, NodePlan, Role, RouterConfig, Topology, INTERNET,
};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Directory holding one JSON description per live lab, for `netsim exec` and `netsim down`.
pub const STATE_DIR: &str = "/run/netsim";

/// Namespace prefixes of the labs this process has built and not yet torn down.
static LIVE_LABS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Tears down every lab this process still owns (for signal handlers and panics that do not
/// unwind). Safe to call concurrently with [`Lab`]'s drop: removal is idempotent.
pub fn teardown_live_labs() {
    let prefixes: Vec<String> = match LIVE_LABS.lock() {
        Ok(mut live) => std::mem::take(&mut *live),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    for prefix in prefixes {
        let _ = netns::remove_by_prefix(&prefix);
        let run_id = prefix
            .trim_start_matches(crate::topology::NETNS_PREFIX)
            .trim_end_matches('-');
        let _ = std::fs::remove_file(state_path(run_id));
    }
}

/// Fails with [`NetsimError::MissingTool`] unless the `conntrack` command is installed.
fn require_conntrack() -> Result<()> {
    let found = Command::new("conntrack")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if found {
        Ok(())
    } else {
        Err(NetsimError::MissingTool {
            tool: "conntrack",
            package: "conntrack",
        })
    }
}

/// Path of the state file of a run.
pub fn state_path(run_id: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{run_id}.json"))
}

/// State letter and start time of a process, from /proc/<pid>/stat.
fn process_start(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 overall is the 20th after the command name (state is the 3rd overall).
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// What is persisted about a live lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// Process that built the lab and will tear it down.
    pub owner_pid: u32,
    /// Its start time in clock ticks after boot (field 22 of /proc/<pid>/stat).
    #[serde(default)]
    pub owner_start: Option<u64>,
    /// Scenario name, if the lab came from one.
    pub scenario: Option<String>,
    pub plan: LabPlan,
}

impl LabState {
    /// Reads every state file under [`STATE_DIR`] (unreadable ones are skipped).
    pub fn load_all() -> Vec<LabState> {
        let Ok(entries) = std::fs::read_dir(STATE_DIR) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }

    /// Whether the owning process still runs: it exists, is not a zombie, and started when
    /// the owner did (a recycled pid is not the owner).
    pub fn owner_alive(&self) -> bool {
        match process_start(self.owner_pid) {
            Some((state, start)) => {
                !matches!(state, 'Z' | 'X') && self.owner_start.is_none_or(|s| s == start)
            }
            None => false,
        }
    }
}

/// Builds a [`Lab`]. Every lab has the `rendezvous` host (two public addresses) and the
/// `witness` host (one unrelated public address) on the internet.
#[derive(Debug, Default, Clone)]
pub struct LabBuilder {
    topology: Topology,
    scenario: Option<String>,
    /// Names passed to `impair` that were not in the lab.
    unknown: Vec<String>,
}

impl LabBuilder {
    /// Adds a NAT router.
    pub fn router(mut self, name: &str, config: RouterConfig) -> Self {
        self.topology
            .routers
            .push((name.into(), config, LinkImpairment::default()));
        self
    }
    /// Adds a host with a public address.
    pub fn public_host(mut self, name: &str) -> Self {
        self.topology
            .hosts
            .push((name.into(), Attachment::Internet, LinkImpairment::default()));
        self
    }
    /// Adds a host on the LAN of `router`.
    pub fn host_behind(mut self, name: &str, router: &str) -> Self {
        self.topology.hosts.push((
            name.into(),
            Attachment::Router(router.into()),
            LinkImpairment::default(),
        ));
        self
    }
    /// Impairs the uplink of an already added host or router (an unknown name makes
    /// [`LabBuilder::build`] fail).
    pub fn impair(mut self, name: &str, impairment: LinkImpairment) -> Self {
        let mut found = false;
        for (n, _, link) in &mut self.topology.hosts {
            if n == name {
                *link = impairment;
                found = true;
            }
        }
        for (n, _, link) in &mut self.topology.routers {
            if n == name {
                *link = impairment;
                found = true;
            }
        }
        if !found {
            self.unknown.push(name.to_string());
        }
        self
    }
    /// Puts the userspace shaper on the uplink of `name` even without a delay or rate yet, so
    /// that [`Lab::set_impairment`] can add them while the lab runs.
    pub fn shape(mut self, name: &str) -> Self {
        self.topology.shaped.push(name.into());
        self
    }
    /// Records the scenario name in the lab's state file.
    pub fn scenario(mut self, name: &str) -> Self {
        self.scenario = Some(name.into());
        self
    }
    /// The topology so far.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Creates the lab. Needs root; returns [`NetsimError::NotRoot`] otherwise. On any error
    /// everything created so far is removed before returning.
    pub fn build(self) -> Result<Lab> {
        if let Some(name) = self.unknown.first() {
            return Err(NetsimError::Topology(format!(
                "cannot impair unknown `{name}`"
            )));
        }
        netns::require_root_and_tools()?;
        let run_id = netns::fresh_run_id()?;
        let plan = self.topology.plan(&run_id)?;
        let mut lab = Lab {
            plan,
            shapers: Vec::new(),
            udp_blocked: Mutex::new(Vec::new()),
            rebinds: Mutex::new(Vec::new()),
            torn_down: false,
        };
        LIVE_LABS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(lab.plan.netns_prefix());
        let state = LabState {
            owner_pid: std::process::id(),
            owner_start: process_start(std::process::id()).map(|(_, start)| start),
            scenario: self.scenario,
            plan: lab.plan.clone(),
        };
        lab.write_state(&state)?;
        lab.create()?; // on error `lab` drops here and tears down
        lab.start_shapers()?;
        Ok(lab)
    }
}

/// A live lab. Dropping it removes everything it created.
#[derive(Debug)]
pub struct Lab {
    plan: LabPlan,
    /// (node name, its uplink's shaper), stopped before the namespaces go.
    shapers: Vec<(String, Shaper)>,
    /// (router name, how many times [`Lab::rebind_nat`] has rebound it).
    rebinds: Mutex<Vec<(String, u32)>>,
    /// Routers that drop all UDP now ([`Lab::block_udp`]).
    udp_blocked: Mutex<Vec<String>>,
    torn_down: bool,
}

impl Lab {
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    pub fn plan(&self) -> &LabPlan {
        &self.plan
    }

    pub fn run_id(&self) -> &str {
        &self.plan.run_id
    }

    /// A namespace of the lab by its short name (`alice`, `home`, `rendezvous`, ...).
    pub fn node(&self, name: &str) -> Result<&NodePlan> {
        self.plan.node(name)
    }

    /// The primary address of a host or router.
    pub fn addr(&self, name: &str) -> Result<Ipv4Addr> {
        let node = self.node(name)?;
        node.addrs
            .first()
            .copied()
            .ok_or_else(|| NetsimError::UnknownHost(format!("{name} (has no address)")))
    }

    /// A command that runs `program` inside the namespace of `host` (via `ip netns exec`).
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        let node = self.node(host)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.netns]).arg(program);
        Ok(cmd)
    }

    /// Starts a process inside `host`. It is killed when the lab is torn down at the latest.
    pub fn spawn(&self, host: &str, program: &str, args: &[&str]) -> Result<LabProcess> {
        let mut cmd = self.command(host, program)?;
        cmd.args(args);
        let child = cmd
            .spawn()
            .map_err(|e| NetsimError::io(format!("starting {program} in {host}"), e))?;
        Ok(LabProcess { child })
    }

    /// A UDP socket bound to `bind` inside the namespace of `host`.
    pub fn udp_socket(&self, host: &str, bind: SocketAddr) -> Result<UdpSocket> {
        let netns = self.node(host)?.netns.clone();
        netns::in_netns(&netns, move || UdpSocket::bind(bind))
    }

    /// Removes everything now, reporting errors (dropping does the same but ignores them).
    pub fn teardown(mut self) -> Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        self.shapers.clear();
        let prefix = self.plan.netns_prefix();
        let result = netns::remove_by_prefix(&prefix).map(|_| ());
        let _ = std::fs::remove_file(state_path(&self.plan.run_id));
        LIVE_LABS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| p != &prefix);
        result
    }

    fn start_shapers(&mut self) -> Result<()> {
        for node in &self.plan.nodes {
            let Some(up) = &node.uplink else { continue };
            let Some(shaper) = &up.shaper else { continue };
            let params = Arc::new(ShaperParams::default());
            params.set(
                Duration::from_millis(u64::from(up.impairment.delay_ms)),
                up.impairment.rate_kbit,
            );
            let netns = &self.plan.node(shaper)?.netns;
            self.shapers
                .push((node.name.clone(), Shaper::start(netns, params)?));
        }
        Ok(())
    }

    /// Changes the impairment of the uplink of `name` while the lab runs. Loss can always
    /// change; delay and rate need the shaper, present when the link had a delay or rate at
    /// build time or was named in [`LabBuilder::shape`].
    pub fn set_impairment(&self, name: &str, impairment: LinkImpairment) -> Result<()> {
        let node = self.node(name)?;
        let up = node
            .uplink
            .as_ref()
            .ok_or_else(|| NetsimError::Topology(format!("`{name}` has no uplink to impair")))?;
        match self.shapers.iter().find(|(n, _)| n == name) {
            Some((_, shaper)) => shaper.params.set(
                Duration::from_millis(u64::from(impairment.delay_ms)),
                impairment.rate_kbit,
            ),
            None if impairment.needs_shaper() => {
                return Err(NetsimError::Topology(format!(
                    "the uplink of `{name}` has no shaper; give it one with LabBuilder::shape or a delay at build time"
                )))
            }
            None => {}
        }
        let upstream_ns = &self.node(&up.upstream)?.netns;
        let table = format!("netsim_link_{}", up.port);
        // Replace the loss table (it may not exist yet).
        let _ = netns::run(
            "ip",
            &[
                "netns",
                "exec",
                upstream_ns,
                "nft",
                "delete",
                "table",
                "netdev",
                &table,
            ],
            None,
        );
        if let Some(rules) = nft::impairment_ruleset(&up.port, &impairment) {
            netns::nft_load(upstream_ns, &rules)?;
        }
        Ok(())
    }

    /// Rebinds the NAT of `router`, as a home router does when it reboots or its mappings
    /// time out under a live flow: it forgets every UDP mapping and maps the next datagram of
    /// each flow to a new public port. In one nftables transaction the router's UDP
    /// masquerade moves to a port range that excludes every port it used before
    /// ([`PortRange::for_rebind`]) and its full/restricted-cone state is emptied; then its
    /// UDP conntrack entries (the mappings) are deleted. The NAT keeps its kind: Linux reuses
    /// an inside endpoint's existing mapping for new destinations, so mapping stays
    /// endpoint-independent (see `tests/lab_nat.rs`). Returns the new port range. Needs the
    /// `conntrack` command.
    pub fn rebind_nat(&self, router: &str) -> Result<PortRange> {
        let node = self.node(router)?;
        let plan = node
            .router
            .as_ref()
            .ok_or_else(|| NetsimError::Topology(format!("`{router}` is not a router")))?;
        require_conntrack()?;
        let generation = {
            let mut rebinds = self.rebinds.lock().unwrap_or_else(|p| p.into_inner());
            match rebinds.iter_mut().find(|(n, _)| n == router) {
                Some((_, g)) => {
                    *g += 1;
                    *g
                }
                None => {
                    rebinds.push((router.to_string(), 1));
                    1
                }
            }
        };
        let ports = PortRange::for_rebind(generation);
        netns::nft_load(&node.netns, &nft::rebind_script(plan, ports))?;
        // `conntrack -D` exits 1 when there was nothing to delete; only a missing namespace
        // or a broken tool is an error, and `require_conntrack` ruled out the latter.
        let out = Command::new("ip")
            .args(["netns", "exec", &node.netns, "conntrack", "-D", "-p", "udp"])
            .output()
            .map_err(|e| NetsimError::io("running conntrack -D", e))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !stderr.contains("flow entries have been deleted") {
            return Err(NetsimError::Command {
                command: format!("conntrack -D -p udp in {}", node.netns),
                stderr: stderr.trim().to_string(),
            });
        }
        Ok(ports)
    }

    /// Moves host `host` (behind a router) to address `new` on its LAN, as when its DHCP
    /// lease changes or it moves to another network: `new` is added, the old primary address
    /// deleted (with `promote_secondaries` on, so `new` keeps the subnet route) and the
    /// default route put back. Sockets bound to 0.0.0.0 then send from `new`, and the
    /// router's NAT gives those datagrams new mappings. The lab's plan still names the old
    /// address. Returns the old address.
    pub fn move_host_address(&self, host: &str, new: Ipv4Addr) -> Result<Ipv4Addr> {
        let node = self.node(host)?;
        let old = self.addr(host)?;
        let up = node
            .uplink
            .as_ref()
            .filter(|u| u.gateway.is_some())
            .ok_or_else(|| NetsimError::Topology(format!("`{host}` is not behind a router")))?;
        let gw = up.gateway.expect("filtered");
        netns::set_sysctls(
            &node.netns,
            &[(
                &*format!("net/ipv4/conf/{}/promote_secondaries", up.interface),
                "1".to_string(),
            )],
        )?;
        let (dev, len) = (&up.interface, up.prefix_len);
        netns::ip_batch(
            Some(&node.netns),
            &[
                format!("addr add {new}/{len} dev {dev}"),
                format!("addr del {old}/{len} dev {dev}"),
                format!("route replace default via {gw} dev {dev}"),
            ],
        )?;
        Ok(old)
    }

    /// Drops forwarded UDP between `router`'s WAN side and `remote`, both ways
    /// ([`nft::cut_ruleset`]): a direct path between two NATs dies while traffic to every
    /// other address (the rendezvous, the relay) still flows. [`Lab::restore_udp`] undoes it.
    pub fn cut_udp(&self, router: &str, remote: Ipv4Addr) -> Result<()> {
        let node = self.node(router)?;
        if node.router.is_none() {
            return Err(NetsimError::Topology(format!("`{router}` is not a router")));
        }
        netns::nft_load(&node.netns, &nft::cut_ruleset(remote))
    }

    /// Makes `router` drop every UDP datagram it forwards, until [`Lab::restore_udp`].
    pub fn block_udp(&self, router: &str) -> Result<()> {
        let node = self.node(router)?;
        if node.router.is_none() {
            return Err(NetsimError::Topology(format!("`{router}` is not a router")));
        }
        netns::nft_load(&node.netns, &nft::block_udp_ruleset())?;
        self.udp_blocked
            .lock()
            .expect("blocked lock")
            .push(router.to_string());
        Ok(())
    }

    /// Whether UDP between `host` and the internet is blocked now: by a router of the plan
    /// that blocks UDP, or by [`Lab::block_udp`] on a router in front of it.
    pub fn udp_blocked(&self, host: &str) -> Result<bool> {
        let plan = self.plan();
        let mut node = plan.node(host)?;
        if plan.expected_behaviour(node).is_none() {
            return Ok(true);
        }
        let blocked = self.udp_blocked.lock().expect("blocked lock");
        while let Some(router) = plan.router_of(node) {
            if blocked.contains(&router.name) {
                return Ok(true);
            }
            node = router;
        }
        Ok(false)
    }

    /// Removes what [`Lab::cut_udp`] or [`Lab::block_udp`] added to `router`.
    pub fn restore_udp(&self, router: &str) -> Result<()> {
        self.udp_blocked
            .lock()
            .expect("blocked lock")
            .retain(|b| b != router);
        let node = self.node(router)?;
        netns::run(
            "ip",
            &[
                "netns",
                "exec",
                &node.netns,
                "nft",
                "delete",
                "table",
                "ip",
                nft::CUT_TABLE,
            ],
            None,
        )
        .map(|_| ())
    }

    /// The UDP mappings a router's conntrack holds now (`conntrack -L -p udp`).
    pub fn udp_mappings(&self, router: &str) -> Result<Vec<UdpMapping>> {
        let node = self.node(router)?;
        if node.router.is_none() {
            return Err(NetsimError::Topology(format!("`{router}` is not a router")));
        }
        require_conntrack()?;
        let out = netns::run(
            "ip",
            &["netns", "exec", &node.netns, "conntrack", "-L", "-p", "udp"],
            None,
        )?;
        Ok(nft::parse_conntrack_udp(&out))
    }

    fn write_state(&self, state: &LabState) -> Result<()> {
        std::fs::create_dir_all(STATE_DIR)
            .map_err(|e| NetsimError::io(format!("creating {STATE_DIR}"), e))?;
        let json = serde_json::to_vec_pretty(state).map_err(|e| NetsimError::Format {
            context: "serialising lab state".into(),
            message: e.to_string(),
        })?;
        let path = state_path(&self.plan.run_id);
        std::fs::write(&path, json)
            .map_err(|e| NetsimError::io(format!("writing {}", path.display()), e))
    }

    /// Creates namespaces, links, addresses, routes, sysctls and rulesets, in that order.
    fn create(&self) -> Result<()> {
        let nodes = &self.plan.nodes;
        let netns_of = |name: &str| -> &str {
            &nodes
                .iter()
                .find(|n| n.name == name)
                .expect("plan invariant: uplinks name nodes")
                .netns
        };
        let add_ns: Vec<String> = nodes
            .iter()
            .map(|n| format!("netns add {}", n.netns))
            .collect();
        netns::ip_batch(None, &add_ns)?;

        for node in nodes {
            let mut sysctls = vec![
                ("net/ipv6/conf/all/disable_ipv6", "1".to_string()),
                ("net/ipv6/conf/default/disable_ipv6", "1".to_string()),
            ];
            if let Some(router) = &node.router {
                sysctls.push(("net/ipv4/ip_forward", "1".into()));
                sysctls.push(("net/ipv4/conf/all/rp_filter", "0".into()));
                sysctls.push(("net/ipv4/conf/default/rp_filter", "0".into()));
                if let Some(t) = router.config.udp_timeout {
                    let secs = t.as_secs().max(1).to_string();
                    sysctls.push(("net/netfilter/nf_conntrack_udp_timeout", secs.clone()));
                    sysctls.push(("net/netfilter/nf_conntrack_udp_timeout_stream", secs));
                }
            }
            netns::set_sysctls(&node.netns, &sysctls)?;
        }

        // Loopback and bridges, one `ip` per namespace.
        for node in nodes {
            let mut ip = vec!["link set lo up".to_string()];
            match node.role {
                Role::Internet => {
                    ip.push("link add name br0 type bridge".into());
                    ip.push("link set br0 up".into());
                }
                Role::Router => {
                    let r = node.router.as_ref().expect("routers have a router plan");
                    ip.push("link add name lan0 type bridge".into());
                    ip.push(format!(
                        "addr add {}/{} dev lan0",
                        r.lan_addr, r.lan_prefix_len
                    ));
                    ip.push("link set lan0 up".into());
                }
                _ => {}
            }
            netns::ip_batch(Some(&node.netns), &ip)?;
        }

        // Veth pairs, created from the upstream namespace straight into the member's (or
        // into the shaper's, which gets a second pair to the member).
        for upstream in nodes {
            let ip: Vec<String> = nodes
                .iter()
                .filter_map(|n| n.uplink.as_ref().map(|up| (n, up)))
                .filter(|(_, up)| up.upstream == upstream.name)
                .flat_map(|(member, up)| {
                    let (peer_name, peer_ns) = match &up.shaper {
                        Some(shaper) => ("a1", netns_of(shaper)),
                        None => (up.interface.as_str(), member.netns.as_str()),
                    };
                    let mut commands = vec![
                        format!(
                            "link add name {} type veth peer name {peer_name} netns {peer_ns}",
                            up.port
                        ),
                        format!("link set {} master {} up", up.port, up.bridge),
                    ];
                    // A hairpinning router loops a host's datagram to its own public mapping
                    // back to it: with br_netfilter the DNATed frame is bridged back out of
                    // the port it came in on, which a bridge port does only in hairpin mode.
                    let hairpin = upstream.router.as_ref().is_some_and(|r| r.config.hairpin);
                    if hairpin {
                        commands.push(format!("link set {} type bridge_slave hairpin on", up.port));
                    }
                    commands
                })
                .collect();
            netns::ip_batch(Some(&upstream.netns), &ip)?;
        }
        for member in nodes {
            let Some(shaper) = member
                .uplink
                .as_ref()
                .and_then(|u| u.shaper.as_ref().map(|s| (u, s)))
            else {
                continue;
            };
            let (up, shaper) = shaper;
            let ip = vec![
                format!(
                    "link add name a0 type veth peer name {} netns {}",
                    up.interface, member.netns
                ),
                "link set a0 up".to_string(),
                "link set a1 up".to_string(),
            ];
            netns::ip_batch(Some(netns_of(shaper)), &ip)?;
        }

        // Addresses and routes.
        for node in nodes {
            let Some(up) = &node.uplink else { continue };
            let mut ip: Vec<String> = node
                .addrs
                .iter()
                .map(|a| format!("addr add {a}/{} dev {}", up.prefix_len, up.interface))
                .collect();
            ip.push(format!("link set {} up", up.interface));
            ip.push(match up.gateway {
                Some(gw) => format!("route add default via {gw}"),
                None => format!("route add default dev {}", up.interface),
            });
            netns::ip_batch(Some(&node.netns), &ip)?;
        }

        for node in nodes {
            if let Some(router) = &node.router {
                netns::nft_load(&node.netns, &nft::router_ruleset(router))?;
            }
            if let Some(up) = &node.uplink {
                if let Some(rules) = nft::impairment_ruleset(&up.port, &up.impairment) {
                    netns::nft_load(netns_of(&up.upstream), &rules)?;
                }
            }
        }
        debug_assert_eq!(nodes[0].name, INTERNET);
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown_inner() {
            eprintln!("netsim: teardown of lab {} failed: {e}", self.plan.run_id);
        }
    }
}

/// A process started inside the lab; killed (and reaped) when dropped.
#[derive(Debug)]
pub struct LabProcess {
    pub child: Child,
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(owner_pid: u32, owner_start: Option<u64>) -> LabState {
        LabState {
            owner_pid,
            owner_start,
            scenario: None,
            plan: LabPlan {
                run_id: "test".into(),
                nodes: vec![],
            },
        }
    }

    #[test]
    fn owner_liveness_follows_pid_and_start_time() {
        let me = std::process::id();
        let (_, start) = process_start(me).expect("own /proc entry");
        assert!(state(me, Some(start)).owner_alive());
        assert!(state(me, None).owner_alive());
        assert!(!state(me, Some(start + 1)).owner_alive(), "recycled pid");
        assert!(!state(u32::MAX - 1, None).owner_alive(), "no such process");
    }
}
