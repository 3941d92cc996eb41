"""Exceptions raised by the p2pnat wrappers.

Every exception derives from :class:`P2PError`, so ``except P2PError`` catches all of them.
"""

from __future__ import annotations

from typing import Optional, Sequence


class P2PError(Exception):
    """Base class of every p2pnat wrapper error."""


class BinaryNotFound(P2PError, FileNotFoundError):
    """The ``p2p-node`` (or ``p2p-rendezvous``) executable could not be found."""


class FrameError(P2PError, ValueError):
    """A frame on the node's stdin/stdout does not follow docs/PROTOCOL.md section 1.2."""


class EncodeError(P2PError, ValueError):
    """A message could not be encoded by the codec (raised to the caller of ``send_message``)."""


class DecodeError(P2PError, ValueError):
    """A received payload could not be decoded by the codec (reported as a ``decode-error`` event)."""


def _tail_text(stderr_tail: Sequence[str]) -> str:
    if not stderr_tail:
        return ""
    return "\nlast lines of p2p-node stderr:\n  " + "\n  ".join(stderr_tail)


class NodeError(P2PError):
    """The ``p2p-node`` process could not be started, or stopped working."""

    def __init__(self, message: str, *, returncode: Optional[int] = None,
                 stderr_tail: Sequence[str] = ()) -> None:
        self.returncode = returncode
        self.stderr_tail = list(stderr_tail)
        super().__init__(message + _tail_text(self.stderr_tail))


class NodeStartError(NodeError):
    """``p2p-node`` exited, or did not report ``ready``, while starting."""


class NodeExited(NodeError):
    """``p2p-node`` is not running (it exited, was killed, or ``stop()`` was called).

    Pending ``send_message`` calls fail with this exception, and further calls raise it at once.
    """


class DeliveryFailed(P2PError):
    """The node reported ``failed <msg_id> <peer_id> <reason>`` for a message."""

    def __init__(self, msg_id: int, peer_id: str, reason: str) -> None:
        self.msg_id = msg_id
        self.peer_id = peer_id
        self.reason = reason
        #: The reason's code word (``unreachable``, ``shutdown``, ``connection-lost``...; see
        #: docs/PROTOCOL.md 1.1), or ``""`` if the reason has none.
        self.code = reason.split(":", 1)[0] if ":" in reason.split(" ", 1)[0] else ""
        super().__init__(f"message {msg_id} to {peer_id} was not delivered: {reason}")
