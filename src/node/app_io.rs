//! stdin/stdout of the node: reading commands and payloads, writing events and received payloads
//! (docs/PROTOCOL.md section 1). Parsing lives in `p2pnat_proto::app`; this module does the I/O.
//!
//! Bounds: payload bytes read from stdin and not yet handed to QUIC are limited by the
//! `stdin_budget` semaphore, and received payloads not yet written to stdout by the `stdout_budget`
//! semaphore (each `2 x max_message`). A full budget stops the reader, which is the backpressure.

use std::sync::Arc;

use p2pnat_proto::app::{
    self, parse_command_line, parse_send_header, Command, Event, FrameError, FRAME_COMMAND,
    FRAME_EVENT, FRAME_SEND, MAX_COMMAND_LINE, SEND_FIXED_HEADER,
};
use p2pnat_proto::PeerId;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// How the application talks to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoMode {
    /// Length-prefixed binary frames, for programs.
    Frames,
    /// Text lines, for people.
    Lines,
}

/// Something read from stdin, for the node's core.
#[derive(Debug)]
pub enum Input {
    Send {
        msg_id: u64,
        peer_text: String,
        payload: Vec<u8>,
        permit: OwnedSemaphorePermit,
    },
    Command(Command),
    /// stdin ended or asked to quit.
    Quit,
}

/// Something to write to stdout.
#[derive(Debug)]
pub enum Output {
    Event(Event),
    Recv {
        peer: PeerId,
        payload: Vec<u8>,
        _permit: OwnedSemaphorePermit,
    },
    /// Write everything before this, flush, and stop.
    Finish,
}

/// Handle for everything that emits output. Cloneable; sending waits when stdout is slow.
#[derive(Clone, Debug)]
pub struct Outputs {
    tx: mpsc::Sender<Output>,
    budget: Arc<Semaphore>,
}

impl Outputs {
    pub fn new(capacity: usize, budget_bytes: usize) -> (Self, mpsc::Receiver<Output>) {
        let (tx, rx) = mpsc::channel(capacity);
        let budget = Arc::new(Semaphore::new(budget_bytes));
        (Outputs { tx, budget }, rx)
    }

    /// Emits an event. Events are never dropped while stdout is open.
    pub async fn event(&self, event: Event) {
        if let Err(unsent) = self.tx.send(Output::Event(event)).await {
            if let Output::Event(event) = unsent.0 {
                tracing::warn!(event = %event.to_line(), "stdout writer gone; event not written");
            }
        }
    }

    /// Reserves room for a received payload of `len` bytes (waits while stdout is behind).
    pub async fn reserve(&self, len: usize) -> OwnedSemaphorePermit {
        acquire(&self.budget, len).await
    }

    /// Queues a received payload for stdout.
    pub async fn recv(&self, peer: PeerId, payload: Vec<u8>, permit: OwnedSemaphorePermit) -> bool {
        self.tx
            .send(Output::Recv {
                peer,
                payload,
                _permit: permit,
            })
            .await
            .is_ok()
    }

    pub async fn finish(&self) {
        let _ = self.tx.send(Output::Finish).await;
    }

    pub async fn error(&self, code: &'static str, message: impl Into<String>) {
        self.event(Event::Error {
            code,
            message: message.into(),
        })
        .await;
    }
}

/// Writes outputs until [`Output::Finish`] or until every sender is gone. Returns when stdout
/// fails (the application closed it) too.
pub async fn write_outputs(
    mode: IoMode,
    mut rx: mpsc::Receiver<Output>,
    stdout: impl AsyncWrite + Unpin,
) {
    let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, stdout);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut finish = false;
        while let Some(output) = next.take() {
            let result = match output {
                Output::Finish => {
                    // Whatever is already queued behind the finish is written too.
                    finish = true;
                    next = rx.try_recv().ok();
                    continue;
                }
                Output::Event(event) => write_event(mode, &mut out, &event).await,
                Output::Recv { peer, payload, .. } => match mode {
                    IoMode::Frames => {
                        let header = app::recv_frame_header(&peer, payload.len());
                        match out.write_all(&header).await {
                            Ok(()) => out.write_all(&payload).await,
                            Err(e) => Err(e),
                        }
                    }
                    IoMode::Lines => {
                        let line = format!("recv {peer} {}\n", app::escape_line_payload(&payload));
                        out.write_all(line.as_bytes()).await
                    }
                },
            };
            if let Err(e) = result {
                tracing::error!("stdout closed or failed ({e}); output stops");
                return;
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush().await {
            tracing::error!("stdout flush failed ({e}); output stops");
            return;
        }
        if finish {
            return;
        }
    }
}

async fn write_event(
    mode: IoMode,
    out: &mut (impl AsyncWrite + Unpin),
    event: &Event,
) -> std::io::Result<()> {
    let line = event.to_line();
    match mode {
        IoMode::Frames => {
            out.write_all(&app::encode_frame(FRAME_EVENT, line.as_bytes()))
                .await
        }
        IoMode::Lines => {
            out.write_all(line.as_bytes()).await?;
            out.write_all(b"\n").await
        }
    }
}

/// Reads stdin until it ends or `quit`, handing inputs to `tx` (which waits when the node is
/// busy: that is the backpressure). Malformed input becomes an error event and is skipped.
pub async fn read_inputs(
    mode: IoMode,
    stdin: impl AsyncRead + Unpin,
    tx: mpsc::Sender<Input>,
    outputs: Outputs,
    max_message: usize,
    stdin_budget: Arc<Semaphore>,
) {
    let reader = tokio::io::BufReader::with_capacity(64 * 1024, stdin);
    let result = match mode {
        IoMode::Frames => read_frames(reader, &tx, &outputs, max_message, &stdin_budget).await,
        IoMode::Lines => read_lines(reader, &tx, &outputs, max_message, &stdin_budget).await,
    };
    if let Err(e) = result {
        outputs
            .error(
                "bad-frame",
                format!("stdin ended inside a frame or failed: {e}"),
            )
            .await;
    }
    let _ = tx.send(Input::Quit).await;
}

/// A send read from stdin after the node stopped taking input still gets its terminal event.
async fn refuse_after_shutdown(input: Input, outputs: &Outputs) {
    if let Input::Send {
        msg_id, peer_text, ..
    } = input
    {
        outputs
            .event(Event::Failed {
                msg_id,
                peer: peer_text,
                reason: "shutdown: node shutting down before the message was sent".into(),
            })
            .await;
    }
}

async fn skip(reader: &mut (impl AsyncRead + Unpin), len: u64) -> std::io::Result<()> {
    let copied = tokio::io::copy(&mut reader.take(len), &mut tokio::io::sink()).await?;
    if copied < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Takes `len` bytes (at least 1) from a byte budget, waiting until they are free. Budgets are
/// at least `max_message` bytes, so any accepted message fits.
async fn acquire(budget: &Arc<Semaphore>, len: usize) -> OwnedSemaphorePermit {
    let permits = u32::try_from(len).unwrap_or(u32::MAX).max(1);
    budget
        .clone()
        .acquire_many_owned(permits)
        .await
        .expect("byte budgets are never closed")
}

async fn read_frames(
    mut reader: impl AsyncRead + Unpin,
    tx: &mpsc::Sender<Input>,
    outputs: &Outputs,
    max_message: usize,
    budget: &Arc<Semaphore>,
) -> std::io::Result<()> {
    loop {
        let mut length = [0u8; 4];
        match reader.read_exact(&mut length).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let length = u32::from_be_bytes(length) as usize;
        if length == 0 {
            outputs
                .error("bad-frame", FrameError::Empty.to_string())
                .await;
            continue;
        }
        let frame_type = reader.read_u8().await?;
        let body_len = length - 1;
        match frame_type {
            FRAME_SEND => {
                let mut prefix = vec![0u8; body_len.min(SEND_FIXED_HEADER)];
                reader.read_exact(&mut prefix).await?;
                if body_len >= SEND_FIXED_HEADER {
                    let id_len = usize::from(prefix[8]).min(body_len - SEND_FIXED_HEADER);
                    let start = prefix.len();
                    prefix.resize(start + id_len, 0);
                    reader.read_exact(&mut prefix[start..]).await?;
                }
                let header = match parse_send_header(&prefix, body_len) {
                    Ok(header) => header,
                    Err(e) => {
                        skip(&mut reader, (body_len - prefix.len()) as u64).await?;
                        outputs.error("bad-frame", e.to_string()).await;
                        continue;
                    }
                };
                let payload_len = body_len - header.header_len;
                if payload_len > max_message {
                    skip(&mut reader, payload_len as u64).await?;
                    outputs
                        .event(Event::Failed {
                            msg_id: header.msg_id,
                            peer: header.peer_text,
                            reason: format!(
                                "too-large: payload of {payload_len} bytes exceeds --max-message {max_message}"
                            ),
                        })
                        .await;
                    continue;
                }
                let permit = acquire(budget, payload_len).await;
                // Filled straight from the reader, without zeroing first (payload_len was checked
                // against --max-message above).
                let mut payload = Vec::with_capacity(payload_len);
                while payload.len() < payload_len {
                    let left = (payload_len - payload.len()) as u64;
                    // Into the spare capacity only: never grows the allocation.
                    if (&mut reader).take(left).read_buf(&mut payload).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                let input = Input::Send {
                    msg_id: header.msg_id,
                    peer_text: header.peer_text,
                    payload,
                    permit,
                };
                if let Err(refused) = tx.send(input).await {
                    refuse_after_shutdown(refused.0, outputs).await;
                    return Ok(());
                }
            }
            FRAME_COMMAND => {
                if body_len > MAX_COMMAND_LINE {
                    skip(&mut reader, body_len as u64).await?;
                    outputs
                        .error(
                            "bad-frame",
                            FrameError::CommandTooLong(body_len).to_string(),
                        )
                        .await;
                    continue;
                }
                let mut body = vec![0u8; body_len];
                reader.read_exact(&mut body).await?;
                let Ok(line) = String::from_utf8(body) else {
                    outputs
                        .error("bad-frame", FrameError::CommandNotUtf8.to_string())
                        .await;
                    continue;
                };
                if forward_command(&line, tx, outputs, max_message, budget, 0).await
                    == Forwarded::Stopped
                {
                    return Ok(());
                }
            }
            other => {
                skip(&mut reader, body_len as u64).await?;
                outputs
                    .error("bad-frame", FrameError::UnknownType(other).to_string())
                    .await;
            }
        }
    }
}

/// What [`forward_command`] did with a line.
#[derive(Debug, PartialEq, Eq)]
enum Forwarded {
    /// A send (valid or refused for its size) that used the `msg_id`.
    UsedMsgId,
    /// Anything else: another command, or an error event.
    Other,
    /// The node stopped listening.
    Stopped,
}

/// Parses a command line and forwards it; sends get `msg_id`.
async fn forward_command(
    line: &str,
    tx: &mpsc::Sender<Input>,
    outputs: &Outputs,
    max_message: usize,
    budget: &Arc<Semaphore>,
    msg_id: u64,
) -> Forwarded {
    let input = match parse_command_line(line) {
        Ok(Command::Send { peer, payload }) => {
            if payload.len() > max_message {
                outputs
                    .event(Event::Failed {
                        msg_id,
                        peer: peer.to_text(),
                        reason: format!("too-large: payload exceeds --max-message {max_message}"),
                    })
                    .await;
                return Forwarded::UsedMsgId;
            }
            let permit = acquire(budget, payload.len()).await;
            Input::Send {
                msg_id,
                peer_text: peer.to_text(),
                payload,
                permit,
            }
        }
        Ok(command) => Input::Command(command),
        Err(e) => {
            // An empty line in line mode is not worth an error.
            if !line.trim().is_empty() {
                outputs.error(e.code(), e.to_string()).await;
            }
            return Forwarded::Other;
        }
    };
    let used = matches!(input, Input::Send { .. });
    match tx.send(input).await {
        Err(refused) => {
            refuse_after_shutdown(refused.0, outputs).await;
            Forwarded::Stopped
        }
        Ok(()) if used => Forwarded::UsedMsgId,
        Ok(()) => Forwarded::Other,
    }
}

async fn read_lines(
    mut reader: impl AsyncBufRead + Unpin,
    tx: &mpsc::Sender<Input>,
    outputs: &Outputs,
    max_message: usize,
    budget: &Arc<Semaphore>,
) -> std::io::Result<()> {
    let mut next_msg_id = 1u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let (complete, too_long) =
            read_bounded_line(&mut reader, &mut line, MAX_COMMAND_LINE).await?;
        if !complete && line.is_empty() && !too_long {
            return Ok(());
        }
        if too_long {
            outputs
                .error(
                    "bad-command",
                    format!("line longer than {MAX_COMMAND_LINE} bytes ignored"),
                )
                .await;
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        match forward_command(&text, tx, outputs, max_message, budget, next_msg_id).await {
            Forwarded::Stopped => return Ok(()),
            Forwarded::UsedMsgId => next_msg_id += 1,
            Forwarded::Other => {}
        }
        if !complete {
            return Ok(());
        }
    }
}

/// Reads one line (without `\n`) of at most `max` bytes into `line`. Returns (ended with newline,
/// was too long). A too-long line is consumed to its end and discarded, never buffered.
async fn read_bounded_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(bool, bool)> {
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok((false, too_long));
        }
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(pos) => (&available[..pos], Some(pos)),
            None => (available, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.map_or(chunk.len(), |pos| pos + 1);
        reader.consume(used);
        if found.is_some() {
            return Ok((true, too_long));
        }
    }
}
