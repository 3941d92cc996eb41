//! Process plumbing shared by the `p2p-node` and `p2p-rendezvous` binaries: logging to stderr and
//! waiting for SIGINT/SIGTERM.

/// Sends `tracing` logs to stderr (never stdout: stdout is the application protocol), filtered by
/// `RUST_LOG` or else `default_filter`; colours only on a terminal.
pub fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
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
