"""Outputs of any size reach every official client: the Python `mcp` client, the TypeScript SDK and
the Inspector, at 0.5, 1, 10 and 100 MiB on stdout and on stderr.

A result is one server-sent event, and the Python client refuses one over 1 MiB (and drops the
session). So a long stream is shown inline as its head and tail with a marker, and saved whole in
the workspace (`.sandlock/outputs/`), where `read_file` pages through it by lines.
"""

from __future__ import annotations

import json
import tempfile

import pytest

from conftest import Server, call, connect, run
from test_node_clients import HERE, INSPECTOR, SDK, inspector, need, node_env

MIB = 1 << 20
SIZES = [MIB // 2, MIB, 10 * MIB, 100 * MIB]
LINE = b"0123456789abcdef\n"
# Whatever the output, a result stays far below the 1 MiB a client accepts.
RESULT_LIMIT = 512 * 1024


def flood(stream: str, size: int) -> str:
    return f"yes 0123456789abcdef | head -c {size}" + (" >&2" if stream == "stderr" else "")


@pytest.fixture(scope="module")
def big() -> Server:
    s = Server("--max-output", "128M", "--max-disk", "1G")
    yield s
    s.stop()


def result_size(r) -> int:
    return len(json.dumps(r.model_dump(mode="json", by_alias=True, exclude_none=True)))


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
@pytest.mark.parametrize("size", SIZES, ids=["0.5MiB", "1MiB", "10MiB", "100MiB"])
def test_python_client_gets_any_output_size(big: Server, stream: str, size: int) -> None:
    async def go():
        async with connect(big) as c:
            r = await c.call_tool("execute_shell", {"command": flood(stream, size)})
            sc = r.structured_content
            page = await c.call_tool(
                "read_file", {"path": sc[f"{stream}_file"], "start_line": 3, "end_line": 4}
            )
            last = await c.call_tool(
                "read_file", {"path": sc[f"{stream}_file"], "start_line": size // len(LINE)}
            )
            rest = await c.call_tool("read_file", {"path": sc[f"{stream}_file"]})
            return r, page, last, rest

    r, page, last, rest = run(go())
    sc = r.structured_content
    assert r.is_error is False and sc["reason"] == "exited", r.content[0].text[:500]
    assert sc[f"{stream}_bytes"] == size and sc["truncated"] is False
    assert sc["excerpted"] is True and sc[f"{stream}_file"].startswith(".sandlock/outputs/")
    assert result_size(r) < RESULT_LIMIT, result_size(r)
    shown = sc[stream]
    assert shown.startswith("0123456789abcdef\n") and "bytes of " + stream + " omitted" in shown
    assert shown.endswith(LINE.decode()[: size % len(LINE)] or "0123456789abcdef\n")
    # The whole output, in pages.
    p = page.structured_content
    assert p["content"] == "0123456789abcdef\n" * 2
    assert p["total_lines"] == -(-size // len(LINE)) and p["truncated"] is False
    assert result_size(page) < RESULT_LIMIT
    assert last.structured_content["end_line"] == p["total_lines"]
    # Without a range, as much as fits, and where to read on.
    whole = rest.structured_content
    assert whole["truncated"] is True and whole["next_start_line"] == whole["end_line"] + 1
    assert result_size(rest) < RESULT_LIMIT


def test_short_output_is_shown_whole_and_not_saved(big: Server) -> None:
    r, _ = call(big, "legacy", ("execute_shell", {"command": "yes ab | head -c 30000"}))
    sc = r.structured_content
    assert sc["stdout"] == "ab\n" * 10000 and sc["excerpted"] is False
    assert sc["stdout_file"] is None and sc["stdout_bytes"] == 30000


def test_output_past_the_server_cap_still_reaches_the_client_with_what_was_kept() -> None:
    s = Server("--max-output", "1M")
    try:
        r, _ = call(s, "legacy", ("execute_shell", {"command": flood("stdout", 10 * MIB)}))
    finally:
        s.stop()
    sc = r.structured_content
    assert r.is_error is True and sc["reason"] == "output" and sc["truncated"] is True
    assert sc["stdout_bytes"] == MIB and sc["stdout_file"]
    assert result_size(r) < RESULT_LIMIT


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
@pytest.mark.parametrize("size", SIZES, ids=["0.5MiB", "1MiB", "10MiB", "100MiB"])
def test_typescript_sdk_gets_any_output_size(big: Server, stream: str, size: int) -> None:
    need(SDK, "@modelcontextprotocol/sdk")
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run(
            ["node", str(HERE / "node/large_output.mjs"), big.url, str(size), stream],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=node_env(tmp, big.token),
            cwd=HERE,
        )
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert (out["isError"], out["reason"], out["bytes"], out["excerpted"]) == (
        False,
        "exited",
        size,
        True,
    )
    assert out["resultLength"] < RESULT_LIMIT
    assert out["page"] == "0123456789abcdef\n" * 2
    assert out["totalLines"] == -(-size // len(LINE))


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
@pytest.mark.parametrize("size", SIZES, ids=["0.5MiB", "1MiB", "10MiB", "100MiB"])
def test_inspector_gets_any_output_size(big: Server, stream: str, size: int) -> None:
    need(INSPECTOR, "@modelcontextprotocol/inspector")
    r = inspector(
        big.url,
        "--transport",
        "http",
        "--header",
        f"Authorization: Bearer {big.token}",
        "--method",
        "tools/call",
        "--tool-name",
        "execute_shell",
        "--tool-args-json",
        json.dumps({"command": flood(stream, size)}),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)["result"]
    sc = result["structuredContent"]
    assert result["isError"] is False and sc[f"{stream}_bytes"] == size and sc["excerpted"]
    assert len(r.stdout) < RESULT_LIMIT
