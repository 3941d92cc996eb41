"""``NodeProcess``: one ``p2p-node --io frames`` child process, driven over its stdin/stdout.

This is the byte-level layer: it sends and receives raw payloads (``bytes``) for peer IDs. The
codec-aware ``P2PServer`` / ``P2PClient`` (api.py) sit on top of it. It is public so that programs
(and tests) can drive a node with raw bytes.

Memory is bounded everywhere:

* received messages go to a channel bounded by count (``message_queue_size``) and payload bytes
  (``message_queue_bytes``, default 2 x max_message like the node's own bound); when it is full the
  reader stops reading the node's stdout, so the node stops reading from its peers (backpressure,
  docs/PROTOCOL.md 1.4);
* events go to a bounded channel that drops the oldest event when full (events never stall messages);
* sends are limited by the node's stdin (it reads only as fast as it can hand messages to peers),
  so unconfirmed sends are bounded by the node's own buffers; ``max_in_flight`` adds a count limit
  (off by default, see python/README.md about the deadlock it can cause);
* stderr is read continuously, line by line, into the ``logging`` module and/or a file; only the last
  ``STDERR_TAIL_LINES`` lines are kept (for error messages).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import os
import signal
try:
    import fcntl
except ImportError:  # pragma: no cover (not Unix)
    fcntl = None  # type: ignore
import struct
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple, Union

from . import events as ev
from .binary import NODE, find_binary
from .channel import BoundedChannel
from .errors import DeliveryFailed, FrameError, NodeExited, NodeStartError, P2PError
from .stderr import STDERR_MAX_LINE, drain_stderr  # noqa: F401 (re-exported)
from .frames import (MAX_FRAME_LENGTH_FIELD, TYPE_EVENT, TYPE_RECV, TYPE_SEND, DEFAULT_MAX_MESSAGE,
                     FrameDecoder, encode_command, frame_peer_id, max_frame_length, send_header)

log = logging.getLogger("p2pnat.node")

STDERR_TAIL_LINES = 30
#: How many bytes of an undecodable or unexpected payload an event keeps (for diagnostics).
EVENT_PAYLOAD_PREFIX = 256
#: Bytes asked of the node's stdout per read: many small frames are split from one chunk.
READ_CHUNK = 256 * 1024
#: Size asked for the node's stdin pipe (Linux; best effort).
PIPE_SIZE = 1024 * 1024
#: Frames waiting in the wrapper's write buffer are handed to the pipe when the event loop gets
#: control (end of the current batch of callbacks) or as soon as this many bytes are waiting.
WRITE_BATCH_BYTES = 64 * 1024
#: The stdin transport's own buffer above which a send waits for the pipe (asyncio's default
#: high-water mark): memory held for the node's stdin is bounded by about the sum of the two.
WRITE_HIGH_WATER = 64 * 1024

EventHandler = Callable[[ev.Event], Union[None, Awaitable[None]]]
StderrTarget = Union[None, str, "os.PathLike[str]", Any]



class PeerInfo(NamedTuple):
    peer_id: str
    state: Optional[str]        # "connected" / "connecting"
    path: Optional[str]         # "direct" / "relayed"
    remote_addr: Optional[str]


class NodeProcess:
    """Start, drive and stop one ``p2p-node --io frames``.

    ``decode``: applied to each received payload in the reader; an exception becomes a
    ``decode-error`` event and the message is dropped. ``None`` keeps raw ``bytes``.
    ``accept_from``: if set, messages from any other peer become ``unexpected-message`` events.
    ``stderr``: ``None`` forwards the node's stderr to the logger ``p2pnat.node``; a path appends it to
    that file; an object with ``write(str)`` gets each line.
    """

    def __init__(self, *, rendezvous: Optional[str] = None, identity: Optional[str] = None,
                 listen: Optional[str] = None, max_message: Optional[int] = None,
                 binary: Optional[str] = None, extra_args: Sequence[str] = (),
                 env: Optional[Dict[str, str]] = None,
                 decode: Optional[Callable[[bytes], Any]] = None, accept_from: Optional[str] = None,
                 message_queue_size: int = 1024, message_queue_bytes: Optional[int] = None,
                 event_queue_size: int = 256, max_in_flight: Optional[int] = None,
                 ready_timeout: float = 30.0, stop_timeout: float = 5.0, kill_timeout: float = 5.0,
                 stderr: StderrTarget = None, on_event: Optional[EventHandler] = None,
                 name: str = "p2p-node") -> None:
        self.rendezvous = rendezvous
        self.identity = None if identity is None else os.fspath(identity)
        self.listen = listen
        self.max_message = max_message
        self.binary = binary
        self.extra_args = list(extra_args)
        self.env = env
        self.name = name
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.kill_timeout = kill_timeout
        self._decode = decode
        self._accept_from = accept_from
        self._max_frame = max_frame_length(max_message or DEFAULT_MAX_MESSAGE)
        self._stderr_target = stderr
        self._handlers: List[EventHandler] = [on_event] if on_event else []
        self._handler_tasks: Set[asyncio.Task] = set()

        if message_queue_bytes is None:  # the node's own bound for received payloads (PROTOCOL 1.4)
            message_queue_bytes = 2 * (max_message or DEFAULT_MAX_MESSAGE)
        self._messages: BoundedChannel[Tuple[str, Any]] = BoundedChannel(message_queue_size,
                                                                          message_queue_bytes)
        self._events: BoundedChannel[ev.Event] = BoundedChannel(event_queue_size)
        self._max_in_flight = max_in_flight
        self._in_flight: Optional[asyncio.Semaphore] = None
        # msg_id -> its Future (send) or None (send_nowait / send_many): every send until its
        # delivered / failed (or the node's end).
        self._pending: Dict[int, Optional[asyncio.Future]] = {}
        self._idle_waiters: List[asyncio.Future] = []  # wait_sent()
        self.delivered_count = 0
        self.failed_count = 0
        self._msg_ids = itertools.count(1)

        self._proc: Optional[asyncio.subprocess.Process] = None
        self._write_lock: Optional[asyncio.Lock] = None
        self._wbuf: List[bytes] = []       # frames not yet handed to the stdin transport
        self._wbuf_bytes = 0
        self._flush_handle: Optional[asyncio.Handle] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._peer_text: Dict[bytes, str] = {}  # RECV / event peer id bytes -> str (few peers)
        self._reader_task: Optional[asyncio.Task] = None
        self._stderr_task: Optional[asyncio.Task] = None
        self._monitor_task: Optional[asyncio.Task] = None
        self._stop_task: Optional[asyncio.Task] = None
        self._ready: Optional[asyncio.Future] = None
        self._stopping = False
        self._exit_error: Optional[NodeExited] = None
        self._exit_info: Optional[Tuple[str, Optional[int], List[str]]] = None
        self._stderr_tail: Deque[str] = deque(maxlen=STDERR_TAIL_LINES)

        self.peer_id: Optional[str] = None
        self.local_addrs: Tuple[str, ...] = ()
        self.observed_addr: Optional[str] = None
        self._peers: Dict[str, PeerInfo] = {}
        self._connect_waiters: Dict[str, List[asyncio.Future]] = {}
        self._list_lock: Optional[asyncio.Lock] = None
        self._list_collector: Optional[Tuple[List[PeerInfo], asyncio.Future]] = None
        self._first_event_seen = False
        self._fatal: Optional[str] = None

    # ------------------------------------------------------------------ properties
    @property
    def pid(self) -> Optional[int]:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> Optional[int]:
        return None if self._proc is None else self._proc.returncode

    @property
    def running(self) -> bool:
        return self._proc is not None and self._exit_error is None and not self._stopping

    @property
    def stderr_tail(self) -> List[str]:
        return list(self._stderr_tail)

    @property
    def pending_count(self) -> int:
        """Sends waiting for ``delivered`` / ``failed``."""
        return len(self._pending)

    @property
    def dropped_events(self) -> int:
        return self._events.dropped

    @property
    def connected_peers(self) -> Dict[str, PeerInfo]:
        """Peers with a live connection, as last reported by connected/path/disconnected events."""
        return dict(self._peers)

    def command_line(self, binary: str) -> List[str]:
        args = [binary, "--io", "frames"]
        if self.rendezvous:
            args += ["--rendezvous", self.rendezvous]
        if self.identity:
            args += ["--identity", self.identity]
        if self.listen:
            args += ["--listen", self.listen]
        if self.max_message is not None:
            args += ["--max-message", str(self.max_message)]
        return args + self.extra_args

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> "NodeProcess":
        """Start the node and wait for its ``ready`` event. Raises :class:`NodeStartError`."""
        if self._proc is not None:
            raise P2PError("this node was already started (create a new object to start again)")
        binary = self.binary or find_binary(NODE)
        loop = asyncio.get_running_loop()
        if self._max_in_flight is not None:
            self._in_flight = asyncio.Semaphore(self._max_in_flight)
        self._write_lock = asyncio.Lock()
        self._list_lock = asyncio.Lock()
        self._loop = loop
        self._ready = loop.create_future()
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("NO_COLOR", "1")
        argv = self.command_line(binary)
        log.debug("starting %s", " ".join(argv))
        try:
            # A new session: Ctrl+C in a terminal reaches Python, which stops the node cleanly.
            # If Python dies the node sees end of stdin, which it treats as quit.
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True, limit=READ_CHUNK)
        except OSError as exc:
            raise NodeStartError(f"cannot start {binary}: {exc}") from exc
        _grow_pipe(self._proc.stdin)  # stdout keeps its size: a larger one measured no faster
        self._stderr_task = loop.create_task(self._drain_stderr(), name=f"{self.name}-stderr")
        self._reader_task = loop.create_task(self._read_stdout(), name=f"{self.name}-stdout")
        self._monitor_task = loop.create_task(self._monitor(), name=f"{self.name}-monitor")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.ready_timeout)
        except asyncio.TimeoutError:
            await self._terminate(kill_now=False)
            raise NodeStartError(f"{self.name} did not report ready within {self.ready_timeout} s "
                                 f"(pid {self._proc.pid})", stderr_tail=self.stderr_tail) from None
        except NodeExited as exc:
            await self._terminate(kill_now=False)
            raise NodeStartError(f"{self.name} exited before it was ready (exit status "
                                 f"{self._proc.returncode})", returncode=self._proc.returncode,
                                 stderr_tail=self.stderr_tail) from exc
        except BaseException:
            await self._terminate(kill_now=True)
            raise
        return self

    async def stop(self) -> None:
        """Stop the node: close its stdin (= ``quit``), wait, then SIGTERM, then SIGKILL.

        Always leaves no child process. Messages received from now on are dropped (those already
        queued can still be read); pending sends fail with :class:`NodeExited` if the node exits
        before confirming them. Safe to call more than once and after the node died.
        """
        if self._proc is None:
            return
        if self._stop_task is None:
            self._stop_task = asyncio.get_running_loop().create_task(self._terminate(kill_now=False))
        await asyncio.shield(self._stop_task)

    async def _terminate(self, *, kill_now: bool) -> None:
        proc = self._proc
        assert proc is not None
        self._stopping = True
        self._messages.close()
        if proc.returncode is None:
            if kill_now:
                _signal(proc, signal.SIGKILL)
            else:
                self._flush()  # frames already accepted by send() go before end of stdin
                try:
                    proc.stdin.close()
                except Exception:  # already closed or broken
                    pass
                if not await _wait_exit(proc, self.stop_timeout):
                    log.warning("%s (pid %s) still running %.1f s after end of stdin: sending SIGTERM",
                                self.name, proc.pid, self.stop_timeout)
                    _signal(proc, signal.SIGTERM)
                    if not await _wait_exit(proc, self.kill_timeout):
                        log.warning("%s (pid %s) ignored SIGTERM: sending SIGKILL", self.name, proc.pid)
                        _signal(proc, signal.SIGKILL)
        await proc.wait()
        if self._monitor_task is not None:
            await asyncio.shield(self._monitor_task)
        # Event handler tasks are not awaited: one of them may be the caller of stop().

    async def __aenter__(self) -> "NodeProcess":
        return await self.start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------------ sending
    def _check_running(self) -> None:
        if self._proc is None:
            raise P2PError("the node is not started: call and await start() first")
        if self._exit_error is not None:
            raise self._new_exit_error()
        if self._stopping:
            raise NodeExited(f"{self.name} is stopping", stderr_tail=())

    def _new_exit_error(self) -> NodeExited:
        """A fresh exception per caller (one shared instance would collect everyone's traceback)."""
        if self._exit_info is None:
            return NodeExited(f"{self.name} is stopping")
        reason, returncode, tail = self._exit_info
        return NodeExited(reason, returncode=returncode, stderr_tail=tail)

    async def send(self, peer_id: str, payload: bytes, *, wait: bool = True) -> Any:
        """Send ``payload`` (bytes) to ``peer_id``.

        ``wait=True``: returns the msg_id once the node reports ``delivered``; raises
        :class:`DeliveryFailed` on ``failed`` and :class:`NodeExited` if the node goes away first.
        ``wait=False``: returns, once the frame is queued for the node's stdin, an
        ``asyncio.Future`` with that outcome (an ignored failure is not reported as "never
        retrieved"; it is also a ``failed`` event).
        Either way the call waits while the node's stdin is full (backpressure) and, if
        ``max_in_flight`` is set, while that many sends are unconfirmed. Frames are written to the
        pipe in batches: when the event loop next gets control, or once ``WRITE_BATCH_BYTES`` wait.
        """
        self._check_running()
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        msg_id = next(self._msg_ids)
        header = send_header(msg_id, peer_id, len(payload))  # ValueError/TypeError at the caller
        if self._in_flight is not None:
            await self._in_flight.acquire()
        fut: asyncio.Future = self._loop.create_future()  # type: ignore[union-attr]
        self._pending[msg_id] = fut
        if self._in_flight is not None:  # the only bookkeeping a done callback is needed for
            fut.add_done_callback(functools.partial(self._send_done, msg_id))
        try:
            self._check_running()
            self._queue(header, payload)
            stdin = self._proc.stdin  # type: ignore[union-attr]
            if stdin.is_closing() or stdin.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                await self._maybe_drain()
        except BaseException:
            if not fut.done():
                fut.cancel()
            if self._pending.get(msg_id) is fut:
                del self._pending[msg_id]
            raise
        if wait:
            return await fut
        return fut

    async def send_many(self, peer_id: str, payloads: Any) -> List[int]:
        """Send each payload (bytes) of an iterable to ``peer_id``; returns their msg_ids once all
        are queued for the node, waiting while its stdin is full (as :meth:`send` does).

        No Future per message: each ends in exactly one ``delivered`` (counted in
        :attr:`delivered_count`) or ``failed`` (counted in :attr:`failed_count`, and a ``failed``
        event with its msg_id, as for any send). :meth:`wait_sent` waits for every outcome.
        ``max_in_flight`` does not apply. A bad ``peer_id`` raises before anything is sent; so
        does a payload that is not bytes-like or too large for a frame (the ones before it in the
        iterable are sent).
        """
        self._check_running()
        pid = frame_peer_id(peer_id)  # ValueError/TypeError at the caller
        head = struct.Struct(f">IBQB{len(pid)}s")
        fixed = 1 + 8 + 1 + len(pid)
        pending = self._pending
        wbuf = self._wbuf
        ids = []
        for payload in payloads:
            if type(payload) is not bytes:
                payload = bytes(payload)
            size = len(payload)
            if fixed + size > MAX_FRAME_LENGTH_FIELD:
                raise ValueError(f"payload too large for one frame: {size} bytes")
            self._check_running()
            msg_id = next(self._msg_ids)
            pending[msg_id] = None
            ids.append(msg_id)
            wbuf.append(head.pack(fixed + size, TYPE_SEND, msg_id, len(pid), pid))
            wbuf.append(payload)
            self._wbuf_bytes += 4 + fixed + size
            if self._wbuf_bytes >= WRITE_BATCH_BYTES:
                self._flush()
                await self._maybe_drain()
                wbuf = self._wbuf
        if self._wbuf and self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        return ids

    async def drain(self) -> None:
        """Wait while the node's stdin is full (what ``send`` does after queueing a frame)."""
        self._check_running()
        await self._maybe_drain()

    async def wait_sent(self, timeout: Optional[float] = None) -> Tuple[int, int]:
        """Wait until every send so far has its ``delivered`` or ``failed``; returns
        ``(delivered_count, failed_count)``, totals since start over every kind of send. Sends
        still pending when the node ends count as failed (their Futures get :class:`NodeExited`).
        ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        self._flush()
        if self._pending:
            fut = self._loop.create_future()  # type: ignore[union-attr]
            self._idle_waiters.append(fut)
            try:
                await asyncio.wait_for(fut, timeout)
            finally:
                if fut in self._idle_waiters:
                    self._idle_waiters.remove(fut)
        return self.delivered_count, self.failed_count

    def _send_done(self, msg_id: int, fut: asyncio.Future) -> None:
        if self._pending.get(msg_id) is fut:
            del self._pending[msg_id]
        if self._in_flight is not None:
            self._in_flight.release()
        if not fut.cancelled():
            fut.exception()  # mark retrieved: failures are also events

    def _settled(self) -> None:
        """Called when _pending became empty."""
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def command(self, text: str) -> None:
        """Write one COMMAND frame (e.g. ``connect <peer_id>``, ``disconnect <peer_id>``)."""
        self._check_running()
        self._queue(encode_command(text))
        await self._maybe_drain()

    async def connect(self, peer_id: str) -> None:
        """Ask the node to connect to ``peer_id`` (without sending). See :meth:`wait_connected`."""
        send_header(0, peer_id, 0)  # validates the peer id
        await self.command(f"connect {peer_id}")

    async def disconnect(self, peer_id: str) -> None:
        send_header(0, peer_id, 0)
        await self.command(f"disconnect {peer_id}")

    async def wait_connected(self, peer_id: str, timeout: Optional[float] = None) -> PeerInfo:
        """Wait for a ``connected`` event for ``peer_id`` (returns at once if connected)."""
        if peer_id in self._peers:
            return self._peers[peer_id]
        self._check_running()
        fut = asyncio.get_running_loop().create_future()
        self._connect_waiters.setdefault(peer_id, []).append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            waiters = self._connect_waiters.get(peer_id, [])
            if fut in waiters:
                waiters.remove(fut)

    async def list_peers(self, timeout: Optional[float] = 30.0) -> List[PeerInfo]:
        """Send ``list`` and collect the ``peer`` events up to ``peers <count>``."""
        self._check_running()
        assert self._list_lock is not None
        async with self._list_lock:
            fut = asyncio.get_running_loop().create_future()
            self._list_collector = ([], fut)
            try:
                await self.command("list")
                return await asyncio.wait_for(fut, timeout)
            finally:
                self._list_collector = None

    def _queue(self, *parts: bytes) -> None:
        """Add whole frames to the write buffer (never split: frames from concurrent senders
        cannot interleave); hand the buffer to the pipe at once when it is large, else when the
        loop next gets control."""
        self._wbuf.extend(parts)
        for part in parts:
            self._wbuf_bytes += len(part)
        if self._wbuf_bytes >= WRITE_BATCH_BYTES:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)  # type: ignore[union-attr]

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._wbuf:
            return
        parts, self._wbuf, self._wbuf_bytes = self._wbuf, [], 0
        stdin = self._proc.stdin if self._proc is not None else None
        if stdin is None or stdin.is_closing():
            # The node is gone or going: these frames were never read, so the node reports
            # nothing for them; _finish fails every pending send with NodeExited.
            return
        try:
            if len(parts) <= 2:  # one frame: no copy of a large payload just to join it
                for part in parts:
                    stdin.write(part)
            else:
                stdin.write(b"".join(parts))
        except (BrokenPipeError, ConnectionResetError):
            pass  # reported by _maybe_drain / _finish

    async def _maybe_drain(self) -> None:
        """Wait for the pipe if the stdin transport holds more than WRITE_HIGH_WATER bytes."""
        stdin = self._proc.stdin  # type: ignore[union-attr]
        if not stdin.is_closing() and stdin.transport.get_write_buffer_size() <= WRITE_HIGH_WATER:
            return
        assert self._write_lock is not None and self._proc is not None
        async with self._write_lock:  # one drain() waiter at a time (Python 3.9's StreamWriter)
            self._check_running()
            try:
                if stdin.is_closing():
                    raise ConnectionResetError("stdin is closed")
                await stdin.drain()
            except (BrokenPipeError, ConnectionResetError) as exc:
                broken = exc
            else:
                return
        # The node closed its stdin: it is exiting. Report how it ended, not just the broken pipe.
        if await _wait_exit(self._proc, self.stop_timeout):
            raise NodeExited(self._exit_reason(self._proc.returncode), returncode=self._proc.returncode,
                             stderr_tail=self.stderr_tail) from broken
        raise NodeExited(f"{self.name} stopped reading its stdin ({broken})",
                         stderr_tail=self.stderr_tail) from broken

    # ------------------------------------------------------------------ receiving
    def messages(self) -> BoundedChannel:
        """Async iterator of ``(peer_id, message)``; ends (after the queued ones) when the node ends."""
        return self._messages

    def events(self) -> BoundedChannel:
        """Async iterator of :class:`~p2pnat.events.Event`; ends when the node ends."""
        return self._events

    def add_event_handler(self, handler: EventHandler) -> None:
        """Call ``handler(event)`` for every event (a coroutine function is run as a task)."""
        self._handlers.append(handler)

    def remove_event_handler(self, handler: EventHandler) -> None:
        self._handlers.remove(handler)

    def _publish(self, event: ev.Event) -> None:
        before = self._events.dropped
        self._events.put_drop_oldest(event)
        if self._events.dropped != before and _is_power_of_two(self._events.dropped):
            log.warning("%s: event queue full (%d): %d events dropped so far; read events() or raise "
                        "event_queue_size", self.name, self._events.maxsize, self._events.dropped)
        for handler in list(self._handlers):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._handler_tasks.add(task)
                    task.add_done_callback(self._handler_done)
            except Exception:
                log.exception("%s: event handler %r raised", self.name, handler)

    def _handler_done(self, task: asyncio.Task) -> None:
        self._handler_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: event handler task raised", self.name, exc_info=task.exception())

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        decoder = FrameDecoder(self._max_frame)
        messages = self._messages
        try:
            while True:
                chunk = await stdout.read(READ_CHUNK)
                if not chunk:
                    if decoder.buffered:
                        raise FrameError(f"stream ended inside a frame ({decoder.buffered} bytes "
                                         "of it read)")
                    return
                try:
                    frames = decoder.feed(chunk)
                except FrameError:
                    frames = []
                for frame_type, body in frames:
                    if frame_type == TYPE_RECV:
                        item = self._recv_item(body)
                        size = len(body) - 1 - body[0] if body else 0  # the payload's bytes
                        if item is not None and not messages.offer(item, size):
                            if not await messages.put(item, size):
                                log.debug("%s: message from %s dropped: the node is stopping",
                                          self.name, item[0])
                    elif frame_type == TYPE_EVENT:
                        if not (self._first_event_seen and body.startswith(b"delivered ")
                                and self._delivered(body)):
                            self._handle_event(body)
                    else:
                        self._protocol_error(f"unknown stdout frame type 0x{frame_type:02x} "
                                             f"({len(body)} byte body) skipped")
                if decoder.error is not None:
                    raise decoder.error
        except FrameError as exc:
            # The stream cannot be resynchronised: the node is unusable.
            self._fatal = f"unreadable stdout: {exc}"
            self._protocol_error(f"{exc}; stopping the node")
            _signal(self._proc, signal.SIGKILL)
        except Exception as exc:  # a bug here must not leave callers hanging
            log.exception("%s: stdout reader failed", self.name)
            self._fatal = f"stdout reader failed: {exc!r}"
            self._protocol_error(self._fatal)
            _signal(self._proc, signal.SIGKILL)

    def _delivered(self, body: bytes) -> bool:
        """``delivered <msg_id> <peer_id>`` without building an Event (it is not published)."""
        words = body.split(b" ", 2)
        try:
            msg_id = int(words[1])
        except (IndexError, ValueError):
            return False  # malformed: the general path reports it
        self._resolve(msg_id, None, body)
        return True

    def _resolve(self, msg_id: Optional[int], failure: Optional[DeliveryFailed], raw: Any) -> None:
        """The outcome of send ``msg_id``: delivered (``failure`` None) or failed."""
        pending = self._pending
        if msg_id is None or msg_id not in pending:
            log.debug("%s: %s for no pending send", self.name, raw)
            return
        fut = pending.pop(msg_id)
        if failure is None:
            self.delivered_count += 1
            if fut is not None and not fut.done():
                fut.set_result(msg_id)
        else:
            self.failed_count += 1
            if fut is not None and not fut.done():
                fut.set_exception(failure)
                fut.exception()  # mark retrieved: failures are also events
        if not pending and self._idle_waiters:
            self._settled()

    def _recv_item(self, body: bytes) -> Optional[Tuple[str, Any]]:
        """A RECV body as ``(peer_id, message)``, or None (dropped and reported)."""
        id_len = body[0] if body else 0
        if id_len == 0 or len(body) < 1 + id_len:
            self._protocol_error(f"RECV body too short for its peer id: {len(body)} bytes, "
                                 f"id_len {id_len}; frame skipped")
            return None
        raw_id = body[1:1 + id_len]
        peer_id = self._peer_text.get(raw_id)
        if peer_id is None:
            peer_id = raw_id.decode("ascii", errors="replace")
            if len(self._peer_text) >= 4096:
                self._peer_text.clear()
            self._peer_text[raw_id] = peer_id
        payload = body[1 + id_len:]
        if self._accept_from is not None and peer_id != self._accept_from:
            self._publish(ev.Event(kind=ev.UNEXPECTED_MESSAGE, peer_id=peer_id,
                                   reason=f"{len(payload)} byte message from a peer other than "
                                          f"{self._accept_from} dropped",
                                   payload=payload[:EVENT_PAYLOAD_PREFIX]))
            return None
        message: Any = payload
        if self._decode is not None:
            try:
                message = self._decode(payload)
            except Exception as exc:
                log.warning("%s: undecodable %d byte message from %s: %s", self.name, len(payload),
                            peer_id, exc)
                self._publish(ev.Event(kind=ev.DECODE_ERROR, peer_id=peer_id, reason=str(exc),
                                       payload=payload[:EVENT_PAYLOAD_PREFIX]))
                return None
        return peer_id, message

    def _protocol_error(self, message: str) -> None:
        log.error("%s: protocol error: %s", self.name, message)
        self._publish(ev.Event(kind=ev.PROTOCOL_ERROR, reason=message))

    def _handle_event(self, body: bytes) -> None:
        event = ev.parse_event(body.decode("utf-8", errors="replace"))
        if not self._first_event_seen:
            self._first_event_seen = True
            if event.kind != ev.READY:
                log.warning("%s: first event is %r, not ready (docs/PROTOCOL.md 1.2)", self.name, event.raw)
        kind = event.kind
        if kind == ev.READY:
            self.peer_id = event.peer_id
            self.local_addrs = event.local_addrs
            self.observed_addr = event.observed_addr
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(event)
        elif kind == ev.DELIVERED:
            self._resolve(event.msg_id, None, event.raw)
            return  # confirmations are not published: send() reports them
        elif kind == ev.FAILED:
            self._resolve(event.msg_id, DeliveryFailed(event.msg_id, event.peer_id or "?",
                                                       event.reason or ""), event.raw)
        elif kind in (ev.CONNECTED, ev.PATH) and event.peer_id:
            info = PeerInfo(event.peer_id, "connected", event.path, event.remote_addr)
            self._peers[event.peer_id] = info
            for fut in self._connect_waiters.pop(event.peer_id, []):
                if not fut.done():
                    fut.set_result(info)
        elif kind == ev.DISCONNECTED and event.peer_id:
            self._peers.pop(event.peer_id, None)
        elif kind in (ev.PEER, ev.PEERS) and self._list_collector is not None:
            found, fut = self._list_collector
            if kind == ev.PEER and event.peer_id:
                found.append(PeerInfo(event.peer_id, event.state, event.path, event.remote_addr))
            elif not fut.done():
                fut.set_result(found)
            return
        self._publish(event)

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        await drain_stderr(self._proc.stderr, self._stderr_target, self._stderr_tail,
                           lambda: f"{self.name} {self.pid}")

    async def _monitor(self) -> None:
        proc = self._proc
        assert proc is not None and self._reader_task is not None
        returncode = await proc.wait()
        # What is left on stdout is bounded (pipe + reader buffer), so let the reader queue it
        # without waiting for a consumer: finishing must not depend on someone reading messages.
        self._messages.unbound()
        for task, grace in ((self._reader_task, 30.0), (self._stderr_task, 5.0)):
            if task is None:
                continue
            try:  # end of stdout/stderr follows the exit unless another process holds the pipe
                await asyncio.wait_for(asyncio.shield(task), grace)
            except asyncio.TimeoutError:
                task.cancel()
            except Exception:
                pass
        self._finish(self._exit_reason(returncode), returncode)

    def _exit_reason(self, returncode: Optional[int]) -> str:
        if self._fatal is not None:
            return f"{self.name} was killed by the wrapper: {self._fatal}"
        if self._stopping and returncode == 0:
            return f"{self.name} stopped"
        if returncode is not None and returncode < 0:
            return f"{self.name} was killed by signal {-returncode}"
        return f"{self.name} exited with status {returncode}"

    def _finish(self, reason: str, returncode: Optional[int]) -> None:
        tail = () if (self._stopping and returncode == 0) else self.stderr_tail
        self._exit_info = (reason, returncode, list(tail))
        self._exit_error = self._new_exit_error()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(self._new_exit_error())
            self._ready.exception()  # start() may have given up waiting (timeout): no "never retrieved"
        pending, self._pending = self._pending, {}
        self.failed_count += len(pending)
        for fut in pending.values():
            if fut is not None and not fut.done():
                fut.set_exception(self._new_exit_error())
                fut.exception()  # mark retrieved
        self._settled()
        for waiters in self._connect_waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(self._new_exit_error())
        if self._list_collector is not None and not self._list_collector[1].done():
            self._list_collector[1].set_exception(self._new_exit_error())
        self._peers.clear()
        self._messages.close()
        self._publish(ev.Event(kind=ev.NODE_EXITED, reason=reason, returncode=returncode))
        self._events.close()
        (log.info if self._stopping else log.warning)("%s (pid %s): %s", self.name, self.pid, reason)


def _grow_pipe(stream: Any) -> None:
    """Ask Linux for a PIPE_SIZE pipe under the node's stdin (F_SETPIPE_SZ): the node reads more
    frames per read and wakes less often. Best effort: other systems, or a limit below it
    (/proc/sys/fs/pipe-max-size), keep the default size."""
    try:
        transport = stream.transport
        fd = transport.get_extra_info("pipe").fileno()
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except Exception:
        pass


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    if proc.returncode is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


async def _wait_exit(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    try:
        await asyncio.wait_for(proc.wait(), timeout)
        return True
    except asyncio.TimeoutError:
        return False
