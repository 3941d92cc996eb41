//! A queue of byte messages bounded in bytes and in messages, whose sender never waits: a
//! message that would pass either bound is refused (the caller drops and counts it). Used for
//! everything written to one TCP/TLS connection (the node's TURN client over TLS, and the
//! rendezvous's TURN and control clients over TCP/TLS), so a slow connection never stalls the
//! task that feeds it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// The sending side; cheap to clone. Never waits.
#[derive(Debug, Clone)]
pub struct ByteQueue {
    tx: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The receiving side: bytes count as gone once a message is taken.
#[derive(Debug)]
pub struct ByteQueueRx {
    rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// A queue of at most `max_bytes` bytes and `max_messages` messages waiting.
pub fn byte_queue(max_bytes: usize, max_messages: usize) -> (ByteQueue, ByteQueueRx) {
    let (tx, rx) = mpsc::channel(max_messages.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    let out = ByteQueue {
        tx,
        queued: queued.clone(),
        max_bytes,
    };
    (out, ByteQueueRx { rx, queued })
}

impl ByteQueue {
    /// Queues `message` unless either bound would be passed or the receiver is gone; never
    /// waits. `false`: refused.
    pub fn try_queue(&self, message: Vec<u8>) -> bool {
        let len = message.len();
        if self.queued.load(Ordering::Relaxed) + len > self.max_bytes {
            return false;
        }
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.try_send(message).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl ByteQueueRx {
    /// The next message; `None` once every [`ByteQueue`] is gone.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let message = self.rx.recv().await?;
        self.queued.fetch_sub(message.len(), Ordering::Relaxed);
        Some(message)
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Vec<u8>> {
        let message = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(message.len(), Ordering::Relaxed);
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_either_bound_and_frees_bytes_as_messages_are_taken() {
        let (out, mut rx) = byte_queue(10, 3);
        assert!(out.try_queue(vec![0; 6]));
        assert!(!out.try_queue(vec![0; 5]), "11 bytes > 10");
        assert!(out.try_queue(vec![0; 4]));
        assert!(!out.try_queue(vec![0; 1]), "11 bytes > 10");
        assert_eq!(rx.try_recv().map(|m| m.len()), Some(6));
        assert!(out.try_queue(vec![0; 6]));
        let (out, rx) = byte_queue(100, 2);
        assert!(out.try_queue(vec![1]) && out.try_queue(vec![2]));
        assert!(!out.try_queue(vec![3]), "2 messages at most");
        drop(rx);
        assert!(out.is_closed());
        assert!(!out.try_queue(vec![4]));
    }
}
