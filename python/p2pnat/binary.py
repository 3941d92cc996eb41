"""Finding the ``p2p-node`` and ``p2p-rendezvous`` executables. Nothing is ever built at run time.

Order, for ``p2p-node`` (``p2p-rendezvous`` likewise with ``P2P_RENDEZVOUS_BIN``):

1. the environment variable ``P2P_NODE_BIN`` (must name an executable file if set);
2. the repository's cargo target dir, relative to this package: ``<repo>/target/release/p2p-node``,
   then ``<repo>/target/debug/p2p-node`` (``<repo>`` is the folder above ``python/``);
3. ``p2p-node`` on ``PATH``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import List, Optional

from .errors import BinaryNotFound

log = logging.getLogger("p2pnat.binary")

NODE = "p2p-node"
RENDEZVOUS = "p2p-rendezvous"
ENV_VARS = {NODE: "P2P_NODE_BIN", RENDEZVOUS: "P2P_RENDEZVOUS_BIN"}

#: ``<repo>`` when this package is used from a checkout: python/p2pnat/binary.py -> <repo>.
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def candidate_paths(name: str = NODE, repo_root: Optional[Path] = None) -> List[Path]:
    """The cargo target paths searched (after the environment variable, before PATH)."""
    root = REPO_ROOT if repo_root is None else Path(repo_root)
    return [root / "target" / "release" / name, root / "target" / "debug" / name]


def find_binary(name: str = NODE, *, repo_root: Optional[Path] = None,
                environ: Optional[dict] = None) -> str:
    """Absolute path of the executable ``name`` (``p2p-node`` or ``p2p-rendezvous``).

    Raises :class:`BinaryNotFound` with build instructions when it is nowhere.
    """
    env = os.environ if environ is None else environ
    var = ENV_VARS.get(name, name.upper().replace("-", "_") + "_BIN")
    override = env.get(var)
    if override:
        path = Path(override).expanduser()
        if not _is_executable(path):
            raise BinaryNotFound(f"{var}={override!r} does not name an executable file")
        return str(path.resolve())
    candidates = candidate_paths(name, repo_root)
    found = [path for path in candidates if _is_executable(path)]
    if found:
        chosen = found[0]
        newer = [p for p in found[1:] if p.stat().st_mtime > chosen.stat().st_mtime]
        if newer:
            log.warning("using %s although %s is newer: rebuild it or set %s", chosen, newer[0], var)
        return str(chosen)
    on_path = shutil.which(name, path=env.get("PATH"))
    if on_path:
        return on_path
    searched = ", ".join(str(p) for p in candidates)
    raise BinaryNotFound(
        f"cannot find the {name} executable (looked at ${var}, {searched}, and PATH). "
        f"Build it from the repository root with `cargo build --bin {name}` "
        f"(or `cargo build --release --bin {name}`), or set {var} to its path.")


def find_node_binary() -> str:
    return find_binary(NODE)


def find_rendezvous_binary() -> str:
    return find_binary(RENDEZVOUS)
