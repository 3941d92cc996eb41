"""The application API: ``P2PServer`` and ``P2PClient`` (asyncio).

Both run one ``p2p-node --io frames`` child process (see :class:`~p2pnat.node.NodeProcess`) and turn
Python objects into payload bytes with a codec (JSON by default). Nothing here touches the network.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Tuple

from . import events as ev
from .channel import BoundedChannel, ChannelClosed
from .codecs import JsonCodec, decode_with, encode_with, get_codec, make_envelope
from .frames import send_header
from .node import EventHandler, NodeProcess, PeerInfo, StderrTarget


_DIRECT_CODECS = (JsonCodec,)


class _Endpoint:
    """What P2PServer and P2PClient share: the node process, the codec, events, lifecycle."""

    def __init__(self, *, rendezvous: Optional[str], identity: Optional[str], codec: Any,
                 listen: Optional[str], binary: Optional[str], max_message: Optional[int],
                 on_event: Optional[EventHandler], accept_from: Optional[str],
                 message_queue_size: int, message_queue_bytes: Optional[int],
                 event_queue_size: int, max_in_flight: Optional[int],
                 ready_timeout: float, stop_timeout: float, stderr: StderrTarget,
                 extra_args: Sequence[str], env: Optional[Dict[str, str]], name: str) -> None:
        self.codec = get_codec(codec)
        codec_obj = self.codec
        if type(codec_obj) in _DIRECT_CODECS:  # raises only DecodeError / EncodeError itself
            decode = codec_obj.decode
            self._encode = codec_obj.encode
        else:
            decode = functools.partial(decode_with, codec_obj)
            self._encode = functools.partial(encode_with, codec_obj)
        self.node = NodeProcess(
            rendezvous=rendezvous, identity=identity, listen=listen, max_message=max_message,
            binary=binary, extra_args=extra_args, env=env,
            decode=decode, accept_from=accept_from,
            message_queue_size=message_queue_size, message_queue_bytes=message_queue_bytes,
            event_queue_size=event_queue_size, max_in_flight=max_in_flight,
            ready_timeout=ready_timeout, stop_timeout=stop_timeout,
            stderr=stderr, on_event=on_event, name=name)

    # lifecycle
    async def start(self):
        """Start ``p2p-node`` and wait until it reports ``ready``."""
        await self.node.start()
        return self

    async def stop(self) -> None:
        """Stop ``p2p-node`` (end of stdin, then SIGTERM, then SIGKILL); leaves no child process."""
        await self.node.stop()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    # state
    @property
    def peer_id(self) -> Optional[str]:
        """This node's own peer ID (from the ``ready`` event); ``None`` before ``start()``."""
        return self.node.peer_id

    @property
    def running(self) -> bool:
        return self.node.running

    @property
    def connected_peers(self) -> Dict[str, PeerInfo]:
        return self.node.connected_peers

    async def list_peers(self) -> List[PeerInfo]:
        return await self.node.list_peers()

    # events
    def events(self) -> AsyncIterator[ev.Event]:
        """Async iterator of :class:`~p2pnat.events.Event`: connected, path, disconnected, failed,
        error, decode-error, ... It ends (with a ``node-exited`` event) when the node ends."""
        return self.node.events()

    def add_event_handler(self, handler: EventHandler) -> None:
        """Call ``handler(event)`` for each event; ``async def`` handlers run as tasks."""
        self.node.add_event_handler(handler)

    def remove_event_handler(self, handler: EventHandler) -> None:
        self.node.remove_event_handler(handler)

    # encoding
    def encode(self, message: Any, *, envelope: bool = True) -> bytes:
        """The exact payload bytes ``send_message`` would put on the wire for ``message``."""
        return self._encode(make_envelope(message) if envelope else message)

    async def _send(self, peer_id: str, message: Any, wait: bool, envelope: bool) -> Any:
        payload = self.encode(message, envelope=envelope)  # EncodeError at the caller
        return await self.node.send(peer_id, payload, wait=wait)

    async def _send_many(self, peer_id: str, messages: Any, envelope: bool) -> List[int]:
        encode = self._encode
        if envelope:
            payloads = [encode(make_envelope(m)) for m in messages]
        else:
            payloads = [encode(m) for m in messages]
        return await self.node.send_many(peer_id, payloads)

    # bulk sending: no Future per message
    @property
    def delivered_count(self) -> int:
        """Sends confirmed ``delivered`` since start (every kind of send)."""
        return self.node.delivered_count

    @property
    def failed_count(self) -> int:
        """Sends that ended ``failed``, or were pending when the node ended, since start."""
        return self.node.failed_count

    @property
    def pending_count(self) -> int:
        """Sends still waiting for ``delivered`` / ``failed``."""
        return self.node.pending_count

    async def wait_sent(self, timeout: Optional[float] = None) -> Tuple[int, int]:
        """Wait until every send so far has its outcome; ``(delivered_count, failed_count)``."""
        return await self.node.wait_sent(timeout)


class P2PServer(_Endpoint):
    """Receives messages from any peer and answers them.

    ::

        async with P2PServer(rendezvous="127.0.0.1:3478", identity="server.key") as server:
            print(server.peer_id)
            async for peer_id, message in server.messages():
                await server.send_message(peer_id, {"type": "reply", "payload": message["payload"]})
    """

    def __init__(self, rendezvous: Optional[str] = None, identity: Optional[str] = None,
                 codec: Any = "json", *, listen: Optional[str] = None, binary: Optional[str] = None,
                 max_message: Optional[int] = None, on_event: Optional[EventHandler] = None,
                 message_queue_size: int = 1024, message_queue_bytes: Optional[int] = None,
                 event_queue_size: int = 256, max_in_flight: Optional[int] = None,
                 ready_timeout: float = 30.0, stop_timeout: float = 5.0,
                 stderr: StderrTarget = None, extra_args: Sequence[str] = (),
                 env: Optional[Dict[str, str]] = None) -> None:
        super().__init__(rendezvous=rendezvous, identity=identity, codec=codec, listen=listen,
                         binary=binary, max_message=max_message, on_event=on_event, accept_from=None,
                         message_queue_size=message_queue_size,
                         message_queue_bytes=message_queue_bytes, event_queue_size=event_queue_size,
                         max_in_flight=max_in_flight, ready_timeout=ready_timeout,
                         stop_timeout=stop_timeout, stderr=stderr, extra_args=extra_args, env=env,
                         name="p2p-node(server)")

    async def send_message(self, peer_id: str, message: Any, *, wait: bool = True,
                           envelope: bool = True) -> Any:
        """Send ``message`` to ``peer_id``.

        ``envelope=True`` wraps it in the seed's shape (see :func:`~p2pnat.codecs.make_envelope`);
        ``envelope=False`` encodes it as is. ``wait=True`` returns the msg_id when the peer's node
        confirms delivery and raises :class:`~p2pnat.errors.DeliveryFailed` otherwise;
        ``wait=False`` returns an ``asyncio.Future`` with that outcome.
        Raises :class:`~p2pnat.errors.EncodeError` if the codec cannot encode the message.
        """
        return await self._send(peer_id, message, wait, envelope)

    def messages(self) -> AsyncIterator[Tuple[str, Any]]:
        """``(peer_id, message)`` for every decoded message; ends when the node ends.

        Messages are read only as fast as this is iterated (bounded queue): a slow loop slows the
        senders down instead of filling memory.
        """
        return _Messages(self.node.messages(), with_peer=True)

    def message_batches(self, max_batch: Optional[int] = None) -> AsyncIterator[List[Tuple[str, Any]]]:
        """Lists of ``(peer_id, message)``: each waits for one message, then takes every message
        already queued (at most ``max_batch``). Same order and backpressure as :meth:`messages`,
        with one await per batch instead of per message."""
        return _Batches(self.node.messages(), max_batch, with_peer=True)

    async def send_many(self, peer_id: str, messages: Any, *, envelope: bool = True) -> List[int]:
        """Send every message of ``messages`` (an iterable) to ``peer_id``; returns their msg_ids
        once all are queued for the node (waiting while its stdin is full).

        No Future per message: each ends in exactly one ``delivered`` (counted in
        :attr:`delivered_count`) or ``failed`` (counted in :attr:`failed_count`, and a ``failed``
        event with its msg_id). ``await wait_sent()`` waits for all outcomes. Every message is
        encoded first: an :class:`~p2pnat.errors.EncodeError` means none was sent.
        """
        return await self._send_many(peer_id, messages, envelope)


class P2PClient(_Endpoint):
    """Talks to one server, named by its peer ID.

    ::

        async with P2PClient(server_id, rendezvous="127.0.0.1:3478", identity="client.key") as client:
            await client.send_message({"text": "hi"})
            async for reply in client.messages():
                print(reply)

    Messages from any other peer are dropped and reported as ``unexpected-message`` events.
    """

    def __init__(self, server_peer_id: str, rendezvous: Optional[str] = None,
                 identity: Optional[str] = None, codec: Any = "json", *,
                 listen: Optional[str] = None, binary: Optional[str] = None,
                 max_message: Optional[int] = None, on_event: Optional[EventHandler] = None,
                 message_queue_size: int = 1024, message_queue_bytes: Optional[int] = None,
                 event_queue_size: int = 256, max_in_flight: Optional[int] = None,
                 ready_timeout: float = 30.0, stop_timeout: float = 5.0,
                 stderr: StderrTarget = None, extra_args: Sequence[str] = (),
                 env: Optional[Dict[str, str]] = None) -> None:
        send_header(0, server_peer_id, 0)  # validates the peer id early
        self.server_peer_id = server_peer_id
        super().__init__(rendezvous=rendezvous, identity=identity, codec=codec, listen=listen,
                         binary=binary, max_message=max_message, on_event=on_event,
                         accept_from=server_peer_id, message_queue_size=message_queue_size,
                         message_queue_bytes=message_queue_bytes, event_queue_size=event_queue_size, max_in_flight=max_in_flight,
                         ready_timeout=ready_timeout, stop_timeout=stop_timeout, stderr=stderr,
                         extra_args=extra_args, env=env, name="p2p-node(client)")

    async def start(self, *, connect: bool = True):
        """Start the node; with ``connect=True`` also ask it to connect to the server now (without
        waiting: ``send_message`` connects when needed; see :meth:`wait_connected`)."""
        await super().start()
        if connect:
            await self.node.connect(self.server_peer_id)
        return self

    async def wait_connected(self, timeout: Optional[float] = None) -> PeerInfo:
        """Wait until the node reports ``connected`` for the server."""
        return await self.node.wait_connected(self.server_peer_id, timeout)

    @property
    def connected(self) -> bool:
        return self.server_peer_id in self.node.connected_peers

    async def send_message(self, message: Any, *, wait: bool = True, envelope: bool = True) -> Any:
        """Send ``message`` to the server; same semantics as :meth:`P2PServer.send_message`."""
        return await self._send(self.server_peer_id, message, wait, envelope)

    def messages(self) -> AsyncIterator[Any]:
        """Every decoded message from the server; ends when the node ends."""
        return _Messages(self.node.messages(), with_peer=False)

    def message_batches(self, max_batch: Optional[int] = None) -> AsyncIterator[List[Any]]:
        """Lists of messages from the server, as :meth:`P2PServer.message_batches`."""
        return _Batches(self.node.messages(), max_batch, with_peer=False)

    async def send_many(self, messages: Any, *, envelope: bool = True) -> List[int]:
        """Send every message to the server; as :meth:`P2PServer.send_many`."""
        return await self._send_many(self.server_peer_id, messages, envelope)


class _Messages:
    """``messages()``: an async iterator over the node's message channel (a plain class, cheaper
    per message than an async generator); ``aclose()`` is accepted as on a generator."""

    __slots__ = ("_channel", "_with_peer")

    def __init__(self, channel: BoundedChannel, with_peer: bool) -> None:
        self._channel = channel
        self._with_peer = with_peer

    def __aiter__(self) -> "_Messages":
        return self

    async def __anext__(self) -> Any:
        channel = self._channel
        if channel:  # something queued: take it without another coroutine
            item = channel.get_nowait()
        else:
            try:
                item = await channel.get()
            except ChannelClosed:
                raise StopAsyncIteration from None
        return item if self._with_peer else item[1]

    async def aclose(self) -> None:
        pass


class _Batches:
    """``message_batches()``: lists of what is queued, one await per list."""

    __slots__ = ("_channel", "_max", "_with_peer")

    def __init__(self, channel: BoundedChannel, max_batch: Optional[int], with_peer: bool) -> None:
        if max_batch is not None and max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._channel = channel
        self._max = max_batch
        self._with_peer = with_peer

    def __aiter__(self) -> "_Batches":
        return self

    async def __anext__(self) -> List[Any]:
        try:
            items = await self._channel.get_many(self._max)
        except ChannelClosed:
            raise StopAsyncIteration from None
        return items if self._with_peer else [message for _peer, message in items]

    async def aclose(self) -> None:
        pass


def run(coro: Any) -> Any:
    """``asyncio.run`` shorthand for scripts."""
    return asyncio.run(coro)
