//! A reader that stops reading stops the sender: the sending node stops taking stdin instead of
//! buffering, and once the reader resumes every message arrives, in order.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Node, Rendezvous};

const MESSAGE: usize = 64 * 1024;
const TOTAL_MESSAGES: u64 = 4096; // 256 MiB offered in all

#[test]
fn slow_reader_stops_the_senders_stdin_and_nothing_is_lost() {
    let rendezvous = Rendezvous::start(&[]);
    let limit = ["--max-message", "65536"];
    let mut a = Node::start(&rendezvous, &limit);
    // b's outputs are held to 4 frames by the harness, and the test does not read them yet.
    let mut b = Node::start_bounded(tempfile::tempdir().unwrap(), &rendezvous.addr, &limit, 4);
    let b_id = b.id.clone();

    let written = Arc::new(AtomicU64::new(0));
    let mut stdin = a.stdin.take().unwrap();
    let writer = {
        let written = written.clone();
        std::thread::spawn(move || {
            for i in 0..TOTAL_MESSAGES {
                let mut payload = vec![(i % 251) as u8; MESSAGE];
                payload[..8].copy_from_slice(&i.to_be_bytes());
                let frame = p2pnat_proto::app::encode_send_frame(i, &b_id, &payload);
                if stdin.write_all(&frame).is_err() {
                    return;
                }
                written.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // Wait until the writer stalls: no progress for 2 s (at most 60 s in all).
    let started = Instant::now();
    let mut last = u64::MAX;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = written.load(Ordering::SeqCst);
        if now == last || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        last = now;
    }
    let stalled_at = written.load(Ordering::SeqCst);
    assert!(
        stalled_at < TOTAL_MESSAGES,
        "the sender took all {TOTAL_MESSAGES} messages while nobody read them"
    );
    // Everything held in between is bounded: stdin budget, QUIC windows, stdout budget, pipes.
    let held_bytes = stalled_at * MESSAGE as u64;
    eprintln!("writer stalled after {stalled_at} messages ({held_bytes} bytes)");
    assert!(
        held_bytes < 64 * 1024 * 1024,
        "{held_bytes} bytes taken before stalling"
    );

    // The reader resumes: every message arrives, in order, intact.
    let received = b.wait_recvs(TOTAL_MESSAGES as usize);
    for (i, (_, payload)) in received.iter().enumerate() {
        assert_eq!(payload.len(), MESSAGE);
        assert_eq!(
            &payload[..8],
            &(i as u64).to_be_bytes(),
            "message {i} out of order"
        );
        assert!(payload[8..].iter().all(|&byte| byte == (i % 251) as u8));
    }
    writer.join().unwrap();
}
