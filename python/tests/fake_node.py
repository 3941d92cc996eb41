#!/usr/bin/env python3
"""A stand-in for ``p2p-node --io frames``, for testing the wrapper's process handling only.

It speaks the frame format of docs/PROTOCOL.md 1.2 but has no networking: a SEND is either
acknowledged (``delivered``) or refused (``failed``), and can be echoed back as a RECV. The real
binary is exercised by test_integration.py; this exists to provoke situations the real node cannot
be made to produce on demand (ignoring SIGTERM, corrupt stdout, dying before ready).

FAKE_NODE_MODE is a comma-separated list of:
  echo             answer each SEND with a RECV of the same payload from the destination peer
  no-ack           never answer SENDs (they stay pending)
  ignore-eof       keep running after end of stdin
  ignore-term      ignore SIGTERM
  die-before-ready write to stderr and exit with status 3 before the ready event
  silent           never send ready
  bad-length       after ready, write a frame with length 0 (unrecoverable)
  bad-recv         after ready, write a RECV frame whose body is too short (recoverable)
  not-ready-first  write an error event before ready
  flood            after ready, write RECV frames forever; FAKE_NODE_COUNT_FILE gets the count
  stderr-spam      write 1 MiB of stderr lines at start
  fail-every-3     answer a SEND whose msg_id is a multiple of 3 with failed, the others delivered
  stall-stdin      after ready, never read stdin (until killed)
"""

import os
import signal
import struct
import sys
import time

MODE = set(filter(None, os.environ.get("FAKE_NODE_MODE", "").split(",")))
OUT = sys.stdout.buffer
PEER = "fakepeer" + str(os.getpid())


def frame(ftype, body):
    OUT.write(struct.pack(">IB", len(body) + 1, ftype) + body)
    OUT.flush()


def event(line):
    frame(0x82, line.encode())


def recv(peer, payload):
    pid = peer.encode()
    frame(0x81, bytes([len(pid)]) + pid + payload)


def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = sys.stdin.buffer.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main():
    if "ignore-term" in MODE:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "stderr-spam" in MODE:
        for i in range(16384):
            sys.stderr.write(f"2026-01-01T00:00:00Z  INFO fake: line {i} " + "x" * 40 + "\n")
        sys.stderr.flush()
    if "die-before-ready" in MODE:
        sys.stderr.write("fake node: cannot bind socket\n")
        sys.exit(3)
    if "not-ready-first" in MODE:
        event("error internal something before ready")
    if "silent" not in MODE:
        event(f"ready {PEER} local=127.0.0.1:1,10.0.0.1:1 observed=-")
    sys.stderr.write("2026-01-01T00:00:00Z  WARN fake: ready\n")
    sys.stderr.flush()
    if "bad-recv" in MODE:
        frame(0x81, bytes([50]) + b"short")
        event("error internal after bad recv")
    if "bad-length" in MODE:
        OUT.write(struct.pack(">I", 0))
        OUT.flush()
    if "flood" in MODE:
        count_file = os.environ["FAKE_NODE_COUNT_FILE"]
        n = 0
        while True:
            recv("flooder", n.to_bytes(8, "big") + b"x" * 1000)
            n += 1
            with open(count_file, "w") as f:
                f.write(str(n))
    if "stall-stdin" in MODE:
        while True:
            time.sleep(1)
    while True:
        head = read_exact(5)
        if head is None:
            break
        length, ftype = struct.unpack(">IB", head)
        body = read_exact(length - 1) if length > 1 else b""
        if body is None:
            break
        if ftype == 0x01:
            msg_id = int.from_bytes(body[:8], "big")
            id_len = body[8]
            peer = body[9:9 + id_len].decode()
            payload = body[9 + id_len:]
            if "no-ack" in MODE:
                continue
            if peer.startswith("unreachable") or ("fail-every-3" in MODE and msg_id % 3 == 0):
                event(f"failed {msg_id} {peer} no route to peer")
                continue
            if "echo" in MODE:
                recv(peer, payload)
            event(f"delivered {msg_id} {peer}")
        elif ftype == 0x02:
            cmd = body.decode()
            if cmd == "list":
                event(f"peer {PEER}x connected direct 127.0.0.1:9")
                event("peers 1")
            elif cmd.startswith("connect "):
                event(f"connected {cmd.split()[1]} direct 127.0.0.1:9")
            elif cmd == "quit":
                break
            else:
                event(f"error unknown-command {cmd}")
        else:
            event("error bad-frame unknown type")
    if "ignore-eof" in MODE:
        while True:
            time.sleep(1)


if __name__ == "__main__":
    main()
