"""Batched I/O of the wrapper: stdout split from large chunks, stdin written in batches, the bulk
API (send_many / wait_sent / message_batches) and the JSON codec's fast path.

Pure tests drive FrameDecoder and NodeProcess's stdout reader with hand-made chunk boundaries; the
others use tests/fake_node.py (a failure in the middle of a batch, a node that stops reading its
stdin). The real binaries are in test_integration.py.
"""

import asyncio
import json
import math

import pytest

from conftest import run
from test_node_process import fake
from p2pnat import DeliveryFailed, EncodeError, NodeExited, NodeProcess
from p2pnat import events as ev
from p2pnat.codecs import JsonCodec, _json_prepare, make_envelope
from p2pnat.errors import FrameError
from p2pnat.frames import FrameDecoder, encode_event, encode_recv, max_frame_length
from p2pnat.node import READ_CHUNK, WRITE_BATCH_BYTES, WRITE_HIGH_WATER, PIPE_SIZE

PEER = "peerA"


# ---------------------------------------------------------------- FrameDecoder

def test_decoder_many_frames_in_one_chunk_and_a_split_at_every_offset():
    frames = [encode_recv(PEER, bytes([i]) * i) for i in range(40)] + [encode_event("delivered 7 x")]
    stream = b"".join(frames)
    expected = [(0x81, bytes([len(PEER)]) + PEER.encode() + bytes([i]) * i) for i in range(40)]
    expected.append((0x82, b"delivered 7 x"))
    for cut in range(len(stream) + 1):  # every boundary, including exactly between two frames
        dec = FrameDecoder()
        got = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert got == expected, cut
        assert dec.buffered == 0


def test_decoder_split_exactly_at_frame_and_header_boundaries():
    one, two = encode_recv(PEER, b"first"), encode_recv(PEER, b"second")
    dec = FrameDecoder()
    assert [b for _, b in dec.feed(one)] == [bytes([5]) + b"peerAfirst"]   # chunk = one whole frame
    assert dec.buffered == 0
    assert dec.feed(two[:4]) == [] and dec.buffered == 4                    # only the length field
    assert dec.feed(two[4:5]) == [] and dec.buffered == 5                   # + the type byte
    assert [b for _, b in dec.feed(two[5:])] == [bytes([5]) + b"peerAsecond"]


def test_decoder_huge_frame_across_many_chunks():
    payload = bytes(range(256)) * (64 * 1024 + 3)  # 16 MiB + 768 bytes
    frame = encode_recv(PEER, payload)
    dec = FrameDecoder(max_frame_length(len(payload)))
    got = []
    for i in range(0, len(frame), READ_CHUNK):
        got += dec.feed(frame[i:i + READ_CHUNK])
        assert dec.buffered <= len(frame)
    [(ftype, body)] = got
    assert ftype == 0x81 and body[1 + len(PEER):] == payload and dec.buffered == 0


def test_decoder_bad_length_after_good_frames_returns_them_then_fails():
    good = encode_event("ready x")
    dec = FrameDecoder()
    assert dec.feed(good + b"\x00\x00\x00\x00\x82") == [(0x82, b"ready x")]
    assert dec.error is not None and "length 0" in str(dec.error)
    with pytest.raises(FrameError):
        dec.feed(good)
    with pytest.raises(FrameError, match="exceeds"):
        FrameDecoder(100).feed(b"\x00\x00\x01\x00")


# ---------------------------------------------------------------- NodeProcess's stdout reader

class _FakeProc:
    pid = None
    returncode = None

    def __init__(self, stdout):
        self.stdout = stdout

    def send_signal(self, sig):
        self.returncode = -sig


async def _read_chunks(chunks, **node_kwargs):
    """Run NodeProcess's stdout reader over ``chunks``, each handed over as one read."""
    node = NodeProcess(**node_kwargs)
    reader = asyncio.StreamReader(limit=READ_CHUNK)
    node._proc = _FakeProc(reader)
    task = asyncio.ensure_future(node._read_stdout())
    for chunk in chunks:
        reader.feed_data(chunk)
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the reader takes what is there before the next chunk comes
    reader.feed_eof()
    await task
    messages = node.messages().get_nowait_many()
    events = [e for e in node.events().get_nowait_many()]
    return node, messages, events


def test_reader_partial_frames_across_reads_and_exact_boundaries():
    frames = [encode_event(f"ready {PEER} local=- observed=-")]
    frames += [encode_recv(PEER, b"m%d" % i) for i in range(10)]
    stream = b"".join(frames)
    for cuts in ([7], [len(frames[0])], [len(frames[0]) + 4], [3, 4, 5, 30, 31, 60],
                 list(range(1, len(stream)))):
        chunks, last = [], 0
        for c in cuts + [len(stream)]:
            chunks.append(stream[last:c])
            last = c
        node, messages, events = run(_read_chunks(chunks))
        assert messages == [(PEER, b"m%d" % i) for i in range(10)], cuts
        assert [e.kind for e in events] == ["ready"] and node.peer_id == PEER


def test_reader_huge_message_between_small_ones():
    big = b"\xab" * (16 * 1024 * 1024)
    stream = b"".join([encode_event("ready p local=- observed=-"), encode_recv(PEER, b"a"),
                       encode_recv(PEER, big), encode_recv(PEER, b"b")])
    chunks = [stream[i:i + 100_000] for i in range(0, len(stream), 100_000)]
    node, messages, events = run(_read_chunks(chunks, message_queue_size=8))
    assert [m for _, m in messages] == [b"a", big, b"b"]


def test_reader_stream_ending_inside_a_frame_is_a_protocol_error():
    stream = encode_event("ready p local=- observed=-") + encode_recv(PEER, b"abc")[:-1]
    node, messages, events = run(_read_chunks([stream]))
    assert messages == [] and [e.kind for e in events] == ["ready", ev.PROTOCOL_ERROR]
    assert "ended inside a frame" in events[1].reason


def test_reader_resolves_delivered_and_failed_in_one_chunk():
    async def main():
        node = NodeProcess()
        node._loop = asyncio.get_running_loop()
        futs = {i: node._loop.create_future() for i in (1, 3)}
        node._pending.update({1: futs[1], 2: None, 3: futs[3], 4: None})
        reader = asyncio.StreamReader()
        node._proc = _FakeProc(reader)
        reader.feed_data(b"".join(encode_event(line) for line in [
            "ready p local=- observed=-", "delivered 1 x", "failed 2 x too-large: big",
            "failed 3 x connect: no", "delivered 4 x", "delivered 99 x", "delivered junk"]))
        reader.feed_eof()
        await node._read_stdout()
        return node, futs
    node, futs = run(main())
    assert futs[1].result() == 1
    assert isinstance(futs[3].exception(), DeliveryFailed) and futs[3].exception().reason == "connect: no"
    assert (node.delivered_count, node.failed_count, node.pending_count) == (2, 2, 0)
    kinds = [(e.kind, e.msg_id) for e in node.events().get_nowait_many()]
    # failed events are published; delivered (also unknown or malformed ones) are not
    assert kinds == [("ready", None), ("failed", 2), ("failed", 3)]


# ---------------------------------------------------------------- sending in batches (fake node)

def test_send_many_failure_mid_batch_gets_its_failed_event_and_counts():
    async def main():
        async with fake("fail-every-3") as node:
            ids = await node.send_many("p", [b"%d" % i for i in range(10)])
            # a per-message send in between: its Future fails or succeeds by its own msg_id
            fut = await node.send("p", b"single", wait=False)
            more = await node.send_many("p", [b"x", b"y"])
            counts = await node.wait_sent(timeout=60)
            failed = [e for e in node.events().get_nowait_many() if e.kind == ev.FAILED]
            return ids, fut, more, counts, failed, node.pending_count
    ids, fut, more, counts, failed, pending = run(main())
    all_ids = ids + [11] + more
    assert all_ids == list(range(1, 14))
    bad = [i for i in all_ids if i % 3 == 0]
    assert counts == (len(all_ids) - len(bad), len(bad)) and pending == 0
    assert [e.msg_id for e in failed] == bad  # exactly one failed event each, in order
    assert fut.done() and fut.result() == 11


def test_send_many_bad_peer_id_sends_nothing():
    async def main():
        async with fake("echo") as node:
            with pytest.raises(ValueError):
                await node.send_many("bad peer", [b"a", b"b"])
            await node.send("p", b"after")
            return node.messages().get_nowait_many(), node.pending_count
    assert run(main()) == ([("p", b"after")], 0)


def test_batched_frames_reach_the_node_intact_and_in_order():
    """Thousands of sends of mixed sizes, per-message and bulk interleaved from two tasks: every
    frame arrives whole and in its task's order (the echo shows what the node parsed)."""
    async def main():
        async with fake("echo", message_queue_size=100_000,
                        message_queue_bytes=1 << 30) as node:
            sizes = [0, 1, 100, 5000, WRITE_BATCH_BYTES - 30, WRITE_BATCH_BYTES + 7, 3]

            async def bulk():
                for r in range(20):
                    await node.send_many("bulk", [bytes([r]) * s for s in sizes])

            async def single():
                futs = [await node.send("single", b"%d" % i, wait=False) for i in range(300)]
                return await asyncio.gather(*futs)

            _, confirmed = await asyncio.gather(bulk(), single())
            counts = await node.wait_sent(timeout=60)
            got = node.messages().get_nowait_many()
            return confirmed, counts, got
    confirmed, counts, got = run(main())
    assert len(confirmed) == 300 and counts == (300 + 20 * 7, 0)
    assert [p for peer, p in got if peer == "single"] == [b"%d" % i for i in range(300)]
    assert [p for peer, p in got if peer == "bulk"] == [bytes([r]) * s for r in range(20)
                                                       for s in [0, 1, 100, 5000,
                                                                 WRITE_BATCH_BYTES - 30,
                                                                 WRITE_BATCH_BYTES + 7, 3]]


def test_send_many_waits_when_the_node_stops_reading_stdin():
    """Backpressure on the sending side: memory held for the node's stdin stays bounded."""
    async def main():
        async with fake("stall-stdin", stop_timeout=0.5) as node:
            payloads = (b"z" * 1000 for _ in range(20_000))  # 20 MB: far more than the bound
            task = asyncio.ensure_future(node.send_many("p", payloads))
            done, _ = await asyncio.wait([task], timeout=3)
            held = node._wbuf_bytes + node._proc.stdin.transport.get_write_buffer_size()
            sent = node.pending_count
            task.cancel()
            return bool(done), held, sent
    done, held, sent = run(main())
    assert not done
    assert held <= WRITE_BATCH_BYTES + WRITE_HIGH_WATER + 2000
    assert sent * 1000 <= PIPE_SIZE + WRITE_BATCH_BYTES + WRITE_HIGH_WATER + 2 * 1024 * 1024


def test_wait_sent_ends_when_the_node_dies():
    async def main():
        async with fake("no-ack", stop_timeout=0.5) as node:
            await node.send_many("p", [b"a", b"b"])
            fut = await node.send("p", b"c", wait=False)
            waiter = asyncio.ensure_future(node.wait_sent())
            await asyncio.sleep(0)
            assert not waiter.done()
            node._proc.kill()
            counts = await waiter
        return counts, fut
    counts, fut = run(main())
    assert counts == (0, 3)
    assert isinstance(fut.exception(), NodeExited)


# ---------------------------------------------------------------- JSON fast path = exact path

def _exact(obj):
    return json.dumps(_json_prepare(obj), separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


class _Str(str):
    pass


@pytest.mark.parametrize("obj", [
    {"i": 1, "text": "hello"}, make_envelope({"i": 1}), [], {}, [1, 2.5, -0.0, 1e300, None, True],
    {"é": "ü\u2028\x00\x1f\"\\"}, (1, (2, [3])), 2 ** 100, {"nested": [[[[{"a": [1]}]]]]},
    {"__bytes__": "x", "other": 1}, {"b": b"\x00\xff"}, [bytearray(b"ab"), memoryview(b"c")],
    {_Str("k"): _Str("v")}, True, None, 1.5, "text",
])
def test_json_fast_path_writes_what_the_exact_path_writes(obj):
    assert JsonCodec().encode(obj) == _exact(obj)


@pytest.mark.parametrize("obj", [
    {"__bytes__": "x"}, {1: "int key"}, {None: 1}, [math.nan], {"a": {"b": math.inf}}, -math.inf,
    "\ud800", {"k": "\udfff"}, object(), {"deep": [[[[[[[[[[[[[[[[[[{1: 2}]]]]]]]]]]]]]]]]]]},
])
def test_json_fast_path_refuses_what_the_exact_path_refuses(obj):
    with pytest.raises(EncodeError):
        JsonCodec().encode(obj)


def test_json_deep_and_circular_messages_are_encode_errors():
    deep = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(EncodeError):
        JsonCodec().encode(deep)
    loop = []
    loop.append(loop)
    with pytest.raises(EncodeError):
        JsonCodec().encode(loop)
    shallow = {"a": []}
    for _ in range(100):
        shallow = {"a": shallow}
    assert JsonCodec().decode(JsonCodec().encode(shallow)) == shallow


def test_json_decode_bytes_marker_with_and_without_escapes():
    c = JsonCodec()
    assert c.decode(b'{"__bytes__":"aGk="}') == b"hi"
    assert c.decode(b'{"\\u005f_bytes__":"aGk="}') == b"hi"
    assert c.decode(b'{"a":"\\u00e9","__bytes__":"aGk="}') == {"a": "é", "__bytes__": "aGk="}
    assert c.decode(b'[123456789012345678901234567890]') == [123456789012345678901234567890]
    for bad in (b"NaN", b'{"a":Infinity}', b"\xff", b'{"a":1', b'{"__bytes__":"!!"}'):
        with pytest.raises(Exception) as info:
            c.decode(bad)
        assert type(info.value).__name__ == "DecodeError"
