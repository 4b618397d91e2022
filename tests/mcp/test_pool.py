"""The pool of ready workspaces (`--python-pool`): workspaces made ahead of time, each with its
own sandboxed Python fork server started, so that a new session's first `execute_python` forks
instead of starting an interpreter. A pooled workspace is confined like any other, shares nothing
with another, is refilled in the background, and dies with the server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIN, Server, call, connect, run

# True when the interpreter that runs the call is a fork of a fork server (which imported these).
PROBE = "import sys\nprint('ctypes' in sys.modules and '_socket' in sys.modules)"


def metric(s: Server, name: str) -> int:
    for line in s.metrics().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"no {name} in /metrics")


def until_full(s: Server, within: float = 30) -> None:
    size = metric(s, "sandlock_mcp_python_pool_size")
    deadline = time.monotonic() + within
    while metric(s, "sandlock_mcp_python_pool_ready") < size:
        if time.monotonic() > deadline:
            raise AssertionError(f"the pool did not fill within {within} s:\n{s.logs()[-3000:]}")
        time.sleep(0.05)


def settle(s: Server, within: float = 15) -> set[str]:
    """Waits until the pool is full and the workspace directories stop changing (ended sessions'
    are removed in the background); returns them."""
    until_full(s)
    deadline = time.monotonic() + within
    seen = set(s.workspaces())
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = set(s.workspaces())
        if now == seen:
            return now
        seen = now
    raise AssertionError(f"the workspaces kept changing: {seen}")


def fork_servers_of(server_pid: int) -> list[int]:
    """The server's children that are fork servers (the script they run defines `_serve`)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if not d.name.isdigit() or b"def _serve" not in (d / "cmdline").read_bytes():
                continue
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == server_pid:
                found.append(int(d.name))
        except (OSError, ValueError):
            pass
    return found


@pytest.fixture(scope="module")
def pooled():
    s = Server("--python-pool", "2")
    until_full(s)
    yield s
    s.stop()


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_a_new_workspaces_first_call_forks_a_ready_one(pooled, mode) -> None:
    until_full(pooled)
    before = set(pooled.workspaces())
    ready = metric(pooled, 'sandlock_mcp_python_pool_claims_total{result="ready"}')
    rs = call(
        pooled,
        mode,
        ("execute_python", {"code": PROBE + "\nopen('f', 'w').write('kept')"}),
        ("execute_python", {"code": "print(open('f').read())"}),
    )
    first, second = rs[0], rs[1]
    assert first.structured_content["stdout"] == "True\n", first.content[0].text
    # The workspace was one of those made before the session began, and stays the session's.
    assert first.structured_content["workspace"] in before
    assert second.structured_content["workspace"] == first.structured_content["workspace"]
    assert second.structured_content["stdout"] == "kept\n"
    assert metric(pooled, 'sandlock_mcp_python_pool_claims_total{result="ready"}') == ready + 1
    until_full(pooled)  # refilled in the background


ESCAPES = {
    "read outside the policy": "open('/etc/shadow').read()",
    # Writable on the host, not in the policy (/tmp would be the run's private one).
    "write outside the workspace": "open('/dev/shm/sandlock-pool-escape', 'w')",
    # The root lies under the host's /tmp: hidden by the private /tmp but for the way to the
    # workspace itself, so a listing that works shows no other workspace.
    "list the other workspaces": "import os\n"
    "me = os.path.basename(os.getcwd())\n"
    "others = set(os.listdir(os.path.dirname(os.getcwd()))) - {{me}}\n"
    "if not others:\n    raise FileNotFoundError('no other workspace in sight')",
    "write into another ready workspace": "import os\n"
    "other = [n for n in {names!r} if n != os.path.basename(os.getcwd())][0]\n"
    "open(os.path.join({root!r}, other, 'probe'), 'w')",
    "signal the server": "import os, signal\nos.kill({server}, signal.SIGTERM)",
    "reach the server's port": "import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)",
}


@pytest.mark.parametrize("attempt", list(ESCAPES))
def test_a_pooled_interpreter_is_confined_like_any_other(pooled, attempt) -> None:
    before = settle(pooled)
    code = ESCAPES[attempt].format(
        names=sorted(before), root=str(pooled.root), server=pooled.proc.pid, port=pooled.port
    )
    wrapped = (
        PROBE
        + "\ntry:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "    print('escaped')\n"
        "except OSError as e:\n    print('refused', type(e).__name__)\n"
        "open('mine.txt', 'w').write('ok')\nprint(open('mine.txt').read())"
    )
    r = call(pooled, "legacy", ("execute_python", {"code": wrapped}))[0]
    out = r.structured_content["stdout"].splitlines()
    assert r.structured_content["workspace"] in before  # a pooled workspace, forked at once
    assert out[0] == "True", r.content[0].text
    # Landlock refuses (permission denied) what the private /tmp does not hide (not found).
    assert out[1] in ("refused PermissionError", "refused FileNotFoundError"), r.content[0].text
    assert out[2] == "ok"  # the control: its own workspace is writable


def test_two_sessions_get_their_own_ready_workspace_and_share_nothing(pooled) -> None:
    until_full(pooled)

    async def go():
        async with connect(pooled, "legacy") as a, connect(pooled, "legacy") as b:
            ra = await a.call_tool(
                "execute_python",
                {
                    "code": PROBE + "\nimport os\nopen('a.txt', 'w').write('a')\n"
                    "print(os.getcwd(), os.getppid())"
                },
            )
            _, cwd, zygote = ra.structured_content["stdout"].split()
            rb = await b.call_tool(
                "execute_python",
                {
                    "code": PROBE + "\nimport os, signal\n"
                    f"for f in (lambda: open('{cwd}/a.txt').read(), "
                    f"lambda: os.kill({zygote}, signal.SIGKILL)):\n"
                    "    try:\n        f()\n        print('reached')\n"
                    "    except OSError as e:\n        print(type(e).__name__)\n"
                    "print(os.getcwd())"
                },
            )
            again = await a.call_tool("execute_python", {"code": "import os\nprint(os.getppid())"})
            return ra, rb, cwd, zygote, again

    ra, rb, cwd, zygote, again = run(go())
    out_b = rb.structured_content["stdout"].split()
    assert ra.structured_content["stdout"].startswith("True") and out_b[0] == "True"
    # A's workspace is hidden by B's private /tmp (not found), and A's fork server is out of B's
    # reach (Landlock's signal scoping, or the supervisor where the kernel lacks it).
    assert out_b[1] in ("PermissionError", "FileNotFoundError"), rb.content[0].text
    assert out_b[2] == "PermissionError", rb.content[0].text
    assert out_b[3] != cwd
    # The control: A's fork server was not touched and still serves A.
    assert again.structured_content["stdout"].strip() == zygote


def test_the_pool_is_bounded_and_refilled_after_a_burst() -> None:
    s = Server("--python-pool", "2", "--max-concurrent", "4")
    try:
        until_full(s)
        assert metric(s, "sandlock_mcp_fork_servers") == 2

        async def one():
            async with connect(s, "legacy") as c:
                return await c.call_tool("execute_python", {"code": PROBE})

        async def burst():
            return await asyncio.gather(*[one() for _ in range(5)])

        rs = run(burst())
        assert all(not r.is_error for r in rs), [r.content[0].text for r in rs]
        forked = sum(r.structured_content["stdout"] == "True\n" for r in rs)
        ready = metric(s, 'sandlock_mcp_python_pool_claims_total{result="ready"}')
        empty = metric(s, 'sandlock_mcp_python_pool_claims_total{result="empty"}')
        assert ready + empty == 5 and ready >= 2 and forked == ready
        until_full(s)
        # The sessions ended (their fork servers with them): what is left is the pool, no more.
        deadline = time.monotonic() + 5
        while metric(s, "sandlock_mcp_fork_servers") > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(s, "sandlock_mcp_fork_servers") == 2
        assert metric(s, "sandlock_mcp_python_pool_ready") == 2
    finally:
        s.stop()


def test_a_ready_workspace_waits_without_idling_out_and_a_taken_one_follows_fork_idle() -> None:
    d = Path(tempfile.mkdtemp(prefix="sandlock-pool-cfg-"))
    d.chmod(0o755)  # under podsim the server runs as uid 1000 and reads the file
    cfg = d / "c.toml"
    cfg.write_text("[python]\nfork_idle = 1\npool = 1\n")
    cfg.chmod(0o644)
    s = Server("--config", str(cfg))
    try:
        until_full(s)
        waiting = fork_servers_of(s.proc.pid)
        time.sleep(2.5)  # more than fork_idle
        assert fork_servers_of(s.proc.pid) == waiting and len(waiting) == 1

        async def go():
            async with connect(s, "legacy", terminate=False) as c:
                r = await c.call_tool("execute_python", {"code": PROBE})
                until_full(s)
                at_two = metric(s, "sandlock_mcp_fork_servers")
                await asyncio.sleep(2.5)  # the taken one is now an idle session's
                return r, at_two, metric(s, "sandlock_mcp_fork_servers")

        r, at_two, later = run(go())
        assert r.structured_content["stdout"] == "True\n"
        assert (at_two, later) == (2, 1)
    finally:
        s.stop()


def test_ready_workspaces_die_with_the_server() -> None:
    s = Server("--python-pool", "2")
    try:
        until_full(s)
        ours = fork_servers_of(s.proc.pid)
        assert len(ours) == 2, ours
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(10)
        deadline = time.monotonic() + 5
        while any(Path(f"/proc/{p}").exists() for p in ours) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [p for p in ours if Path(f"/proc/{p}").exists()]
        assert left == [], f"ready fork servers outlived the server: {left}"
    finally:
        s.stop()


def test_the_pool_can_be_turned_off_and_fresh_mode_refuses_one() -> None:
    s = Server("--python-pool", "0")
    try:
        r = call(s, "legacy", ("execute_python", {"code": PROBE}))[0]
        assert r.structured_content["stdout"] == "False\n"  # a fresh interpreter
        assert metric(s, "sandlock_mcp_python_pool_size") == 0
        assert metric(s, 'sandlock_mcp_python_pool_claims_total{result="empty"}') == 1
    finally:
        s.stop()
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run(
            [
                *(str(BIN), "mcp", "--workspace-root", f"{d}/ws"),
                *("--python-start", "fresh", "--python-pool", "2"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "SANDLOCK_MCP_TOKEN"},
        )
    assert p.returncode != 0 and "python.pool = 2 needs start" in p.stderr, p.stderr


def test_a_pooled_workspace_sees_the_mounts_and_private_tmp_of_a_fresh_run() -> None:
    """Ready workspaces are made before any session, yet their fork server and the persistent
    interpreter get the view a fresh run of the workspace gets: the workspace mount, and a private
    /tmp that never shows or takes the host's files."""
    tag = f"sandlock-pool-view-{os.getpid()}-{time.monotonic_ns()}"
    host = Path("/tmp") / f"{tag}-host"
    host.write_text("the host's")
    s = Server("--python-pool", "1", "--workspace-mount", "/mnt/data:data")
    try:
        until_full(s)
        before = set(s.workspaces())
        seen = f"import os\nprint(os.path.exists({str(host)!r}), os.path.exists('/tmp/{tag}-fork'))"
        first, forked, cell, cell2, shell, listed = call(
            s,
            "legacy",
            (
                "execute_python",
                {
                    "code": PROBE + f"\nopen('/tmp/{tag}-fork', 'w').write('fork')\n"
                    f"open('/mnt/data/{tag}-first', 'w').write('first')\n"
                    f"print(open('/tmp/{tag}-fork').read())\n" + seen
                },
            ),
            (
                "execute_python",
                {"code": PROBE + f"\nprint(open('/mnt/data/{tag}-first').read())\n" + seen},
            ),
            (
                "execute_python",
                {
                    "persistent": True,
                    "code": f"open('/tmp/{tag}-cell', 'w').write('cell')\n"
                    f"open('/mnt/data/{tag}-cell', 'w').write('from a cell')\n"
                    f"print(open('/mnt/data/{tag}-first').read())\n" + seen,
                },
            ),
            (
                "execute_python",
                {"persistent": True, "code": f"print(open('/tmp/{tag}-cell').read())"},
            ),
            ("execute_shell", {"command": f"cat /mnt/data/{tag}-cell; ls -A /tmp | grep -c {tag}"}),
            ("read_file", {"path": f"data/{tag}-first"}),
        )[:6]
        out = [r.structured_content.get("stdout", "") for r in (first, forked, cell, cell2, shell)]
        assert first.structured_content["workspace"] in before, first.content[0].text
        # The pooled first call and the next call forked the ready fork server, which holds one
        # private /tmp for the workspace's forked calls; neither sees the host's file.
        assert out[0] == "True\nfork\nFalse True\n", first.content[0].text
        assert out[1] == "True\nfirst\nFalse True\n", forked.content[0].text
        # The persistent interpreter has the same mount and a private /tmp of its own, kept
        # across its cells.
        assert out[2] == "first\nFalse False\n", cell.content[0].text
        assert out[3] == "cell\n", cell2.content[0].text
        # A fresh run (the shell) sees the same mount and a /tmp with none of those files.
        assert out[4] == "from a cell0\n", shell.content[0].text
        assert "first" in listed.content[0].text
        # The host's /tmp never got what the sandboxes wrote to theirs.
        assert not [n for n in ("fork", "cell") if Path(f"/tmp/{tag}-{n}").exists()]
    finally:
        s.stop()
        host.unlink()


def test_without_a_private_tmp_a_pooled_workspace_is_refused_the_hosts_tmp_too() -> None:
    s = Server("--python-pool", "1", "--no-private-tmp")
    try:
        until_full(s)
        before = set(s.workspaces())
        write = (
            "try:\n    open('/tmp/sandlock-pool-no-private', 'w')\n    print('wrote')\n"
            "except OSError as e:\n    print('refused', type(e).__name__)\n"
            "open('mine', 'w').write('ok')\nprint(open('mine').read())"
        )
        first, cell = call(
            s,
            "legacy",
            ("execute_python", {"code": PROBE + "\n" + write}),
            ("execute_python", {"persistent": True, "code": write}),
        )[:2]
        assert first.structured_content["workspace"] in before
        assert first.structured_content["stdout"] == "True\nrefused PermissionError\nok\n"
        assert cell.structured_content["stdout"] == "refused PermissionError\nok\n"
        assert not Path("/tmp/sandlock-pool-no-private").exists()
    finally:
        s.stop()
