"""The official Python `mcp` client against `sandlock mcp`, in session mode (2025-11-25) and in the
stateless 2026-07-28 mode: tools, results, limits, workspaces and their isolation."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import httpx2
import pytest
from mcp import Client, StdioServerParameters

from conftest import BIN, Server, call, connect, default_python, run, wrap

MODES = ["legacy", "2026-07-28"]


@pytest.mark.parametrize("mode", MODES)
def test_protocol_revision_is_the_one_asked_for(server: Server, mode: str) -> None:
    *_, version = call(server, mode)
    assert version == ("2025-11-25" if mode == "legacy" else "2026-07-28")


@pytest.mark.parametrize("mode", MODES)
def test_tools_are_listed_with_output_schemas(server: Server, mode: str) -> None:
    async def go():
        async with connect(server, mode) as c:
            return (await c.list_tools()).tools

    tools = {t.name: t for t in run(go())}
    assert set(tools) == {
        "execute_python",
        "execute_shell",
        "execute_code",
        "command_output",
        "kill_command",
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "glob_files",
        "grep_files",
        "move_file",
        "delete_file",
        "reset_python",
    }
    assert all(t.output_schema for t in tools.values())
    props = tools["execute_python"].output_schema["properties"]
    assert {"stdout", "stderr", "exit_code", "reason", "duration_ms", "truncated"} <= set(props)
    assert set(tools["execute_python"].input_schema["required"]) == {"code"}


@pytest.mark.parametrize("mode", MODES)
def test_execute_python_returns_text_and_structured_content(server: Server, mode: str) -> None:
    r, *_ = call(
        server,
        mode,
        ("execute_python", {"code": "import sys\nprint(6 * 7)\nprint('warn', file=sys.stderr)\n"}),
    )
    assert r.is_error is False
    s = r.structured_content
    assert (s["stdout"], s["stderr"], s["exit_code"], s["reason"]) == (
        "42\n",
        "warn\n",
        0,
        "exited",
    )
    assert s["truncated"] is False and isinstance(s["duration_ms"], int)
    assert "42" in r.content[0].text and "warn" in r.content[0].text


@pytest.mark.parametrize("mode", MODES)
def test_nonzero_exit_and_exception_set_is_error(server: Server, mode: str) -> None:
    bad, exc, ok = call(
        server,
        mode,
        ("execute_shell", {"command": "echo out; exit 3"}),
        ("execute_python", {"code": "x = 1\nraise ValueError('boom')\n"}),
        ("execute_shell", {"command": "true"}),
    )[:3]
    assert bad.is_error is True and bad.structured_content["exit_code"] == 3
    assert bad.content[0].text.startswith("exit code 3")
    assert exc.is_error is True and "ValueError: boom" in exc.structured_content["stderr"]
    # The traceback reads like `python -c`'s: the offending line of the submitted code, under
    # `File "<string>", line 2`, and no frame of the server's bootstrap.
    stderr = exc.structured_content["stderr"]
    assert "raise ValueError('boom')" in stderr
    assert 'File "<string>", line 2' in stderr and stderr.count('File "') == 1, stderr
    assert ok.is_error is False


def test_stdin_reaches_the_program(server: Server) -> None:
    r, *_ = call(
        server,
        "legacy",
        (
            "execute_python",
            {"code": "import sys; print(sys.stdin.read().upper())", "stdin": "hello"},
        ),
    )
    assert r.structured_content["stdout"] == "HELLO\n"


def test_large_code_is_not_bound_by_the_argument_limit(server: Server) -> None:
    code = "x = 0\n" + "x += 1\n" * 40000 + "print(x)\n"  # about 280 KB
    r, *_ = call(server, "legacy", ("execute_python", {"code": code}))
    assert r.structured_content["stdout"] == "40000\n", r.content[0].text


def test_timeout_is_reported_in_words_with_partial_output(server: Server) -> None:
    t0 = time.monotonic()
    r, *_ = call(
        server,
        "legacy",
        (
            "execute_python",
            {"code": "import time\nprint('started', flush=True)\ntime.sleep(60)\n", "timeout_s": 1},
        ),
    )
    assert time.monotonic() - t0 < 10
    assert r.is_error is True
    assert r.structured_content["reason"] == "timeout"
    assert r.content[0].text.startswith("code timed out after 1 s; partial output follows")
    assert r.structured_content["stdout"] == "started\n"


def test_timeout_above_the_maximum_is_refused_in_words(server: Server) -> None:
    r, *_ = call(server, "legacy", ("execute_shell", {"command": "true", "timeout_s": 100000}))
    assert r.is_error is True and r.structured_content["reason"] == "invalid"
    assert "max_timeout" in r.content[0].text


def test_output_cap_truncates_and_says_so() -> None:
    s = Server("--max-output", "64K")
    try:
        r, *_ = call(
            s, "legacy", ("execute_shell", {"command": "yes 0123456789 | head -c 1000000"})
        )
        assert r.structured_content["truncated"] is True
        assert len(r.structured_content["stdout"]) <= 64 * 1024
        # Control: output under the cap is complete.
        r, *_ = call(
            s, "legacy", ("execute_shell", {"command": "head -c 1000 /dev/zero | tr '\\0' x"})
        )
        assert (
            r.structured_content["truncated"] is False
            and len(r.structured_content["stdout"]) == 1000
        )
    finally:
        s.stop()


def test_installed_packages_import_inside_the_sandbox(server: Server) -> None:
    r, *_ = call(
        server,
        "legacy",
        (
            "execute_python",
            {
                "code": "import importlib.util as u\n"
                "print(all(u.find_spec(m) for m in ('numpy', 'pandas')))"
            },
        ),
    )
    if r.structured_content["stdout"].strip() != "True":
        pytest.skip(
            "skipped: numpy/pandas are not installed for the server's interpreter "
            "(pip install -r tests/mcp/requirements.txt into .venv)"
        )
    r, *_ = call(
        server,
        "legacy",
        (
            "execute_python",
            {
                "code": "import numpy as np, pandas as pd\n"
                "df = pd.DataFrame({'a': np.arange(4)})\nprint(int(df.a.sum()))\n"
            },
        ),
    )
    assert r.structured_content["stdout"] == "6\n", r.content[0].text


@pytest.mark.parametrize("mode", MODES)
def test_file_tools_share_the_workspace_with_code(server: Server, mode: str) -> None:
    w, ex, rd, ls, rm, gone = call(
        server,
        mode,
        ("write_file", {"path": "data/in.txt", "content": "héllo\n"}),
        ("execute_shell", {"command": "cat data/in.txt > out.txt; echo made"}),
        ("read_file", {"path": "out.txt"}),
        ("list_files", {"recursive": True}),
        ("delete_file", {"path": "out.txt"}),
        ("read_file", {"path": "out.txt"}),
    )[:6]
    assert w.is_error is False and ex.structured_content["stdout"] == "made\n"
    assert rd.structured_content["content"] == "héllo\n" and rd.content[0].text == "héllo\n"
    paths = {e["path"]: e for e in ls.structured_content["entries"]}
    assert paths["data"]["type"] == "dir" and paths["data/in.txt"]["size"] == len(
        "héllo\n".encode()
    )
    assert rm.is_error is False
    assert gone.is_error is True and "does not exist" in gone.content[0].text


@pytest.mark.parametrize("mode", MODES)
def test_path_traversal_through_file_tools_is_refused(server: Server, mode: str) -> None:
    rs = call(
        server,
        mode,
        ("write_file", {"path": "mine.txt", "content": "ok"}),
        ("read_file", {"path": "/etc/passwd"}),
        ("read_file", {"path": "../../../../etc/passwd"}),
        ("write_file", {"path": "a/../../escape.txt", "content": "x"}),
        ("list_files", {"path": ".."}),
        ("delete_file", {"path": "/tmp"}),
        ("read_file", {"path": "mine.txt"}),
    )[:7]
    assert all(r.is_error for r in rs[1:6]), [r.content[0].text for r in rs]
    assert "absolute path" in rs[1].content[0].text
    assert '".."' in rs[2].content[0].text
    assert rs[6].is_error is False and rs[6].structured_content["content"] == "ok"  # control


@pytest.mark.parametrize("mode", MODES)
def test_symlinks_planted_by_code_do_not_lead_file_tools_outside(server: Server, mode: str) -> None:
    plant = (
        "import os\nos.symlink('/etc/passwd', 'abs')\nos.symlink('..', 'up')\n"
        "os.symlink('/proc/self/root/etc/hostname', 'magic')\n"
        "open('real.txt', 'w').write('inside')\nos.symlink('real.txt', 'inner')\n"
    )
    rs = call(
        server,
        mode,
        ("execute_python", {"code": plant}),
        ("read_file", {"path": "abs"}),
        ("read_file", {"path": "up/server.log"}),
        ("list_files", {"path": "up"}),
        ("read_file", {"path": "magic"}),
        ("write_file", {"path": "abs", "content": "pwned"}),
        ("read_file", {"path": "inner"}),
    )[:7]
    assert rs[0].is_error is False, rs[0].content[0].text
    for r in rs[1:6]:
        assert r.is_error is True
    assert "outside the workspace" in rs[1].content[0].text
    assert "symlink" in rs[5].content[0].text
    assert rs[6].structured_content["content"] == "inside"  # control: a link inside is followed


def test_stateless_requests_use_server_minted_workspace_handles(server: Server) -> None:
    async def go():
        async with connect(server, "2026-07-28") as c:
            first = await c.call_tool("write_file", {"path": "f.txt", "content": "kept"})
            ws = first.structured_content["workspace"]
            again = await c.call_tool("read_file", {"path": "f.txt", "workspace": ws})
            fresh = await c.call_tool("list_files", {})
            unknown = await c.call_tool(
                "read_file", {"path": "f.txt", "workspace": "ws-" + "0" * 32}
            )
            return ws, again, fresh, unknown

    ws, again, fresh, unknown = run(go())
    # <replica>.ws-<32 hex>: the server's replica id (its host name here), then 128 random bits.
    replica, rest = ws.split(".", 1)
    assert replica and rest.startswith("ws-") and len(rest) == 35, ws
    assert again.structured_content["content"] == "kept"
    assert fresh.structured_content["workspace"] != ws and fresh.structured_content["entries"] == []
    assert unknown.is_error is True and "unknown or has expired" in unknown.content[0].text


def test_session_workspace_is_removed_when_the_session_is_deleted(server: Server) -> None:
    async def go():
        async with connect(server, "legacy") as c:  # the Python client sends DELETE on close
            r = await c.call_tool("write_file", {"path": "x", "content": "y"})
            return r.structured_content["workspace"]

    ws = run(go())
    deadline = time.monotonic() + 5
    while ws in server.workspaces() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ws not in server.workspaces()


def test_idle_workspaces_expire_after_the_ttl() -> None:
    s = Server("--ttl", "1", "--timeout", "1", "--max-timeout", "1")
    try:

        async def go():
            async with connect(s, "2026-07-28") as c:
                r = await c.call_tool("write_file", {"path": "x", "content": "y"})
                ws = r.structured_content["workspace"]
            async with connect(s, "legacy", terminate=False) as c:  # a session left open
                r = await c.call_tool("write_file", {"path": "x", "content": "y"})
                return ws, r.structured_content["workspace"]

        stateless, session = run(go())
        assert {stateless, session} <= set(s.workspaces())
        # (The pool's ready workspaces are no one's, and stay.)
        deadline = time.monotonic() + 15
        while {stateless, session} & set(s.workspaces()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not {stateless, session} & set(s.workspaces()), "idle workspaces were not removed"
    finally:
        s.stop()


class TestIsolation:
    """Session A and session B must not see each other's files, by tools or by code."""

    def _two_sessions(self, server: Server, mode: str, b_calls) -> tuple:
        async def go():
            async with connect(server, mode) as a:
                wa = await a.call_tool(
                    "write_file", {"path": "secret.txt", "content": "A's secret"}
                )
                ws_a = wa.structured_content["workspace"]
                pwd = await a.call_tool(
                    "execute_shell",
                    {"command": "pwd", "workspace": ws_a}
                    if mode != "legacy"
                    else {"command": "pwd"},
                )
                a_dir = pwd.structured_content["stdout"].strip()
                own = await a.call_tool(
                    "execute_python",
                    {
                        "code": "print(open('secret.txt').read())",
                        **({"workspace": ws_a} if mode != "legacy" else {}),
                    },
                )
                async with connect(server, mode) as b:
                    results = [await b.call_tool(n, args) for n, args in b_calls(a_dir, ws_a)]
                ws_arg = {"workspace": ws_a} if mode != "legacy" else {}
                after = await a.call_tool("read_file", {"path": "secret.txt", **ws_arg})
                assert after.structured_content["content"] == "A's secret"  # B changed nothing
                return own, results

        return run(go())

    @pytest.mark.parametrize("mode", MODES)
    def test_b_cannot_read_or_write_a_through_code(self, server: Server, mode: str) -> None:
        def b_calls(a_dir: str, _ws: str) -> list:
            return [
                (
                    "execute_python",
                    {"code": f"open({a_dir + '/secret.txt'!r}, 'w').write('overwritten by B')"},
                ),
                ("execute_python", {"code": f"print(open({a_dir + '/secret.txt'!r}).read())"}),
                ("execute_shell", {"command": f"ls {a_dir}/.. ; cat {a_dir}/secret.txt"}),
                (
                    "execute_python",
                    {
                        "code": f"import os\nos.symlink({a_dir!r}, 'peek')\n"
                        "print(open('peek/secret.txt').read())"
                    },
                ),
                (
                    "execute_python",
                    {"code": "open('mine.txt','w').write('b');print(open('mine.txt').read())"},
                ),
            ]

        own, (write, py, sh, link, control) = self._two_sessions(server, mode, b_calls)
        assert own.structured_content["stdout"] == "A's secret\n"  # control: A reads its own file
        # A's workspace lies under the host's /tmp, which B's private /tmp hides (not found);
        # without a private /tmp, Landlock refuses it (permission denied).
        refused = ("PermissionError", "FileNotFoundError")
        assert write.is_error and any(e in write.structured_content["stderr"] for e in refused)
        assert py.is_error and any(e in py.structured_content["stderr"] for e in refused)
        assert sh.is_error and "A's secret" not in sh.structured_content["stdout"]
        assert any(
            e in sh.structured_content["stderr"] for e in ("Permission denied", "No such file")
        )
        assert link.is_error and "A's secret" not in link.structured_content["stdout"]
        assert control.structured_content["stdout"] == "b\n"  # control: B reads its own file

    @pytest.mark.parametrize("mode", MODES)
    def test_b_cannot_read_a_through_file_tools(self, server: Server, mode: str) -> None:
        def b_calls(a_dir: str, ws_a: str) -> list:
            name = a_dir.rsplit("/", 1)[1]
            return [
                ("read_file", {"path": "secret.txt"}),
                ("read_file", {"path": f"../{name}/secret.txt"}),
                ("read_file", {"path": f"{a_dir}/secret.txt"}),
            ]

        own, results = self._two_sessions(server, mode, b_calls)
        assert own.structured_content["stdout"] == "A's secret\n"
        for r in results:
            assert r.is_error and "A's secret" not in r.content[0].text

    def test_in_session_mode_the_workspace_argument_cannot_reach_another_session(
        self, server: Server
    ) -> None:
        def b_calls(_a_dir: str, ws_a: str) -> list:
            return [("read_file", {"path": "secret.txt", "workspace": ws_a})]

        _, (r,) = self._two_sessions(server, "legacy", b_calls)
        assert r.is_error and "only for stateless requests" in r.content[0].text


def test_code_cannot_reach_the_server_port_or_see_the_token(server: Server) -> None:
    code = (
        "import os, socket\n"
        f"print('token' if any({server.token!r} in v for v in os.environ.values()) "
        "else 'no-token')\n"
        f"try:\n    socket.socket().connect(('127.0.0.1', {server.port}))\n    print('connected')\n"
        "except OSError as e:\n    print('refused', e.errno)\n"
    )
    r, *_ = call(server, "legacy", ("execute_python", {"code": code}))
    out = r.structured_content["stdout"]
    assert "no-token" in out and "refused" in out, out
    # Control: the port is reachable from outside the sandbox.
    assert httpx2.get(server.base + "/healthz", timeout=5).status_code == 200


def test_stdio_transport_serves_one_session() -> None:
    if not BIN.exists():
        pytest.skip(f"skipped: {BIN} not built")
    root = tempfile.mkdtemp(prefix="sandlock-mcp-stdio-")
    os.chmod(root, 0o777)  # under podsim the server is uid 1000
    argv = wrap(
        [
            str(BIN),
            "mcp",
            "--transport",
            "stdio",
            "--workspace-root",
            root + "/ws",
            "--python",
            default_python(),
        ]
    )
    params = StdioServerParameters(command=argv[0], args=argv[1:])

    async def go():
        async with Client(params) as c:
            await c.call_tool("write_file", {"path": "a.txt", "content": "stdio"})
            r = await c.call_tool("execute_python", {"code": "print(open('a.txt').read())"})
            return r, c.session.protocol_version

    r, version = run(go())
    assert r.structured_content["stdout"] == "stdio\n" and version in ("2025-11-25", "2026-07-28")
    deadline = time.monotonic() + 5
    while os.listdir(root + "/ws") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(root + "/ws") == []  # the session's workspace went with the process
    shutil.rmtree(root, ignore_errors=True)


def test_per_call_limits_end_runs_with_the_reason_in_words() -> None:
    s = Server("--max-memory", "256M", "--max-processes", "16", "--max-disk", "64M")
    try:
        bombs = {
            "memory": "x = bytearray(2 << 30)\nprint(len(x))",
            "processes": "import os, time\nfor i in range(200):\n"
            "    if os.fork() == 0:\n        time.sleep(5)\n        os._exit(0)\n"
            "time.sleep(2)\nprint('forked')",
            "disk": "f = open('big', 'wb')\nfor i in range(400):\n    f.write(b'x' * (1 << 20))\n"
            "f.close()\nprint('wrote')",
        }
        controls = {
            "memory": "x = bytearray(64 << 20)\nprint(len(x))",
            "processes": "import os\npids = [os.fork() or os._exit(0) for _ in range(4)]\n"
            "[os.waitpid(p, 0) for p in pids]\nprint('forked')",
            "disk": "open('small', 'wb').write(b'x' * (8 << 20))\nprint('wrote')",
        }
        calls = [("execute_python", {"code": c}) for c in bombs.values()]
        calls += [("execute_shell", {"command": "rm -f big"})]
        calls += [("execute_python", {"code": c}) for c in controls.values()]
        calls += [
            ("execute_shell", {"command": "rm -f small; head -c 62M /dev/zero > fill"}),
            ("write_file", {"path": "over.txt", "content": "x" * (3 << 20)}),
            ("write_file", {"path": "fits.txt", "content": "x" * (1 << 20)}),
        ]
        rs = call(s, "legacy", *calls)
        for r, reason in zip(rs[:3], bombs, strict=True):
            assert r.is_error and r.structured_content["reason"] == reason, r.content[0].text
            assert "partial output follows" in r.content[0].text
        for r in rs[4:7]:  # controls under the limits
            assert not r.is_error and r.structured_content["reason"] == "exited", r.content[0].text
        assert rs[8].is_error and "disk cap" in rs[8].content[0].text
        assert not rs[9].is_error
        # The server is unharmed.
        assert httpx2.get(s.base + "/healthz", timeout=5).status_code == 200
    finally:
        s.stop()


def test_stateless_flag_serves_every_request_without_a_session() -> None:
    s = Server("--stateless")
    try:

        async def go():
            async with connect(s, "legacy", terminate=False) as c:
                first = await c.call_tool("write_file", {"path": "k.txt", "content": "v"})
                ws = first.structured_content["workspace"]
                same = await c.call_tool("read_file", {"path": "k.txt", "workspace": ws})
                other = await c.call_tool("read_file", {"path": "k.txt"})
                return same, other

        same, other = run(go())
        assert same.structured_content["content"] == "v"
        assert other.is_error  # no handle: a new, empty workspace
        r = httpx2.post(
            s.url,
            headers={
                **s.headers(),
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
            },
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            },
            timeout=10,
        )
        assert r.status_code == 200 and "mcp-session-id" not in r.headers
        assert r.headers["content-type"].startswith("application/json")
        assert httpx2.delete(s.url, headers=s.headers(), timeout=10).status_code == 405
    finally:
        s.stop()
