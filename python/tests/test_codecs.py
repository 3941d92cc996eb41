"""Codec round trips and the exact JSON wire format (pure, no binaries)."""

import base64
import importlib.util
import json

import pytest

from p2pnat.codecs import (BYTES_MARKER, JsonCodec, decode_with, encode_with, get_codec,
                           make_envelope)
from p2pnat.errors import DecodeError, EncodeError

HAS_MSGPACK = importlib.util.find_spec("msgpack") is not None
HAS_CBOR2 = importlib.util.find_spec("cbor2") is not None
needs_msgpack = pytest.mark.skipif(not HAS_MSGPACK, reason="msgpack not installed (pip install msgpack)")
needs_cbor2 = pytest.mark.skipif(not HAS_CBOR2, reason="cbor2 not installed (pip install cbor2)")

CODECS = ["json",
          pytest.param("msgpack", marks=needs_msgpack),
          pytest.param("cbor", marks=needs_cbor2)]

SAMPLE = {
    "type": "chat",
    "payload": {"text": "héllo ☃", "n": [1, -2, 3.5, None, True, False], "nested": {"deep": [[]]},
                "blob": b"\x00\x01\xfe\xff", "empty": b""},
    "metadata": {"id": 2**40},
    "timestamp": 1700000000.25,
}


@pytest.mark.parametrize("name", CODECS)
def test_round_trip(name):
    codec = get_codec(name)
    assert codec.decode(codec.encode(SAMPLE)) == SAMPLE


@pytest.mark.parametrize("name", CODECS)
def test_one_mib_of_binary(name):
    codec = get_codec(name)
    blob = bytes(range(256)) * 4096
    out = codec.decode(codec.encode({"data": blob}))
    assert out["data"] == blob and isinstance(out["data"], bytes)


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("garbage", [b"\xff\xfe\xfd", b"", b"\xc1", b"{\"unterminated",
                                     b"\x9f" * 10])
def test_garbage_raises_decode_error(name, garbage):
    codec = get_codec(name)
    with pytest.raises(DecodeError):
        decode_with(codec, garbage)


@pytest.mark.parametrize("name", CODECS)
def test_unencodable_raises_encode_error(name):
    codec = get_codec(name)
    with pytest.raises(EncodeError):
        encode_with(codec, {"x": object()})


def test_json_wire_format_is_exact():
    payload = JsonCodec().encode({"type": "message", "payload": {"b": b"\x00\xff", "s": "é"},
                                  "metadata": {}, "timestamp": 1.5})
    assert payload == ('{"type":"message","payload":{"b":{"__bytes__":"AP8="},"s":"é"},'
                       '"metadata":{},"timestamp":1.5}').encode("utf-8")


def test_json_bytes_marker_is_reserved_and_strict():
    codec = JsonCodec()
    with pytest.raises(EncodeError):
        codec.encode({"x": {BYTES_MARKER: "AAAA"}})
    with pytest.raises(EncodeError):
        codec.encode({"x": float("nan")})
    with pytest.raises(EncodeError):
        codec.encode({1: "non-string key"})
    with pytest.raises(DecodeError):  # bad base64 inside the marker
        codec.decode(b'{"__bytes__":"not base64!"}')
    with pytest.raises(DecodeError):
        codec.decode(b'{"x": NaN}')
    # A dict with the marker and other keys is an ordinary dict.
    assert codec.decode(b'{"__bytes__":"AA==","other":1}') == {"__bytes__": "AA==", "other": 1}


def test_json_deep_nesting_is_a_decode_error_not_a_crash():
    with pytest.raises(DecodeError):
        JsonCodec().decode(b"[" * 100000 + b"]" * 100000)


@needs_cbor2
def test_cbor_trailing_bytes_are_an_error():
    import cbor2
    with pytest.raises(DecodeError):
        get_codec("cbor").decode(cbor2.dumps({"a": 1}) + b"\x00")


@needs_msgpack
def test_msgpack_trailing_bytes_are_an_error():
    import msgpack
    with pytest.raises(DecodeError):
        get_codec("msgpack").decode(msgpack.packb({"a": 1}) + b"\x00")


def test_envelope_wrapping():
    env = make_envelope({"text": "hi"}, now=lambda: 123.0)
    assert env == {"type": "message", "payload": {"text": "hi"}, "metadata": {}, "timestamp": 123.0}
    assert make_envelope("plain", now=lambda: 1.0)["payload"] == "plain"
    given = {"type": "chat", "payload": 5}
    env = make_envelope(given, now=lambda: 9.0)
    assert env == {"type": "chat", "payload": 5, "metadata": {}, "timestamp": 9.0}
    assert given == {"type": "chat", "payload": 5}  # the caller's dict is untouched
    full = {"type": "t", "payload": None, "metadata": {"k": 1}, "timestamp": 2.0, "extra": True}
    assert make_envelope(full) == full


class Rot13ish:
    """A custom codec: UTF-8 text with every byte xor 0x5a (enough to prove the plumbing)."""

    name = "xor-text"

    def encode(self, obj):
        if not isinstance(obj, str):
            raise TypeError("xor-text encodes str only")
        return bytes(b ^ 0x5A for b in obj.encode())

    def decode(self, data):
        return bytes(b ^ 0x5A for b in data).decode()


def test_custom_codec_interface():
    codec = get_codec(Rot13ish())
    assert codec.name == "xor-text"
    assert decode_with(codec, encode_with(codec, "hello")) == "hello"
    with pytest.raises(EncodeError):
        encode_with(codec, {"not": "a string"})
    with pytest.raises(DecodeError):
        decode_with(codec, b"\xa5\xff")  # xor gives invalid UTF-8


def test_custom_codec_must_return_bytes():
    class Bad:
        name = "bad"

        def encode(self, obj):
            return "a str, not bytes"

        def decode(self, data):
            return data

    with pytest.raises(EncodeError):
        encode_with(get_codec(Bad()), 1)


def test_get_codec_errors():
    with pytest.raises(ValueError):
        get_codec("yaml")
    with pytest.raises(TypeError):
        get_codec(object())
    assert get_codec(None).name == "json"


def test_json_base64_is_standard_with_padding():
    raw = b"\xfb\xff"
    encoded = json.loads(JsonCodec().encode({"b": raw}))["b"][BYTES_MARKER]
    assert encoded == base64.b64encode(raw).decode() == "+/8="
