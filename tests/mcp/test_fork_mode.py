"""`execute_python` in fork mode (`--python-start fork`, the default): each workspace starts one
sandboxed interpreter and every call forks it. What a caller sees must match a fresh interpreter
per call (`--python-start fresh`); a call's processes must not outlive it; a broken fork server
is replaced."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIN, Server, call, connect, run


@pytest.fixture(scope="module")
def servers():
    # Without the pool of ready workspaces (test_pool.py), so that a workspace's first two calls
    # run fresh interpreters and the third forks.
    fork = Server("--python-start", "fork", "--python-pool", "0")
    fresh = Server("--python-start", "fresh")
    yield fork, fresh
    fork.stop()
    fresh.stop()


PROBE = "import sys\nprint('ctypes' in sys.modules and '_socket' in sys.modules)"


async def until_forked(c) -> int:
    """Calls until this session's calls are forked (its first two run fresh interpreters, and the
    second starts its fork server); returns how many calls that took."""
    for i in range(100):
        r = await c.call_tool("execute_python", {"code": PROBE})
        if r.structured_content["stdout"] == "True\n":
            return i + 1
        await asyncio.sleep(0.05)
    raise AssertionError("the workspace never got a fork server")


def forked(server: Server, *calls: tuple[str, dict]) -> list:
    """Runs tool calls in one session, once its calls are forked."""

    async def go():
        async with connect(server, "legacy") as c:
            await until_forked(c)
            return [await c.call_tool(name, args) for name, args in calls]

    return run(go())


def out(r) -> tuple:
    sc = r.structured_content
    return sc["stdout"], sc["stderr"], sc["exit_code"], sc["reason"], r.is_error


def processes_with(arg: str) -> list[int]:
    """Pids whose command line contains `arg` (the host's view)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if arg.encode() in (d / "cmdline").read_bytes().replace(b"\0", b" "):
                    found.append(int(d.name))
            except OSError:
                pass
    return found


def gone(arg: str, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not processes_with(arg):
            return True
        time.sleep(0.05)
    return False


PARITY = {
    "plain": "print('ok')",
    "exit code": "import sys\nsys.exit(3)",
    "exit None": "import sys\nprint('a')\nsys.exit(None)",
    "exit message": "import sys\nsys.exit('bye')",
    "exit 256": "import sys\nsys.exit(256)",
    "exception": "x = 1\nraise ValueError('boom')",
    "syntax error": "def f(:\n  pass",
    "non-daemon thread": "import threading, time\n"
    "def f():\n    time.sleep(0.2)\n    print('thread done')\n"
    "threading.Thread(target=f).start()\nprint('main done')",
    "atexit": "import atexit\natexit.register(lambda: print('atexit ran'))\nprint('main')",
    "unflushed": "import sys\nsys.stdout.write('no newline')",
    "stderr": "import sys\nprint('to err', file=sys.stderr)",
    "argv and name": "import sys\nprint(sys.argv, __name__)",
    "stdin": "import sys\nprint(sys.stdin.read().upper())",
    "os._exit": "import os\nprint('x', flush=True)\nos._exit(7)",
    "killed by a signal": "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)",
}


@pytest.mark.parametrize("name", list(PARITY))
def test_results_match_a_fresh_interpreter(servers, name: str) -> None:
    fork, fresh = servers
    args = {"code": PARITY[name]}
    if name == "stdin":
        args["stdin"] = "hello"
    a = forked(fork, ("execute_python", args))[0]
    b = call(fresh, "legacy", ("execute_python", args))[0]
    assert out(a) == out(b), (a.content[0].text, b.content[0].text)


def test_calls_do_not_share_interpreter_state(servers) -> None:
    fork, _ = servers
    rs = forked(
        fork,
        ("execute_python", {"code": "import json\njson.marker = 1\nglobal_x = 5\nprint('set')"}),
        (
            "execute_python",
            {"code": "import json\nprint(hasattr(json, 'marker'), 'global_x' in dir())"},
        ),
    )
    assert rs[1].structured_content["stdout"] == "False False\n"


def test_background_processes_end_with_their_call(servers) -> None:
    fork, _ = servers
    tag = f"{random.randint(10**6, 10**7)}.5"
    code = (
        "import subprocess\n"
        f"subprocess.Popen(['sleep', '{tag}'])\n"  # holds the call's stdout
        f"subprocess.Popen(['sh', '-c', 'sleep {tag}1 &'], stdout=subprocess.DEVNULL)\n"  # orphaned
        "print('started')"
    )
    t0 = time.monotonic()
    r = forked(fork, ("execute_python", {"code": code}))[0]
    took = time.monotonic() - t0
    assert r.structured_content["stdout"] == "started\n", r.content[0].text
    assert took < 5, f"the call took {took:.1f} s: its leftover held stdout open"
    assert gone(tag), f"a call's background process survived it: {processes_with(tag)}"


def test_timeout_kills_the_call_and_the_fork_server_carries_on(servers) -> None:
    fork, _ = servers
    tag = f"{random.randint(10**6, 10**7)}.25"
    ppid = "import os\nprint(os.getppid())"
    rs = forked(
        fork,
        ("execute_python", {"code": ppid}),
        (
            "execute_python",
            {
                "code": "import subprocess, time\n"
                f"subprocess.Popen(['sleep', '{tag}'])\n"
                "print('partial', flush=True)\ntime.sleep(60)",
                "timeout_s": 1,
            },
        ),
        ("execute_python", {"code": ppid}),
    )
    assert rs[1].structured_content["reason"] == "timeout"
    assert "timed out after 1 s" in rs[1].content[0].text
    assert rs[1].structured_content["stdout"] == "partial\n"
    assert gone(tag), "the timed-out call's child survived"
    # The same fork server (the parent of both calls) took the call after the timeout.
    assert rs[0].structured_content["stdout"] == rs[2].structured_content["stdout"]


def test_a_killed_fork_server_fails_its_call_in_words_and_is_replaced(servers) -> None:
    fork, _ = servers
    rs = forked(
        fork,
        ("execute_python", {"code": "import os\nprint(os.getppid())"}),
        ("execute_python", {"code": "import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(5)"}),
        ("execute_python", {"code": "import os\nprint(os.getppid())"}),
    )
    r = rs[1]
    assert r.is_error and r.structured_content["reason"] == "sandbox_error", r.content[0].text
    assert "fork server ended" in r.content[0].text
    assert not rs[2].is_error
    assert rs[2].structured_content["stdout"] != rs[0].structured_content["stdout"]


def test_concurrent_calls_in_one_workspace_each_get_their_own_output() -> None:
    s = Server("--python-start", "fork", "--max-concurrent", "4")

    async def go():
        async with connect(s, "legacy") as c:
            await until_forked(c)
            code = "import time, os\ntime.sleep(1)\nprint({i}, os.getpid())"
            t0 = time.monotonic()
            rs = await asyncio.gather(
                *[c.call_tool("execute_python", {"code": code.format(i=i)}) for i in range(4)]
            )
            return rs, time.monotonic() - t0

    try:
        rs, took = run(go())
    finally:
        s.stop()
    outs = [r.structured_content["stdout"].split() for r in rs]
    assert [o[0] for o in outs] == ["0", "1", "2", "3"], [r.content[0].text for r in rs]
    assert len({o[1] for o in outs}) == 4
    # One after another they would take 4 s.
    assert took < 2.5, f"4 calls of 1 s took {took:.1f} s: they did not overlap"


def test_tree_limits_hold_for_forked_calls_and_a_new_fork_server_follows() -> None:
    s = Server("--python-start", "fork", "--max-memory", "256M", "--max-processes", "16")
    memory_bomb = "x = bytearray(1 << 30)\nprint(len(x))"
    fork_bomb = (
        "import os, time\nfor i in range(100):\n"
        "    if os.fork() == 0:\n        time.sleep(5)\n        os._exit(0)\n"
        "time.sleep(2)\nprint('forked')"
    )
    control = "x = bytearray(64 << 20)\nprint(len(x))"

    async def go():
        async with connect(s, "legacy") as c:
            py = lambda code: c.call_tool("execute_python", {"code": code})  # noqa: E731
            await until_forked(c)
            memory = await py(memory_bomb)
            await until_forked(c)  # the limit killed the fork server; a new one starts
            small = await py(control)
            processes = await py(fork_bomb)
            return memory, small, processes

    try:
        memory, small, processes = run(go())
    finally:
        s.stop()
    for r, reason in ((memory, "memory"), (processes, "processes")):
        assert r.is_error and r.structured_content["reason"] == reason, r.content[0].text
        assert "workspace's Python processes together" in r.content[0].text, r.content[0].text
    assert small.structured_content["stdout"] == f"{64 << 20}\n", small.content[0].text


def test_output_cap_holds_for_forked_calls_on_each_stream() -> None:
    s = Server("--python-start", "fork", "--max-output", "64K")
    flood = "import sys\nsys.{0}.write('x' * 1000000)\nsys.{0}.flush()\nprint('unreached')"
    try:
        rs = forked(
            s,
            ("execute_python", {"code": flood.format("stdout")}),
            ("execute_python", {"code": flood.format("stderr")}),
            ("execute_python", {"code": "print('y' * 1000)"}),
        )
    finally:
        s.stop()
    for r, stream in zip(rs[:2], ("stdout", "stderr"), strict=True):
        sc = r.structured_content
        assert r.is_error and sc["reason"] == "output", r.content[0].text
        assert sc["truncated"] is True
        # Cut at exactly the cap; too long to show whole, so saved in the workspace.
        assert sc[f"{stream}_bytes"] == 64 * 1024, sc[f"{stream}_bytes"]
        assert sc["excerpted"] is True and sc[f"{stream}_file"].startswith(".sandlock/outputs/")
        assert len(sc[stream]) < 64 * 1024
        assert f"{stream} exceeded max_output" in r.content[0].text
    # Control: output under the cap is complete.
    sc = rs[2].structured_content
    assert (sc["reason"], sc["truncated"], sc["stdout"]) == ("exited", False, "y" * 1000 + "\n")


def test_a_workspace_forks_from_its_third_call_and_one_call_costs_no_fork_server(servers) -> None:
    fork, _ = servers

    async def go():
        async with connect(fork, "legacy") as c:
            first = await c.call_tool("execute_python", {"code": PROBE})
            second = await c.call_tool("execute_python", {"code": PROBE})
            return first, second, await until_forked(c)

    first, second, more = run(go())
    assert first.structured_content["stdout"] == "False\n"  # a fresh interpreter
    assert second.structured_content["stdout"] == "False\n"  # fresh; starts the fork server
    assert more <= 40, f"the fork server took {more} more calls to be ready"


def test_fork_servers_gauge_counts_them_and_an_ended_session_stops_its_own() -> None:
    s = Server("--python-start", "fork", "--python-pool", "0")

    def gauge() -> int:
        for line in s.metrics().splitlines():
            if line.startswith("sandlock_mcp_fork_servers "):
                return int(line.split()[1])
        raise AssertionError("no sandlock_mcp_fork_servers gauge")

    async def go():
        async with connect(s, "legacy") as c:
            await until_forked(c)
            return gauge()

    try:
        assert gauge() == 0
        during = run(go())  # the session is deleted when the client closes
        deadline = time.monotonic() + 5
        while gauge() and time.monotonic() < deadline:
            time.sleep(0.05)
        after = gauge()
    finally:
        s.stop()
    assert (during, after) == (1, 0)


def test_fork_mode_refuses_max_cpu_and_fresh_is_chosen_for_it() -> None:
    d = Path(tempfile.mkdtemp(prefix="sandlock-fork-cfg-"))
    d.chmod(0o755)  # under podsim the server runs as uid 1000 and reads the file
    cfg = d / "c.toml"
    cfg.write_text('[tools.execute_python]\npresets = ["system"]\nmax_cpu = 5\n')
    cfg.chmod(0o644)
    argv = [str(BIN), "mcp", "--config", str(cfg), "--workspace-root", str(d / "ws")]
    p = subprocess.run(
        [*argv, "--python-start", "fork"], check=False, capture_output=True, text=True, timeout=30
    )
    assert p.returncode != 0
    assert "max_cpu" in p.stderr and 'start = "fresh"' in p.stderr, p.stderr
    # Without --python-start, a policy with max_cpu runs fresh interpreters (and says so).
    s = Server("--config", str(cfg))
    try:
        r = call(s, "legacy", ("execute_python", {"code": "import os\nprint(os.getppid())"}))[0]
        assert not r.is_error
        assert int(r.structured_content["stdout"]) == s.proc.pid or os.environ.get(
            "SANDLOCK_MCP_PODSIM"
        )
        assert "python_start=fresh" in s.logs() or '"python_start":"fresh"' in s.logs()
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)
