//! Loopback benchmark of real binaries: throughput, small-message rate, delivery latency and peak
//! memory of the nodes. Run: `cargo build --release --workspace --bins && cargo bench --bench loopback`.
//! Results go to stdout as a markdown table (copied into docs/PERFORMANCE.md with the date and
//! machine). Nothing here asserts on time: it measures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::time::Instant;

use common::{Node, Rendezvous};

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// Sends `count` messages of `size` bytes from a to b; returns (seconds until b had them all).
fn bulk(a: &mut Node, b: &mut Node, count: usize, size: usize) -> f64 {
    let b_id = b.id.clone();
    let payload = vec![0x5a; size];
    let mut stdin = a.stdin.take().unwrap();
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        for i in 0..count {
            let frame = p2pnat_proto::app::encode_send_frame(i as u64, &b_id, &payload);
            stdin.write_all(&frame).unwrap();
        }
        stdin
    });
    let received = b.wait_recvs(count);
    let elapsed = start.elapsed().as_secs_f64();
    assert!(received.iter().all(|(_, p)| p.len() == size));
    a.stdin = Some(writer.join().unwrap());
    // Drain the delivered events so the next phase starts clean.
    for _ in 0..count {
        a.wait_event(|e| e.starts_with("delivered "));
    }
    elapsed
}

fn main() {
    // `P2PNAT_BENCH=relay`: only the relayed transfer (for profiling the relay).
    // `P2PNAT_BENCH=pair`: the direct 1 MiB transfer, then the relayed one (the ratio).
    match std::env::var("P2PNAT_BENCH").as_deref() {
        Ok("relay") => {
            relayed(256, f64::NAN);
            return;
        }
        Ok("pair") => {
            direct_then_relayed(256);
            return;
        }
        _ => {}
    }
    let rendezvous = Rendezvous::start(&[]);
    let mut a = Node::start(&rendezvous, &[]);
    let mut b = Node::start(&rendezvous, &[]);
    let b_id = b.id.clone();
    let a_id = a.id.clone();

    // Connection set-up time: connect command to connected event (lookup + probe + handshake).
    let start = Instant::now();
    a.command(&format!("connect {b_id}"));
    a.wait_event(|e| e.starts_with("connected "));
    let connect_ms = start.elapsed().as_secs_f64() * 1000.0;

    // Round trips: a sends, b echoes through the test, a receives. Median of 200.
    let mut rtts = Vec::new();
    for i in 0..200u64 {
        let start = Instant::now();
        a.send(i, &b_id, b"ping");
        b.wait_recvs(1);
        b.send(i, &a_id, b"pong");
        a.wait_recvs(1);
        rtts.push(start.elapsed());
    }
    rtts.sort();
    let median_rtt_us = rtts[rtts.len() / 2].as_secs_f64() * 1e6;
    for _ in 0..200 {
        a.wait_event(|e| e.starts_with("delivered "));
        b.wait_event(|e| e.starts_with("delivered "));
    }

    let small = 50_000;
    let small_secs = bulk(&mut a, &mut b, small, 64);
    let big_count = 256;
    let big_secs = bulk(&mut a, &mut b, big_count, 1024 * 1024);

    let rss_a = peak_rss_kib(a.child.id());
    let rss_b = peak_rss_kib(b.child.id());
    println!("| measure | value |");
    println!("|---|---|");
    println!("| connect (lookup + probe + QUIC handshake) | {connect_ms:.1} ms |");
    println!("| application round trip, median of 200 | {median_rtt_us:.0} us |");
    println!(
        "| 64-byte messages, {small} one way | {:.0} messages/s |",
        small as f64 / small_secs
    );
    println!(
        "| 1 MiB messages, {big_count} one way | {:.0} MiB/s |",
        big_count as f64 / big_secs
    );
    println!("| peak RSS, sending node | {} MiB |", rss_a / 1024);
    println!("| peak RSS, receiving node | {} MiB |", rss_b / 1024);
    drop((a, b, rendezvous));
    relayed(big_count, big_secs);
}

/// The direct 1 MiB transfer alone, then the relayed one beside it.
fn direct_then_relayed(big_count: usize) {
    let rendezvous = Rendezvous::start(&[]);
    let mut a = Node::start(&rendezvous, &[]);
    let mut b = Node::start(&rendezvous, &[]);
    let b_id = b.id.clone();
    a.command(&format!("connect {b_id}"));
    a.wait_event(|e| e.starts_with("connected "));
    let secs = bulk(&mut a, &mut b, big_count, 1024 * 1024);
    println!(
        "| 1 MiB messages, {big_count} one way | {:.0} MiB/s |",
        big_count as f64 / secs
    );
    drop((a, b, rendezvous));
    relayed(big_count, secs);
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// The same bulk transfer through the rendezvous's built-in TURN relay (both nodes
/// `--relay-only`, the relay's per-allocation rate limit off), beside the direct figure.
fn relayed(big_count: usize, direct_secs: f64) {
    let rendezvous = Rendezvous::start(&["--turn-max-bps", "0"]);
    let mut a = Node::start(&rendezvous, &["--relay-only"]);
    let mut b = Node::start(&rendezvous, &["--relay-only"]);
    let b_id = b.id.clone();
    a.command(&format!("connect {b_id}"));
    let connected = a.wait_event(|e| e.starts_with("connected "));
    assert!(connected.contains(" relayed "), "{connected}");
    let cpu_before = cpu_seconds(rendezvous.child.id());
    let secs = bulk(&mut a, &mut b, big_count, 1024 * 1024);
    let cpu = cpu_seconds(rendezvous.child.id()) - cpu_before;
    let mib_s = big_count as f64 / secs;
    let gb = (big_count * 1024 * 1024) as f64 / 1e9;
    println!("| 1 MiB messages, {big_count} one way, relayed (built-in TURN) | {mib_s:.0} MiB/s ({:.0}% of direct) |", 100.0 * direct_secs / secs);
    println!(
        "| relay CPU (rendezvous process, user+system) per GB relayed | {:.2} s |",
        cpu / gb
    );
}
