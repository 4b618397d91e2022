"""The agent tools of issue 13 with the official Python `mcp` client: background commands
(execute_shell with background, command_output, kill_command), edit_file, glob_files, grep_files,
move_file, execute_code in python, javascript and typescript, workspace files as resources, and
images saved in outputs/ coming back as image content. Like every test here they also run with
the server under podsim (SANDLOCK_MCP_PODSIM=1) and with SANDLOCK_MAX_LANDLOCK_ABI=2."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from mcp import Client

from conftest import TSX, Server, call, connect, run

MODES = ["legacy", "2026-07-28"]

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def marker() -> int:
    """A number no other process on the machine has on its command line."""
    return random.randint(10_000_000, 99_999_999)


def procs_with(text: str) -> list[int]:
    """Pids whose command line contains `text` (the server's sandboxes run on this host)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and "procs_with" not in cmdline:
            pids.append(int(d.name))
    return pids


def wait_for(pred, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def ws_args(mode: str, ws: str | None) -> dict:
    return {"workspace": ws} if mode != "legacy" and ws else {}


async def poll_until_ended(c: Client, cid: str, extra: dict, limit: float = 20) -> list:
    """command_output until the command has ended; returns every result."""
    results = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        r = await c.call_tool("command_output", {"command_id": cid, "wait_s": 5, **extra})
        assert r.is_error is False, r.content[0].text
        results.append(r)
        if not r.structured_content["running"]:
            return results
    raise AssertionError(f"{cid} did not end within {limit} s")


# --- background commands -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_background_command_returns_new_output_per_poll_and_its_exit(
    server: Server, mode: str
) -> None:
    script = "echo one; sleep 1; echo two; echo warn >&2; sleep 1; echo three; exit 7"

    async def go():
        async with connect(server, mode) as c:
            t0 = time.monotonic()
            started = await c.call_tool("execute_shell", {"command": script, "background": True})
            took = time.monotonic() - t0
            s = started.structured_content
            extra = ws_args(mode, s["workspace"])
            first = await c.call_tool(
                "command_output", {"command_id": s["command_id"], "wait_s": 5, **extra}
            )
            rest = await poll_until_ended(c, s["command_id"], extra)
            # The log files hold everything, for read_file.
            log = await c.call_tool("read_file", {"path": s["stdout_file"], **extra})
            return took, started, first, rest, log

    took, started, first, rest, log = run(go())
    s = started.structured_content
    assert took < 1.5, "a background start returns at once"
    assert started.is_error is False and s["reason"] == "running"
    assert s["command_id"] == "cmd-1" and "command_output" in started.content[0].text
    f = first.structured_content
    assert f["running"] is True and f["stdout"] == "one\n" and f["exit_code"] is None
    last = rest[-1].structured_content
    assert (last["running"], last["exit_code"], last["reason"]) == (False, 7, "exited")
    assert "exit code 7" in rest[-1].content[0].text
    # Each poll returns only what is new: together they are the output, once.
    polls = [first, *rest]
    assert "".join(p.structured_content["stdout"] for p in polls) == "one\ntwo\nthree\n"
    assert "".join(p.structured_content["stderr"] for p in polls) == "warn\n"
    assert last["stdout_total"] == len("one\ntwo\nthree\n") and last["stderr_total"] == 5
    assert log.structured_content["content"] == "one\ntwo\nthree\n"


def test_a_poll_after_the_end_has_nothing_new(server: Server) -> None:
    async def go():
        async with connect(server) as c:
            s = await c.call_tool("execute_shell", {"command": "echo hi", "background": True})
            cid = s.structured_content["command_id"]
            rest = await poll_until_ended(c, cid, {})
            again = await c.call_tool("command_output", {"command_id": cid})
            return rest, again

    rest, again = run(go())
    assert "".join(r.structured_content["stdout"] for r in rest) == "hi\n"
    a = again.structured_content
    assert a["stdout"] == "" and a["running"] is False and a["exit_code"] == 0
    assert "(no new output)" in again.content[0].text


def test_kill_command_kills_the_whole_tree_including_a_double_forked_child(
    server: Server,
) -> None:
    m = marker()
    # A double-forked child (its parent subshell exits at once), a setsid child, and the main one.
    script = f"(sleep {m}1 &); setsid sleep {m}2 & sleep {m}3"

    async def go():
        async with connect(server) as c:
            s = await c.call_tool("execute_shell", {"command": script, "background": True})
            cid = s.structured_content["command_id"]
            alive = await asyncio.to_thread(
                wait_for, lambda: all(procs_with(f"sleep {m}{i}") for i in (1, 2, 3))
            )
            killed = await c.call_tool("kill_command", {"command_id": cid})
            gone = await asyncio.to_thread(
                wait_for, lambda: not any(procs_with(f"sleep {m}{i}") for i in (1, 2, 3)), 5
            )
            again = await c.call_tool("kill_command", {"command_id": cid})
            return alive, killed, gone, again

    alive, killed, gone, again = run(go())
    assert alive, "control: the three processes were running before the kill"
    k = killed.structured_content
    assert killed.is_error is False and k["running"] is False and k["reason"] == "signaled"
    assert "killed by kill_command" in killed.content[0].text
    assert gone, f"processes survived kill_command: {procs_with(str(m))}"
    assert "had ended" in again.content[0].text and again.is_error is False


def test_limits_end_a_background_command(server: Server) -> None:
    async def go():
        async with connect(server) as c:
            out = {}
            for name, args in {
                "timeout": {"command": "sleep 60", "timeout_s": 1},
                "memory": {
                    "command": "python3 -c 'b = bytearray(1 << 30); import time; time.sleep(30)'"
                },
            }.items():
                s = await c.call_tool("execute_shell", {**args, "background": True})
                rest = await poll_until_ended(c, s.structured_content["command_id"], {})
                out[name] = rest[-1]
            return out

    out = run(go())
    t = out["timeout"].structured_content
    assert t["reason"] == "timeout" and t["running"] is False and t["duration_ms"] < 10_000
    assert "timed out after 1 s" in out["timeout"].content[0].text
    assert out["memory"].structured_content["reason"] == "memory", out["memory"].content[0].text


def test_the_output_cap_ends_a_background_command_and_its_output_stays_bounded() -> None:
    s = Server("--max-output", "64K")
    try:

        async def go():
            async with connect(s) as c:
                st = await c.call_tool(
                    "execute_shell", {"command": "yes 0123456789", "background": True}
                )
                return await poll_until_ended(c, st.structured_content["command_id"], {})

        rest = run(go())
        last = rest[-1].structured_content
        assert last["reason"] == "output" and last["truncated"] is True
        assert last["stdout_total"] <= 64 * 1024
        shown = sum(r.structured_content["stdout_bytes"] for r in rest)
        assert shown == last["stdout_total"], "every byte kept is returned once"
    finally:
        s.stop()


def test_a_session_end_kills_its_background_commands(server: Server) -> None:
    m = marker()

    async def go():
        async with connect(server) as c:  # the Python client sends DELETE when it closes
            s = await c.call_tool("execute_shell", {"command": f"sleep {m}", "background": True})
            up = await asyncio.to_thread(wait_for, lambda: bool(procs_with(f"sleep {m}")))
            return s.structured_content["workspace"], up

    ws, up = run(go())
    assert up, "control: the command ran while the session lived"
    assert wait_for(lambda: not procs_with(f"sleep {m}"), 10), "the command outlived its session"
    assert wait_for(lambda: ws not in server.workspaces(), 10), "the workspace was not removed"


def test_background_commands_are_bounded_per_workspace_and_private_to_it() -> None:
    s = Server("--max-background", "2")
    try:

        async def go():
            async with connect(s) as a, connect(s) as b:
                one = await a.call_tool(
                    "execute_shell", {"command": "sleep 30", "background": True}
                )
                two = await a.call_tool(
                    "execute_shell", {"command": "sleep 30", "background": True}
                )
                both = [
                    await a.call_tool("command_output", {"command_id": x})
                    for x in ("cmd-1", "cmd-2")
                ]
                third = await a.call_tool(
                    "execute_shell", {"command": "sleep 30", "background": True}
                )
                other = await b.call_tool("command_output", {"command_id": "cmd-1"})
                unknown = await a.call_tool("command_output", {"command_id": "cmd-9"})
                await a.call_tool("kill_command", {"command_id": "cmd-1"})
                again = await a.call_tool(
                    "execute_shell", {"command": "echo room", "background": True}
                )
                return one, two, both, third, other, unknown, again

        one, two, both, third, other, unknown, again = run(go())
        assert one.is_error is False and two.is_error is False
        assert all(r.structured_content["running"] for r in both), "two run at once"
        assert third.is_error is True and third.structured_content["reason"] == "busy"
        assert "already runs 2 background commands (max_background)" in third.content[0].text
        assert other.is_error is True and "no command" in other.content[0].text
        assert unknown.is_error is True and "cmd-1, cmd-2" in unknown.content[0].text
        assert again.is_error is False and again.structured_content["command_id"] == "cmd-3"
    finally:
        s.stop()


# --- edit, glob, grep, move --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_edit_file_replaces_once_or_everywhere_and_refuses_in_words(
    server: Server, mode: str
) -> None:
    text = "def f():\n    return 1\n\nx = 1\ny = 1\n"
    w, once, many, all_, missing, after = call(
        server,
        mode,
        ("write_file", {"path": "src/m.py", "content": text}),
        ("edit_file", {"path": "src/m.py", "search": "return 1", "replace": "return 2"}),
        ("edit_file", {"path": "src/m.py", "search": " = 1", "replace": " = 3"}),
        ("edit_file", {"path": "src/m.py", "search": " = 1", "replace": " = 3", "all": True}),
        ("edit_file", {"path": "src/m.py", "search": "return 9", "replace": "x"}),
        ("read_file", {"path": "src/m.py"}),
    )[:6]
    assert w.is_error is False
    o = once.structured_content
    assert once.is_error is False and o["replacements"] == 1
    assert "-    return 1\n+    return 2\n" in o["diff"] and o["diff"].startswith("--- a/src/m.py")
    assert many.is_error is True and "found 2 times" in many.content[0].text
    assert all_.is_error is False and all_.structured_content["replacements"] == 2
    assert missing.is_error is True and "not found" in missing.content[0].text
    assert after.structured_content["content"] == "def f():\n    return 2\n\nx = 3\ny = 3\n"


@pytest.mark.parametrize("mode", MODES)
def test_glob_and_grep_find_files_and_lines_and_stay_in_the_workspace(
    server: Server, mode: str
) -> None:
    plant = (
        "import os\nos.makedirs('src/deep')\n"
        "open('src/a.py','w').write('import os\\nTODO = 1\\n')\n"
        "open('src/deep/b.ts','w').write('// TODO later\\n')\n"
        "open('notes.txt','w').write('nothing\\n')\n"
        "open('blob.bin','wb').write(b'TODO\\0\\1')\n"
        "os.symlink('/etc', 'etc-link')\nos.symlink('/etc/passwd', 'passwd.py')\n"
    )
    rs = call(
        server,
        mode,
        ("execute_python", {"code": plant}),
        ("glob_files", {"pattern": "*.py"}),
        ("glob_files", {"pattern": "src/**/*.{py,ts}"}),
        ("glob_files", {"pattern": "*", "path": "etc-link"}),
        ("glob_files", {"pattern": "../*"}),
        ("grep_files", {"pattern": "TODO"}),
        ("grep_files", {"pattern": "todo", "glob": "*.ts", "ignore_case": True}),
        ("grep_files", {"pattern": "root"}),
        ("grep_files", {"pattern": "root", "path": "passwd.py"}),
        ("grep_files", {"pattern": "(", "path": "src"}),
    )[:10]
    assert rs[0].is_error is False, rs[0].content[0].text
    g_py = [m["path"] for m in rs[1].structured_content["matches"]]
    assert g_py == ["passwd.py", "src/a.py"], "names at any depth; the link is listed, not read"
    assert [m["path"] for m in rs[2].structured_content["matches"]] == [
        "src/a.py",
        "src/deep/b.ts",
    ]
    assert rs[3].is_error is True and "outside the workspace" in rs[3].content[0].text
    assert rs[4].is_error is True and '".."' in rs[4].content[0].text
    hits = [(m["path"], m["line"], m["text"]) for m in rs[5].structured_content["matches"]]
    assert hits == [("src/a.py", 2, "TODO = 1"), ("src/deep/b.ts", 1, "// TODO later")]
    assert rs[5].structured_content["binary_skipped"] == 1
    assert "src/a.py:2: TODO = 1" in rs[5].content[0].text
    assert [m["path"] for m in rs[6].structured_content["matches"]] == ["src/deep/b.ts"]
    # /etc/passwd holds "root"; neither the walk nor a direct path reaches it.
    assert rs[7].is_error is False and rs[7].structured_content["matches"] == []
    assert rs[8].is_error is True and "outside the workspace" in rs[8].content[0].text
    assert rs[9].is_error is True and "regular expression" in rs[9].content[0].text


@pytest.mark.parametrize("mode", MODES)
def test_move_file_creates_parents_and_overwrites_only_when_asked(
    server: Server, mode: str
) -> None:
    rs = call(
        server,
        mode,
        ("write_file", {"path": "a.txt", "content": "A"}),
        ("write_file", {"path": "b.txt", "content": "B"}),
        ("move_file", {"source": "a.txt", "destination": "x/y/a.txt"}),
        ("move_file", {"source": "x/y/a.txt", "destination": "b.txt"}),
        ("read_file", {"path": "b.txt"}),
        ("move_file", {"source": "x/y/a.txt", "destination": "b.txt", "overwrite": True}),
        ("read_file", {"path": "b.txt"}),
        ("execute_shell", {"command": "ln -s /tmp out; ls x/y"}),
        ("move_file", {"source": "b.txt", "destination": "../b.txt"}),
        ("move_file", {"source": "b.txt", "destination": "/tmp/b.txt"}),
        ("move_file", {"source": "b.txt", "destination": "out/b.txt"}),
        ("move_file", {"source": "out", "destination": "link"}),
        ("read_file", {"path": "b.txt"}),
    )[:13]
    assert rs[2].is_error is False and rs[2].structured_content["replaced"] is False
    assert rs[3].is_error is True and "overwrite=true" in rs[3].content[0].text
    assert rs[4].structured_content["content"] == "B", "nothing was replaced"
    assert rs[5].is_error is False and rs[5].structured_content["replaced"] is True
    assert "replacing what was there" in rs[5].content[0].text
    assert rs[6].structured_content["content"] == "A"
    assert '".."' in rs[8].content[0].text and rs[8].is_error
    assert "absolute path" in rs[9].content[0].text and rs[9].is_error
    assert "outside the workspace" in rs[10].content[0].text and rs[10].is_error
    assert rs[11].is_error is False, "a symlink moves as a link"
    assert rs[12].structured_content["content"] == "A", "the file stayed"


# --- execute_code ------------------------------------------------------------------------------


def node_version() -> tuple[int, int, str]:
    """(major, minor, as printed) of the host's node; skips when there is none."""
    if shutil.which("node") is None:
        pytest.skip("skipped: node is not installed (apt-get install nodejs)")
    printed = subprocess.run(
        ["node", "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    major, minor = (int(x) for x in printed.lstrip("v").split(".")[:2])
    return major, minor, printed


def need_typescript() -> None:
    major, minor, printed = node_version()
    if not TSX.exists() and (major, minor) < (22, 6):
        pytest.skip(
            f"skipped: no TypeScript runner: tsx is not in tests/mcp/node_modules (run npm ci "
            f"there) and node {printed} cannot strip types (22.6+ can)"
        )


@pytest.mark.parametrize("mode", MODES)
def test_execute_code_runs_python_and_javascript(server: Server, mode: str) -> None:
    node_version()
    cjs = "const fs = require('fs');\nconsole.log('js', fs.readFileSync('in.txt', 'utf8'));"
    esm = (
        "import { readFileSync } from 'node:fs';\n"
        "console.log(await Promise.resolve(readFileSync('in.txt', 'utf8')));"
    )
    stdin = "console.log(require('fs').readFileSync(0, 'utf8'))"
    rs = call(
        server,
        mode,
        ("write_file", {"path": "in.txt", "content": "data"}),
        ("execute_code", {"language": "python", "code": "print(open('in.txt').read())"}),
        ("execute_code", {"language": "javascript", "code": cjs}),
        ("execute_code", {"language": "javascript", "code": esm}),
        ("execute_code", {"language": "javascript", "code": "x.y;\n"}),
        ("execute_code", {"language": "javascript", "code": stdin, "stdin": "piped"}),
        ("list_files", {}),
    )[:7]
    outs = [r.structured_content["stdout"] for r in rs[1:4]]
    assert outs == ["data\n", "js data\n", "data\n"], [r.content[0].text for r in rs[1:4]]
    assert all(r.is_error is False for r in rs[1:4])
    bad = rs[4].structured_content
    assert rs[4].is_error is True and bad["exit_code"] == 1 and "ReferenceError" in bad["stderr"]
    assert ".js:1" in bad["stderr"], "the trace names the snippet's line"
    assert rs[5].structured_content["stdout"] == "piped\n"
    # The snippets' files are gone once they ran.
    names = [e["path"] for e in rs[6].structured_content["entries"]]
    assert not [n for n in names if n.startswith(".sandlock-code")], names


@pytest.mark.parametrize("mode", MODES)
def test_execute_code_runs_typescript(server: Server, mode: str) -> None:
    need_typescript()
    ts = (
        "enum Color { Red, Green }\n"
        "interface P { n: number }\n"
        "const p: P = { n: await Promise.resolve(41) + 1 };\n"
        "const fs = require('fs');\n"
        "console.log('ts', p.n, Color[1], fs.existsSync('in.txt'));\n"
    )
    boom = "let n: number = 1;\nthrow new Error('boom ' + n);\n"
    ok, bad = call(
        server,
        mode,
        ("write_file", {"path": "in.txt", "content": "data"}),
        ("execute_code", {"language": "typescript", "code": ts}),
        ("execute_code", {"language": "typescript", "code": boom}),
    )[1:3]
    assert ok.is_error is False and ok.structured_content["stdout"] == "ts 42 Green true\n", (
        ok.content[0].text
    )
    assert bad.is_error is True and "boom 1" in bad.structured_content["stderr"]
    assert ".mts:2" in bad.structured_content["stderr"], "the trace names the snippet's line"


def test_javascript_runs_confined(server: Server) -> None:
    node_version()
    escape = f"/tmp/sandlock-escape-{uuid.uuid4().hex}"
    probe = (
        "const fs = require('fs');\n"
        "for (const [what, f] of [\n"
        "  ['read /etc/shadow', () => fs.readFileSync('/etc/shadow')],\n"
        "  ['read /etc/hostname', () => fs.readFileSync('/etc/hostname')],\n"
        f"  ['write /tmp', () => fs.writeFileSync('{escape}', 'x')],\n"
        "  ['write here', () => fs.writeFileSync('mine.txt', 'x')],\n"
        "  ['read /usr', () => fs.readFileSync('/usr/bin/env').length > 0],\n"
        "]) {\n"
        "  try { f(); console.log(what, 'ok'); } catch (e) { console.log(what, e.code); }\n"
        "}\n"
    )
    r, *_ = call(server, "legacy", ("execute_code", {"language": "javascript", "code": probe}))
    lines = r.structured_content["stdout"].splitlines()
    assert lines == [
        "read /etc/shadow EACCES",
        "read /etc/hostname EACCES",
        "write /tmp ok",  # the run's private /tmp ...
        "write here ok",  # control
        "read /usr ok",  # control
    ], r.content[0].text
    assert not os.path.exists(escape)  # ... not the host's


def test_typescript_without_a_runner_says_what_to_install() -> None:
    major, minor, printed = node_version()
    if (major, minor) >= (22, 6):
        pytest.skip(f"skipped: node {printed} strips types itself, so there is always a runner")
    s = Server(tsx=False, env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
    try:
        ts, js = call(
            s,
            "legacy",
            ("execute_code", {"language": "typescript", "code": "const x: number = 1"}),
            ("execute_code", {"language": "javascript", "code": "console.log(1)"}),
        )[:2]
        assert ts.is_error is True and ts.structured_content["reason"] == "invalid"
        assert "npm install -g tsx" in ts.content[0].text
        assert js.is_error is False and js.structured_content["stdout"] == "1\n"  # control
    finally:
        s.stop()


# --- resources ---------------------------------------------------------------------------------


def test_workspace_files_are_resources_as_text_and_blob(server: Server) -> None:
    async def go():
        async with connect(server) as c:
            made = await c.call_tool(
                "execute_python",
                {
                    "code": "import os\nos.makedirs('out')\n"
                    "open('out/report.csv','w').write('a,b\\n1,2\\n')\n"
                    "open('out/data.bin','wb').write(bytes(range(256)))\n"
                },
            )
            ws = made.structured_content["workspace"]
            listed = await c.list_resources()
            uris = {r.name: r for r in listed.resources}
            text = await c.read_resource(f"sandlock://{ws}/out/report.csv")
            blob = await c.read_resource(f"sandlock://{ws}/out/data.bin")
            templates = await c.list_resource_templates()
            return ws, uris, text, blob, templates

    ws, uris, text, blob, templates = run(go())
    assert set(uris) >= {"out/report.csv", "out/data.bin"}
    assert uris["out/report.csv"].uri == f"sandlock://{ws}/out/report.csv"
    assert uris["out/report.csv"].mime_type == "text/csv" and uris["out/data.bin"].size == 256
    t = text.contents[0]
    assert t.text == "a,b\n1,2\n" and t.mime_type == "text/csv"
    b = blob.contents[0]
    assert base64.b64decode(b.blob) == bytes(range(256))
    assert b.mime_type == "application/octet-stream"
    assert templates.resource_templates[0].uri_template == "sandlock://{workspace}/{+path}"


def test_resources_stay_within_the_callers_workspace(server: Server) -> None:
    async def go():
        async with connect(server) as a, connect(server) as b:
            made = await a.call_tool(
                "execute_python",
                {
                    "code": "import os\nopen('mine.txt','w').write('A')\n"
                    "os.symlink('/etc/passwd', 'pw')\n"
                    "open('big.bin','wb').write(os.urandom(600 * 1024))\n"
                },
            )
            ws = made.structured_content["workspace"]
            await b.call_tool("write_file", {"path": "b.txt", "content": "B"})
            out = {}
            for who, c, uri in [
                ("own", a, f"sandlock://{ws}/mine.txt"),
                ("other session", b, f"sandlock://{ws}/mine.txt"),
                ("dotdot", a, f"sandlock://{ws}/%2E%2E/%2E%2E/etc/passwd"),
                ("symlink", a, f"sandlock://{ws}/pw"),
                ("too large", a, f"sandlock://{ws}/big.bin"),
                ("missing", a, f"sandlock://{ws}/nothing"),
                ("scheme", a, "file:///etc/passwd"),
            ]:
                try:
                    r = await c.read_resource(uri)
                    out[who] = r.contents[0].text
                except Exception as e:  # the client raises the server's JSON-RPC error
                    out[who] = e
            b_list = await b.list_resources()
            return out, [r.name for r in b_list.resources]

    out, b_names = run(go())
    assert out["own"] == "A"  # control
    assert "not this session's" in str(out["other session"])
    assert '".."' in str(out["dotdot"])
    assert "outside the workspace" in str(out["symlink"])
    assert "at most 524288 bytes" in str(out["too large"])
    assert "does not exist" in str(out["missing"])
    assert "not a workspace file URI" in str(out["scheme"])
    assert b_names == ["b.txt"], "a session lists only its own files"


def test_stateless_clients_read_resources_by_the_handle_in_the_uri(server: Server) -> None:
    async def go():
        async with connect(server, "2026-07-28") as c:
            w = await c.call_tool("write_file", {"path": "r.txt", "content": "stateless"})
            ws = w.structured_content["workspace"]
            listed = await c.list_resources()
            read = await c.read_resource(f"sandlock://{ws}/r.txt")
            try:
                await c.read_resource("sandlock://ws-" + "0" * 32 + "/r.txt")
                unknown = None
            except Exception as e:
                unknown = e
            return listed.resources, read.contents[0].text, unknown

    listed, text, unknown = run(go())
    assert listed == [], "a stateless request has no workspace to list"
    assert text == "stateless"
    assert "unknown or has expired" in str(unknown)


# --- images ------------------------------------------------------------------------------------


def chart_code(server: Server) -> str:
    """matplotlib when the server's interpreter has it, else PNG bytes written by hand."""
    r, *_ = call(
        server,
        "legacy",
        (
            "execute_python",
            {"code": "import importlib.util as u; print(bool(u.find_spec('matplotlib')))"},
        ),
    )
    if r.structured_content["stdout"].strip() == "True":
        return (
            "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
            "plt.figure(figsize=(3, 2))\nplt.plot([1, 2, 3], [1, 4, 9])\n"
            "plt.savefig('outputs/chart.png')\n"
        )
    print("NOTE: matplotlib is not installed for the server's interpreter; writing PNG bytes")
    return f"open('outputs/chart.png', 'wb').write({PNG_1PX!r})\n"


@pytest.mark.parametrize("mode", MODES)
def test_images_saved_in_outputs_come_back_as_image_content(server: Server, mode: str) -> None:
    code = (
        "import os\nos.makedirs('outputs', exist_ok=True)\n"
        + chart_code(server)
        + "open('outputs/diagram.svg', 'w').write('<svg xmlns=\"http://www.w3.org/2000/svg\" "
        'width="4" height="4"><rect width="4" height="4"/></svg>\')\n'
        + "open('outputs/not-an-image.png', 'w').write('just text')\n"
        + f"open('elsewhere.png', 'wb').write({PNG_1PX!r})\n"
        + "print('drawn')\n"
    )
    first, second, png = call(
        server,
        mode,
        ("execute_python", {"code": code}),
        ("execute_shell", {"command": "echo again"}),
        ("read_file", {"path": "outputs/diagram.svg"}),
    )[:3]
    assert first.is_error is False, first.content[0].text
    images = [b for b in first.content if b.type == "image"]
    assert [i.mime_type for i in images] == ["image/png", "image/svg+xml"]
    assert base64.b64decode(images[0].data).startswith(b"\x89PNG\r\n\x1a\n")
    assert base64.b64decode(images[1].data).startswith(b"<svg")
    refs = first.structured_content["images"]
    assert [(r["path"], r["shown"]) for r in refs] == [
        ("outputs/chart.png", True),
        ("outputs/diagram.svg", True),
    ], "by content: not the .png that is text, not the PNG outside outputs/"
    assert "[image outputs/chart.png" in first.content[0].text
    # A later call that changes nothing in outputs/ returns no image.
    assert [b for b in second.content if b.type == "image"] == []
    assert second.structured_content["images"] == []
    assert png.is_error is False


def test_an_image_over_the_cap_is_named_with_its_uri_not_sent(server: Server) -> None:
    code = (
        "import os\nos.makedirs('outputs', exist_ok=True)\n"
        f"open('outputs/huge.png', 'wb').write({PNG_1PX!r} + os.urandom(400 * 1024))\n"
        f"open('outputs/small.png', 'wb').write({PNG_1PX!r})\n"
    )
    r, *_ = call(server, "legacy", ("execute_python", {"code": code}))
    images = [b for b in r.content if b.type == "image"]
    assert len(images) == 1
    refs = {x["path"]: x for x in r.structured_content["images"]}
    assert refs["outputs/huge.png"]["shown"] is False and "cap" in refs["outputs/huge.png"]["why"]
    ws = r.structured_content["workspace"]
    assert f"sandlock://{ws}/outputs/huge.png" in r.content[0].text
    assert len(r.model_dump_json()) < 512 * 1024, "the result stays far below a client's 1 MiB"


def test_background_start_refused_while_shutting_down() -> None:
    s = Server("--grace", "5")
    try:

        async def go():
            async with connect(s) as c:
                busy = asyncio.create_task(
                    c.call_tool("execute_shell", {"command": "sleep 3; echo done"})
                )
                await asyncio.sleep(0.5)
                s.signal()
                await asyncio.sleep(0.3)
                bg = await c.call_tool("execute_shell", {"command": "true", "background": True})
                return await busy, bg

        done, bg = run(go())
        assert done.structured_content["stdout"] == "done\n"  # control: the run in progress ends
        assert bg.is_error is True and bg.structured_content["reason"] == "shutting_down"
    finally:
        s.stop()
