"""Codecs: how a Python message becomes the bytes of a p2p-node payload, and back.

A codec is any object with

* ``name``: a short string (only for logs and errors; the codec is never named on the wire),
* ``encode(obj) -> bytes``: raise any exception for an object it cannot encode,
* ``decode(data: bytes) -> obj``: raise any exception for bytes it cannot decode.

Both peers must use the same codec; nothing on the wire says which one was used.

Built in: ``"json"`` (default, standard library only), ``"msgpack"`` (needs the ``msgpack``
package) and ``"cbor"`` (needs ``cbor2``). See python/README.md for the exact wire format.
"""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any, Callable, Dict, Union

from .errors import DecodeError, EncodeError

try:  # Python 3.8+: typing.Protocol
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore

    def runtime_checkable(cls):  # type: ignore
        return cls


@runtime_checkable
class Codec(Protocol):
    """The interface a custom codec implements."""

    name: str

    def encode(self, obj: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


#: The key of the one-key JSON object that stands for a byte string: ``{"__bytes__": "<base64>"}``.
BYTES_MARKER = "__bytes__"

ENVELOPE_KEYS = ("type", "payload", "metadata", "timestamp")


def make_envelope(message: Any, *, now: Callable[[], float] = time.time) -> Dict[str, Any]:
    """The seed's message shape: ``{"type", "payload", "metadata", "timestamp"}``.

    * A dict that has both ``"type"`` and ``"payload"`` keys is taken as an envelope already; a
      missing ``"metadata"`` becomes ``{}`` and a missing ``"timestamp"`` the current Unix time
      (float seconds). Other keys are kept. The caller's dict is not modified.
    * Anything else (a dict without those keys, a string, a list, bytes, ...) is wrapped:
      ``{"type": "message", "payload": message, "metadata": {}, "timestamp": now()}``.
    """
    if isinstance(message, dict) and "type" in message and "payload" in message:
        env = dict(message)
        env.setdefault("metadata", {})
        env.setdefault("timestamp", now())
        return env
    return {"type": "message", "payload": message, "metadata": {}, "timestamp": now()}


class JsonCodec:
    """Compact UTF-8 JSON (RFC 8259), standard library only.

    Byte strings (``bytes``, ``bytearray``, ``memoryview``) anywhere in the message are written as
    ``{"__bytes__": "<standard base64 with padding>"}`` and read back as ``bytes``. Because of that, a
    dict whose only key is ``"__bytes__"`` cannot be sent (EncodeError), so every message that
    encodes decodes to an equal value (tuples come back as lists; non-string dict keys are refused).
    NaN and infinities are refused on both sides: the wire is always strict JSON.
    """

    name = "json"

    def encode(self, obj: Any) -> bytes:
        # Fast path: a message of plain dicts/lists/str/int/float/bool/None with str keys (what
        # nearly every message is) goes straight to the C encoder, built once. Anything else
        # (bytes, subclasses, the reserved key, an error of any kind) takes the exact path below,
        # so results and errors are the same either way.
        if _FAST_ENCODE is not None:
            try:
                if _plain(obj, 0):
                    return "".join(_FAST_ENCODE(obj, 0)).encode("utf-8")
            except Exception:
                pass
        try:
            prepared = _json_prepare(obj)
            text = json.dumps(prepared, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            return text.encode("utf-8")  # UnicodeEncodeError (a lone surrogate) is a ValueError
        except EncodeError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise EncodeError(f"json: cannot encode message: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        try:
            text = (data if type(data) is bytes else bytes(data)).decode("utf-8")
            # The object hook only matters for an object whose one key is "__bytes__"; without a
            # \u escape that key can only be written literally, so most payloads skip the hook.
            if "__bytes__" not in text and "\\u" not in text:
                return _FAST_DECODER.decode(text)
            return _HOOK_DECODER.decode(text)
        except (ValueError, TypeError, RecursionError) as exc:
            raise DecodeError(f"json: cannot decode payload of {len(data)} bytes: {exc}") from exc


#: Plain JSON scalars: values _plain() accepts without a look inside (exact types: subclasses take
#: the exact path).
_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
#: Deeper messages take the exact path (which has its own RecursionError handling).
_PLAIN_MAX_DEPTH = 64


def _plain(obj: Any, depth: int) -> bool:
    """True if ``obj`` needs no preparation: exact dict/list/tuple/scalar types, str keys, no
    one-key ``"__bytes__"`` dict, finite floats, nesting below _PLAIN_MAX_DEPTH."""
    t = type(obj)
    if t is dict:
        if depth >= _PLAIN_MAX_DEPTH or (len(obj) == 1 and BYTES_MARKER in obj):
            return False
        for key, value in obj.items():
            if type(key) is not str:
                return False
            vt = type(value)
            if vt is float:
                if value - value != 0.0:  # NaN or an infinity: the exact path raises
                    return False
            elif vt not in _SCALAR_TYPES and not _plain(value, depth + 1):
                return False
        return True
    if t is list or t is tuple:
        if depth >= _PLAIN_MAX_DEPTH:
            return False
        for value in obj:
            vt = type(value)
            if vt is float:
                if value - value != 0.0:
                    return False
            elif vt not in _SCALAR_TYPES and not _plain(value, depth + 1):
                return False
        return True
    if t is float:
        return obj - obj == 0.0
    return t in _SCALAR_TYPES


def _make_fast_encoder() -> Any:
    """The C encoder with the exact settings of the slow path (compact separators, non-ASCII as
    is, NaN refused), built once; None where the C accelerator is missing."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:
        return None
    try:
        enc = c_make_encoder(None, None, json.encoder.encode_basestring, None, ":", ",",
                             False, False, False)
        if "".join(enc({"a": [1, 2.5, "é", None, True]}, 0)) != '{"a":[1,2.5,"é",null,true]}':
            return None
        return enc
    except Exception:
        return None


def _json_prepare(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {BYTES_MARKER: base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, dict):
        if len(obj) == 1 and BYTES_MARKER in obj:
            raise EncodeError(f"json: a dict whose only key is {BYTES_MARKER!r} is reserved for bytes")
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise EncodeError(f"json: dict keys must be str, got {type(key).__name__}: {key!r}")
            out[key] = _json_prepare(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [_json_prepare(v) for v in obj]
    return obj


def _json_object_hook(obj: Dict[str, Any]) -> Any:
    if len(obj) == 1 and BYTES_MARKER in obj:
        value = obj[BYTES_MARKER]
        if not isinstance(value, str):
            raise ValueError(f"{BYTES_MARKER} value must be a base64 string")
        return base64.b64decode(value.encode("ascii"), validate=True)
    return obj


def _json_reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_FAST_ENCODE = _make_fast_encoder()
_FAST_DECODER = json.JSONDecoder(parse_constant=_json_reject_constant)
_HOOK_DECODER = json.JSONDecoder(object_hook=_json_object_hook, parse_constant=_json_reject_constant)


class MsgpackCodec:
    """MessagePack via the ``msgpack`` package: ``packb(obj, use_bin_type=True)``.

    ``bytes`` travel as msgpack bin, ``str`` as msgpack str; decoding uses ``raw=False`` and
    ``strict_map_key=False`` (so any key msgpack can write also reads back). Arrays decode as lists.
    """

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:
            raise ImportError(
                "the msgpack codec needs the 'msgpack' package: pip install msgpack") from exc
        self._msgpack = msgpack

    def encode(self, obj: Any) -> bytes:
        try:
            return self._msgpack.packb(obj, use_bin_type=True)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise EncodeError(f"msgpack: cannot encode message: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return self._msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated exception types
            raise DecodeError(f"msgpack: cannot decode payload of {len(data)} bytes: {exc}") from exc


class CborCodec:
    """CBOR (RFC 8949) via the ``cbor2`` package: ``cbor2.dumps(obj)``.

    ``bytes`` travel as CBOR byte strings. A payload must hold exactly one CBOR data item: trailing
    bytes are a decode error.
    """

    name = "cbor"

    def __init__(self) -> None:
        try:
            import cbor2
        except ImportError as exc:
            raise ImportError(
                "the cbor codec needs the 'cbor2' package: pip install cbor2") from exc
        self._cbor2 = cbor2

    def encode(self, obj: Any) -> bytes:
        try:
            return self._cbor2.dumps(obj)
        except Exception as exc:  # CBOREncodeError, TypeError, ValueError, RecursionError
            raise EncodeError(f"cbor: cannot encode message: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        data = bytes(data)
        try:
            stream = io.BytesIO(data)
            obj = self._cbor2.CBORDecoder(stream).decode()
            if stream.tell() != len(data):
                raise ValueError(f"{len(data) - stream.tell()} bytes after the CBOR item")
            return obj
        except Exception as exc:  # CBORDecodeError and anything a hostile item provokes
            raise DecodeError(f"cbor: cannot decode payload of {len(data)} bytes: {exc}") from exc


_BUILTIN: Dict[str, Callable[[], Any]] = {
    "json": JsonCodec,
    "msgpack": MsgpackCodec,
    "cbor": CborCodec,
    "cbor2": CborCodec,
}


def get_codec(codec: Union[str, Any, None] = "json") -> Any:
    """A codec object from a name (``"json"``, ``"msgpack"``, ``"cbor"``/``"cbor2"``) or a custom
    codec object (returned as is after checking it has ``name``, ``encode`` and ``decode``)."""
    if codec is None:
        codec = "json"
    if isinstance(codec, str):
        factory = _BUILTIN.get(codec.lower())
        if factory is None:
            raise ValueError(f"unknown codec {codec!r}: use one of json, msgpack, cbor, or a codec object")
        return factory()
    missing = [attr for attr in ("name", "encode", "decode") if not hasattr(codec, attr)]
    if missing or not callable(codec.encode) or not callable(codec.decode):
        raise TypeError(f"a codec needs name, encode(obj)->bytes and decode(bytes)->obj; {codec!r} "
                        f"lacks {', '.join(missing) or 'callable encode/decode'}")
    return codec


def encode_with(codec: Any, obj: Any) -> bytes:
    """Encode with any codec and check the result is bytes; errors become :class:`EncodeError`."""
    try:
        data = codec.encode(obj)
    except EncodeError:
        raise
    except Exception as exc:
        raise EncodeError(f"{getattr(codec, 'name', codec)!s}: cannot encode message: {exc}") from exc
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise EncodeError(f"codec {getattr(codec, 'name', codec)!s} encode() returned "
                          f"{type(data).__name__}, not bytes")
    return data


def decode_with(codec: Any, data: bytes) -> Any:
    """Decode with any codec; every error becomes :class:`DecodeError`."""
    try:
        return codec.decode(data)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"{getattr(codec, 'name', codec)!s}: cannot decode payload of "
                          f"{len(data)} bytes: {exc}") from exc
