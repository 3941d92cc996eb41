"""Shared test setup.

* Puts ``python/`` on ``sys.path`` so ``python3 -m pytest -q python/tests`` works from the repo root
  without installing the package.
* ``rendezvous``: a real ``p2p-rendezvous --listen 127.0.0.1:0`` for the session (its first stdout line
  ``listening <addr> <peer_id>`` gives the address). Tests that use it are skipped, with the build
  command, when the binaries are not built.
* ``run(coro, timeout)``: runs a coroutine in a fresh event loop with a generous timeout that only
  exists to turn a hang into a failure (no test asserts on elapsed time).
"""

from __future__ import annotations

import asyncio
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

PYTHON_DIR = Path(__file__).resolve().parent.parent
if str(PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PYTHON_DIR))

from p2pnat.binary import NODE, RENDEZVOUS, find_binary  # noqa: E402
from p2pnat.errors import BinaryNotFound  # noqa: E402

FAKE_NODE = str(Path(__file__).resolve().parent / "fake_node.py")


def _use_newest_build() -> None:
    """Test what was built last: scripts/test-all.sh builds debug binaries, and a release build left
    by an earlier run would otherwise win (the library looks at release first). An explicit
    P2P_NODE_BIN / P2P_RENDEZVOUS_BIN is respected."""
    from p2pnat.binary import ENV_VARS, candidate_paths
    for name, var in ENV_VARS.items():
        if os.environ.get(var):
            continue
        built = [p for p in candidate_paths(name) if p.is_file() and os.access(p, os.X_OK)]
        if built:
            os.environ[var] = str(max(built, key=lambda p: p.stat().st_mtime))


_use_newest_build()
HANG_TIMEOUT = 120.0


def run(coro, timeout: float = HANG_TIMEOUT):
    async def guarded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(guarded())


def binaries_or_skip():
    try:
        return find_binary(NODE), find_binary(RENDEZVOUS)
    except BinaryNotFound as exc:
        pytest.skip(f"real binaries not available ({exc})")


class Rendezvous:
    def __init__(self, proc: subprocess.Popen, addr: str, peer_id: str, log_path: Path):
        self.proc = proc
        self.addr = addr
        self.peer_id = peer_id
        self.log_path = log_path


def _read_first_line(proc: subprocess.Popen, timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError("p2p-rendezvous printed no line")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise EOFError(f"p2p-rendezvous exited (status {proc.poll()}) before printing its address")
            buf += chunk
    finally:
        sel.close()
    return buf.split(b"\n", 1)[0].decode()


@pytest.fixture(scope="session")
def rendezvous(tmp_path_factory):
    _, rendezvous_bin = binaries_or_skip()
    tmp = tmp_path_factory.mktemp("rendezvous")
    log_path = tmp / "rendezvous.log"
    argv = [rendezvous_bin, "--listen", "127.0.0.1:0", "--identity", str(tmp / "rendezvous.key")]
    # Every test node registers from 127.0.0.1, dozens within seconds: lift the per-IP limit on new
    # registrations (a refused registration makes a peer unreachable until the node's retry).
    help_text = subprocess.run([rendezvous_bin, "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    if "--new-per-ip-burst" in help_text:
        argv += ["--new-per-ip-burst", "1000000"]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file,
            env={**os.environ, "NO_COLOR": "1"})
    try:
        line = _read_first_line(proc, 60)
        words = line.split()
        if len(words) < 3 or words[0] != "listening":
            raise AssertionError(f"unexpected first line from p2p-rendezvous: {line!r}")
        rv = Rendezvous(proc, words[1], words[2], log_path)
        # Keep reading stdout so the rendezvous can never block on it.
        import threading
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        yield rv
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def node_binary():
    return binaries_or_skip()[0]


def child_pids() -> set:
    """PIDs of this process's live (non-zombie) children, from /proc (Linux); None elsewhere."""
    base = Path(f"/proc/{os.getpid()}/task")
    if not base.exists():
        return None
    pids = set()
    for task in base.iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            return None
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0); it is not running
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return True
