//! `rendezvous-load`: the rendezvous at 10k and 100k registered peers (scripts/bench.sh).
//!
//! For each peer count P it starts a fresh `p2p-rendezvous` on loopback (per-IP admission and
//! connection limits lifted with its own flags: every simulated peer comes from 127.0.0.1), then
//! registers P peers exactly as nodes do: one QUIC connection per peer with its own ed25519
//! identity (ALPN `p2pnat-rendezvous/1`), one `Register` request on a bidirectional stream, and
//! the connection kept open (a registration lives as long as its connection). Then `Lookup`s of
//! random registered peers from 64 of those connections. Measured: registrations/s and lookups/s
//! (wall clock), the rendezvous's CPU (user+system from /proc, in cores busy and µs per
//! request) and RSS (VmRSS with all P registered, VmHWM at the end). The generator shares the
//! machine's cores with the rendezvous: the rates are lower bounds.
//!
//! ```text
//! rendezvous-load --rendezvous BIN [--peers 10000,100000] [--concurrency 8]
//!                 [--lookup-seconds 5] [--out FILE.json]
//! ```
//! 8 registrations in flight by default: more made the rate fall (1,000 peers: 1,223/s with 4
//! in flight, 586/s with 64, 402/s with 256, the rendezvous's CPU falling with it), which looks
//! like handshake datagrams dropped and retransmitted after quinn's 333 ms initial RTT estimate.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2pnat::identity::Identity;
use p2pnat::tls;
use p2pnat_proto::control::{self, Request, Response, MAX_CONTROL_MESSAGE};
use p2pnat_proto::nat::NatReport;
use p2pnat_proto::PeerId;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    rendezvous: String,
    peers: Vec<usize>,
    concurrency: usize,
    lookup_seconds: f64,
    out: Option<String>,
}

fn parse() -> Options {
    let mut o = Options {
        rendezvous: String::new(),
        peers: vec![10_000, 100_000],
        concurrency: 8,
        lookup_seconds: 5.0,
        out: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--rendezvous" => o.rendezvous = value,
            "--peers" => {
                o.peers = value
                    .split(',')
                    .filter_map(|v| v.trim().parse().ok())
                    .collect()
            }
            "--concurrency" => o.concurrency = value.parse().unwrap_or(8),
            "--lookup-seconds" => o.lookup_seconds = value.parse().unwrap_or(5.0),
            "--out" => o.out = Some(value),
            _ => {
                eprintln!("rendezvous-load: unknown argument {arg}");
                std::process::exit(2);
            }
        }
    }
    if o.rendezvous.is_empty() {
        eprintln!("usage: rendezvous-load --rendezvous BIN [--peers 10000,100000] [--concurrency N] [--lookup-seconds S] [--out FILE]");
        std::process::exit(2);
    }
    o
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

struct Rendezvous {
    child: Child,
    addr: SocketAddr,
    _dir: std::path::PathBuf,
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn start_rendezvous(bin: &str, peers: usize) -> Result<Rendezvous, BoxError> {
    let dir = std::env::temp_dir().join(format!("rendezvous-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let room = (peers * 2).to_string();
    let mut child = Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--turn-listen",
            "127.0.0.1:0",
            "--no-tls",
        ])
        .arg("--identity")
        .arg(dir.join("rendezvous.key"))
        .args(["--max-registrations", &room, "--max-connections", &room])
        // Every simulated peer comes from 127.0.0.1: lift the per-IP admission limit.
        .args([
            "--new-per-ip-burst",
            "4000000000",
            "--new-per-ip-interval-ms",
            "1",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let addr = line
        .strip_prefix("listening ")
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| format!("rendezvous said {line:?}"))?
        .parse()?;
    Ok(Rendezvous {
        child,
        addr,
        _dir: dir,
    })
}

async fn request(connection: &quinn::Connection, request: &Request) -> Result<Response, BoxError> {
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(&control::encode(request)).await?;
    send.finish()?;
    let bytes = recv.read_to_end(MAX_CONTROL_MESSAGE).await?;
    Ok(control::decode::<Response>(&bytes)?)
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Under the rendezvous's 30 s idle timeout, and as rare as that allows: 100k connections
    // with 5 s keep-alives were more than the generator could drive (2026-11-30).
    t.keep_alive_interval(Some(Duration::from_secs(20)));
    t.max_idle_timeout(Some(Duration::from_secs(60).try_into().expect("idle")));
    Arc::new(t)
}

async fn register(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    config: quinn::ClientConfig,
) -> Result<quinn::Connection, BoxError> {
    let connection = endpoint
        .connect_with(config, addr, tls::UNPINNED_SERVER_NAME)?
        .await?;
    let local = endpoint.local_addr()?;
    match request(
        &connection,
        &Request::Register {
            local_addrs: vec![local],
            nat: NatReport::UNKNOWN,
            relayed: None,
        },
    )
    .await?
    {
        Response::Registered { .. } => Ok(connection),
        other => Err(format!("registration answered {other:?}").into()),
    }
}

async fn one_count(o: &Options, peers: usize) -> Result<serde_json::Value, BoxError> {
    let rendezvous = start_rendezvous(&o.rendezvous, peers)?;
    let pid = rendezvous.child.id();
    let addr = rendezvous.addr;
    // Identities and their TLS configurations first (not timed: a node has its key already).
    eprintln!("rendezvous-load: {peers} peers: making identities");
    let transport = transport();
    let mut configs = Vec::with_capacity(peers);
    let mut ids = Vec::with_capacity(peers);
    for _ in 0..peers {
        let identity = Identity::generate()?;
        let mut config =
            quinn::ClientConfig::new(tls::client_crypto(&identity, tls::ALPN_RENDEZVOUS, true)?);
        config.transport_config(transport.clone());
        ids.push(identity.peer_id());
        configs.push(config);
    }
    // A few client endpoints (sockets), as the peers would be many machines.
    let endpoints: Vec<quinn::Endpoint> = (0..8)
        .map(|_| quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")))
        .collect::<Result<_, _>>()?;
    let rss_before = status_mib(pid, "VmRSS:");
    eprintln!("rendezvous-load: {peers} peers: registering");
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let failures = Arc::new(AtomicU64::new(0));
    let queue = Arc::new(std::sync::Mutex::new(
        configs.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let mut workers = Vec::new();
    for w in 0..o.concurrency {
        let endpoint = endpoints[w % endpoints.len()].clone();
        let queue = queue.clone();
        let failures = failures.clone();
        workers.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            loop {
                let next = queue.lock().expect("queue").pop();
                let Some((_, config)) = next else { break };
                match register(&endpoint, addr, config).await {
                    Ok(c) => kept.push(c),
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("rendezvous-load: registration failed: {e}");
                        }
                    }
                }
            }
            kept
        }));
    }
    let mut connections = Vec::with_capacity(peers);
    for w in workers {
        connections.extend(w.await?);
    }
    let reg_secs = start.elapsed().as_secs_f64();
    let reg_cpu = cpu_seconds(pid) - cpu0;
    let registered = connections.len();
    // Settle, then the resident memory with every peer registered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_registered = status_mib(pid, "VmRSS:");
    eprintln!(
        "rendezvous-load: {peers} peers: {registered} registered in {reg_secs:.1} s; lookups"
    );
    // Lookups from 64 registered connections, for lookup_seconds.
    let lookups = Arc::new(AtomicU64::new(0));
    let not_found = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(ids);
    let deadline = Instant::now() + Duration::from_secs_f64(o.lookup_seconds);
    let cpu1 = cpu_seconds(pid);
    let start = Instant::now();
    let mut workers = Vec::new();
    for (i, connection) in connections.iter().take(64).enumerate() {
        let connection = connection.clone();
        let (lookups, not_found, ids) = (lookups.clone(), not_found.clone(), ids.clone());
        let per_connection = (o.concurrency / 64).max(1);
        for j in 0..per_connection {
            let connection = connection.clone();
            let (lookups, not_found, ids) = (lookups.clone(), not_found.clone(), ids.clone());
            workers.push(tokio::spawn(async move {
                let mut k = (i * 7919 + j * 104729) % ids.len();
                while Instant::now() < deadline {
                    k = (k + 7919) % ids.len();
                    let peer: PeerId = ids[k];
                    match request(&connection, &Request::Lookup { peer }).await {
                        Ok(Response::Found { .. }) => {
                            lookups.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {
                            not_found.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
    }
    for w in workers {
        let _ = w.await;
    }
    let lookup_secs = start.elapsed().as_secs_f64();
    let lookup_cpu = cpu_seconds(pid) - cpu1;
    let found = lookups.load(Ordering::Relaxed);
    let hwm = status_mib(pid, "VmHWM:");
    for e in &endpoints {
        e.close(0u32.into(), b"done");
    }
    drop(connections);
    let result = serde_json::json!({
        "peers": peers,
        "registered": registered,
        "registration_failures": failures.load(Ordering::Relaxed),
        "registration_seconds": reg_secs,
        "registrations_per_s": registered as f64 / reg_secs,
        "registration_cpu_cores": reg_cpu / reg_secs,
        "registration_cpu_us_each": reg_cpu * 1e6 / registered.max(1) as f64,
        "lookups": found,
        "lookups_not_found": not_found.load(Ordering::Relaxed),
        "lookups_per_s": found as f64 / lookup_secs,
        "lookup_cpu_cores": lookup_cpu / lookup_secs,
        "lookup_cpu_us_each": lookup_cpu * 1e6 / found.max(1) as f64,
        "rss_idle_mib": rss_before,
        "rss_registered_mib": rss_registered,
        "rss_peak_mib": hwm,
    });
    eprintln!("rendezvous-load: {result}");
    drop(rendezvous);
    Ok(result)
}

fn markdown(results: &[serde_json::Value]) -> String {
    let mut md = String::from("## Rendezvous under load (`rendezvous-load`)\n\nOne QUIC connection and one `Register` per simulated peer (own identity each, as a node registers), kept open; then `Lookup`s of random registered peers from 64 of them. The generator runs on the same 2 cores as the rendezvous. CPU is the rendezvous's user+system time over the phase.\n\n| registered peers | registrations/s | rendezvous CPU (cores, us each) | lookups/s | rendezvous CPU (cores, us each) | RSS registered | RSS peak |\n|---|---|---|---|---|---|---|\n");
    for r in results {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        md.push_str(&format!(
            "| {} of {} | {:.0} | {:.2}, {:.0} | {:.0} | {:.2}, {:.1} | {:.1} MiB | {:.1} MiB |\n",
            r["registered"],
            r["peers"],
            f("registrations_per_s"),
            f("registration_cpu_cores"),
            f("registration_cpu_us_each"),
            f("lookups_per_s"),
            f("lookup_cpu_cores"),
            f("lookup_cpu_us_each"),
            f("rss_registered_mib"),
            f("rss_peak_mib"),
        ));
    }
    if let Some(r) = results.iter().find(|r| r["peers"] == 100_000) {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        md.push_str("\n| rendezvous target (100k peers) | measured | status |\n|---|---|---|\n");
        for (what, v, goal, higher) in [
            ("RSS <= 200 MB", f("rss_peak_mib") * 1.048576, 200.0, false),
            (
                "registrations/s >= 20k",
                f("registrations_per_s"),
                20_000.0,
                true,
            ),
            ("lookups/s >= 50k", f("lookups_per_s"), 50_000.0, true),
        ] {
            let met = if higher { v >= goal } else { v <= goal };
            md.push_str(&format!(
                "| {what} | {v:.0} | {} |\n",
                if met { "met" } else { "not met" }
            ));
        }
    }
    md.push_str(&format!(
        "\nCommand: `{}`\n",
        std::env::args().collect::<Vec<_>>().join(" ")
    ));
    md
}

fn main() {
    let o = parse();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut results = Vec::new();
    for &peers in &o.peers {
        match runtime.block_on(one_count(&o, peers)) {
            Ok(r) => results.push(r),
            Err(e) => eprintln!("rendezvous-load: {peers} peers failed: {e}"),
        }
    }
    let md = markdown(&results);
    print!("{md}");
    if let Some(out) = &o.out {
        let json = serde_json::json!({"markdown": md, "results": results});
        if let Err(e) = std::fs::write(out, serde_json::to_string_pretty(&json).unwrap_or_default())
        {
            eprintln!("rendezvous-load: writing {out}: {e}");
            std::process::exit(1);
        }
    }
    if results.len() < o.peers.len() {
        std::process::exit(1);
    }
}
