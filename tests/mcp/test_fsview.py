"""Filesystem views in the MCP server: every run gets a private /tmp (off with --no-private-tmp),
and --workspace-mount shows a workspace subdirectory at a fixed path, seen by the file tools."""

from __future__ import annotations

import asyncio

import pytest

from conftest import Server, call, connect, run


def test_each_session_has_its_own_private_tmp(server: Server) -> None:
    async def session(tag: str) -> list:
        out = []
        async with connect(server) as c:
            for name, args in [
                ("execute_shell", {"command": f"echo {tag} > /tmp/same.txt; sleep 0.3"}),
                (
                    "execute_python",
                    {
                        "code": f"open('/tmp/lobe-code-1.py', 'w').write(\"print({tag!r})\")\n"
                        "import runpy; runpy.run_path('/tmp/lobe-code-1.py')"
                    },
                ),
                ("execute_shell", {"command": "ls /tmp"}),
            ]:
                out.append((await c.call_tool(name, args)).structured_content)
        return out

    async def both():
        return await asyncio.gather(session("alpha"), session("beta"))

    for tag, (write, py, ls) in zip(["alpha", "beta"], run(both()), strict=True):
        assert write["exit_code"] == 0, write
        assert py["stdout"] == f"{tag}\n", py["stderr"]
        # A run's /tmp is fresh: the first call's file went with it; only the way to the
        # workspace (which lies under the host's /tmp) is there.
        assert "same.txt" not in ls["stdout"] and "lobe-code" not in ls["stdout"], ls
    assert not list(server.root.glob("*/same.txt"))


def test_without_a_private_tmp_the_hosts_tmp_is_refused() -> None:
    s = Server("--no-private-tmp")
    try:
        (r, *_) = call(s, "legacy", ("execute_shell", {"command": "echo x > /tmp/same.txt"}))
        assert r.structured_content["exit_code"] != 0
        assert "Permission denied" in r.structured_content["stderr"]
    finally:
        s.stop()


@pytest.fixture(scope="module")
def mounted() -> Server:
    s = Server("--workspace-mount", "/mnt/data:data")
    yield s
    s.stop()


def test_a_workspace_mount_is_a_subdirectory_the_file_tools_see(mounted: Server) -> None:
    wrote, read, uploaded, seen = call(
        mounted,
        "legacy",
        ("execute_shell", {"command": "echo report > /mnt/data/report.csv; cd /mnt/data; pwd"}),
        ("read_file", {"path": "data/report.csv"}),
        ("write_file", {"path": "data/in.txt", "content": "uploaded"}),
        ("execute_python", {"code": "print(open('/mnt/data/in.txt').read())"}),
    )[:4]
    assert wrote.structured_content["stdout"] == "/mnt/data\n", wrote.structured_content
    assert "report" in read.content[0].text
    assert uploaded.is_error is False
    assert seen.structured_content["stdout"] == "uploaded\n", seen.structured_content
    # Control: another session has its own, empty, /mnt/data.
    (other, *_) = call(mounted, "legacy", ("execute_shell", {"command": "ls -A /mnt/data"}))
    assert other.structured_content["exit_code"] == 0, other.structured_content
    assert other.structured_content["stdout"] == ""
