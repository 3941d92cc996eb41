"""End to end with the real binaries on loopback: a p2p-rendezvous (session fixture) and p2p-node
processes driven through the wrappers. Skipped, with the build command, if the binaries are missing.

No assertion is on elapsed time; timeouts only turn a hang into a failure.
"""

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys

import pytest

from conftest import PYTHON_DIR, child_pids, pid_alive, run
from p2pnat import (DeliveryFailed, NodeExited, NodeProcess, P2PClient, P2PServer)
from p2pnat import events as ev

needs_msgpack = pytest.mark.skipif(importlib.util.find_spec("msgpack") is None,
                                   reason="msgpack not installed (pip install msgpack)")
needs_cbor2 = pytest.mark.skipif(importlib.util.find_spec("cbor2") is None,
                                 reason="cbor2 not installed (pip install cbor2)")
CODECS = ["json", pytest.param("msgpack", marks=needs_msgpack), pytest.param("cbor", marks=needs_cbor2)]

#: Optional --listen for every node in these tests (e.g. "127.0.0.1:0"); default: the node's own.
LISTEN = os.environ.get("P2P_TEST_LISTEN") or None


def server_for(rendezvous, tmp_path, codec="json", name="server", **kw):
    return P2PServer(rendezvous=rendezvous.addr, identity=str(tmp_path / f"{name}.key"), codec=codec,
                     listen=LISTEN, stderr=str(tmp_path / f"{name}.log"), **kw)


def client_for(rendezvous, tmp_path, server_id, codec="json", name="client", **kw):
    return P2PClient(server_id, rendezvous=rendezvous.addr, identity=str(tmp_path / f"{name}.key"),
                     codec=codec, listen=LISTEN, stderr=str(tmp_path / f"{name}.log"), **kw)


async def echo_loop(server, count=None):
    """Answer each message with {"type": "reply", "payload": <its payload>}; return what came in."""
    seen = []
    async for peer_id, message in server.messages():
        seen.append((peer_id, message))
        await server.send_message(peer_id, {"type": "reply", "payload": message["payload"],
                                            "metadata": message["metadata"]}, wait=False)
        if count is not None and len(seen) == count:
            break
    return seen


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip(rendezvous, tmp_path, codec):
    async def main():
        async with server_for(rendezvous, tmp_path, codec) as server:
            echo = asyncio.ensure_future(echo_loop(server, 1))
            async with client_for(rendezvous, tmp_path, server.peer_id, codec) as client:
                msg_id = await client.send_message({"text": "hello", "n": [1, 2.5, None]})
                reply = await client.messages().__anext__()
                seen = await echo
                link = await client.wait_connected(timeout=60)
                server_events = server.events()
                while True:  # the server saw the client connect (events before it: ready)
                    event = await server_events.get()
                    if event.kind == ev.CONNECTED:
                        break
                return server.peer_id, client.peer_id, msg_id, seen, reply, link, event
    server_id, client_id, msg_id, seen, reply, link, event = run(main())
    assert link.peer_id == server_id and link.path in ("direct", "relayed") and link.remote_addr
    assert event.peer_id == client_id and event.path in ("direct", "relayed")
    assert server_id != client_id and isinstance(msg_id, int)
    [(from_peer, message)] = seen
    assert from_peer == client_id
    assert message["type"] == "message" and message["metadata"] == {}
    assert message["payload"] == {"text": "hello", "n": [1, 2.5, None]}
    assert isinstance(message["timestamp"], float)
    assert reply["type"] == "reply" and reply["payload"] == {"text": "hello", "n": [1, 2.5, None]}


@pytest.mark.parametrize("codec", CODECS)
def test_one_mib_binary_payload(rendezvous, tmp_path, codec):
    blob = os.urandom(1024 * 1024)

    async def main():
        async with server_for(rendezvous, tmp_path, codec) as server:
            echo = asyncio.ensure_future(echo_loop(server, 1))
            async with client_for(rendezvous, tmp_path, server.peer_id, codec) as client:
                await client.send_message({"type": "blob", "payload": blob})
                reply = await client.messages().__anext__()
                [(_, received)] = await echo
                return received, reply
    received, reply = run(main())
    assert received["type"] == "blob"
    assert isinstance(received["payload"], bytes) and received["payload"] == blob
    assert reply["payload"] == blob


def test_thousand_messages_in_order(rendezvous, tmp_path):
    n = 1000

    async def main():
        async with server_for(rendezvous, tmp_path) as server:
            echo = asyncio.ensure_future(echo_loop(server, n))
            async with client_for(rendezvous, tmp_path, server.peer_id) as client:
                # Read the answers while sending: their delivery events queue behind them.
                replies = asyncio.ensure_future(_first(client.messages(), n))
                futures = [await client.send_message({"seq": i}, wait=False) for i in range(n)]
                ids = await asyncio.gather(*futures)
                return ids, await echo, await replies
    ids, seen, replies = run(main(), timeout=300)
    assert len(set(ids)) == n
    assert [m["payload"]["seq"] for _, m in seen] == list(range(n))
    assert [r["payload"]["seq"] for r in replies] == list(range(n))


def test_two_clients_one_server(rendezvous, tmp_path):
    per_client = 20

    async def one_client(server_id, name):
        async with client_for(rendezvous, tmp_path, server_id, name=name) as client:
            for i in range(per_client):
                await client.send_message({"from": name, "i": i})
            replies = [await client.messages().__anext__() for _ in range(per_client)]
            return client.peer_id, replies

    async def main():
        async with server_for(rendezvous, tmp_path) as server:
            echo = asyncio.ensure_future(echo_loop(server, 2 * per_client))
            results = await asyncio.gather(one_client(server.peer_id, "alice"),
                                           one_client(server.peer_id, "bob"))
            return results, await echo
    results, seen = run(main(), timeout=300)
    (alice_id, alice_replies), (bob_id, bob_replies) = results
    assert alice_id != bob_id
    assert [r["payload"] for r in alice_replies] == [{"from": "alice", "i": i} for i in range(per_client)]
    assert [r["payload"] for r in bob_replies] == [{"from": "bob", "i": i} for i in range(per_client)]
    by_peer = {alice_id: [], bob_id: []}
    for peer_id, message in seen:
        by_peer[peer_id].append(message["payload"])
    assert by_peer[alice_id] == [{"from": "alice", "i": i} for i in range(per_client)]
    assert by_peer[bob_id] == [{"from": "bob", "i": i} for i in range(per_client)]


def test_killed_client_node_fails_pending_sends_and_ends_iterators(rendezvous, tmp_path):
    """The server does not read its messages, so (by backpressure) most of 16 x 1 MiB cannot be
    delivered; killing the client's node must fail every pending send and end its iterators."""
    async def main():
        async with server_for(rendezvous, tmp_path, message_queue_size=1,
                              max_message=2 * 1024 * 1024) as server:
            client = client_for(rendezvous, tmp_path, server.peer_id)
            await client.start()
            first = await client.send_message({"warm": "up"})  # connected and working
            blob = b"\x00" * (1024 * 1024)
            sends = [asyncio.ensure_future(client.send_message({"type": "blob", "payload": blob}))
                     for _ in range(16)]
            events = asyncio.ensure_future(_all(client.events()))
            replies = asyncio.ensure_future(_all(client.messages()))
            while client.node.pending_count < 4:  # wait until sends are really in flight
                await asyncio.sleep(0.05)
            os.kill(client.node.pid, signal.SIGKILL)
            outcomes = await asyncio.gather(*sends, return_exceptions=True)
            got_events, got_replies = await events, await replies
            with pytest.raises(NodeExited):
                await client.send_message("after the crash")
            await client.stop()
            # The server is unaffected: it can still be stopped cleanly.
            return first, outcomes, got_events, got_replies, client.node
    first, outcomes, got_events, got_replies, node = run(main(), timeout=300)
    assert isinstance(first, int)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures and all(isinstance(f, NodeExited) for f in failures), outcomes
    assert all(isinstance(o, (int, NodeExited)) for o in outcomes)
    assert "killed by signal 9" in str(failures[0])
    assert got_events[-1].kind == ev.NODE_EXITED
    assert got_replies == []
    assert not pid_alive(node.pid)


def test_killed_server_node_ends_its_message_iterator(rendezvous, tmp_path):
    async def main():
        server = server_for(rendezvous, tmp_path)
        await server.start()
        messages = asyncio.ensure_future(_all(server.messages()))
        os.kill(server.node.pid, signal.SIGKILL)
        got = await messages
        with pytest.raises(NodeExited):
            await server.send_message("a" * 52, "x")
        await server.stop()
        return got
    assert run(main()) == []


async def _all(aiterable):
    return [item async for item in aiterable]


async def _first(aiterable, n):
    out = []
    async for item in aiterable:
        out.append(item)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_garbage_from_a_raw_peer_is_an_error_event(rendezvous, tmp_path, codec):
    garbage = b"\xc1\xff\xfe not valid json, msgpack or cbor"

    async def main():
        async with server_for(rendezvous, tmp_path, codec) as server:
            async with NodeProcess(rendezvous=rendezvous.addr, identity=str(tmp_path / "raw.key"),
                                   listen=LISTEN, stderr=str(tmp_path / "raw.log")) as raw:
                await raw.send(server.peer_id, garbage)
                events = server.events()
                while True:
                    event = await events.get()
                    if event.kind == ev.DECODE_ERROR:
                        break
                # still working: a well-formed message from the same peer, then from a client
                await raw.send(server.peer_id, server.encode({"after": "garbage"}))
                peer1, first = await server.messages().__anext__()
                async with client_for(rendezvous, tmp_path, server.peer_id, codec) as client:
                    await client.send_message("from a client")
                    peer2, second = await server.messages().__anext__()
                return event, raw.peer_id, peer1, first, peer2, second, client.peer_id
    event, raw_id, peer1, first, peer2, second, client_id = run(main())
    assert event.peer_id == raw_id and event.payload == garbage and event.reason
    assert (peer1, first["payload"]) == (raw_id, {"after": "garbage"})
    assert (peer2, second["payload"]) == (client_id, "from a client")


def test_clean_shutdown_leaves_no_process(rendezvous, tmp_path):
    async def main():
        before = child_pids()
        server = server_for(rendezvous, tmp_path)
        async with server:
            echo = asyncio.ensure_future(echo_loop(server, 1))
            client = client_for(rendezvous, tmp_path, server.peer_id)
            async with client:
                await client.send_message("bye")
                await client.messages().__anext__()
                pids = {server.node.pid, client.node.pid}
                during = child_pids()
            await echo
        return before, during, pids, child_pids(), server, client
    before, during, pids, after, server, client = run(main())
    assert server.node.returncode == 0 and client.node.returncode == 0
    assert not any(pid_alive(pid) for pid in pids)
    if during is not None:
        assert pids <= during and not (pids & after) and after <= before


def test_unknown_peer_fails_delivery(rendezvous, tmp_path, node_binary):
    never_started = subprocess.run([node_binary, "id", "--identity", str(tmp_path / "ghost.key")],
                                   capture_output=True, text=True, timeout=60, check=True).stdout.split()[-1]

    async def main():
        async with server_for(rendezvous, tmp_path) as server:
            with pytest.raises(DeliveryFailed) as info:
                await server.send_message(never_started, "anyone there?")
            return info.value
    exc = run(main())
    assert exc.peer_id == never_started and exc.code == "unknown-peer", exc.reason


def test_too_large_message_fails_and_the_stream_stays_in_sync(rendezvous, tmp_path):
    async def main():
        async with server_for(rendezvous, tmp_path) as server:
            echo = asyncio.ensure_future(echo_loop(server, 1))
            async with client_for(rendezvous, tmp_path, server.peer_id, max_message=4096) as client:
                with pytest.raises(DeliveryFailed) as info:
                    await client.send_message({"big": b"\x00" * 10000})
                await client.send_message({"small": True})
                reply = await client.messages().__anext__()
                return info.value, reply, await echo
    exc, reply, seen = run(main())
    assert exc.reason.startswith("too-large") and exc.code == "too-large"
    assert reply["payload"] == {"small": True}
    assert [m["payload"] for _, m in seen] == [{"small": True}]  # nothing of the large one arrived


def test_peer_id_matches_identity_file(rendezvous, tmp_path, node_binary):
    key = tmp_path / "server.key"

    async def main():
        async with server_for(rendezvous, tmp_path) as server:
            return server.peer_id
    peer_id = run(main())
    assert (key.stat().st_mode & 0o777) == 0o600
    printed = subprocess.run([node_binary, "id", "--identity", str(key)], capture_output=True, text=True,
                             timeout=60, check=True).stdout.split()
    assert peer_id in printed


def test_demo_scripts(rendezvous, tmp_path):
    """p2p_server.py and p2p_client.py run unattended from one folder (peer ID via the file)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = ["--rendezvous", rendezvous.addr] + (["--listen", LISTEN] if LISTEN else [])
    server = subprocess.Popen([sys.executable, str(PYTHON_DIR / "p2p_server.py"), *common],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env)
    try:
        first = server.stdout.readline()
        assert first.startswith("server peer id: "), first + server.stderr.read()
        server_id = first.split()[-1]
        assert (tmp_path / ".p2p_server_peer_id").read_text().strip() == server_id
        client = subprocess.run([sys.executable, str(PYTHON_DIR / "p2p_client.py"), *common,
                                 "--message", "hello", "--message", "second line"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
        assert client.returncode == 0, client.stderr
        assert "reply: hello" in client.stdout and "reply: second line" in client.stdout
        piped = subprocess.run([sys.executable, str(PYTHON_DIR / "p2p_client.py"), server_id, *common],
                               input="from a pipe\n", cwd=tmp_path, capture_output=True, text=True,
                               timeout=120, env=env)
        assert piped.returncode == 0, piped.stderr
        assert "reply: from a pipe" in piped.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert "'hello'" in out and "'second line'" in out and "'from a pipe'" in out
    assert not (tmp_path / ".p2p_server_peer_id").exists()
    assert (tmp_path / ".p2p_client.key").exists() and (tmp_path / ".p2p_server.key").exists()


def test_bulk_api_end_to_end(rendezvous, tmp_path):
    """send_many + wait_sent at the client, message_batches at the server: every message arrives
    once and in order, every send is counted delivered."""
    count = 5000

    async def main():
        async with server_for(rendezvous, tmp_path) as server:
            async with client_for(rendezvous, tmp_path, server.peer_id) as client:
                async def receive():
                    got = []
                    async for batch in server.message_batches(max_batch=700):
                        assert 1 <= len(batch) <= 700
                        got += [m["payload"]["i"] for _peer, m in batch]
                        if len(got) >= count:
                            return got
                receiver = asyncio.ensure_future(receive())
                ids = []
                for first in range(0, count, 1000):
                    ids += await client.send_many({"i": i} for i in range(first, first + 1000))
                counts = await client.wait_sent(timeout=60)
                return ids, counts, await receiver, client.pending_count
    ids, counts, got, pending = run(main())
    assert len(set(ids)) == count and counts == (count, 0) and pending == 0
    assert got == list(range(count))


def test_send_many_with_a_too_large_message_in_the_middle(rendezvous, tmp_path):
    """The node refuses one message of a batch (too-large): that one gets its failed event, the
    others are delivered and arrive in order."""
    async def main():
        async with server_for(rendezvous, tmp_path) as server:
            async with client_for(rendezvous, tmp_path, server.peer_id, max_message=4096) as client:
                messages = [{"n": 0}, {"n": 1, "big": "x" * 10_000}, {"n": 2}, {"n": 3}]
                ids = await client.send_many(messages)
                counts = await client.wait_sent(timeout=60)
                events = client.events()
                failed = []
                while not failed:
                    event = await events.get()
                    if event.kind == ev.FAILED:
                        failed.append(event)
                got = server.messages()
                received = [(await got.__anext__())[1]["payload"]["n"] for _ in range(3)]
                return ids, counts, failed, received
    ids, counts, failed, received = run(main())
    assert counts == (3, 1)
    assert failed[0].msg_id == ids[1] and failed[0].reason.startswith("too-large:")
    assert received == [0, 2, 3]
