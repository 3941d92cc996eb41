//! The metrics address (`--metrics-listen`): a minimal HTTP/1.1 server for `GET /metrics`
//! (Prometheus/OpenMetrics text) and `GET /healthz` (liveness), on plain TCP.
//!
//! Limits: at most [`MAX_CONNECTIONS`] connections at once (more are closed at once); one
//! request per connection (`Connection: close`); the request head is at most
//! [`MAX_REQUEST_HEAD`] bytes and must arrive within [`REQUEST_TIMEOUT`]. A malformed or
//! oversized request gets `400 Bad Request` and the connection is closed; any body is ignored.
//!
//! Liveness: `/healthz` answers `200 ok` once the server is listening and while none of its
//! long-running loops (QUIC accept, STUN, registry expiry, TURN, TLS port) has stopped; otherwise
//! `503`. Each loop holds a [`LoopGuard`]; a loop that returns or panics drops it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::metrics::METRICS;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Largest request head (request line and headers) read.
pub const MAX_REQUEST_HEAD: usize = 8192;
/// Time for the whole request head to arrive, and for the response to be written.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

static READY: AtomicBool = AtomicBool::new(false);
static STOPPED_LOOPS: AtomicUsize = AtomicUsize::new(0);

/// Marks the server as listening (`true`: `/healthz` answers `ok` from now on while no loop
/// stopped) or as shutting down (`false`: `/healthz` fails, and loops that end are not errors).
pub fn set_ready(ready: bool) {
    READY.store(ready, Ordering::Relaxed);
}

/// Held by a long-running loop; dropping it (the loop ended or panicked) fails `/healthz`.
pub struct LoopGuard(&'static str);

/// A guard for the loop `name` (named in the log when it stops).
pub fn loop_guard(name: &'static str) -> LoopGuard {
    LoopGuard(name)
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        STOPPED_LOOPS.fetch_add(1, Ordering::Relaxed);
        if READY.load(Ordering::Relaxed) {
            tracing::error!(task = self.0, "a server loop stopped: /healthz now fails");
        }
    }
}

fn healthy() -> bool {
    READY.load(Ordering::Relaxed) && STOPPED_LOOPS.load(Ordering::Relaxed) == 0
}

/// Why the metrics address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind the metrics address {addr}: {source}")]
pub struct MetricsBindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds the metrics address.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsBindError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(TcpListener::from_std)
        .map_err(|source| MetricsBindError { addr, source })
}

/// Serves the metrics address forever.
pub async fn serve(listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!("metrics accept error: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%from, "metrics connection refused: {MAX_CONNECTIONS} open");
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            if tokio::time::timeout(REQUEST_TIMEOUT, answer(stream))
                .await
                .is_err()
            {
                tracing::debug!(%from, "metrics request timed out");
            }
        });
    }
}

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
struct RequestLine<'a> {
    method: &'a str,
    path: &'a str,
}

/// Why a request head is refused with 400.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum HeadError {
    #[error("request head over {MAX_REQUEST_HEAD} bytes")]
    TooLarge,
    #[error("connection closed before the end of the request head")]
    Truncated,
    #[error("request head is not UTF-8")]
    NotText,
    #[error("malformed request line")]
    RequestLine,
    #[error("malformed header line")]
    Header,
}

/// Parses a complete request head (everything before the blank line).
fn parse_head(head: &[u8]) -> Result<RequestLine<'_>, HeadError> {
    let text = std::str::from_utf8(head).map_err(|_| HeadError::NotText)?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::RequestLine);
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) || !path.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(HeadError::RequestLine);
    }
    for line in lines {
        match line.split_once(':') {
            Some((name, _)) if !name.is_empty() && !name.contains(' ') => {}
            _ => return Err(HeadError::Header),
        }
    }
    Ok(RequestLine { method, path })
}

/// Reads the request head (up to the blank line) into `buf`; returns its length.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, HeadError> {
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(end);
        }
        if buf.len() >= MAX_REQUEST_HEAD {
            return Err(HeadError::TooLarge);
        }
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(HeadError::Truncated),
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn answer(mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(1024);
    let head = read_head(&mut stream, &mut buf)
        .await
        .and_then(|end| parse_head(&buf[..end]));
    let (status, content_type, body) = match head {
        Err(HeadError::Truncated) => return,
        Err(e) => {
            tracing::debug!("metrics request refused: {e}");
            ("400 Bad Request", "text/plain", format!("{e}\n"))
        }
        Ok(RequestLine { method, .. }) if method != "GET" => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
        Ok(RequestLine { path, .. }) => match path.split('?').next().unwrap_or(path) {
            "/metrics" => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                METRICS.encode(),
            ),
            "/healthz" if healthy() => ("200 OK", "text/plain", "ok\n".to_string()),
            "/healthz" => (
                "503 Service Unavailable",
                "text/plain",
                "not running\n".to_string(),
            ),
            _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
        },
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Unread bytes at close would make the kernel reset the connection, which can destroy the
    // answer before the client reads it: read (and drop) what is left, within the request's
    // time and at most another head's worth.
    let mut left = MAX_REQUEST_HEAD;
    let mut chunk = [0u8; 1024];
    while left > 0 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*"),
            Ok(RequestLine {
                method: "GET",
                path: "/metrics"
            })
        );
        assert!(parse_head(b"GET /healthz HTTP/1.0").is_ok());
        for bad in [
            &b"GET /metrics"[..],
            b"GET metrics HTTP/1.1",
            b"GET /metrics HTTP/2",
            b"GET  /metrics HTTP/1.1",
            b"G=T /metrics HTTP/1.1",
            b"GET /metrics HTTP/1.1\r\nno colon here",
            b"GET /metrics HTTP/1.1\r\n: empty name",
            b"\xff\xfe /x HTTP/1.1",
            b"",
        ] {
            assert!(parse_head(bad).is_err(), "{bad:?} accepted");
        }
    }
}
