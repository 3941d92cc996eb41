"""Finding the ``p2p-node`` and ``p2p-rendezvous`` executables. Nothing is ever built at run time.

Order, for ``p2p-node`` (``p2p-rendezvous`` likewise with ``P2P_RENDEZVOUS_BIN``):

1. the environment variable ``P2P_NODE_BIN`` (must name an executable file if set): an explicit
   choice always wins;
2. the executable bundled with this copy of the package: when ``p2pnat`` was installed from its
   wheel, the wheel's ``p2pnat-<version>.data/scripts/p2p-node``, which pip installed beside the
   interpreter (``<venv>/bin``, ``~/.local/bin``, ...). It is located through the installed
   distribution's file list (RECORD), and only if that distribution is the one this very module was
   installed from, so a checkout never picks up the binary of some other installed copy;
3. the repository's cargo target dir, relative to this package: ``<repo>/target/release/p2p-node``,
   then ``<repo>/target/debug/p2p-node`` (``<repo>`` is the folder above ``python/``; only
   meaningful when the package is used from a checkout);
4. ``p2p-node`` on ``PATH``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, List, Optional

from .errors import BinaryNotFound

log = logging.getLogger("p2pnat.binary")

NODE = "p2p-node"
RENDEZVOUS = "p2p-rendezvous"
ENV_VARS = {NODE: "P2P_NODE_BIN", RENDEZVOUS: "P2P_RENDEZVOUS_BIN"}
DIST_NAME = "p2pnat"

#: ``<repo>`` when this package is used from a checkout: python/p2pnat/binary.py -> <repo>.
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _installed_distribution() -> Any:
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover (Python < 3.8)
        return None
    try:
        return metadata.distribution(DIST_NAME)
    except metadata.PackageNotFoundError:
        return None


def bundled_path(name: str = NODE, *, dist: Any = None,
                 module_file: Optional[str] = None) -> Optional[Path]:
    """The executable ``name`` installed from this package's wheel, or None.

    ``dist`` is an ``importlib.metadata.Distribution`` (default: the installed ``p2pnat``);
    ``module_file`` this module's path (default: ``__file__``). The binary counts only if ``dist``
    lists ``p2pnat/binary.py`` at ``module_file``: the distribution owns the running code.
    """
    if dist is None:
        dist = _installed_distribution()
        if dist is None:
            return None
    try:
        files = list(dist.files or [])
    except Exception as exc:  # an unreadable RECORD must not break a checkout run
        log.debug("cannot read the file list of %s: %s", DIST_NAME, exc)
        return None
    here = Path(module_file if module_file is not None else __file__).resolve()
    owns = any(f.name == "binary.py" and f.parent.name == "p2pnat"
               and Path(dist.locate_file(f)).resolve() == here for f in files)
    if not owns:
        return None
    exe_names = {name, name + ".exe"}
    for f in files:
        if f.name in exe_names:
            path = Path(dist.locate_file(f)).resolve()
            if _is_executable(path):
                return path
    return None


def candidate_paths(name: str = NODE, repo_root: Optional[Path] = None) -> List[Path]:
    """The cargo target paths searched (after the bundled binary, before PATH)."""
    root = REPO_ROOT if repo_root is None else Path(repo_root)
    return [root / "target" / "release" / name, root / "target" / "debug" / name]


def find_binary(name: str = NODE, *, repo_root: Optional[Path] = None,
                environ: Optional[dict] = None, dist: Any = None,
                module_file: Optional[str] = None) -> str:
    """Absolute path of the executable ``name`` (``p2p-node`` or ``p2p-rendezvous``), searched in
    the order of this module's docstring. ``dist`` and ``module_file`` go to :func:`bundled_path`.

    Raises :class:`BinaryNotFound` with install/build instructions when it is nowhere.
    """
    env = os.environ if environ is None else environ
    var = ENV_VARS.get(name, name.upper().replace("-", "_") + "_BIN")
    override = env.get(var)
    if override:
        path = Path(override).expanduser()
        if not _is_executable(path):
            raise BinaryNotFound(f"{var}={override!r} does not name an executable file")
        return str(path.resolve())
    bundled = bundled_path(name, dist=dist, module_file=module_file)
    if bundled is not None:
        return str(bundled)
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
        f"cannot find the {name} executable (looked at ${var}, the p2pnat wheel's bundled "
        f"binaries, {searched}, and PATH). Install the p2pnat wheel (scripts/build-wheel.sh "
        f"builds it), or build from the repository root with `cargo build --bin {name}` "
        f"(or `cargo build --release --bin {name}`), or set {var} to its path.")


def find_node_binary() -> str:
    return find_binary(NODE)


def find_rendezvous_binary() -> str:
    return find_binary(RENDEZVOUS)


def report() -> int:
    """``python -m p2pnat``: print where each executable is found (or why not); 0 if both are."""
    status = 0
    for name in (NODE, RENDEZVOUS):
        try:
            print(f"{name}: {find_binary(name)}")
        except BinaryNotFound as exc:
            print(f"{name}: not found: {exc}")
            status = 1
    return status

