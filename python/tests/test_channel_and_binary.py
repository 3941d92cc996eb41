"""The bounded channel and the binary locator (pure)."""

import asyncio
import os
import stat

import pytest

from conftest import run
from p2pnat.binary import find_binary
from p2pnat.channel import BoundedChannel
from p2pnat.errors import BinaryNotFound


def test_put_waits_when_full_and_resumes():
    async def main():
        ch = BoundedChannel(2)
        await ch.put(1)
        await ch.put(2)
        blocked = asyncio.ensure_future(ch.put(3))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not blocked.done() and len(ch) == 2
        assert await ch.get() == 1
        assert await blocked is True
        return [await ch.get(), await ch.get()]
    assert run(main()) == [2, 3]


def test_close_ends_iteration_after_remaining_items_and_releases_putters():
    async def main():
        ch = BoundedChannel(1)
        await ch.put("a")
        blocked = asyncio.ensure_future(ch.put("b"))
        await asyncio.sleep(0)
        ch.close()
        assert await blocked is False
        return [item async for item in ch]
    assert run(main()) == ["a"]


def test_drop_oldest():
    async def main():
        ch = BoundedChannel(3)
        for i in range(10):
            ch.put_drop_oldest(i)
        ch.close()
        return [item async for item in ch], ch.dropped
    assert run(main()) == ([7, 8, 9], 7)


def test_unbound_releases_a_blocked_put():
    async def main():
        ch = BoundedChannel(1)
        await ch.put(1)
        blocked = asyncio.ensure_future(ch.put(2))
        await asyncio.sleep(0)
        ch.unbound()
        return await blocked, len(ch)
    assert run(main()) == (True, 2)


def _make_exe(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_binary_order(tmp_path):
    repo = tmp_path / "repo"
    bindir = tmp_path / "bin"
    on_path = _make_exe(bindir / "p2p-node")
    env = {"PATH": str(bindir)}
    assert find_binary("p2p-node", repo_root=repo, environ=env) == str(on_path)
    debug = _make_exe(repo / "target" / "debug" / "p2p-node")
    assert find_binary("p2p-node", repo_root=repo, environ=env) == str(debug)
    release = _make_exe(repo / "target" / "release" / "p2p-node")
    assert find_binary("p2p-node", repo_root=repo, environ=env) == str(release)
    override = _make_exe(tmp_path / "elsewhere" / "node")
    assert find_binary("p2p-node", repo_root=repo,
                       environ={**env, "P2P_NODE_BIN": str(override)}) == str(override.resolve())


def test_binary_missing_says_how_to_build(tmp_path):
    with pytest.raises(BinaryNotFound) as info:
        find_binary("p2p-node", repo_root=tmp_path, environ={"PATH": str(tmp_path)})
    assert "cargo build --bin p2p-node" in str(info.value)
    with pytest.raises(BinaryNotFound) as info:
        find_binary("p2p-node", repo_root=tmp_path,
                    environ={"PATH": "", "P2P_NODE_BIN": str(tmp_path / "nope")})
    assert "P2P_NODE_BIN" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert not os.path.exists(tmp_path / "target")  # nothing was built


def test_byte_bound():
    async def main():
        ch = BoundedChannel(100, max_bytes=10)
        await ch.put("a", 6)
        blocked = asyncio.ensure_future(ch.put("b", 6))  # 12 > 10: waits
        for _ in range(5):
            await asyncio.sleep(0)
        assert not blocked.done() and ch.bytes == 6
        assert await ch.get() == "a"
        await blocked
        assert ch.bytes == 6
        await ch.get()
        await ch.put("huge", 1000)  # larger than the bound, but the channel is empty: let in
        assert ch.bytes == 1000
        late = asyncio.ensure_future(ch.put("small", 1))
        await asyncio.sleep(0)
        assert not late.done()
        return await ch.get(), await late, await ch.get(), ch.bytes
    assert run(main()) == ("huge", True, "small", 0)


def test_stale_release_build_is_used_but_warned_about(tmp_path, caplog):
    repo = tmp_path / "repo"
    release = _make_exe(repo / "target" / "release" / "p2p-node")
    debug = _make_exe(repo / "target" / "debug" / "p2p-node")
    os.utime(release, (1_000_000, 1_000_000))
    with caplog.at_level("WARNING", logger="p2pnat.binary"):
        assert find_binary("p2p-node", repo_root=repo, environ={"PATH": ""}) == str(release)
    assert str(debug) in caplog.text
