"""The framed stdin/stdout protocol of ``p2p-node --io frames`` (docs/PROTOCOL.md section 1.2).

Every frame, in both directions, is::

    offset  size  field
    0       4     length L (u32 big-endian): bytes that follow (type + body), 1 <= L
    4       1     type
    5       L-1   body

stdin (application -> node):
    0x01 SEND     msg_id u64 BE, id_len u8, peer_id (ASCII, id_len bytes), payload (rest)
    0x02 COMMAND  UTF-8 command line without newline

stdout (node -> application):
    0x81 RECV     id_len u8, peer_id (id_len bytes), payload (rest)
    0x82 EVENT    one UTF-8 event line without newline

This module is pure (no I/O except :func:`read_frame`, which reads from an asyncio stream).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Dict, List, Optional, Tuple

from .errors import FrameError

TYPE_SEND = 0x01
TYPE_COMMAND = 0x02
TYPE_RECV = 0x81
TYPE_EVENT = 0x82

#: Default ``--max-message`` of p2p-node: 16 MiB.
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
#: Largest ``L`` the u32 length field can hold.
MAX_FRAME_LENGTH_FIELD = 0xFFFFFFFF
MAX_PEER_ID_LEN = 255
MAX_MSG_ID = 0xFFFFFFFFFFFFFFFF

_LENGTH = struct.Struct(">I")
_HEADER = struct.Struct(">IB")
_SEND_FIXED = struct.Struct(">IBQB")  # length, type, msg_id, id_len
_PEER_ID_CACHE_SIZE = 4096
_PEER_ID_CACHE: Dict[str, bytes] = {}   # validated peer id text -> its ASCII bytes


def max_frame_length(max_message: int = DEFAULT_MAX_MESSAGE) -> int:
    """Largest ``L`` a well-behaved node sends on stdout when payloads are at most ``max_message``.

    A RECV frame holds type (1) + id_len (1) + peer id (<= 255) + payload; event lines are far
    shorter than that for any sensible ``max_message``.
    """
    return min(MAX_FRAME_LENGTH_FIELD, max_message + 1 + 1 + MAX_PEER_ID_LEN)


def _peer_id_bytes(peer_id: str) -> bytes:
    raw = _PEER_ID_CACHE.get(peer_id)  # a program talks to few peers: validate each text once
    if raw is not None and type(peer_id) is str:
        return raw
    if not isinstance(peer_id, str):
        raise TypeError(f"peer_id must be str, not {type(peer_id).__name__}")
    try:
        raw = peer_id.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"peer_id must be ASCII: {peer_id!r}") from None
    if not 1 <= len(raw) <= MAX_PEER_ID_LEN:
        raise ValueError(f"peer_id must be 1..{MAX_PEER_ID_LEN} bytes long, got {len(raw)}")
    if any(c <= 0x20 or c == 0x7F for c in raw):
        raise ValueError(f"peer_id must not contain spaces or control characters: {peer_id!r}")
    if len(_PEER_ID_CACHE) >= _PEER_ID_CACHE_SIZE:
        _PEER_ID_CACHE.clear()
    _PEER_ID_CACHE[peer_id] = raw
    return raw


def frame_peer_id(peer_id: str) -> bytes:
    """``peer_id`` as the bytes a frame carries; ValueError/TypeError if it is not a valid one."""
    return _peer_id_bytes(peer_id)


def encode_frame(frame_type: int, body: bytes = b"") -> bytes:
    """One complete frame: length, type, body."""
    if not 0 <= frame_type <= 0xFF:
        raise ValueError(f"frame type out of range: {frame_type}")
    length = 1 + len(body)
    if length > MAX_FRAME_LENGTH_FIELD:
        raise ValueError(f"frame body too large for a u32 length: {len(body)} bytes")
    return _HEADER.pack(length, frame_type) + bytes(body)


def send_header(msg_id: int, peer_id: str, payload_len: int) -> bytes:
    """The bytes of a SEND frame that come before the payload.

    ``send_header(...) + payload`` is the whole frame; keeping them apart avoids copying a
    large payload just to prepend a few bytes.
    """
    if not isinstance(msg_id, int) or not 0 <= msg_id <= MAX_MSG_ID:
        raise ValueError(f"msg_id must be an integer in 0..2**64-1, got {msg_id!r}")
    pid = _peer_id_bytes(peer_id)
    length = 1 + 8 + 1 + len(pid) + payload_len
    if length > MAX_FRAME_LENGTH_FIELD:
        raise ValueError(f"payload too large for one frame: {payload_len} bytes")
    return _SEND_FIXED.pack(length, TYPE_SEND, msg_id, len(pid)) + pid


def encode_send(msg_id: int, peer_id: str, payload: bytes) -> bytes:
    """A complete SEND frame (stdin, type 0x01)."""
    return send_header(msg_id, peer_id, len(payload)) + bytes(payload)


def encode_command(command: str) -> bytes:
    """A complete COMMAND frame (stdin, type 0x02)."""
    if "\n" in command or "\r" in command:
        raise ValueError("a command is one line: it must not contain newlines")
    return encode_frame(TYPE_COMMAND, command.encode("utf-8"))


def encode_recv(peer_id: str, payload: bytes) -> bytes:
    """A complete RECV frame (stdout, type 0x81). Used by tests and fake nodes."""
    pid = _peer_id_bytes(peer_id)
    return encode_frame(TYPE_RECV, bytes([len(pid)]) + pid + bytes(payload))


def encode_event(line: str) -> bytes:
    """A complete EVENT frame (stdout, type 0x82). Used by tests and fake nodes."""
    return encode_frame(TYPE_EVENT, line.encode("utf-8"))


def decode_send_body(body: bytes) -> Tuple[int, str, bytes]:
    """Split a SEND body into ``(msg_id, peer_id, payload)``."""
    if len(body) < 9:
        raise FrameError(f"SEND body too short: {len(body)} bytes")
    msg_id = int.from_bytes(body[0:8], "big")
    id_len = body[8]
    if len(body) < 9 + id_len:
        raise FrameError(f"SEND body too short for its peer id: {len(body)} bytes, id_len {id_len}")
    peer_id = body[9:9 + id_len].decode("ascii", errors="replace")
    return msg_id, peer_id, bytes(body[9 + id_len:])


def decode_recv_body(body: bytes) -> Tuple[str, bytes]:
    """Split a RECV body into ``(peer_id, payload)``."""
    if len(body) < 1:
        raise FrameError("RECV body is empty")
    id_len = body[0]
    if id_len == 0 or len(body) < 1 + id_len:
        raise FrameError(f"RECV body too short for its peer id: {len(body)} bytes, id_len {id_len}")
    peer_id = body[1:1 + id_len].decode("ascii", errors="replace")
    return peer_id, bytes(body[1 + id_len:])


class FrameDecoder:
    """Incremental frame splitter: feed bytes, get ``(type, body)`` tuples.

    Raises :class:`FrameError` for ``L = 0`` or ``L > max_length``; after that the stream cannot be
    resynchronised and the decoder must be discarded. Holds at most one incomplete frame plus the
    bytes of one ``feed``. Frames are split by offset (``struct.unpack_from``) and the consumed
    bytes dropped once per ``feed``, so many small frames in one chunk cost one pass.
    """

    def __init__(self, max_length: int = max_frame_length()) -> None:
        self.max_length = max_length
        self._buf = bytearray()
        self.error: Optional[FrameError] = None

    def feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        """The frames completed by ``data``, in order.

        A bad length raises :class:`FrameError`; if whole frames came before it in the same
        ``data`` they are returned first, the error is kept in :attr:`error` and raised by the
        next ``feed`` (so a reader can act on what was valid, then check :attr:`error`).
        """
        if self.error is not None:
            raise self.error
        buf = self._buf
        if buf:
            buf += data
            view: Any = buf
        else:
            view = data  # the common case: the chunk starts at a frame boundary; no copy
        out: List[Tuple[int, bytes]] = []
        append = out.append
        unpack = _LENGTH.unpack_from
        max_length = self.max_length
        end = len(view)
        pos = 0
        while end - pos >= 4:
            (length,) = unpack(view, pos)
            if length == 0 or length > max_length:
                self._buf = bytearray()
                try:
                    _check_length(length, max_length)
                except FrameError as exc:
                    self.error = exc
                    if not out:
                        raise
                    return out
            stop = pos + 4 + length
            if stop > end:
                break
            append((view[pos + 4], bytes(view[pos + 5:stop])))
            pos = stop
        if view is buf:
            del buf[:pos]
        elif pos < end:
            self._buf = bytearray(view[pos:])
        return out

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a whole frame."""
        return len(self._buf)


def _check_length(length: int, max_length: int) -> None:
    if length == 0:
        raise FrameError("frame with length 0")
    if length > max_length:
        raise FrameError(f"frame length {length} exceeds the limit of {max_length} bytes")


async def read_frame(reader: asyncio.StreamReader, max_length: int) -> Optional[Tuple[int, bytes]]:
    """Read one frame; ``None`` on a clean end of stream (at a frame boundary).

    Raises :class:`FrameError` on a bad length or a stream that ends inside a frame.
    """
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError(f"stream ended inside a frame header ({len(exc.partial)} of 4 bytes)") from None
    (length,) = _LENGTH.unpack(head)
    _check_length(length, max_length)
    try:
        rest = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise FrameError(f"stream ended inside a frame ({len(exc.partial)} of {length} bytes)") from None
    return rest[0], rest[1:]
