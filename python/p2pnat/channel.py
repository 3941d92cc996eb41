"""A bounded asyncio channel that can be closed.

Unlike ``asyncio.Queue`` it can be closed: readers then get what is left and the iteration ends,
and writers stop waiting. Two ways to put:

* :meth:`put` waits while the channel is full (backpressure: used for received messages, so a slow
  consumer stops the reader of the node's stdout, which stops the node, which stops the peer);
* :meth:`put_drop_oldest` never waits and drops the oldest item when full (used for events, which
  must never stall message delivery when nobody reads them).
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import Deque, Generic, Optional, Set, Tuple, TypeVar

T = TypeVar("T")


class ChannelClosed(Exception):
    """Raised by :meth:`BoundedChannel.get` when the channel is closed and empty."""


class BoundedChannel(Generic[T]):
    """At most ``maxsize`` items and, if ``max_bytes`` is set, at most ``max_bytes`` of item sizes
    (as given to :meth:`put`); one item larger than ``max_bytes`` is let in when the channel is empty."""

    def __init__(self, maxsize: int, max_bytes: Optional[int] = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: Deque[Tuple[T, int]] = deque()
        self._closed = False
        self._waiters: Set[asyncio.Future] = set()
        self.dropped = 0  # items dropped by put_drop_oldest or put after close

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def _wait_change(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await fut
        finally:
            self._waiters.discard(fut)

    def _full_for(self, size: int) -> bool:
        if len(self._items) >= self.maxsize:
            return True
        return (self.max_bytes is not None and bool(self._items)
                and self.bytes + size > self.max_bytes)

    async def put(self, item: T, size: int = 0) -> bool:
        """Add ``item`` (counting ``size`` bytes), waiting while full. Returns False (item
        dropped) if the channel is closed."""
        while not self._closed and self._full_for(size):
            await self._wait_change()
        if self._closed:
            self.dropped += 1
            return False
        self._items.append((item, size))
        self.bytes += size
        self._wake()
        return True

    def offer(self, item: T, size: int = 0) -> bool:
        """Add ``item`` if there is room now and the channel is open; False otherwise (then
        :meth:`put` waits for room or reports the channel closed)."""
        if self._closed or self._full_for(size):
            return False
        self._items.append((item, size))
        self.bytes += size
        if self._waiters:
            self._wake()
        return True

    def get_nowait(self) -> T:
        """The next item; ``IndexError`` if the channel is empty."""
        item, size = self._items.popleft()
        self.bytes -= size
        if self._waiters:
            self._wake()
        return item

    def get_nowait_many(self, limit: Optional[int] = None) -> list:
        """Every queued item (at most ``limit``) without waiting; may be empty."""
        n = len(self._items) if limit is None else min(limit, len(self._items))
        out = []
        for _ in range(n):
            item, size = self._items.popleft()
            self.bytes -= size
            out.append(item)
        if n and self._waiters:
            self._wake()
        return out

    async def get_many(self, limit: Optional[int] = None) -> list:
        """Wait for at least one item, then return every queued item (at most ``limit``);
        :class:`ChannelClosed` once closed and empty."""
        while not self._items and not self._closed:
            await self._wait_change()
        if self._items:
            return self.get_nowait_many(limit)
        raise ChannelClosed()

    def put_drop_oldest(self, item: T) -> bool:
        """Add ``item`` without waiting; when full, drop the oldest item. False if closed."""
        if self._closed:
            self.dropped += 1
            return False
        if len(self._items) >= self.maxsize:
            _, size = self._items.popleft()
            self.bytes -= size
            self.dropped += 1
        self._items.append((item, 0))
        self._wake()
        return True

    async def get(self) -> T:
        """The next item, waiting for one; :class:`ChannelClosed` once closed and empty."""
        while not self._items and not self._closed:
            await self._wait_change()
        if self._items:
            item, size = self._items.popleft()
            self.bytes -= size
            self._wake()
            return item
        raise ChannelClosed()

    def unbound(self) -> None:
        """Stop limiting the size (for a final drain whose size is bounded elsewhere)."""
        self.maxsize = sys.maxsize
        self.max_bytes = None
        self._wake()

    def close(self) -> None:
        """No more items are accepted; items already in the channel can still be read."""
        self._closed = True
        self._wake()

    def __aiter__(self):
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except ChannelClosed:
            raise StopAsyncIteration from None
