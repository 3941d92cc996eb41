//! `rendezvous-load`: the rendezvous at 10k and 100k registered peers (scripts/bench.sh).
//!
//! For each peer count P it starts a fresh `p2p-rendezvous` on loopback (per-IP admission limit
//! lifted with its own flag: every simulated peer comes from 127.0.0.1), then registers P peers
//! exactly as nodes do over UDP (docs/PROTOCOL.md section 4.1): each with its own ed25519 key
//! and its own `p2pnat_proto::rv::client` machine, a Hello (cookie) and then the signed
//! Register, retransmitted by the machine as a node's would be. Peers share a few UDP sockets
//! (as many peers behind few NATs; the cookie is per address, but each peer asks for its own,
//! as a node does). Then `Lookup`s of random registered peers under the sessions of 64 of
//! them. Measured: registrations/s and lookups/s (wall clock), the rendezvous's CPU
//! (user+system from /proc, in cores busy and µs per request) and RSS (VmRSS with all P
//! registered, VmHWM at the end), and the generator's own CPU per registration (JSON
//! `generator_cpu_us_each`). The generator shares the machine's cores with the rendezvous: the
//! rates are lower bounds.
//!
//! ```text
//! rendezvous-load --rendezvous BIN [--peers 10000,100000] [--concurrency 32]
//!                 [--lookup-seconds 5] [--out FILE.json]
//! ```
//! `--concurrency`: registrations (then lookups) in flight per socket (8 sockets). 32 by
//! default: with 128 or 256 the bursts overflowed socket buffers and the side channel, and
//! the retransmissions (250 ms) held the rates down (10k peers: 9,000 registrations/s and
//! 84,000 lookups/s with 256, 19,000 and 125,000 with 64, 2026-12-01).

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use p2pnat_proto::control::{Request, Response};
use p2pnat_proto::nat::NatReport;
use p2pnat_proto::rv::client::{Client, ClientConfig, ClientEvent, Outcome};
use p2pnat_proto::PeerId;
use tokio::net::UdpSocket;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Client sockets the simulated peers share.
const SOCKETS: usize = 8;

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
        concurrency: 32,
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
            "--concurrency" => o.concurrency = value.parse().unwrap_or(32),
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
        .args(["--max-registrations", &room])
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

/// Sends everything `client` has queued from `socket`, noting which peer each ID is for.
async fn flush(
    socket: &UdpSocket,
    server: SocketAddr,
    client: &mut Client,
    index: usize,
    by_id: &mut HashMap<[u8; 8], usize>,
) {
    while let Some(datagram) = client.poll_transmit() {
        if let Some(id) = datagram
            .get(6..14)
            .and_then(|id| <[u8; 8]>::try_from(id).ok())
        {
            by_id.insert(id, index);
        }
        let _ = socket.send_to(&datagram, server).await;
    }
}

/// What one socket's peers achieved.
#[derive(Default)]
struct Tally {
    done: u64,
    failed: u64,
}

/// Registers `keys` (Hello, then the signed Register) from one socket, `window` at a time.
/// Returns the clients with a session.
async fn register_all(
    socket: Arc<UdpSocket>,
    server: SocketAddr,
    keys: Vec<SigningKey>,
    window: usize,
    seed: u8,
) -> (Vec<Client>, Tally) {
    let mut clients: Vec<Client> = Vec::with_capacity(keys.len());
    let mut by_id: HashMap<[u8; 8], usize> = HashMap::new();
    let mut tally = Tally::default();
    let mut next = 0;
    let mut in_flight = 0usize;
    let mut keys = keys.into_iter();
    let mut buf = vec![0u8; 2048];
    let mut registered = Vec::new();
    let mut next_scan = Instant::now();
    // What a node knows of itself already (was a getsockname per registration).
    let local_addr = socket.local_addr().expect("bound");
    loop {
        while in_flight < window {
            let Some(key) = keys.next() else { break };
            let mut id_seed = [seed; 32];
            id_seed[..8].copy_from_slice(&(next as u64).to_be_bytes());
            let mut client = Client::new(ClientConfig::default(), key, server, id_seed);
            let _ = client.hello(Instant::now());
            flush(&socket, server, &mut client, next, &mut by_id).await;
            clients.push(client);
            next += 1;
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        let (now, touched) =
            receive_and_tick(&socket, &mut clients, &by_id, &mut buf, &mut next_scan).await;
        for index in touched {
            while let Some(event) = clients[index].poll_event() {
                let ClientEvent::Done { outcome, .. } = event else {
                    continue;
                };
                match outcome {
                    Outcome::Cookie => {
                        let register = Request::Register {
                            local_addrs: vec![local_addr],
                            nat: NatReport::UNKNOWN,
                            relayed: None,
                        };
                        let _ = clients[index].request(now, register);
                    }
                    Outcome::Response(Response::Registered { .. }) => {
                        tally.done += 1;
                        in_flight -= 1;
                        registered.push(index);
                    }
                    other => {
                        if tally.failed < 3 {
                            eprintln!("rendezvous-load: registration ended {other:?}");
                        }
                        tally.failed += 1;
                        in_flight -= 1;
                    }
                }
            }
            flush(&socket, server, &mut clients[index], index, &mut by_id).await;
        }
    }
    let keep: std::collections::HashSet<usize> = registered.into_iter().collect();
    let clients = clients
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, c)| c)
        .collect();
    (clients, tally)
}

/// Looks up random peers of `ids` under the sessions of `clients` until `deadline`,
/// `window` at a time. Returns (found, not found or failed).
async fn look_up(
    socket: Arc<UdpSocket>,
    server: SocketAddr,
    mut clients: Vec<Client>,
    ids: Arc<Vec<PeerId>>,
    window: usize,
    deadline: Instant,
) -> (u64, u64) {
    let mut by_id: HashMap<[u8; 8], usize> = HashMap::new();
    let (mut found, mut other) = (0u64, 0u64);
    let mut in_flight = 0usize;
    let mut k = (clients.len() * 7919) % ids.len().max(1);
    let mut buf = vec![0u8; 2048];
    let mut turn = 0usize;
    let mut next_scan = Instant::now();
    loop {
        let now = Instant::now();
        while in_flight < window && now < deadline && !clients.is_empty() {
            turn = (turn + 1) % clients.len();
            k = (k + 7919) % ids.len();
            let lookup = Request::Lookup { peer: ids[k] };
            if clients[turn].request(now, lookup).is_err() {
                break;
            }
            flush(&socket, server, &mut clients[turn], turn, &mut by_id).await;
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        let (_, touched) =
            receive_and_tick(&socket, &mut clients, &by_id, &mut buf, &mut next_scan).await;
        for index in touched {
            while let Some(event) = clients[index].poll_event() {
                if let ClientEvent::Done { outcome, .. } = event {
                    in_flight -= 1;
                    match outcome {
                        Outcome::Response(Response::Found { .. }) => found += 1,
                        _ => other += 1,
                    }
                }
            }
            flush(&socket, server, &mut clients[index], index, &mut by_id).await;
        }
    }
    (found, other)
}

/// Waits up to 50 ms for one datagram and hands it to the client its ID names; every 50 ms also
/// runs the timers of the clients that have one due. Returns the time and the clients touched.
async fn receive_and_tick(
    socket: &tokio::net::UdpSocket,
    clients: &mut [Client],
    by_id: &HashMap<[u8; 8], usize>,
    buf: &mut [u8],
    next_scan: &mut Instant,
) -> (Instant, Vec<usize>) {
    // A datagram already waiting is taken without arming a timer.
    let received = match socket.try_recv_from(buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            tokio::time::timeout(Duration::from_millis(50), socket.recv_from(buf)).await
        }
        other => Ok(other),
    };
    let now = Instant::now();
    let mut touched = Vec::new();
    if let Ok(Ok((len, from))) = received {
        let id = buf.get(6..14).and_then(|id| <[u8; 8]>::try_from(id).ok());
        if let Some(&index) = id.and_then(|id| by_id.get(&id)) {
            let _ = clients[index].handle_datagram(now, from, &buf[..len]);
            touched.push(index);
        }
    }
    // Timers, every 50 ms: only clients with something in flight have a deadline.
    if now >= *next_scan {
        *next_scan = now + Duration::from_millis(50);
        for (index, client) in clients.iter_mut().enumerate() {
            if client.poll_timeout().is_some_and(|at| at <= now) {
                client.handle_timeout(now);
                touched.push(index);
            }
        }
    }
    (now, touched)
}

async fn one_count(o: &Options, peers: usize) -> Result<serde_json::Value, BoxError> {
    let rendezvous = start_rendezvous(&o.rendezvous, peers)?;
    let pid = rendezvous.child.id();
    let addr = rendezvous.addr;
    // Keys first (not timed: a node has its key already).
    eprintln!("rendezvous-load: {peers} peers: making keys");
    let mut keys = Vec::with_capacity(peers);
    let mut ids = Vec::with_capacity(peers);
    for _ in 0..peers {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| e.to_string())?;
        let key = SigningKey::from_bytes(&seed);
        ids.push(PeerId(key.verifying_key().to_bytes()));
        keys.push(key);
    }
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        sockets.push(Arc::new(socket));
    }
    let mut shares: Vec<Vec<SigningKey>> = (0..SOCKETS).map(|_| Vec::new()).collect();
    for (i, key) in keys.into_iter().enumerate() {
        shares[i % SOCKETS].push(key);
    }
    let rss_before = status_mib(pid, "VmRSS:");
    eprintln!("rendezvous-load: {peers} peers: registering");
    let cpu0 = cpu_seconds(pid);
    let own0 = cpu_seconds(std::process::id());
    let start = Instant::now();
    let mut workers = Vec::new();
    for (n, share) in shares.into_iter().enumerate() {
        workers.push(tokio::spawn(register_all(
            sockets[n].clone(),
            addr,
            share,
            o.concurrency,
            n as u8,
        )));
    }
    let mut clients_per_socket = Vec::new();
    let (mut registered, mut failures) = (0u64, 0u64);
    for w in workers {
        let (clients, tally) = w.await?;
        registered += tally.done;
        failures += tally.failed;
        clients_per_socket.push(clients);
    }
    let reg_secs = start.elapsed().as_secs_f64();
    let reg_cpu = cpu_seconds(pid) - cpu0;
    let own_cpu = cpu_seconds(std::process::id()) - own0;
    // Settle, then the resident memory with every peer registered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_registered = status_mib(pid, "VmRSS:");
    eprintln!(
        "rendezvous-load: {peers} peers: {registered} registered in {reg_secs:.1} s; lookups"
    );
    // Lookups under the sessions of 64 registered peers (8 per socket).
    let ids = Arc::new(ids);
    let deadline = Instant::now() + Duration::from_secs_f64(o.lookup_seconds);
    let cpu1 = cpu_seconds(pid);
    let start = Instant::now();
    let mut workers = Vec::new();
    for (n, clients) in clients_per_socket.into_iter().enumerate() {
        let lookers: Vec<Client> = clients.into_iter().take(64 / SOCKETS).collect();
        workers.push(tokio::spawn(look_up(
            sockets[n].clone(),
            addr,
            lookers,
            ids.clone(),
            o.concurrency,
            deadline,
        )));
    }
    let (mut found, mut not_found) = (0u64, 0u64);
    for w in workers {
        let (f, other) = w.await?;
        found += f;
        not_found += other;
    }
    let lookup_secs = start.elapsed().as_secs_f64();
    let lookup_cpu = cpu_seconds(pid) - cpu1;
    let hwm = status_mib(pid, "VmHWM:");
    let result = serde_json::json!({
        "peers": peers,
        "registered": registered,
        "registration_failures": failures,
        "registration_seconds": reg_secs,
        "registrations_per_s": registered as f64 / reg_secs,
        "registration_cpu_cores": reg_cpu / reg_secs,
        "registration_cpu_us_each": reg_cpu * 1e6 / registered.max(1) as f64,
        // The generator's own CPU (all its threads) over the same phase: the 2 cores are shared.
        "generator_cpu_us_each": own_cpu * 1e6 / registered.max(1) as f64,
        "lookups": found,
        "lookups_not_found": not_found,
        "lookups_per_s": found as f64 / lookup_secs,
        "lookup_cpu_cores": lookup_cpu / lookup_secs,
        "lookup_cpu_us_each": lookup_cpu * 1e6 / found.max(1) as f64,
        "rss_idle_mib": rss_before,
        "rss_registered_mib": rss_registered,
        "rss_peak_mib": hwm,
        "rss_per_peer_bytes": (rss_registered - rss_before) * 1_048_576.0 / registered.max(1) as f64,
    });
    eprintln!("rendezvous-load: {result}");
    drop(rendezvous);
    Ok(result)
}

fn markdown(results: &[serde_json::Value]) -> String {
    let mut md = String::from("## Rendezvous under load (`rendezvous-load`)\n\nEach simulated peer registers with control datagrams as a node does (own key, Hello, signed Register; docs/PROTOCOL.md section 4.1); then `Lookup`s of random registered peers under the sessions of 64 of them. The generator runs on the same 2 cores as the rendezvous. CPU is the rendezvous's user+system time over the phase.\n\n| registered peers | registrations/s | rendezvous CPU (cores, us each) | lookups/s | rendezvous CPU (cores, us each) | RSS registered | RSS peak | RSS per peer |\n|---|---|---|---|---|---|---|---|\n");
    for r in results {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        md.push_str(&format!(
            "| {} of {} | {:.0} | {:.2}, {:.0} | {:.0} | {:.2}, {:.1} | {:.1} MiB | {:.1} MiB | {:.0} B |\n",
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
            f("rss_per_peer_bytes"),
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
