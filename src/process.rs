//! Process plumbing shared by the `p2p-node` and `p2p-rendezvous` binaries: logging to stderr and
//! waiting for SIGINT/SIGTERM.

/// How log lines look on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object a line (`timestamp`, `level`, `target`, `fields`, `span`, `spans`), for
    /// log collectors.
    Json,
}

impl LogFormat {
    /// The flag value naming this format.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Sends `tracing` logs to stderr (never stdout: stdout is the application protocol), filtered by
/// `RUST_LOG` or else `default_filter`, as text or JSON lines.
pub fn init_logging(default_filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// SIGINT and SIGTERM listeners, installed once: a signal that arrives while nobody is awaiting
/// [`ShutdownSignals::recv`] is kept, not lost (listeners created anew in a loop miss signals
/// that arrive between two turns).
#[derive(Debug)]
pub struct ShutdownSignals {
    listeners: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl ShutdownSignals {
    /// Installs the listeners (inside a tokio runtime). If the handlers cannot be installed,
    /// [`Self::recv`] never completes.
    pub fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let listeners = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(interrupt), Ok(terminate)) => Some((interrupt, terminate)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot listen for SIGINT/SIGTERM: {e}");
                None
            }
        };
        ShutdownSignals { listeners }
    }

    /// Completes on the first SIGINT or SIGTERM since [`Self::install`]; true when one came.
    pub async fn recv(mut self) -> bool {
        match self.listeners.as_mut() {
            Some((interrupt, terminate)) => {
                tokio::select! { _ = interrupt.recv() => true, _ = terminate.recv() => true }
            }
            None => std::future::pending().await,
        }
    }
}

/// Completes on the first SIGINT or SIGTERM (never, if the handlers cannot be installed).
pub async fn shutdown_signal() {
    ShutdownSignals::install().recv().await;
}

/// The process's stdin for the async runtime. A pipe (how programs and the Python wrapper drive
/// the node) is put in non-blocking mode and registered with the reactor, so a read costs no
/// thread hand-off; anything else (a terminal, a file) uses tokio's blocking-pool stdin.
///
/// Non-blocking mode belongs to the pipe's open file description, which only this process's
/// end shares (the writer holds the other end): the terminal a person types into is never
/// switched. After this call nothing may read fd 0 with blocking std I/O.
pub fn async_stdin() -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    use std::os::fd::AsFd;
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .inspect(grow_pipe)
        .and_then(tokio::net::unix::pipe::Receiver::from_owned_fd);
    match pipe {
        Ok(pipe) => Box::new(pipe),
        Err(e) => {
            tracing::debug!("stdin is not a pipe ({e}); reading it on the blocking pool");
            Box::new(tokio::io::stdin())
        }
    }
}

/// The process's stdout for the async runtime: a pipe is registered with the reactor (see
/// [`async_stdin`]); anything else uses tokio's blocking-pool stdout. After this call nothing
/// may write fd 1 with blocking std I/O (`println!` could fail with `WouldBlock`).
pub fn async_stdout() -> Box<dyn tokio::io::AsyncWrite + Unpin + Send> {
    use std::os::fd::AsFd;
    let pipe = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .inspect(grow_pipe)
        .and_then(tokio::net::unix::pipe::Sender::from_owned_fd);
    match pipe {
        Ok(pipe) => Box::new(pipe),
        Err(e) => {
            tracing::debug!("stdout is not a pipe ({e}); writing it on the blocking pool");
            Box::new(tokio::io::stdout())
        }
    }
}

/// Bytes a stdin or stdout pipe is grown to: Linux's default `fs.pipe-max-size`, so any user
/// may ask for it. A 64 KiB pipe (the default) moves a 1 MiB message in 16 reads, each waking
/// the writer; a 1 MiB one in one.
pub const PIPE_BYTES: libc::c_int = 1024 * 1024;

/// Grows `fd` to [`PIPE_BYTES`] if it is a pipe (Linux); anything else, or a refusal, leaves it
/// as it is.
fn grow_pipe(fd: &std::os::fd::OwnedFd) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a valid descriptor we own; F_SETPIPE_SZ takes an int and fails
        // harmlessly on anything that is not a pipe.
        let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        if rc < 0 {
            tracing::debug!(
                "pipe not grown to {PIPE_BYTES} bytes: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}
