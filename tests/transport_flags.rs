//! `--flow-window`, `--congestion` and `--socket-buffer`: accepted values carry traffic, refused
//! ones say why.

mod common;

use std::process::Command;

use common::{Node, Rendezvous};

#[test]
fn a_small_flow_window_and_either_congestion_controller_still_carry_a_large_message() {
    let rendezvous = Rendezvous::start(&[]);
    let payload = common::pseudo_random_bytes(3 * 1024 * 1024, 7);
    // `--socket-buffer 0` keeps the system's default buffers; 65536 is below every default.
    for (window, congestion, buffer) in [("65536", "cubic", "0"), ("1048576", "bbr", "65536")] {
        let args = [
            "--flow-window",
            window,
            "--congestion",
            congestion,
            "--socket-buffer",
            buffer,
        ];
        let mut a = Node::start(&rendezvous, &args);
        let mut b = Node::start(&rendezvous, &args);
        a.send(1, &b.id, &payload);
        let got = b.wait_recvs(1);
        assert_eq!(got[0].1, payload, "window {window}, {congestion}");
        a.wait_event(|e| e == format!("delivered 1 {}", b.id));
    }
}

#[test]
fn a_flow_window_or_socket_buffer_out_of_range_is_refused_with_a_reason() {
    let cases = [
        ("--flow-window", "100"),
        ("--flow-window", "2000000000"),
        ("--flow-window", "lots"),
        ("--socket-buffer", "2000000000"),
        ("--socket-buffer", "some"),
    ];
    for (flag, bad) in cases {
        let out = Command::new(common::node_binary())
            .args([flag, bad, "id", "--identity"])
            .arg(tempfile::tempdir().unwrap().path().join("k"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{stderr}");
    }
}
