"""The node's stderr: read continuously, line by line, into ``logging`` or a file (node.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any, Callable, Deque

log = logging.getLogger("p2pnat.node")

STDERR_MAX_LINE = 8192

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LEVEL = re.compile(r"\b(ERROR|WARN|INFO|DEBUG|TRACE)\b")
_LOG_LEVELS = {"ERROR": logging.ERROR, "WARN": logging.WARNING, "INFO": logging.INFO}


async def drain_stderr(stream: asyncio.StreamReader, target: Any, tail: Deque[str],
                       who: Callable[[], str]) -> None:
    """Read ``stream`` to its end. ``target``: None (the logger ``p2pnat.node``, each line at the
    level it names), a path (appended to), or an object with ``write(str)``. The last lines go
    to ``tail`` (a bounded deque); ``who()`` names the node in log records."""
    sink = None
    if isinstance(target, (str, os.PathLike)):
        sink = open(target, "a", encoding="utf-8", errors="replace")
    elif target is not None:
        sink = target
    buf = bytearray()
    try:
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    break
                _line(bytes(buf[:nl]), sink, tail, who)
                del buf[:nl + 1]
            if len(buf) > STDERR_MAX_LINE:  # a very long line: pass it on in pieces
                _line(bytes(buf), sink, tail, who)
                buf.clear()
        if buf:
            _line(bytes(buf), sink, tail, who)
    finally:
        if sink is not None and sink is not target:
            sink.close()


def _line(raw: bytes, sink: Any, tail: Deque[str], who: Callable[[], str]) -> None:
    line = _ANSI.sub("", raw.decode("utf-8", errors="replace")).rstrip("\r")
    tail.append(line[:500])
    if sink is not None:
        try:
            sink.write(line + "\n")
        except Exception:
            log.exception("%s: cannot write stderr line", who())
    else:
        match = _LEVEL.search(line[:80])
        level = _LOG_LEVELS.get(match.group(1), logging.DEBUG) if match else logging.DEBUG
        log.log(level, "[%s] %s", who(), line)
