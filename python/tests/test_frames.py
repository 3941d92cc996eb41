"""Frame encoding/decoding against docs/PROTOCOL.md section 1.2 (pure, no binaries)."""

import asyncio
import struct

import pytest

from conftest import run
from p2pnat import frames
from p2pnat.errors import FrameError

PEER = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrst"


def test_send_frame_layout_byte_by_byte():
    payload = b"\x00\xffhello"
    data = frames.encode_send(0x0102030405060708, PEER, payload)
    body_len = 8 + 1 + len(PEER) + len(payload)
    assert data[:4] == struct.pack(">I", 1 + body_len)
    assert data[4] == 0x01
    assert data[5:13] == bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert data[13] == len(PEER)
    assert data[14:14 + len(PEER)] == PEER.encode("ascii")
    assert data[14 + len(PEER):] == payload
    assert len(data) == 4 + 1 + body_len


def test_send_header_plus_payload_equals_whole_frame():
    payload = bytes(range(256)) * 3
    assert frames.send_header(7, PEER, len(payload)) + payload == frames.encode_send(7, PEER, payload)


def test_empty_payload_is_allowed():
    data = frames.encode_send(1, "p", b"")
    assert struct.unpack(">I", data[:4])[0] == 1 + 8 + 1 + 1
    assert frames.decode_send_body(data[5:]) == (1, "p", b"")


def test_command_frame():
    data = frames.encode_command("connect " + PEER)
    assert data[4] == 0x02
    assert data[5:].decode() == "connect " + PEER
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    with pytest.raises(ValueError):
        frames.encode_command("list\nquit")


@pytest.mark.parametrize("bad", ["", "has space", "é" * 3, "x" * 256, "tab\there"])
def test_bad_peer_ids_are_refused(bad):
    with pytest.raises(ValueError):
        frames.encode_send(1, bad, b"")


def test_msg_id_range():
    frames.encode_send(2**64 - 1, PEER, b"")
    with pytest.raises(ValueError):
        frames.encode_send(2**64, PEER, b"")
    with pytest.raises(ValueError):
        frames.encode_send(-1, PEER, b"")


def test_recv_body_round_trip_and_errors():
    data = frames.encode_recv(PEER, b"\x00payload\xff")
    assert data[4] == 0x81
    assert frames.decode_recv_body(data[5:]) == (PEER, b"\x00payload\xff")
    with pytest.raises(FrameError):
        frames.decode_recv_body(b"")
    with pytest.raises(FrameError):
        frames.decode_recv_body(bytes([10]) + b"short")
    with pytest.raises(FrameError):
        frames.decode_recv_body(bytes([0]) + b"no peer id")


def test_event_frame():
    data = frames.encode_event("ready abc local=1.2.3.4:5 observed=-")
    assert data[4] == 0x82
    assert data[5:] == b"ready abc local=1.2.3.4:5 observed=-"


def test_decoder_splits_frames_fed_byte_by_byte():
    stream = (frames.encode_event("ready x local=- observed=-")
              + frames.encode_recv("peer", b"")
              + frames.encode_recv("peer", b"\x00" * 1000)
              + frames.encode_event("peers 0"))
    dec = frames.FrameDecoder()
    out = []
    for i in range(len(stream)):
        out += dec.feed(stream[i:i + 1])
    assert [t for t, _ in out] == [0x82, 0x81, 0x81, 0x82]
    assert out[2][1] == bytes([4]) + b"peer" + b"\x00" * 1000
    assert dec.buffered == 0


def test_decoder_rejects_zero_and_oversized_lengths():
    with pytest.raises(FrameError):
        frames.FrameDecoder().feed(struct.pack(">I", 0))
    with pytest.raises(FrameError):
        frames.FrameDecoder(max_length=100).feed(struct.pack(">I", 101))


def test_max_frame_length_covers_a_largest_recv():
    largest = frames.encode_recv("p" * 255, b"\x00" * 1000)
    assert struct.unpack(">I", largest[:4])[0] == frames.max_frame_length(1000)


def _reader_with(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_read_frame_from_stream():
    async def main():
        reader = _reader_with(frames.encode_event("id abc") + frames.encode_recv("p", b"xyz"))
        first = await frames.read_frame(reader, 1000)
        second = await frames.read_frame(reader, 1000)
        third = await frames.read_frame(reader, 1000)
        return first, second, third
    first, second, third = run(main())
    assert first == (0x82, b"id abc")
    assert second == (0x81, b"\x01pxyz")
    assert third is None


@pytest.mark.parametrize("data", [b"\x00\x00", b"\x00\x00\x00\x05\x82ab", b"\x00\x00\x00\x00",
                                  b"\x7f\x00\x00\x00\x82"])
def test_read_frame_errors(data):
    async def main():
        return await frames.read_frame(_reader_with(data), 1 << 20)
    with pytest.raises(FrameError):
        run(main())
