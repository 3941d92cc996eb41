#!/usr/bin/env python3
"""scripts/bench.sh's Python figure: JSON messages a second from a P2PClient to a P2PServer.

Both wrap a real ``p2p-node --io frames`` (python/p2pnat) on loopback against the rendezvous
given. One message is sent and confirmed first (connection set-up is not counted); then
``--count`` small JSON messages (``{"i": n, "text": "hello"}`` in the wrappers' envelope) are
sent without waiting for each confirmation, and the rate is count / (time from the first send
until the server's loop has decoded the last). Prints one JSON object on stdout.
"""

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from p2pnat import P2PClient, P2PServer  # noqa: E402


async def main(args):
    d = Path(args.dir)
    async with P2PServer(rendezvous=args.rendezvous, identity=str(d / "py-server.key"),
                         binary=args.node, listen="127.0.0.1:0",
                         stderr=str(d / "py-server.log")) as server:
        async with P2PClient(server.peer_id, rendezvous=args.rendezvous,
                             identity=str(d / "py-client.key"), binary=args.node,
                             listen="127.0.0.1:0", stderr=str(d / "py-client.log")) as client:
            messages = server.messages()
            await client.send_message({"i": -1, "text": "warm-up"})
            await messages.__anext__()

            async def receive():
                n = 0
                async for _peer, _message in messages:
                    n += 1
                    if n == args.count:
                        return time.perf_counter()

            receiver = asyncio.ensure_future(receive())
            start = time.perf_counter()
            pending = [await client.send_message({"i": i, "text": "hello"}, wait=False)
                       for i in range(args.count)]
            end = await receiver
            await asyncio.gather(*pending)
    rate = args.count / (end - start)
    print(json.dumps({"messages": args.count, "seconds": end - start, "messages_per_s": rate}))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--node", required=True)
    p.add_argument("--rendezvous", required=True)
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--dir", default=".")
    asyncio.run(main(p.parse_args()))
