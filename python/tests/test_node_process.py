"""Process handling of the wrapper, against tests/fake_node.py (a stand-in speaking the frame format).

These provoke what the real node cannot be made to do on demand: ignoring SIGTERM, corrupt stdout,
dying before ready, flooding stdout. The real binary is covered by test_integration.py.
"""

import asyncio
import os
import signal
import sys

import pytest

from conftest import FAKE_NODE, child_pids, pid_alive, run
from p2pnat import (DeliveryFailed, NodeExited, NodeProcess, NodeStartError, P2PClient, P2PServer)
from p2pnat import events as ev
from p2pnat.node import PIPE_SIZE, READ_CHUNK


def fake(mode="", **kwargs):
    env = {**os.environ, "FAKE_NODE_MODE": mode, **kwargs.pop("extra_env", {})}
    kwargs.setdefault("binary", FAKE_NODE)
    kwargs.setdefault("ready_timeout", 30)
    return NodeProcess(env=env, **kwargs)


async def collect_events(node):
    return [e async for e in node.events()]


def test_start_send_list_stop():
    async def main():
        node = fake("echo")
        async with node:
            assert node.peer_id.startswith("fakepeer")
            assert node.local_addrs == ("127.0.0.1:1", "10.0.0.1:1")
            assert node.observed_addr is None
            ids = [await node.send("peer1", b"one"), await node.send("peer1", b"two")]
            got = [await node.messages().get() for _ in range(2)]
            peers = await node.list_peers()
            await node.connect("peer9")
            info = await node.wait_connected("peer9", timeout=30)
            pid = node.pid
        return ids, got, peers, info, pid, node
    ids, got, peers, info, pid, node = run(main())
    assert ids == [1, 2]
    assert got == [("peer1", b"one"), ("peer1", b"two")]
    assert [p.state for p in peers] == ["connected"]
    assert (info.peer_id, info.path, info.remote_addr) == ("peer9", "direct", "127.0.0.1:9")
    assert node.returncode == 0 and not pid_alive(pid)


def test_failed_send_raises_and_is_an_event():
    async def main():
        async with fake() as node:
            with pytest.raises(DeliveryFailed) as info:
                await node.send("unreachable1", b"x")
            fut = await node.send("unreachable2", b"y", wait=False)
            with pytest.raises(DeliveryFailed):
                await fut
            ok = await node.send("reachable", b"z")
            events = node.events()
            seen = [await events.get(), await events.get(), await events.get()]
        return info.value, seen, ok
    exc, seen, ok = run(main())
    assert (exc.msg_id, exc.peer_id, exc.reason) == (1, "unreachable1", "no route to peer")
    assert [e.kind for e in seen] == ["ready", "failed", "failed"]
    assert seen[2].msg_id == 2 and ok == 3


def test_exit_before_ready_reports_status_and_stderr():
    async def main():
        with pytest.raises(NodeStartError) as info:
            await fake("die-before-ready").start()
        return info.value
    exc = run(main())
    assert exc.returncode == 3
    assert "cannot bind socket" in str(exc)


def test_no_ready_times_out_and_leaves_no_process():
    async def main():
        node = fake("silent", ready_timeout=1.0, stop_timeout=5)
        with pytest.raises(NodeStartError) as info:
            await node.start()
        return info.value, node
    exc, node = run(main())
    assert "did not report ready" in str(exc)
    assert node.returncode is not None and not pid_alive(node.pid)


def test_stop_escalates_to_sigkill_when_the_node_ignores_eof_and_sigterm():
    async def main():
        node = fake("ignore-eof,ignore-term", stop_timeout=0.5, kill_timeout=0.5)
        await node.start()
        before = child_pids()
        await node.stop()
        await node.stop()  # idempotent
        return node, before
    node, before = run(main())
    assert node.returncode == -signal.SIGKILL
    assert not pid_alive(node.pid)
    if before is not None:
        assert node.pid in before and node.pid not in (child_pids() or set())


def test_killed_node_fails_pending_sends_and_ends_iterators():
    async def main():
        node = fake("no-ack")
        await node.start()
        pending = [await node.send("peer", b"m%d" % i, wait=False) for i in range(5)]
        waiting = asyncio.ensure_future(node.send("peer", b"waiting"))
        consumer = asyncio.ensure_future(collect_events(node))
        messages = asyncio.ensure_future(node.messages().get())
        await asyncio.sleep(0)
        os.kill(node.pid, signal.SIGKILL)
        results = await asyncio.gather(*pending, waiting, return_exceptions=True)
        events = await consumer
        with pytest.raises(Exception):
            await messages
        with pytest.raises(NodeExited):
            await node.send("peer", b"after death")
        await node.stop()
        return results, events
    results, events = run(main())
    assert all(isinstance(r, NodeExited) for r in results), results
    assert "killed by signal 9" in str(results[0])
    assert events[-1].kind == ev.NODE_EXITED and events[-1].returncode == -9


def test_corrupt_stdout_is_a_protocol_error_and_stops_the_node():
    async def main():
        node = fake("bad-length")
        await node.start()
        events = await collect_events(node)
        with pytest.raises(NodeExited) as info:
            await node.send("p", b"x")
        await node.stop()
        return events, node, info.value
    events, node, exc = run(main())
    assert "killed by the wrapper: unreadable stdout" in str(exc)
    kinds = [e.kind for e in events]
    assert ev.PROTOCOL_ERROR in kinds and kinds[-1] == ev.NODE_EXITED
    assert "length 0" in events[kinds.index(ev.PROTOCOL_ERROR)].reason
    assert not pid_alive(node.pid)


def test_short_recv_frame_is_skipped_and_the_node_keeps_working():
    async def main():
        async with fake("bad-recv,echo") as node:
            events = node.events()
            seen = [await events.get() for _ in range(3)]
            await node.send("p", b"still works")
            msg = await node.messages().get()
        return seen, msg
    seen, msg = run(main())
    assert [e.kind for e in seen] == ["ready", ev.PROTOCOL_ERROR, "error"]
    assert msg == ("p", b"still works")


def test_stop_from_an_async_event_handler():
    async def main():
        node = fake("echo")

        async def on_event(event):
            if event.kind == ev.CONNECTED:
                await node.stop()
        node.add_event_handler(on_event)
        await node.start()
        await node.connect("somepeer")
        rest = [e.kind async for e in node.events()]
        return rest, node
    rest, node = run(main(), timeout=60)
    assert rest[-1] == ev.NODE_EXITED and node.returncode == 0


def test_event_not_ready_first_still_starts():
    async def main():
        async with fake("not-ready-first") as node:
            return node.peer_id
    assert run(main()).startswith("fakepeer")


def test_slow_consumer_stops_the_reader(tmp_path):
    """Backpressure: with nobody reading messages, the node can only write what fits in the bounded
    queue plus the pipe and reader buffers; then its writes block. Reading resumes the flow."""
    count_file = tmp_path / "count"
    frame_size = 4 + 1 + 1 + len("flooder") + 8 + 1000
    # pipe (64 KiB; PIPE_SIZE as a generous bound) + asyncio reader buffer (2 x READ_CHUNK)
    # + the chunk being split + a frame in flight, generously doubled
    held = PIPE_SIZE + 2 * READ_CHUNK + READ_CHUNK
    bound = 2 * (held // frame_size + 8) + 4

    async def main():
        async with fake("flood", message_queue_size=4, stop_timeout=0.5,
                        extra_env={"FAKE_NODE_COUNT_FILE": str(count_file)}) as node:
            await asyncio.sleep(1.0)  # give an unbounded reader ample time to swallow thousands
            text = ""
            while not text:  # the flooder rewrites the file after each frame: skip a torn read
                text = count_file.read_text().strip()
                if not text:
                    await asyncio.sleep(0.01)
            stalled = int(text)
            assert len(node.messages()) == 4
            received = [await node.messages().get() for _ in range(stalled + 50)]
            return stalled, received
    stalled, received = run(main())
    assert 4 <= stalled <= bound, (stalled, bound)
    seq = [int.from_bytes(payload[:8], "big") for _, payload in received]
    assert seq == list(range(len(received)))  # in order, nothing lost, and the flow resumed


def test_stderr_is_drained(tmp_path):
    log_file = tmp_path / "node.log"

    async def main():
        async with fake("stderr-spam,echo", stderr=str(log_file)) as node:
            await node.send("p", b"x")
            return await node.messages().get()
    assert run(main()) == ("p", b"x")
    lines = log_file.read_text().splitlines()
    assert len(lines) >= 16384 and lines[-1].endswith("WARN fake: ready")


def test_max_in_flight_bounds_unconfirmed_sends():
    async def main():
        async with fake("no-ack", max_in_flight=2) as node:
            first = [await node.send("p", b"1", wait=False), await node.send("p", b"2", wait=False)]
            third = asyncio.ensure_future(node.send("p", b"3", wait=False))
            await asyncio.sleep(0.3)
            blocked = not third.done()
            pending = node.pending_count
        with pytest.raises(NodeExited):
            await third
        return blocked, pending, first
    blocked, pending, first = run(main())
    assert blocked and pending == 2
    assert all(f.done() and isinstance(f.exception(), NodeExited) for f in first)


def test_server_decode_error_event_and_keeps_working():
    async def main():
        seen = []
        server = P2PServer(binary=FAKE_NODE, on_event=seen.append,
                           env={**os.environ, "FAKE_NODE_MODE": "echo"})
        async with server:
            await server.node.send("rawpeer", b"\xff not json")  # echoed back: undecodable
            await server.send_message("rawpeer", {"text": "fine"})
            peer, message = await server.messages().__anext__()
        return seen, peer, message
    seen, peer, message = run(main())
    errors = [e for e in seen if e.kind == ev.DECODE_ERROR]
    assert len(errors) == 1 and errors[0].peer_id == "rawpeer"
    assert errors[0].payload == b"\xff not json"
    assert peer == "rawpeer" and message["payload"] == {"text": "fine"}


def test_client_drops_messages_from_other_peers_as_events():
    async def main():
        got_async = []

        async def handler(event):
            got_async.append(event.kind)
        client = P2PClient("theserver", binary=FAKE_NODE, on_event=handler,
                           env={**os.environ, "FAKE_NODE_MODE": "echo"})
        async with client:
            await client.wait_connected(timeout=30)
            await client.node.send("intruder", b"{}")
            await client.send_message("hello")
            reply = await client.messages().__anext__()
            await asyncio.sleep(0)
        return reply, got_async
    reply, got_async = run(main())
    assert reply["payload"] == "hello"
    assert ev.UNEXPECTED_MESSAGE in got_async and "connected" in got_async


def test_encode_error_raises_at_the_caller_and_sends_nothing():
    async def main():
        async with P2PServer(binary=FAKE_NODE, env={**os.environ, "FAKE_NODE_MODE": "echo"}) as server:
            from p2pnat import EncodeError
            with pytest.raises(EncodeError):
                await server.send_message("p", {"bad": {1, 2}})
            await server.send_message("p", "ok")
            peer, message = await server.messages().__anext__()
            return server.node.pending_count, message["payload"]
    assert run(main()) == (0, "ok")


def test_python_exit_makes_the_node_quit(tmp_path):
    """If the Python program dies without stop(), the node sees end of stdin and quits."""
    script = tmp_path / "orphan.py"
    script.write_text(
        "import asyncio, os, sys\n"
        f"sys.path.insert(0, {str(os.path.dirname(os.path.dirname(FAKE_NODE)))!r})\n"
        "from p2pnat import NodeProcess\n"
        "async def main():\n"
        f"    node = NodeProcess(binary={FAKE_NODE!r})\n"
        "    await node.start()\n"
        "    print(node.pid, flush=True)\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n")

    async def main():
        proc = await asyncio.create_subprocess_exec(sys.executable, str(script),
                                                    stdout=asyncio.subprocess.PIPE)
        line = await proc.stdout.readline()
        await proc.wait()
        pid = int(line)
        while pid_alive(pid):  # the orphan is reparented; poll until it has gone
            await asyncio.sleep(0.05)
        return pid
    run(main(), timeout=60)
