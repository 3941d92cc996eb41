"""The binary locator's bundled step (pure): a fake installed wheel layout on disk, read through
``importlib.metadata`` exactly as an installed p2pnat is."""

import stat
from importlib import metadata

from p2pnat.binary import bundled_path, find_binary


def _exe(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _installed(tmp_path, *, with_node=True):
    """<prefix>/lib/site/{p2pnat/binary.py, p2pnat-0.1.0.dist-info} and <prefix>/bin/p2p-node, the
    shape pip gives a venv (RECORD names scripts relative to site-packages)."""
    prefix = tmp_path / "prefix"
    site = prefix / "lib" / "site"
    module = site / "p2pnat" / "binary.py"
    module.parent.mkdir(parents=True)
    module.write_text("")
    info = site / "p2pnat-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: p2pnat\nVersion: 0.1.0\n")
    record = ["p2pnat/binary.py,,", "p2pnat-0.1.0.dist-info/METADATA,,",
              "../../bin/p2p-rendezvous,,"]
    if with_node:
        record.append("../../bin/p2p-node,,")
        _exe(prefix / "bin" / "p2p-node")
    _exe(prefix / "bin" / "p2p-rendezvous")
    (info / "RECORD").write_text("\n".join(record) + "\n")
    return metadata.PathDistribution(info), str(module), prefix / "bin"


def test_bundled_comes_after_the_env_override_and_before_repo_and_path(tmp_path):
    dist, module, bindir = _installed(tmp_path)
    repo = tmp_path / "repo"
    _exe(repo / "target" / "release" / "p2p-node")
    on_path = _exe(tmp_path / "path" / "p2p-node")
    env = {"PATH": str(on_path.parent)}
    kw = dict(repo_root=repo, dist=dist, module_file=module)
    assert find_binary("p2p-node", environ=env, **kw) == str((bindir / "p2p-node").resolve())
    assert find_binary("p2p-rendezvous", environ=env, **kw) == str((bindir / "p2p-rendezvous").resolve())
    override = _exe(tmp_path / "elsewhere" / "node")
    assert find_binary("p2p-node", environ={**env, "P2P_NODE_BIN": str(override)},
                       **kw) == str(override.resolve())


def test_bundled_binary_of_another_copy_is_ignored(tmp_path):
    """A distribution that does not own the running module (say a checkout run while some p2pnat is
    installed) lends it no binary."""
    dist, _, _ = _installed(tmp_path)
    checkout_module = tmp_path / "checkout" / "python" / "p2pnat" / "binary.py"
    assert bundled_path("p2p-node", dist=dist, module_file=str(checkout_module)) is None
    repo = tmp_path / "repo"
    debug = _exe(repo / "target" / "debug" / "p2p-node")
    assert find_binary("p2p-node", repo_root=repo, environ={"PATH": ""}, dist=dist,
                       module_file=str(checkout_module)) == str(debug)


def test_missing_bundled_binary_falls_through(tmp_path):
    dist, module, _ = _installed(tmp_path, with_node=False)
    assert bundled_path("p2p-node", dist=dist, module_file=module) is None
    assert bundled_path("p2p-rendezvous", dist=dist, module_file=module) is not None
    on_path = _exe(tmp_path / "path" / "p2p-node")
    assert find_binary("p2p-node", repo_root=tmp_path / "norepo", environ={"PATH": str(on_path.parent)},
                       dist=dist, module_file=module) == str(on_path)
