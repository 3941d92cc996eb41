#!/usr/bin/env python3
"""Chat demo, client side: sends what you type to a p2p_server.py and prints the answers.

    python3 p2p_client.py [SERVER_PEER_ID] [--rendezvous 127.0.0.1:3478] [--identity ./.p2p_client.key]
    python3 p2p_client.py --message hello --message "second one"      # unattended
    printf 'one\\ntwo\\n' | python3 p2p_client.py                          # unattended, from a pipe

Without SERVER_PEER_ID the ID is read from ./.p2p_server_peer_id, which p2p_server.py writes in the
folder it runs in. Each line of stdin (or each --message) is sent as
``{"type": "message", "payload": <text>, "metadata": {"id": <n>}, "timestamp": <unix time>}``.
At end of input (Ctrl+D, end of the pipe, or after the last --message) the client waits up to
--timeout seconds for the remaining answers, then exits: 0 if every message was delivered and
answered, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from p2pnat import DeliveryFailed, NodeExited, P2PClient, P2PError  # noqa: E402
from p2pnat import events as ev  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("server_peer_id", nargs="?", help="the server's peer ID (default: read --peer-id-file)")
    p.add_argument("--rendezvous", default="127.0.0.1:3478", help="HOST:PORT (default %(default)s)")
    p.add_argument("--identity", default="./.p2p_client.key",
                   help="identity key file, created (mode 0600) on first run (default %(default)s)")
    p.add_argument("--codec", default="json", choices=["json", "msgpack", "cbor"])
    p.add_argument("--listen", default=None, help="UDP address for p2p-node to bind (default: its own)")
    p.add_argument("--message", "-m", action="append", default=None,
                   help="send this text instead of reading stdin (repeatable)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the remaining answers at the end (default %(default)s)")
    p.add_argument("--peer-id-file", default="./.p2p_server_peer_id",
                   help="where to find the server's peer ID (default %(default)s)")
    p.add_argument("--binary", default=None, help="path of p2p-node (default: see python/README.md)")
    p.add_argument("-v", "--verbose", action="store_true", help="show p2p-node's logs")
    return p.parse_args(argv)


def server_peer_id(args) -> str:
    if args.server_peer_id:
        return args.server_peer_id
    path = Path(args.peer_id_file)
    try:
        return path.read_text().strip()
    except OSError:
        raise SystemExit(f"no server peer ID: give it as an argument, or run from the folder where "
                         f"p2p_server.py runs (it writes {path})")


def start_stdin_reader(loop: asyncio.AbstractEventLoop, lines: "asyncio.Queue") -> None:
    """Read stdin in a daemon thread (works for terminals, pipes and files; never blocks exit)."""
    def run():
        for line in sys.stdin:
            asyncio.run_coroutine_threadsafe(lines.put(line.rstrip("\r\n")), loop).result()
        asyncio.run_coroutine_threadsafe(lines.put(None), loop).result()
    threading.Thread(target=run, name="stdin", daemon=True).start()


def print_event(event: ev.Event) -> None:
    if event.kind in (ev.CONNECTED, ev.PATH):
        print(f"* {event.kind} to server ({event.path} {event.remote_addr})", file=sys.stderr, flush=True)
    elif event.kind == ev.DISCONNECTED:
        print(f"* disconnected: {event.reason}", file=sys.stderr, flush=True)
    elif event.kind in (ev.ERROR, ev.FAILED, ev.DECODE_ERROR, ev.PROTOCOL_ERROR, ev.UNEXPECTED_MESSAGE):
        print(f"! {event.kind}: {event.reason}", file=sys.stderr, flush=True)


async def chat(args) -> int:
    client = P2PClient(server_peer_id(args), rendezvous=args.rendezvous, identity=args.identity,
                       codec=args.codec, listen=args.listen, binary=args.binary, on_event=print_event)
    try:
        await client.start()
    except P2PError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    outstanding: set = set()
    all_answered = asyncio.Event()
    all_answered.set()
    ok = True

    async def print_answers():
        async for message in client.messages():
            meta = message.get("metadata") if isinstance(message, dict) else None
            ref = meta.get("in_reply_to") if isinstance(meta, dict) else None
            payload = message.get("payload") if isinstance(message, dict) else message
            kind = message.get("type") if isinstance(message, dict) else "message"
            print(f"{kind}: {payload}", flush=True)
            outstanding.discard(ref)
            if not outstanding:
                all_answered.set()

    answers = asyncio.ensure_future(print_answers())
    try:
        if args.message is not None:
            texts = asyncio.Queue()
            for text in args.message:
                texts.put_nowait(text)
            texts.put_nowait(None)
        else:
            texts = asyncio.Queue(maxsize=16)
            start_stdin_reader(asyncio.get_running_loop(), texts)
            if sys.stdin.isatty():
                print(f"client {client.peer_id} -> server {client.server_peer_id}; "
                      f"type messages, Ctrl+D to quit", file=sys.stderr, flush=True)
        n = 0
        while True:
            text = await texts.get()
            if text is None:
                break
            if not text:
                continue
            n += 1
            outstanding.add(n)
            all_answered.clear()
            message = {"type": "message", "payload": text, "metadata": {"id": n}, "timestamp": time.time()}
            try:
                await client.send_message(message)
            except DeliveryFailed as exc:
                print(f"! not delivered: {exc.reason}", file=sys.stderr, flush=True)
                outstanding.discard(n)
                ok = False
            if not outstanding:
                all_answered.set()
        try:
            await asyncio.wait_for(all_answered.wait(), args.timeout)
        except asyncio.TimeoutError:
            print(f"! no answer within {args.timeout} s to {len(outstanding)} message(s)",
                  file=sys.stderr, flush=True)
            ok = False
    except NodeExited as exc:
        print(f"! {exc}", file=sys.stderr, flush=True)
        ok = False
    finally:
        answers.cancel()
        await client.stop()
    return 0 if ok else 1


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(chat(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
