#!/usr/bin/env python3
"""scripts/bench.sh's Python figure: JSON messages a second from a P2PClient to a P2PServer.

Both wrap a real ``p2p-node --io frames`` (python/p2pnat) on loopback against the rendezvous
given, in this one Python process (one event loop, as a program holding both ends would). One
message is sent and confirmed first (connection set-up is not counted); then ``--count`` small
JSON messages (``{"i": n, "text": "hello"}`` in the wrappers' envelope) are sent twice, once per
API (python/README.md):

* ``bulk`` (what a program written for throughput does): ``client.send_many`` of 1,000 messages at
  a time, ``await client.wait_sent()`` for their ``delivered`` events, and at the server
  ``async for batch in server.message_batches()``;
* ``per-message``: ``await client.send_message(m, wait=False)`` each (a Future each), then
  ``await client.wait_sent()`` and every Future's ``result()`` checked (``asyncio.gather`` of them
  would add a callback per Future), and at the server ``async for peer, m in server.messages()``.

A run ends when both are complete: the server's loop has decoded the last message (each checked
in order by its ``i``) and the client has a ``delivered`` event for every message (none failed).
The rate is count / (that end - the first send). Prints one JSON object on stdout;
``messages_per_s`` is the bulk figure, ``per_message_messages_per_s`` the other.
"""

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from p2pnat import P2PClient, P2PServer  # noqa: E402

CHUNK = 1000
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process from /proc (Linux), in seconds; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def cpu_snapshot(server, client):
    return {"python": time.process_time(), "client_node": cpu_seconds(client.node.pid),
            "server_node": cpu_seconds(server.node.pid)}


async def per_message(server, client, count):
    async def receive():
        n = 0
        async for _peer, message in server.messages():
            if message["payload"]["i"] != n:
                raise SystemExit(f"per-message: message {message['payload']['i']} came as {n}")
            n += 1
            if n == count:
                return time.perf_counter()

    receiver = asyncio.ensure_future(receive())
    start = time.perf_counter()
    pending = [await client.send_message({"i": i, "text": "hello"}, wait=False)
               for i in range(count)]
    await client.wait_sent()  # every send has its outcome (cheaper than gather: no callbacks)
    for i, fut in enumerate(pending):  # each Future: done and delivered (result() raises if not)
        if not fut.done():
            raise SystemExit(f"per-message: send {i} has no outcome after wait_sent()")
        fut.result()
    sent = time.perf_counter()
    received = await receiver
    return start, sent, received


async def bulk(server, client, count):
    async def receive():
        n = 0
        async for batch in server.message_batches():
            for _peer, message in batch:
                if message["payload"]["i"] != n:
                    raise SystemExit(f"bulk: message {message['payload']['i']} came as {n}")
                n += 1
            if n >= count:
                return time.perf_counter()

    delivered0, failed0 = client.delivered_count, client.failed_count
    receiver = asyncio.ensure_future(receive())
    start = time.perf_counter()
    for first in range(0, count, CHUNK):
        await client.send_many({"i": i, "text": "hello"}
                               for i in range(first, min(first + CHUNK, count)))
    delivered, failed = await client.wait_sent()
    sent = time.perf_counter()
    if (delivered - delivered0, failed - failed0) != (count, 0):
        raise SystemExit(f"bulk: {delivered - delivered0} delivered, {failed - failed0} failed "
                         f"of {count}")
    received = await receiver
    return start, sent, received


async def main(args):
    d = Path(args.dir)
    results = {}
    async with P2PServer(rendezvous=args.rendezvous, identity=str(d / "py-server.key"),
                         binary=args.node, listen="127.0.0.1:0",
                         stderr=str(d / "py-server.log")) as server:
        async with P2PClient(server.peer_id, rendezvous=args.rendezvous,
                             identity=str(d / "py-client.key"), binary=args.node,
                             listen="127.0.0.1:0", stderr=str(d / "py-client.log")) as client:
            await client.send_message({"i": -1, "text": "warm-up"})
            await server.messages().__anext__()
            for mode in args.modes.split(","):
                run = {"bulk": bulk, "per-message": per_message}[mode]
                cpu0 = cpu_snapshot(server, client)
                start, sent, received = await run(server, client, args.count)
                cpu1 = cpu_snapshot(server, client)
                end = max(sent, received)
                results[mode] = {"seconds": end - start, "messages_per_s": args.count / (end - start),
                                 "all_delivered_after_s": sent - start,
                                 "all_received_after_s": received - start,
                                 # CPU seconds used during the run (incl. its last await), by process
                                 "cpu_s": {k: (None if cpu0[k] is None or cpu1[k] is None
                                               else round(cpu1[k] - cpu0[k], 3)) for k in cpu0}}
    out = {"messages": args.count, "modes": results}
    if "bulk" in results:
        out["messages_per_s"] = results["bulk"]["messages_per_s"]
    if "per-message" in results:
        out["per_message_messages_per_s"] = results["per-message"]["messages_per_s"]
    print(json.dumps(out))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--node", required=True)
    p.add_argument("--rendezvous", required=True)
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--modes", default="per-message,bulk",
                   help="comma-separated: bulk, per-message (run in this order, one session)")
    p.add_argument("--dir", default=".")
    asyncio.run(main(p.parse_args()))
