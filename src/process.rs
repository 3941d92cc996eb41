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
