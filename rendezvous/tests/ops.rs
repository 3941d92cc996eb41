//! Running a public rendezvous (issue #15), with the real binary on loopback: the config file
//! and its precedence (flag > P2PNAT_* environment > file > default), `--print-config`, an
//! unknown key refused by name, Prometheus metrics that move after a real registration and
//! lookup, `/healthz`, malformed HTTP answered 400, and JSON log lines.

mod support;

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};

use p2pnat::identity::Identity;
use p2pnat::rendezvous_tls::RendezvousTls;
use p2pnat_proto::control::{Request, Response};
use p2pnat_proto::PeerId;
use support::{binary, http, register, Rendezvous};

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[test]
fn print_config_shows_flag_over_env_over_file_over_default() {
    let file = config_file(
        "max-registrations = 5\npunch-burst = 3\nturn-realm = \"from-file\"\n\
         stun-listen = [\"127.0.0.1:4001\", \"127.0.0.1:4002\"]\nno-turn = true\n",
    );
    let output = Command::new(binary())
        .arg("--config")
        .arg(file.path())
        .args(["--turn-realm", "from-flag", "--print-config"])
        .env("P2PNAT_PUNCH_BURST", "4")
        .env("P2PNAT_TURN_REALM", "from-env")
        .env("P2PNAT_NO_TURN", "false")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    let config: toml::Table = toml::from_str(&printed).expect("--print-config prints TOML");
    let int = |key: &str| config[key].as_integer().unwrap();
    assert_eq!(
        config["turn-realm"].as_str(),
        Some("from-flag"),
        "flag > env"
    );
    assert_eq!(int("punch-burst"), 4, "env > file");
    assert_eq!(
        config["no-turn"].as_bool(),
        Some(false),
        "env > file, on/off too"
    );
    assert_eq!(int("max-registrations"), 5, "file > default");
    assert_eq!(int("registration-ttl"), 120, "default");
    assert_eq!(config["stun-listen"].as_array().unwrap().len(), 2);
    assert!(printed.contains("# metrics-listen: not set [default: off]"));

    // What it prints is a config file that gives the same configuration.
    let again = config_file(&printed);
    let reprinted = Command::new(binary())
        .arg("--config")
        .arg(again.path())
        .arg("--print-config")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(reprinted.stdout).unwrap(), printed);
}

#[test]
fn unknown_config_key_is_refused_by_name() {
    let file = config_file("max-registrations = 5\nmax-registartions = 6\n");
    let output = Command::new(binary())
        .arg("--config")
        .arg(file.path())
        .arg("--print-config")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown key `max-registartions`"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn metrics_move_after_a_registration_and_lookup() {
    let rendezvous = Rendezvous::start(&[]);
    let before = rendezvous.scrape();
    let registrations = |s: &support::Scrape| s.value("p2pnat_rendezvous_registrations_total", &[]);
    let found =
        |s: &support::Scrape| s.value("p2pnat_rendezvous_lookups_total", &[("result", "found")]);
    assert_eq!(registrations(&before), 0.0);
    assert_eq!(found(&before), 0.0);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pinned: PeerId = rendezvous.id.parse().unwrap();
    let (connection, _pushes) = runtime
        .block_on(RendezvousTls::connect(
            &Identity::generate().unwrap(),
            rendezvous.tls,
            Some(pinned),
        ))
        .unwrap();
    let me = Identity::generate().unwrap();
    let (other, _other_pushes) = runtime
        .block_on(RendezvousTls::connect(&me, rendezvous.tls, Some(pinned)))
        .unwrap();
    for c in [&connection, &other] {
        let answer = runtime.block_on(c.request(&register(vec![]))).unwrap();
        assert!(matches!(answer, Response::Registered { .. }), "{answer:?}");
    }
    let lookup = Request::Lookup { peer: me.peer_id() };
    let answer = runtime.block_on(connection.request(&lookup)).unwrap();
    assert!(matches!(answer, Response::Found { .. }), "{answer:?}");

    let after = rendezvous.scrape();
    assert_eq!(registrations(&after), 2.0);
    assert_eq!(found(&after), 1.0);
    assert_eq!(after.value("p2pnat_rendezvous_registered_peers", &[]), 2.0);
    assert_eq!(
        after.value("p2pnat_rendezvous_connections", &[("kind", "tls_control")]),
        2.0
    );
    // Every family is there from the start, at zero where nothing happened.
    for name in [
        "p2pnat_rendezvous_relay_allocations",
        "p2pnat_rendezvous_relay_allocations_created_total",
    ] {
        assert_eq!(after.value(name, &[]), 0.0, "{name}");
    }
    assert_eq!(
        after.value(
            "p2pnat_rendezvous_relay_bytes_total",
            &[("direction", "to_peers")]
        ),
        0.0
    );
    assert_eq!(
        after.value(
            "p2pnat_rendezvous_drops_total",
            &[("component", "registration"), ("reason", "rate_limit")]
        ),
        0.0
    );
}

#[test]
fn healthz_answers_ok_and_bad_requests_get_400() {
    let mut rendezvous = Rendezvous::start(&["--no-turn"]);
    let (status, body) = http(
        rendezvous.metrics,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = http(rendezvous.metrics, b"GET /nothing HTTP/1.1\r\n\r\n");
    assert_eq!(status, 404);
    let (status, _) = http(rendezvous.metrics, b"POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 405);
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /healthz HTTP/9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno-colon\r\n\r\n",
    ] {
        let (status, _) = http(rendezvous.metrics, garbage);
        assert_eq!(status, 400, "{garbage:?}");
    }
    // An endless head is cut at the limit, answered 400 and closed.
    let mut endless = b"GET /healthz HTTP/1.1\r\n".to_vec();
    endless.extend(std::iter::repeat_n(b'a', 10_000));
    let (status, _) = http(rendezvous.metrics, &endless);
    assert_eq!(status, 400);
    assert!(rendezvous.alive());
    let (status, _) = http(rendezvous.metrics, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
}

#[test]
fn json_log_format_writes_one_json_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-turn",
            "--no-tls",
            "--log-format",
            "json",
            "--identity",
        ])
        .arg(dir.path().join("rv.key"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut messages = Vec::new();
    let mut sent_sigterm = false;
    // Every line up to "rendezvous listening", then SIGTERM (as `systemctl stop` sends) and every
    // line to the end: all JSON, all INFO (a stop by signal is no failed loop), "shutting down".
    for line in stderr {
        let line = line.unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(value["level"], "INFO", "{line}");
        let message = value["fields"]["message"].as_str().unwrap().to_string();
        if message == "rendezvous listening" && !sent_sigterm {
            assert!(value["fields"]["id"].is_string());
            let kill = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(kill.success());
            sent_sigterm = true;
        }
        messages.push(message);
    }
    let status = child.wait().unwrap();
    assert!(
        sent_sigterm,
        "no \"rendezvous listening\" line: {messages:?}"
    );
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert_eq!(messages.last().map(String::as_str), Some("shutting down"));
}

#[test]
fn packaged_example_config_is_accepted() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/rendezvous.toml");
    let output = Command::new(binary())
        .args(["--config", example, "--print-config"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed: toml::Table = toml::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap();
    assert_eq!(printed["metrics-listen"].as_str(), Some("127.0.0.1:9478"));
}
