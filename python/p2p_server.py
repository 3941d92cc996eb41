#!/usr/bin/env python3
"""Chat demo, server side: prints its peer ID and every message it receives, and answers each one.

    python3 p2p_server.py [--rendezvous 127.0.0.1:3478] [--identity ./.p2p_server.key] [--codec json]

The peer ID is also written to ./.p2p_server_peer_id (``--peer-id-file``) so that p2p_client.py,
started from the same folder, finds it without arguments. Each answer is
``{"type": "reply", "payload": <the payload received>, "metadata": {"in_reply_to": <its metadata.id>}}``.
Stop with Ctrl+C (or SIGTERM): the node is stopped cleanly and the peer-ID file removed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from p2pnat import NodeExited, P2PError, P2PServer  # noqa: E402
from p2pnat import events as ev  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rendezvous", default="127.0.0.1:3478", help="HOST:PORT (default %(default)s)")
    p.add_argument("--identity", default="./.p2p_server.key",
                   help="identity key file, created (mode 0600) on first run (default %(default)s)")
    p.add_argument("--codec", default="json", choices=["json", "msgpack", "cbor"])
    p.add_argument("--listen", default=None, help="UDP address for p2p-node to bind (default: its own)")
    p.add_argument("--peer-id-file", default="./.p2p_server_peer_id",
                   help="where to write this server's peer ID (default %(default)s; '' to skip)")
    p.add_argument("--binary", default=None, help="path of p2p-node (default: see python/README.md)")
    p.add_argument("-v", "--verbose", action="store_true", help="show p2p-node's logs")
    return p.parse_args(argv)


def describe(message):
    if isinstance(message, dict) and "payload" in message:
        return f"[{message.get('type')}] {message['payload']!r}"
    return repr(message)


def print_event(event: ev.Event) -> None:
    if event.kind in (ev.CONNECTED, ev.PATH):
        print(f"* {event.kind} {event.peer_id} ({event.path} {event.remote_addr})", flush=True)
    elif event.kind == ev.DISCONNECTED:
        print(f"* disconnected {event.peer_id}: {event.reason}", flush=True)
    elif event.kind in (ev.ERROR, ev.FAILED, ev.DECODE_ERROR, ev.PROTOCOL_ERROR):
        print(f"! {event.kind} {event.peer_id or event.code or ''}: {event.reason}", file=sys.stderr,
              flush=True)


async def serve(args) -> int:
    server = P2PServer(rendezvous=args.rendezvous, identity=args.identity, codec=args.codec,
                       listen=args.listen, binary=args.binary, on_event=print_event)
    try:
        await server.start()
    except P2PError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    peer_id_file = Path(args.peer_id_file) if args.peer_id_file else None
    try:
        if peer_id_file:  # before printing: whoever reads the line may look for the file at once
            peer_id_file.write_text(server.peer_id + "\n")
        print(f"server peer id: {server.peer_id}", flush=True)
        print("waiting for messages (Ctrl+C to stop)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        answering = asyncio.ensure_future(answer_all(server))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([answering, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if answering.done():
            print(f"p2p-node ended: {server.node.returncode}", file=sys.stderr)
            return 1
        answering.cancel()
        return 0
    finally:
        await server.stop()
        if peer_id_file and peer_id_file.exists() and peer_id_file.read_text().strip() == server.peer_id:
            peer_id_file.unlink()


async def answer_all(server: P2PServer) -> None:
    async for peer_id, message in server.messages():
        print(f"from {peer_id}: {describe(message)}", flush=True)
        payload = message.get("payload") if isinstance(message, dict) else message
        metadata = message.get("metadata") if isinstance(message, dict) else None
        in_reply_to = metadata.get("id") if isinstance(metadata, dict) else None
        reply = {"type": "reply", "payload": payload, "metadata": {"in_reply_to": in_reply_to}}
        try:
            # Do not wait for the confirmation: a slow client must not hold up the others.
            # A failure still shows up as a "failed" event.
            await server.send_message(peer_id, reply, wait=False)
        except NodeExited:
            return
        except (P2PError, ValueError) as exc:
            print(f"! cannot answer {peer_id}: {exc}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
