"""Event lines of p2p-node (docs/PROTOCOL.md section 1.1) as Python objects.

An event line is UTF-8 words separated by single spaces; the first word names the event. A free-text
``<reason>`` / ``<message>`` is always the last field and may contain spaces. :func:`parse_event`
never raises: a line it does not understand becomes an :class:`Event` whose ``kind`` is the first
word and whose ``args`` hold the rest, so a newer node with new events never breaks the wrapper.

Besides the node's events the wrapper makes a few of its own (``WRAPPER_KINDS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

# Events the node writes.
READY = "ready"
CONNECTED = "connected"
PATH = "path"
DISCONNECTED = "disconnected"
DELIVERED = "delivered"
FAILED = "failed"
PEER = "peer"
PEERS = "peers"
ID = "id"
HELP = "help"
ERROR = "error"
RECV = "recv"  # line mode only

# Events the wrapper makes.
DECODE_ERROR = "decode-error"          # a received payload the codec could not decode
UNEXPECTED_MESSAGE = "unexpected-message"  # P2PClient: a message from a peer other than the server
PROTOCOL_ERROR = "protocol-error"      # the node wrote something that breaks docs/PROTOCOL.md 1.2
NODE_EXITED = "node-exited"            # the node process ended (last event before the iterator ends)
WRAPPER_KINDS = frozenset({DECODE_ERROR, UNEXPECTED_MESSAGE, PROTOCOL_ERROR, NODE_EXITED})


@dataclass(frozen=True)
class Event:
    """One event. Fields that do not apply to the event's kind are ``None``.

    ``raw`` is the event line exactly as the node wrote it (empty for wrapper events).
    """

    kind: str
    raw: str = ""
    args: Tuple[str, ...] = ()
    peer_id: Optional[str] = None
    msg_id: Optional[int] = None
    path: Optional[str] = None          # "direct" / "relayed" (connected, path, peer)
    remote_addr: Optional[str] = None   # connected, path, peer ("-" becomes None)
    state: Optional[str] = None         # peer: "connected" / "connecting"
    reason: Optional[str] = None        # disconnected, failed; message text of error/decode-error
    code: Optional[str] = None          # error: "bad-frame", "too-large", ...
    count: Optional[int] = None         # peers
    local_addrs: Tuple[str, ...] = ()   # ready
    observed_addr: Optional[str] = None  # ready ("-" becomes None)
    nat: Optional[str] = None           # ready: "public", "endpoint-independent", "endpoint-dependent", "unknown"
    returncode: Optional[int] = None    # node-exited
    payload: Optional[bytes] = field(default=None, repr=False)  # decode-error / unexpected-message

    @property
    def is_error(self) -> bool:
        return self.kind in (ERROR, DECODE_ERROR, PROTOCOL_ERROR, FAILED)

    def __str__(self) -> str:
        return self.raw or " ".join(w for w in (self.kind, self.peer_id, self.reason) if w)


def _dash(value: str) -> Optional[str]:
    return None if value in ("", "-") else value


def _int(value: str) -> Optional[int]:
    try:
        return int(value)
    except ValueError:
        return None


def parse_event(line: str) -> Event:
    """Parse one event line (without its newline). Never raises."""
    line = line.rstrip("\r\n")
    kind, _, rest = line.partition(" ")
    args = tuple(rest.split(" ")) if rest else ()
    base = dict(kind=kind, raw=line, args=args)

    def words(n: int) -> Tuple[str, ...]:
        """First n-1 words and the free-text rest as the n-th (padded with "")."""
        parts = rest.split(" ", n - 1) if rest else []
        return tuple(parts + [""] * (n - len(parts)))

    if kind == READY:
        peer_id, *fields = args or ("",)
        local: Tuple[str, ...] = ()
        observed = None
        nat = None
        for f in fields:
            if f.startswith("local="):
                local = tuple(a for a in f[len("local="):].split(",") if a and a != "-")
            elif f.startswith("observed="):
                observed = _dash(f[len("observed="):])
            elif f.startswith("nat="):
                nat = _dash(f[len("nat="):])
        return Event(**base, peer_id=_dash(peer_id), local_addrs=local, observed_addr=observed,
                     nat=nat)
    if kind in (CONNECTED, PATH):
        peer_id, path, addr = words(3)
        return Event(**base, peer_id=_dash(peer_id), path=_dash(path), remote_addr=_dash(addr))
    if kind == DISCONNECTED:
        peer_id, reason = words(2)
        return Event(**base, peer_id=_dash(peer_id), reason=reason)
    if kind == DELIVERED:
        msg_id, peer_id = words(2)
        return Event(**base, msg_id=_int(msg_id), peer_id=_dash(peer_id))
    if kind == FAILED:
        msg_id, peer_id, reason = words(3)
        return Event(**base, msg_id=_int(msg_id), peer_id=_dash(peer_id), reason=reason)
    if kind == PEER:
        peer_id, state, path, addr = words(4)
        return Event(**base, peer_id=_dash(peer_id), state=_dash(state), path=_dash(path),
                     remote_addr=_dash(addr))
    if kind == PEERS:
        return Event(**base, count=_int(rest))
    if kind == ID:
        return Event(**base, peer_id=_dash(rest))
    if kind == ERROR:
        code, message = words(2)
        return Event(**base, code=code, reason=message)
    if kind == HELP:
        return Event(**base, reason=rest)
    return Event(**base)
