//! Thin wrappers over the system: `ip`, `nft`, sysctls and sockets inside a network namespace,
//! and removal of namespaces by name prefix.
//!
//! Safety invariant: every link this module creates is created *inside* a namespace named by
//! the caller (`ip -n <ns> link add ... peer ... netns <ns2>`), so nothing is ever attached to
//! the machine's own interfaces or namespace.

use crate::error::{NetsimError, Result};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// Fails with [`NetsimError::NotRoot`] unless the effective user is root, and with
/// [`NetsimError::MissingTool`] if `ip` or `nft` is not installed.
pub fn require_root_and_tools() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(NetsimError::NotRoot);
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Err(NetsimError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// Runs a command to completion, feeding it `stdin`; fails with its stderr if it exits non-zero.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let describe = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetsimError::io(format!("starting `{}`", describe()), e))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())
            .map_err(|e| NetsimError::io(format!("writing to `{}`", describe()), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetsimError::io(format!("waiting for `{}`", describe()), e))?;
    if !out.status.success() {
        return Err(NetsimError::Command {
            command: describe(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip [-n netns] -batch -` with one command per line (each without the leading `ip`).
pub fn ip_batch(netns: Option<&str>, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let script = lines.join("\n") + "\n";
    let mut args = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["-batch", "-"]);
    run("ip", &args, Some(&script)).map_err(|e| match e {
        NetsimError::Command { stderr, .. } => NetsimError::Command {
            command: format!("ip {} (script:\n{script})", args.join(" ")),
            stderr,
        },
        other => other,
    })?;
    Ok(())
}

/// Loads an nftables ruleset into a namespace.
pub fn nft_load(netns: &str, ruleset: &str) -> Result<()> {
    run(
        "ip",
        &["netns", "exec", netns, "nft", "-f", "-"],
        Some(ruleset),
    )
    .map_err(|e| match e {
        NetsimError::Command { stderr, .. } => NetsimError::Command {
            command: format!("nft -f - in {netns} (ruleset:\n{ruleset})"),
            stderr,
        },
        other => other,
    })?;
    Ok(())
}

/// Runs `f` on a helper thread that has entered namespace `netns`. Sockets created by `f`
/// stay in that namespace for their whole life, whichever thread uses them afterwards, and
/// `/proc/sys/net` opened by `f` is that namespace's.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> io::Result<T> + Send) -> Result<T> {
    let path = Path::new(NETNS_DIR).join(netns);
    let handle = File::open(&path)
        .map_err(|e| NetsimError::io(format!("opening namespace {}", path.display()), e))?;
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns with a valid namespace fd only changes this helper thread's
                // network namespace; the thread ends when `f` returns.
                if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace helper thread panicked")))
    });
    result.map_err(|e| NetsimError::io(format!("inside namespace {netns}"), e))
}

/// Writes sysctls (`net/ipv4/ip_forward` style paths under /proc/sys) inside a namespace.
pub fn set_sysctls(netns: &str, values: &[(&str, String)]) -> Result<()> {
    in_netns(netns, || {
        for (key, value) in values {
            let path = Path::new("/proc/sys").join(key);
            std::fs::write(&path, value).map_err(|e| {
                io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
            })?;
        }
        Ok(())
    })
}

/// Names of the existing namespaces starting with `prefix`.
pub fn list_netns(prefix: &str) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetsimError::io(format!("listing {NETNS_DIR}"), e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names)
}

/// Kills every process inside each namespace starting with `prefix`, then deletes the
/// namespaces (which removes their links, bridges and rules). Keeps going past errors and
/// returns the first one. Idempotent: a second call finds nothing to do.
pub fn remove_by_prefix(prefix: &str) -> Result<usize> {
    let names = list_netns(prefix)?;
    let mut first_error = None;
    for name in &names {
        match run("ip", &["netns", "pids", name], None) {
            Ok(out) => {
                for pid in out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                    // SAFETY: plain kill(2) on a pid found inside our own lab namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for name in &names {
        if let Err(e) = run("ip", &["netns", "del", name], None) {
            if Path::new(NETNS_DIR).join(name).exists() {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(names.len()),
    }
}

/// A short random run id (6 lowercase hex digits) that no existing namespace uses.
pub fn fresh_run_id() -> Result<String> {
    for _ in 0..16 {
        let mut bytes = [0u8; 3];
        // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n != bytes.len() as isize {
            return Err(NetsimError::io("getrandom", io::Error::last_os_error()));
        }
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if list_netns(&crate::topology::netns_prefix(&id))?.is_empty() {
            return Ok(id);
        }
    }
    Err(NetsimError::Topology("could not find a free run id".into()))
}
