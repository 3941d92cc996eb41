"""p2pnat: Python wrappers around the ``p2p-node`` binary (standard library only).

The wrappers never touch the network: they run ``p2p-node --io frames`` as a child process and
exchange frames with it over stdin/stdout (docs/PROTOCOL.md section 1.2).
"""

from .api import P2PClient, P2PServer
from .binary import find_binary, find_node_binary, find_rendezvous_binary
from .codecs import BYTES_MARKER, CborCodec, Codec, JsonCodec, MsgpackCodec, get_codec, make_envelope
from .errors import (BinaryNotFound, DecodeError, DeliveryFailed, EncodeError, FrameError, NodeError,
                     NodeExited, NodeStartError, P2PError)
from .events import Event, parse_event
from .node import NodeProcess, PeerInfo

__version__ = "0.1.0"

__all__ = [
    "P2PServer", "P2PClient", "NodeProcess", "PeerInfo", "Event", "parse_event",
    "Codec", "JsonCodec", "MsgpackCodec", "CborCodec", "get_codec", "make_envelope", "BYTES_MARKER",
    "find_binary", "find_node_binary", "find_rendezvous_binary",
    "P2PError", "BinaryNotFound", "FrameError", "EncodeError", "DecodeError", "NodeError",
    "NodeStartError", "NodeExited", "DeliveryFailed",
]
