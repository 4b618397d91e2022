"""`execute_python(code, persistent: true)`: a workspace's persistent interpreter, whose variables,
imports and definitions live from cell to cell, with `reset_python` to start over. It is confined
like any run; the limits still end a runaway cell, and the next cell then says the state was
lost."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from pathlib import Path

import pytest

from conftest import Server, connect, run
from test_fork_mode import gone, processes_with


@pytest.fixture(scope="module")
def server():
    s = Server("--max-memory", "256M", "--max-processes", "16", "--max-output", "64K")
    yield s
    s.stop()


def cells(server: Server, *codes, mode: str = "legacy") -> list:
    """Runs persistent cells in one session (or stateless conversation); a cell is its code, or
    (code, extra arguments), or ("reset", {}) for reset_python."""

    async def go():
        out, ws = [], None
        async with connect(server, mode) as c:
            for cell in codes:
                code, extra = cell if isinstance(cell, tuple) else (cell, {})
                args = dict(extra)
                if ws and mode == "2026-07-28":
                    args["workspace"] = ws
                if code == "reset":
                    r = await c.call_tool("reset_python", args)
                else:
                    r = await c.call_tool(
                        "execute_python", {"code": code, "persistent": True, **args}
                    )
                ws = r.structured_content["workspace"]
                out.append(r)
        return out

    return run(go())


def stdout(r) -> str:
    return r.structured_content["stdout"]


def state(r) -> dict:
    return r.structured_content["persistent"]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_variables_imports_functions_and_classes_persist_between_cells(server, mode) -> None:
    rs = cells(
        server,
        "import json\nx = 41\ndef inc(v):\n    return v + 1\n"
        "class Box:\n    def __init__(self, v):\n        self.v = v",
        "print(inc(x), json.dumps({'k': Box(x).v}), type(Box(1)).__name__)",
        mode=mode,
    )
    assert [r.is_error for r in rs] == [False, False], [r.content[0].text for r in rs]
    assert stdout(rs[1]) == '42 {"k": 41} Box\n'
    assert [state(r)["cell"] for r in rs] == [1, 2]
    assert all(state(r)["state_kept"] and state(r)["state_lost"] is None for r in rs)


def test_a_fresh_call_does_not_see_the_persistent_state(server) -> None:
    async def go():
        async with connect(server, "legacy") as c:
            await c.call_tool("execute_python", {"code": "secret = 7", "persistent": True})
            return await c.call_tool("execute_python", {"code": "print('secret' in dir())"})

    r = run(go())
    assert stdout(r) == "False\n" and r.structured_content["persistent"] is None


def test_a_trailing_expression_is_shown_as_a_notebook_would(server) -> None:
    rs = cells(
        server,
        "x = 6\nx * 7",  # shown: repr of the value
        "'text'",  # repr, with its quotes
        "None",  # nothing for None
        "x * 7;",  # a trailing semicolon hides it
        "print('printed')\nx  # a comment after the expression",
        "_ + 1",  # the last value shown is `_`, as in the interactive interpreter
    )
    assert [stdout(r) for r in rs] == ["42\n", "'text'\n", "", "", "printed\n6\n", "7\n"]


def test_errors_keep_the_state_and_show_the_cells_lines(server) -> None:
    rs = cells(
        server,
        "def boom():\n    raise ValueError('inside')\nkept = 1",
        "print('before')\nboom()",
        "def f(:\n  pass",
        "import sys\nsys.exit(3)",
        "print(kept)",
    )
    err = rs[1].structured_content
    assert (err["exit_code"], err["reason"], err["stdout"]) == (1, "exited", "before\n")
    assert 'File "<cell 2>", line 2, in <module>' in err["stderr"]
    assert 'File "<cell 1>", line 2, in boom' in err["stderr"]
    assert "ValueError: inside" in err["stderr"]
    assert "<string>" not in err["stderr"]  # no frame of the interpreter's own loop
    assert "SyntaxError" in rs[2].structured_content["stderr"]
    assert rs[3].structured_content["exit_code"] == 3 and state(rs[3])["state_kept"]
    assert stdout(rs[4]) == "1\n" and not rs[4].is_error


def test_stdin_is_per_cell(server) -> None:
    rs = cells(
        server,
        ("import sys\nfirst = sys.stdin.readline()", {"stdin": "one\ntwo\n"}),
        ("import sys\nprint(repr(first), repr(sys.stdin.read()))", {"stdin": "three\n"}),
        "import sys\nprint(repr(sys.stdin.read()))",
    )
    # The second cell sees its own input, not what the first left unread.
    assert stdout(rs[1]) == "'one\\n' 'three\\n'\n"
    assert stdout(rs[2]) == "''\n"


def test_reset_python_clears_the_state(server) -> None:
    rs = cells(server, "x = 1", "reset", "reset", "print('x' in dir())")
    assert rs[1].structured_content == {
        "stopped": True,
        "workspace": rs[0].structured_content["workspace"],
    }
    assert "stopped the persistent Python interpreter" in rs[1].content[0].text
    assert rs[2].structured_content["stopped"] is False  # nothing left to stop
    assert stdout(rs[3]) == "False\n"
    # Asked for: a new interpreter, and no state-lost message.
    assert state(rs[3]) == {"cell": 1, "state_kept": True, "state_lost": None}
    assert "state lost" not in rs[3].content[0].text


def test_a_timeout_interrupts_the_cell_and_the_state_stays(server) -> None:
    rs = cells(
        server,
        "x = 'kept'",
        ("import time\nprint('partial', flush=True)\ntime.sleep(60)", {"timeout_s": 1}),
        "print(x)",
    )
    r = rs[1]
    assert r.is_error and r.structured_content["reason"] == "timeout"
    assert r.structured_content["stdout"] == "partial\n"
    assert "KeyboardInterrupt" in r.structured_content["stderr"]
    assert (
        "interrupted with KeyboardInterrupt; the interpreter keeps its state" in r.content[0].text
    )
    assert state(r)["state_kept"] is True
    assert stdout(rs[2]) == "kept\n" and state(rs[2])["cell"] == 3


RUNAWAY = {
    # Catches KeyboardInterrupt: killed INTERRUPT_GRACE (2 s) after the timeout.
    "timeout": (
        "import time\nwhile True:\n    try:\n        time.sleep(5)\n"
        "    except KeyboardInterrupt:\n        print('ignored', flush=True)",
        {"timeout_s": 1},
    ),
    "memory": ("x = bytearray(1 << 30)", {}),
    "processes": (
        "import os, time\nfor i in range(100):\n    if os.fork() == 0:\n        time.sleep(30)\n"
        "        os._exit(0)\ntime.sleep(30)",
        {},
    ),
}


@pytest.mark.parametrize("limit", list(RUNAWAY))
def test_a_runaway_cell_ends_with_the_reason_and_the_next_cell_starts_fresh(server, limit) -> None:
    t0 = time.monotonic()
    rs = cells(server, "x = 'old state'", RUNAWAY[limit], "print('x' in dir())")
    took = time.monotonic() - t0
    r = rs[1]
    assert r.is_error and r.structured_content["reason"] == limit, r.content[0].text
    assert state(r)["state_kept"] is False
    assert (
        "it is gone, with its state; the next persistent cell starts a new one" in r.content[0].text
    )
    if limit == "timeout":
        assert "did not stop within 2 s of KeyboardInterrupt" in r.content[0].text
        assert r.structured_content["stdout"].startswith("ignored\n")
    assert took < 20
    fresh = rs[2]
    assert not fresh.is_error and stdout(fresh) == "False\n", fresh.content[0].text
    lost = state(fresh)["state_lost"]
    assert state(fresh)["cell"] == 1 and lost, state(fresh)
    assert fresh.content[0].text.startswith("[state lost: the previous persistent interpreter")
    assert (
        "without the variables, imports and definitions of earlier cells" in fresh.content[0].text
    )
    assert {"timeout": "KeyboardInterrupt", "memory": "memory", "processes": "processes"}[
        limit
    ] in lost


def test_output_past_the_cap_interrupts_the_cell_and_the_state_stays(server) -> None:
    rs = cells(server, "x = 5", "while True:\n    print('y' * 1000)", "print(x)")
    r = rs[1].structured_content
    assert rs[1].is_error and r["reason"] == "output" and r["truncated"] is True
    assert r["stdout_bytes"] == 64 * 1024
    assert state(rs[1])["state_kept"] is True
    assert stdout(rs[2]) == "5\n"


def test_the_code_can_end_its_interpreter_and_the_next_cell_says_so(server) -> None:
    rs = cells(
        server, "x = 1", "import os\nprint('bye', flush=True)\nos._exit(5)", "print('x' in dir())"
    )
    r = rs[1]
    assert r.structured_content["exit_code"] == 5 and r.structured_content["stdout"] == "bye\n"
    assert state(r)["state_kept"] is False
    assert stdout(rs[2]) == "False\n"
    assert "exited (exit code 5)" in state(rs[2])["state_lost"]


def test_processes_end_with_their_cell_and_threads_carry_on(server) -> None:
    tag = f"{random.randint(10**6, 10**7)}.5"
    rs = cells(
        server,
        "import subprocess, threading, time\n"
        f"child = subprocess.Popen(['sleep', '{tag}'])\n"
        "def later():\n    time.sleep(0.3)\n    print('from the thread', flush=True)\n"
        "threading.Thread(target=later, daemon=True).start()\n"
        "print('started')",
        "import time\ntime.sleep(0.6)\nprint('second', child.poll())",
        "print('third')",
    )
    assert stdout(rs[0]) == "started\n"
    assert gone(tag), f"a cell's process survived it: {processes_with(tag)}"
    # The thread printed while the second cell ran; the child was killed when the first ended.
    assert stdout(rs[1]) == "from the thread\nsecond -9\n"
    assert stdout(rs[2]) == "third\n"


def interpreter_children(ns_pid: int) -> list[str]:
    """The states of the children of the persistent interpreter whose pid, in its own pid
    namespace (podsim has one), is `ns_pid`."""
    for d in Path("/proc").iterdir():
        try:
            if b"_cells()" not in (d / "cmdline").read_bytes():
                continue
            nspid = [
                ln for ln in (d / "status").read_text().splitlines() if ln.startswith("NSpid:")
            ]
            if int(nspid[0].split()[-1]) != ns_pid:
                continue
            states = []
            for task in (d / "task").iterdir():
                for child in (task / "children").read_text().split():
                    with contextlib.suppress(OSError):
                        stat = Path(f"/proc/{child}/stat").read_text()
                        states.append(stat.rsplit(")", 1)[1].split()[0])
            return states
        except (OSError, ValueError, IndexError):
            continue
    raise AssertionError(f"no persistent interpreter with pid {ns_pid} found in /proc")


def test_what_the_server_killed_is_reaped_and_no_zombie_is_left(server) -> None:
    async def go():
        async with connect(server, "legacy") as c:
            py = lambda code: c.call_tool("execute_python", {"code": code, "persistent": True})  # noqa: E731
            first = await py(
                "import os, subprocess\n"
                "subprocess.Popen(['sh', '-c', 'sleep 60 & sleep 60 & wait'])\n"
                "kept = subprocess.Popen(['sleep', '60'])\n"
                "os.getpid()"
            )
            second = await py("kept.returncode, kept.poll()")
            return second, interpreter_children(int(stdout(first)))

    second, left = run(go())
    # The Popen the cell kept records how its process ended: killed with the first cell.
    assert stdout(second) == "(-9, -9)\n", second.content[0].text
    assert left == [], f"children of the interpreter left behind: {left}"


def test_what_a_thread_prints_between_cells_comes_with_the_next_cell(server) -> None:
    async def go():
        async with connect(server, "legacy") as c:
            py = lambda code: c.call_tool("execute_python", {"code": code, "persistent": True})  # noqa: E731
            await py(
                "import threading, time\n"
                "def later():\n    time.sleep(0.2)\n    print('between cells', flush=True)\n"
                "threading.Thread(target=later).start()"
            )
            await asyncio.sleep(1)
            return await py("print('next')")

    assert stdout(run(go())) == "between cells\nnext\n"


def test_cells_of_one_workspace_run_one_at_a_time(server) -> None:
    async def go():
        async with connect(server, "legacy") as c:
            await c.call_tool(
                "execute_python", {"code": "import time\nlog = []", "persistent": True}
            )
            code = (
                "t = time.monotonic()\ntime.sleep(0.5)\nlog.append((t, time.monotonic()))\nlen(log)"
            )
            rs = await asyncio.gather(
                *[
                    c.call_tool("execute_python", {"code": code, "persistent": True})
                    for _ in range(3)
                ]
            )
            spans = await c.call_tool("execute_python", {"code": "log", "persistent": True})
            return rs, spans

    rs, spans = run(go())
    assert sorted(stdout(r) for r in rs) == ["1\n", "2\n", "3\n"]
    log = sorted(eval(stdout(spans)))  # a list of (start, end) pairs
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(log)), log


def test_two_workspaces_interpreters_see_neither_state_nor_files(server) -> None:
    async def go():
        async with connect(server, "legacy") as a, connect(server, "legacy") as b:
            pa = lambda code: a.call_tool("execute_python", {"code": code, "persistent": True})  # noqa: E731
            pb = lambda code: b.call_tool("execute_python", {"code": code, "persistent": True})  # noqa: E731
            mine = await pa(
                "import os\nsecret = 'alpha'\nopen('secret.txt', 'w').write(secret)\n"
                "print(os.getcwd(), os.getpid())"
            )
            cwd, pid = stdout(mine).split()
            other = await pb(
                "import os, signal\n"
                "print('secret' in dir())\n"
                f"for attempt in (lambda: open('{cwd}/secret.txt').read(),\n"
                f"                lambda: os.listdir('{cwd}'),\n"
                f"                lambda: os.kill({pid}, signal.SIGKILL)):\n"
                "    try:\n        attempt()\n        print('reached')\n"
                "    except OSError as e:\n        print(type(e).__name__)\n"
                "open('own.txt', 'w').write('b')\nprint(open('own.txt').read())"
            )
            still = await pa("print(secret, open('secret.txt').read())")
            return other, still

    other, still = run(go())
    # A's workspace lies under the host's /tmp, which B's private /tmp hides (not found); without
    # a private /tmp, Landlock refuses it. A's interpreter is out of B's reach either way.
    seen = stdout(other).splitlines()
    assert seen[0] == "False" and seen[3:] == ["PermissionError", "b"], other.content[0].text
    assert seen[1:3] in (["FileNotFoundError"] * 2, ["PermissionError"] * 2), other.content[0].text
    assert stdout(still) == "alpha alpha\n"  # the control: A's interpreter and file are intact


def test_forged_reports_on_the_control_socket_change_nothing(server) -> None:
    """The cell's code can write to the interpreter's end of the control socket (descriptor 3):
    forged reports, garbage and a descriptor passed along must not disturb the server or reach
    anyone else."""
    forge = (
        "import os, socket, array\n"
        "s = socket.socket(fileno=os.dup(3))\n"
        "print(s.family.name, s.type.name, repr(s.getpeername()))\n"
        "for i in range(1, 64):\n    s.send(b'D %d 0 0 0' % i)\n"
        "s.send(b'garbage that is not a report')\n"
        "s.send(b'C 1')\n"
        "fds = array.array('i', [0, 1, 2])\n"
        "s.sendmsg([b'D 1 0 0 0'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])\n"
        "import time\ntime.sleep(0.5)\nprint('after')"
    )
    rs = cells(server, "x = 3", forge, "print(x)")
    assert stdout(rs[0]) == ""
    # A forged report may end its own cell early; nothing else happens.
    assert stdout(rs[1]).startswith("AF_UNIX SOCK_SEQPACKET ''\n"), rs[1].content[0].text
    assert stdout(rs[2]).endswith("3\n"), rs[2].content[0].text
    assert state(rs[2])["state_kept"] is True and state(rs[2])["state_lost"] is None
    assert "an unexpected message" in server.logs()


def test_max_cpu_refuses_persistent_cells_with_words() -> None:
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="sandlock-persist-cfg-"))
    d.chmod(0o755)
    cfg = d / "c.toml"
    cfg.write_text('[tools.execute_python]\npresets = ["system"]\nmax_cpu = 5\n')
    cfg.chmod(0o644)
    s = Server("--config", str(cfg))
    try:
        r = cells(s, "x = 1")[0]
    finally:
        s.stop()
    assert r.is_error and r.structured_content["reason"] == "invalid"
    assert "max_cpu" in r.content[0].text and "without persistent" in r.content[0].text


def test_the_gauge_counts_persistent_interpreters_and_an_ended_session_stops_its_own() -> None:
    s = Server()

    def gauge() -> int:
        for line in s.metrics().splitlines():
            if line.startswith("sandlock_mcp_python_persistent "):
                return int(line.split()[1])
        raise AssertionError("no sandlock_mcp_python_persistent gauge")

    async def go():
        async with connect(s, "legacy") as c:
            await c.call_tool("execute_python", {"code": "x = 1", "persistent": True})
            return gauge()

    try:
        before = gauge()
        during = run(go())  # the client deletes its session when it closes
        deadline = time.monotonic() + 5
        while gauge() and time.monotonic() < deadline:
            time.sleep(0.05)
        after = gauge()
    finally:
        s.stop()
    assert (before, during, after) == (0, 1, 0)
