//! The rendezvous's settings: command-line flags, `P2PNAT_*` environment variables and a TOML
//! file (`--config PATH`), in that order of precedence, then the documented defaults.
//!
//! Every flag is also a file key (its long name without the dashes, e.g. `max-registrations =
//! 100000`) and an environment variable (`P2PNAT_` and the name in capitals with underscores,
//! e.g. `P2PNAT_MAX_REGISTRATIONS`); `config` and `print-config` are flags only. A repeatable
//! flag takes a TOML array in the file and a comma-separated list in the environment; an on/off
//! flag (`no-turn`) takes `true`/`false`. An unknown key in the file is an error that names it.
//!
//! How the layers are merged: the command line and the environment are parsed by clap; every
//! file key whose flag got its value from neither is then given to clap as if it had been typed
//! (`--key=value`), so one parser checks every value, whatever layer it came from.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, Parser};
use p2pnat::process::LogFormat;
use serde::Serialize;

/// Flags of `p2p-rendezvous`. The doc comment of each is its `--help` text; `[default: ...]`
/// there is the documented default.
#[derive(Debug, Parser, Serialize)]
#[command(
    name = "p2p-rendezvous",
    version,
    about = "p2pnat rendezvous: STUN responder and authenticated peer registry"
)]
#[serde(rename_all = "kebab-case")]
pub struct Args {
    /// TOML file with any of these settings (keys: the long flag names, e.g.
    /// `max-registrations = 100000`). Flags and P2PNAT_* variables override it.
    #[arg(long, env = "P2PNAT_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (as TOML, usable as a --config file) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// UDP address for QUIC and STUN.
    #[arg(long, env = "P2PNAT_LISTEN", default_value = "0.0.0.0:3478")]
    pub listen: SocketAddr,
    /// Extra STUN-only UDP address (repeatable), e.g. a second IP for NAT behaviour detection.
    #[arg(
        long = "stun-listen",
        env = "P2PNAT_STUN_LISTEN",
        value_delimiter = ','
    )]
    pub stun_listen: Vec<SocketAddr>,
    /// Identity key file (created with mode 0600 if missing).
    /// [default: $XDG_CONFIG_HOME/p2pnat/rendezvous.key]
    #[arg(long, env = "P2PNAT_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// Address of the Prometheus metrics and health endpoint (`GET /metrics`, `GET /healthz`),
    /// plain HTTP: keep it private. [default: off]
    #[arg(long, env = "P2PNAT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log format on stderr: `text` or `json` (one JSON object a line).
    #[arg(long, env = "P2PNAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    #[serde(serialize_with = "serialize_log_format")]
    pub log_format: LogFormat,
    /// Kernel buffer in bytes asked for each direction of the UDP sockets that carry the
    /// most (the main port and the TURN listener), 0 for the system's default. Without
    /// CAP_NET_ADMIN the kernel caps it at net.core.rmem_max and wmem_max (logged).
    #[arg(long, env = "P2PNAT_SOCKET_BUFFER",
          default_value_t = p2pnat::socket_buffers::DEFAULT_SOCKET_BUFFER)]
    pub socket_buffer: usize,
    /// Seconds a registration lives without a refresh.
    #[arg(long, env = "P2PNAT_REGISTRATION_TTL", default_value_t = 120)]
    pub registration_ttl: u64,
    /// Most peers registered at once.
    #[arg(long, env = "P2PNAT_MAX_REGISTRATIONS", default_value_t = 100_000)]
    pub max_registrations: usize,
    /// Most simultaneous node connections (QUIC).
    #[arg(long, env = "P2PNAT_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// New registrations one source IP may make in a burst.
    #[arg(long, env = "P2PNAT_NEW_PER_IP_BURST", default_value_t = 20)]
    pub new_per_ip_burst: u32,
    /// Milliseconds for one source IP to earn one more new registration.
    #[arg(long, env = "P2PNAT_NEW_PER_IP_INTERVAL_MS", default_value_t = 200)]
    pub new_per_ip_interval_ms: u64,
    /// Seconds of silence after which a node connection is dropped.
    #[arg(long, env = "P2PNAT_IDLE_TIMEOUT", default_value_t = 30)]
    pub idle_timeout: u64,
    /// Punch requests one node may cause in a burst (each makes another node probe it).
    #[arg(long, env = "P2PNAT_PUNCH_BURST", default_value_t = 32)]
    pub punch_burst: u32,
    /// Milliseconds for one node to earn one more punch request.
    #[arg(long, env = "P2PNAT_PUNCH_INTERVAL_MS", default_value_t = 250)]
    pub punch_interval_ms: u64,
    /// Punch requests the nodes of one source IP may cause together in a burst (all its
    /// identities together: bounds what a host with many keys can make others probe).
    #[arg(long, env = "P2PNAT_PUNCH_PER_IP_BURST", default_value_t = 64)]
    pub punch_per_ip_burst: u32,
    /// Milliseconds for one source IP to earn one more punch request.
    #[arg(long, env = "P2PNAT_PUNCH_PER_IP_INTERVAL_MS", default_value_t = 100)]
    pub punch_per_ip_interval_ms: u64,
    /// Turns the built-in TURN server off (nodes are offered no relay unless `--turn-url`).
    #[arg(long, env = "P2PNAT_NO_TURN")]
    pub no_turn: bool,
    /// Offer nodes this external TURN server (e.g. coturn with `use-auth-secret`) instead of
    /// the built-in one: `turn:HOST[:PORT]` (port 3478 if absent). Needs `--turn-secret-file`
    /// holding the server's `static-auth-secret`.
    #[arg(long, env = "P2PNAT_TURN_URL", requires = "turn_secret_file")]
    pub turn_url: Option<String>,
    /// Seconds the TURN credentials handed to nodes work (each registration refresh brings
    /// fresh ones).
    #[arg(long, env = "P2PNAT_TURN_CREDENTIAL_TTL", default_value_t = 3600)]
    pub turn_credential_ttl: u64,
    /// UDP address of the built-in TURN server (not the QUIC port: ChannelData and QUIC short
    /// headers overlap). Failing to bind it stops the rendezvous when given; when not given and
    /// port 3479 on the --listen IP is busy, TURN is off (logged).
    /// [default: the --listen IP, port 3479]
    #[arg(long, env = "P2PNAT_TURN_LISTEN")]
    pub turn_listen: Option<SocketAddr>,
    /// IP relay sockets bind to and report. [default: the TURN listen IP if specific, else the
    /// first non-loopback IPv4 interface address, else 127.0.0.1]
    #[arg(long, env = "P2PNAT_TURN_RELAY_IP")]
    pub turn_relay_ip: Option<IpAddr>,
    /// File holding the TURN REST-API shared secret (coturn's `static-auth-secret`), so that a
    /// coturn can share it. [default: a random secret, in memory only]
    #[arg(long, env = "P2PNAT_TURN_SECRET_FILE")]
    pub turn_secret_file: Option<PathBuf>,
    /// TURN REALM.
    #[arg(long, env = "P2PNAT_TURN_REALM", default_value = "p2pnat")]
    pub turn_realm: String,
    /// Most TURN allocations at once (over it: 508 Insufficient Capacity).
    #[arg(long, env = "P2PNAT_TURN_MAX_ALLOCATIONS", default_value_t = 1024)]
    pub turn_max_allocations: usize,
    /// Most TURN allocations per user, i.e. per peer (over it: 486 Allocation Quota Reached).
    #[arg(
        long,
        env = "P2PNAT_TURN_MAX_ALLOCATIONS_PER_USER",
        default_value_t = 8
    )]
    pub turn_max_allocations_per_user: usize,
    /// Relayed bytes a second per allocation, both directions together (0: no limit).
    #[arg(long, env = "P2PNAT_TURN_MAX_BPS", default_value_t = 4_000_000)]
    pub turn_max_bps: u64,
    /// Longest TURN allocation lifetime granted, in seconds.
    #[arg(long, env = "P2PNAT_TURN_MAX_LIFETIME", default_value_t = 3600)]
    pub turn_max_lifetime: u64,
    /// TCP address of the TLS port, for nodes on networks that drop UDP: control over TLS
    /// (ALPN p2pnat-rendezvous-tls/1) and TURN over TLS (ALPN stun.turn or none). Failing to
    /// bind it stops the rendezvous when given; when not given and the default cannot be bound
    /// (port 443 needs privileges), the TLS port is off (logged).
    /// [default: the --listen IP, port 443]
    #[arg(long, env = "P2PNAT_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// Turns the TLS port off.
    #[arg(long, env = "P2PNAT_NO_TLS", conflicts_with = "tls_listen")]
    pub no_tls: bool,
    /// Most TCP connections at once: the TLS port's and TURN over TCP's together (over it a
    /// new connection is closed at once).
    #[arg(long, env = "P2PNAT_TLS_MAX_CONNECTIONS", default_value_t = 4096)]
    pub tls_max_connections: usize,
    /// Most TCP connections at once from one source IP (TLS port and TURN over TCP together).
    #[arg(long, env = "P2PNAT_TLS_MAX_PER_IP", default_value_t = 16)]
    pub tls_max_per_ip: usize,
    /// Bytes waiting to be written to one TCP or TLS connection at most (TURN data and pushes
    /// beyond it are dropped, so a slow client never stalls others).
    #[arg(long, env = "P2PNAT_TLS_MAX_BUFFERED", default_value_t = 262_144)]
    pub tls_max_buffered: usize,
    /// Seconds a TLS handshake may take.
    #[arg(long, env = "P2PNAT_TLS_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub tls_handshake_timeout: u64,
    /// Seconds a TCP or TLS connection may send nothing before it is closed.
    #[arg(long, env = "P2PNAT_TLS_IDLE_TIMEOUT", default_value_t = 600)]
    pub tls_idle_timeout: u64,
}

fn serialize_log_format<S: serde::Serializer>(
    format: &LogFormat,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(format.name())
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag or environment variable is wrong, or `--help`/`--version` was asked for (clap
    /// prints those and chooses the exit code).
    #[error("{0}")]
    Args(#[from] clap::Error),
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config file {path}: unknown key `{key}` (keys are the long flag names, see --help)")]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {path}: key `{key}`: {reason}")]
    BadValue {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// A value from the file was refused by the flag's parser.
    #[error("config file {path}: {source}")]
    Value {
        path: PathBuf,
        source: Box<clap::Error>,
    },
}

/// Flags that are not file keys.
const NOT_IN_FILE: [&str; 4] = ["config", "print_config", "help", "version"];

impl Args {
    /// The settings from `argv` (program name first), the environment and the `--config` file.
    pub fn load_from<I, T>(argv: I) -> Result<Args, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        let command = Args::command();
        let matches = command.clone().try_get_matches_from(&argv)?;
        let first = <Args as clap::FromArgMatches>::from_arg_matches(&matches)?;
        let Some(path) = first.config.clone() else {
            return Ok(first);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.clone(),
            source: Box::new(source),
        })?;
        let mut extra = Vec::new();
        for (key, value) in &table {
            let unknown = || ConfigError::UnknownKey {
                path: path.clone(),
                key: key.clone(),
            };
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()))
                .filter(|a| !NOT_IN_FILE.contains(&a.get_id().as_str()))
                .ok_or_else(unknown)?;
            let from_user = matches!(
                matches.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if from_user {
                continue;
            }
            let bad = |reason: &str| ConfigError::BadValue {
                path: path.clone(),
                key: key.clone(),
                reason: reason.to_string(),
            };
            let takes_value = arg.get_action().takes_values();
            let repeatable = matches!(arg.get_action(), clap::ArgAction::Append);
            match value {
                toml::Value::Boolean(on) if !takes_value => {
                    if *on {
                        extra.push(OsString::from(format!("--{key}")));
                    }
                }
                toml::Value::Boolean(_) => return Err(bad("expected a value, not true/false")),
                _ if !takes_value => return Err(bad("expected true or false")),
                toml::Value::Array(items) if repeatable => {
                    for item in items {
                        let item =
                            scalar(item).ok_or_else(|| bad("expected strings or numbers"))?;
                        extra.push(OsString::from(format!("--{key}={item}")));
                    }
                }
                toml::Value::Array(_) => return Err(bad("expected one value, not an array")),
                other => {
                    let item = scalar(other).ok_or_else(|| bad("expected a string or a number"))?;
                    extra.push(OsString::from(format!("--{key}={item}")));
                }
            }
        }
        let mut merged = argv;
        merged.extend(extra);
        Args::try_parse_from(merged).map_err(|source| ConfigError::Value {
            path,
            source: Box::new(source),
        })
    }

    /// The effective configuration as TOML, readable back with `--config`. Settings without a
    /// value (computed at start-up) are listed as comments with their default.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# p2p-rendezvous: effective configuration\n");
        let body = toml::to_string(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"));
        out.push_str(&body);
        let set: toml::Table = toml::from_str(&body).unwrap_or_default();
        for arg in Args::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if NOT_IN_FILE.contains(&arg.get_id().as_str()) || set.contains_key(long) {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            match help.find("[default:") {
                Some(at) => out.push_str(&format!("# {long}: not set {}\n", help[at..].trim_end())),
                None => out.push_str(&format!("# {long}: not set\n")),
            }
        }
        out
    }
}

/// A TOML string or integer as a flag value.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn load(args: &[&str]) -> Result<Args, ConfigError> {
        Args::load_from(std::iter::once("p2p-rendezvous").chain(args.iter().copied()))
    }

    #[test]
    fn file_values_apply_and_flags_override_them() {
        let f = file(
            "max-registrations = 7\nstun-listen = [\"127.0.0.1:4000\", \"127.0.0.2:4000\"]\n\
             no-turn = true\nturn-realm = \"lab\"\nlisten = \"127.0.0.1:5000\"\n",
        );
        let path = f.path().to_str().unwrap();
        let args = load(&["--config", path, "--max-registrations", "9"]).unwrap();
        assert_eq!(args.max_registrations, 9, "the flag wins over the file");
        assert_eq!(args.stun_listen.len(), 2);
        assert!(args.no_turn);
        assert_eq!(args.turn_realm, "lab");
        assert_eq!(args.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(
            args.registration_ttl, 120,
            "untouched keys keep their default"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let f = file("max-registrations = 7\nmax-registratoins = 8\n");
        let err = load(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { key, .. } if key == "max-registratoins"));
        assert!(err.to_string().contains("`max-registratoins`"), "{err}");
        // Flags that are not settings are not file keys either.
        let f = file("print-config = true\n");
        let err = load(&["--config", f.path().to_str().unwrap()]).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");
    }

    #[test]
    fn wrong_types_and_values_are_errors() {
        for text in [
            "max-registrations = \"many\"\n",
            "max-registrations = true\n",
            "no-turn = 1\n",
            "listen = [\"127.0.0.1:1\"]\n",
            "listen = 1.5\n",
            "this is not toml\n",
        ] {
            let f = file(text);
            assert!(
                load(&["--config", f.path().to_str().unwrap()]).is_err(),
                "{text:?} accepted"
            );
        }
    }

    #[test]
    fn socket_buffer_comes_from_the_file_or_the_flag_with_a_default() {
        assert_eq!(
            load(&[]).unwrap().socket_buffer,
            p2pnat::socket_buffers::DEFAULT_SOCKET_BUFFER
        );
        let f = file("socket-buffer = 0\n");
        let path = f.path().to_str().unwrap();
        assert_eq!(load(&["--config", path]).unwrap().socket_buffer, 0);
        let flagged = load(&["--config", path, "--socket-buffer", "65536"]).unwrap();
        assert_eq!(flagged.socket_buffer, 65536, "the flag wins over the file");
        assert!(load(&["--socket-buffer", "lots"]).is_err());
    }

    #[test]
    fn printed_configuration_reads_back_the_same() {
        let f = file("max-registrations = 7\nstun-listen = [\"127.0.0.1:4000\"]\n");
        let args = load(&["--config", f.path().to_str().unwrap(), "--no-tls"]).unwrap();
        let printed = args.to_toml();
        assert!(printed.contains("max-registrations = 7"), "{printed}");
        assert!(
            printed.contains("# turn-listen: not set [default:"),
            "{printed}"
        );
        let again = file(&printed);
        let reread = load(&["--config", again.path().to_str().unwrap()]).unwrap();
        assert_eq!(reread.to_toml(), printed);
    }
}
