"""Scale-out behind a real proxy: HAProxy (Debian's package) runs the shipped
deploy/haproxy/haproxy.cfg, with only its addresses and ports changed, in front of three
`sandlock mcp` replicas with distinct --replica-id. The official clients (Python `mcp`, and the
TypeScript SDK for a subset) make many sessions through it, each doing calls that depend on its
workspace's state; stateless calls pass workspace handles. Then a replica is killed: its sessions
and handles fail with words that name it, the others go on, new sessions land on the survivors;
and when it comes back, its old sessions are told it restarted. A replica that drains (SIGTERM)
still serves its sessions through the proxy until it exits.

With SANDLOCK_MCP_PODSIM=1 every replica runs under the restricted-pod harness; HAProxy and the
clients stay outside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import REPO, Server, free_port

HERE = Path(__file__).resolve().parent
SHIPPED = REPO / "deploy/haproxy/haproxy.cfg"
REPLICAS = ["sandlock-0", "sandlock-1", "sandlock-2"]
VICTIM = "sandlock-1"
SESSIONS = 30
STATELESS = 12
AT_ONCE = 6  # sessions working at the same time (the machine has 2 cores)


def owner(identifier: str) -> str:
    return identifier.split(".", 1)[0]


def configure(shipped: str, frontend: int, stats: int, replicas: dict[str, int]) -> str:
    """The shipped configuration with its two listening addresses and the replicas' addresses
    changed to loopback ports, and nothing else."""
    out, changed = [], 0
    for line in shipped.splitlines():
        server = re.match(r"^(\s*server\s+)(\S+)\s+(\S+)(\s.*)?$", line)
        if server:
            name = server.group(2)
            assert name in replicas, f"the shipped config names a server {name!r}"
            line = f"{server.group(1)}{name} 127.0.0.1:{replicas[name]}{server.group(4) or ''}"
            changed += 1
        elif line.strip() == "bind 0.0.0.0:8080":
            line = line.replace("0.0.0.0:8080", f"127.0.0.1:{frontend}")
            changed += 1
        elif line.strip() == "bind 127.0.0.1:8404":
            line = line.replace("8404", str(stats))
            changed += 1
        out.append(line)
    assert changed == len(replicas) + 2, "the shipped config's addresses moved; update this test"
    return "\n".join(out) + "\n"


class Cluster:
    """Three replicas and HAProxy in front of them."""

    def __init__(self) -> None:
        exe = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
        if exe is None:
            pytest.skip("skipped: haproxy is not installed (apt-get install haproxy)")
        self.token = secrets.token_urlsafe(24)
        self.replicas: dict[str, Server] = {}
        self.ports: dict[str, int] = {}
        self.dir = Path(tempfile.mkdtemp(prefix="sandlock-scaleout-"))
        self.proc: subprocess.Popen | None = None
        try:
            for r in REPLICAS:
                self.start_replica(r)
            port, stats = free_port(), free_port()
            self.url = f"http://127.0.0.1:{port}/mcp"
            self.stats_url = f"http://127.0.0.1:{stats}/stats;csv"
            cfg = self.dir / "haproxy.cfg"
            cfg.write_text(configure(SHIPPED.read_text(), port, stats, self.ports))
            self.log_path = self.dir / "haproxy.log"
            self.log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(
                [exe, "-f", str(cfg), "-db"], stdout=self.log, stderr=subprocess.STDOUT
            )
            self.wait_for({r: "UP" for r in REPLICAS})
        except BaseException:
            self.stop()
            raise

    def start_replica(self, name: str) -> None:
        port = self.ports.get(name)
        self.replicas[name] = Server("--replica-id", name, token=self.token, port=port)
        self.ports[name] = self.replicas[name].port

    def states(self) -> dict[str, str]:
        text = httpx2.get(self.stats_url, timeout=5).text.lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "sandlock_mcp"}

    def wait_for(self, want: dict[str, str], within: float = 30) -> None:
        deadline = time.monotonic() + within
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited:\n{self.logs()}")
            try:
                states = self.states()
            except httpx2.HTTPError:
                states = {}
            if all(states.get(k, "").startswith(v) for k, v in want.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"replica states {states}, wanted {want}:\n{self.logs()}")
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        p = self.replicas[name].proc
        p.send_signal(signal.SIGKILL)
        p.wait()

    def misrouted(self, name: str) -> int:
        text = httpx2.get(self.replicas[name].base + "/metrics", timeout=5).text
        return sum(
            int(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("sandlock_mcp_misrouted_total{")
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if hasattr(self, "log_path") else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "log"):
            self.log.close()
        for s in self.replicas.values():
            s.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster()
    yield c
    c.stop()


@contextlib.asynccontextmanager
async def connect(cluster: Cluster, mode: str = "legacy") -> AsyncIterator[tuple[Client, list]]:
    """A Python `mcp` client through the proxy, and the session ids the server handed it."""
    ids: list[str] = []

    async def seen(response: httpx2.Response) -> None:
        sid = response.headers.get("mcp-session-id")
        if sid and sid not in ids:
            ids.append(sid)

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {cluster.token}"},
        timeout=httpx2.Timeout(30, read=120),
        event_hooks={"response": [seen]},
    )
    async with http, Client(streamable_http_client(cluster.url, http_client=http), mode=mode) as c:
        yield c, ids


async def state_calls(c: Client, secret: str, stateless: bool) -> list:
    """Calls that depend on the workspace's state: write a file, run code that reads it and writes
    another, read that back. Stateless, the calls after the first pass the handle it returned."""
    w = await c.call_tool("write_file", {"path": "data/secret.txt", "content": secret})
    handle = {"workspace": w.structured_content["workspace"]} if stateless else {}
    code = "s = open('data/secret.txt').read()\nopen('out.txt', 'w').write(s[::-1])\nprint(len(s))"
    py = await c.call_tool("execute_python", {"code": code, **handle})
    sh = await c.call_tool("execute_shell", {"command": "cat data/secret.txt", **handle})
    rd = await c.call_tool("read_file", {"path": "out.txt", **handle})
    return [w, py, sh, rd]


def consistent(results: list, secret: str) -> bool:
    _, py, sh, rd = results
    return (
        not any(r.is_error for r in results)
        and py.structured_content["stdout"] == f"{len(secret)}\n"
        and sh.structured_content["stdout"] == secret
        and rd.structured_content["content"] == secret[::-1]
        and len({r.structured_content["workspace"] for r in results}) == 1
    )


async def outcome(c: Client, secret: str) -> tuple[str, str]:
    """What a session sees when it calls again: ("ok" | "wrong", text) or ("error", words)."""
    try:
        r = await c.call_tool("execute_shell", {"command": "cat data/secret.txt"})
    except MCPError as e:
        return "error", str(e)
    return ("ok" if r.structured_content["stdout"] == secret else "wrong"), r.content[0].text


async def scenario(cluster: Cluster) -> None:
    killed, restarted = asyncio.Event(), asyncio.Event()
    reports: asyncio.Queue = asyncio.Queue()
    slots = asyncio.Semaphore(AT_ONCE)

    async def session(i: int) -> dict:
        """One user's session for its whole life: its calls; what it sees after the kill; and
        after the restart."""
        rec: dict = {"secret": f"session-{i}-{secrets.token_hex(8)}"}
        try:
            async with connect(cluster) as (c, ids):
                async with slots:
                    results = await state_calls(c, rec["secret"], stateless=False)
                rec["sid"] = ids[0]
                rec["ok"] = consistent(results, rec["secret"])
                rec["workspace"] = results[0].structured_content["workspace"]
                await reports.put(rec)
                await killed.wait()
                rec["after_kill"] = await outcome(c, rec["secret"])
                await reports.put(rec)
                await restarted.wait()
                rec["after_restart"] = await outcome(c, rec["secret"])
        except Exception as e:
            await reports.put(e)
            raise
        return rec

    async def conversation(i: int) -> dict:
        """A stateless user: a new workspace, then calls that pass its handle back."""
        rec: dict = {"secret": f"stateless-{i}-{secrets.token_hex(8)}"}
        try:
            async with connect(cluster, "2026-07-28") as (c, _):
                async with slots:
                    results = await state_calls(c, rec["secret"], stateless=True)
                rec["handle"] = results[0].structured_content["workspace"]
                # The proxy also routes a resource read by the handle in its URI.
                res = await c.read_resource(f"sandlock://{rec['handle']}/out.txt")
                exported = res.contents[0].text == rec["secret"][::-1]
                rec["ok"] = consistent(results, rec["secret"]) and exported
                await reports.put(rec)
                await killed.wait()
                args = {"path": "out.txt", "workspace": rec["handle"]}
                r = await c.call_tool("read_file", args)
                rec["after_kill"] = (r.is_error, r.content[0].text)
                await reports.put(rec)
        except Exception as e:
            await reports.put(e)
            raise
        return rec

    async def newcomer(i: int) -> tuple[str, bool]:
        async with connect(cluster) as (c, ids):
            secret = f"new-{i}-{secrets.token_hex(8)}"
            return ids[0], consistent(await state_calls(c, secret, stateless=False), secret)

    async def collect(n: int) -> list[dict]:
        out = []
        for _ in range(n):
            got = await asyncio.wait_for(reports.get(), 300)
            if isinstance(got, BaseException):
                raise got
            out.append(got)
        return out

    sessions = [asyncio.create_task(session(i)) for i in range(SESSIONS)]
    stateless = [asyncio.create_task(conversation(i)) for i in range(STATELESS)]
    recs = await collect(SESSIONS + STATELESS)
    sess = [r for r in recs if "sid" in r]
    hand = [r for r in recs if "handle" in r]

    # Every session and stateless conversation saw its own state, all on one replica.
    assert all(r["ok"] for r in sess), [r for r in sess if not r["ok"]]
    assert all(owner(r["sid"]) == owner(r["workspace"]) for r in sess), sess
    assert all(r["ok"] for r in hand), [r for r in hand if not r["ok"]]
    spread = Counter(owner(r["sid"]) for r in sess)
    assert set(spread) == set(REPLICAS), f"sessions per replica: {spread}"
    handles = Counter(owner(r["handle"]) for r in hand)
    assert set(handles) == set(REPLICAS), f"stateless workspaces per replica: {handles}"
    # The proxy sent every request to the replica that holds its session or workspace.
    assert sum(cluster.misrouted(r) for r in REPLICAS) == 0

    # A replica dies.
    cluster.kill(VICTIM)
    killed.set()
    await collect(SESSIONS + STATELESS)
    for r in sess:
        how, text = r["after_kill"]
        if owner(r["sid"]) != VICTIM:
            assert how == "ok", r
            continue
        # What the Python client raises: the words of the replica the proxy turned to.
        assert how == "error", r
        assert f'session {r["sid"]} belongs to replica "{VICTIM}"' in text, text
        assert "is down or was replaced and the session is lost" in text, text
        assert "Start a new session" in text, text
    for r in hand:
        is_error, text = r["after_kill"]
        if owner(r["handle"]) != VICTIM:
            assert (is_error, text) == (False, r["secret"][::-1]), r
            continue
        assert is_error and f'workspace "{r["handle"]}" belongs to replica "{VICTIM}"' in text
        assert "Omit the workspace argument to start a new one" in text, text
    # New sessions work, on the replicas still up.
    fresh = await asyncio.gather(*(newcomer(i) for i in range(AT_ONCE)))
    assert all(ok for _, ok in fresh), fresh
    assert {owner(sid) for sid, _ in fresh} <= set(REPLICAS) - {VICTIM}, fresh
    await asyncio.gather(*stateless)

    # It comes back under the same name and address: its old sessions hear that it restarted.
    await asyncio.to_thread(cluster.start_replica, VICTIM)
    await asyncio.to_thread(cluster.wait_for, {VICTIM: "UP"})
    restarted.set()
    for r in await asyncio.gather(*sessions):
        how, text = r["after_restart"]
        if owner(r["sid"]) != VICTIM:
            assert how == "ok", r
            continue
        assert how == "error", r
        assert f'session {r["sid"]} is not alive on replica "{VICTIM}"' in text, text
        assert "restarted" in text, text


def test_official_python_client_through_haproxy(cluster: Cluster) -> None:
    asyncio.run(scenario(cluster))


def test_typescript_sdk_through_haproxy(cluster: Cluster) -> None:
    sdk = HERE / "node_modules/@modelcontextprotocol/sdk"
    if shutil.which("node") is None or not sdk.exists():
        pytest.skip("skipped: node or the npm packages are missing (run `npm ci` in tests/mcp)")
    n = 6
    p = subprocess.Popen(
        ["node", str(HERE / "node/scaleout_client.mjs"), cluster.url, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE,
        env={**os.environ, "MCP_TOKEN": cluster.token},
    )
    try:
        line = p.stdout.readline()
        assert line, p.stderr.read()
        first = json.loads(line)
        assert all(s["ok"] for s in first), first
        assert all(owner(s["id"]) == owner(s["workspace"]) for s in first), first
        # Leastconn with every session holding its event stream open: one each, in turn.
        assert {owner(s["id"]) for s in first} == set(REPLICAS), first
        assert sum(cluster.misrouted(r) for r in REPLICAS) == 0
        cluster.kill(VICTIM)
        p.stdin.write("go\n")
        p.stdin.flush()
        line = p.stdout.readline()
        assert line, p.stderr.read()
        second = json.loads(line)
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    by_id = {s["id"]: s for s in first}
    for a in second["again"]:
        if owner(a["id"]) != VICTIM:
            assert a.get("isError") is False and a["stdout"] == by_id[a["id"]]["secret"], a
            continue
        # The SDK raises with the status, and the body: the replica's words.
        assert a["status"] == 404 and f'belongs to replica \\"{VICTIM}\\"' in a["error"], a
    assert all(s["ok"] for s in second["fresh"]), second["fresh"]
    assert {owner(s["id"]) for s in second["fresh"]} <= set(REPLICAS) - {VICTIM}


async def drain_scenario(cluster: Cluster) -> None:
    async with contextlib.AsyncExitStack() as stack:
        mine = []
        for _ in range(2 * len(REPLICAS)):
            c, ids = await stack.enter_async_context(connect(cluster))
            await c.call_tool("write_file", {"path": "f", "content": "x"})
            if owner(ids[0]) == VICTIM:
                mine.append(c)
        assert len(mine) >= 2, "leastconn put fewer than two of six sessions on each replica"
        busy, other = mine[:2]
        slow = asyncio.create_task(
            # Long enough to outlast the health checks that mark its replica down (about 4 s).
            busy.call_tool("execute_shell", {"command": "sleep 12; echo done", "timeout_s": 30})
        )
        await asyncio.sleep(1)
        cluster.replicas[VICTIM].signal(signal.SIGTERM)
        await asyncio.to_thread(cluster.wait_for, {VICTIM: "DOWN"})
        # Marked down, yet still draining: its session's call reaches it, which refuses new runs
        # in words, rather than another replica, which could only say the session is not there.
        r = await other.call_tool("execute_shell", {"command": "echo hi"})
        assert r.structured_content["reason"] == "shutting_down", r
        # The call in progress finishes and its result comes back through the proxy.
        r = await slow
        assert r.structured_content["stdout"] == "done\n", r
        cluster.replicas[VICTIM].proc.wait(30)
        with pytest.raises(MCPError, match=f'belongs to replica "{VICTIM}"'):
            await other.call_tool("execute_shell", {"command": "echo hi"})


def test_a_draining_replica_still_serves_its_sessions_through_haproxy(cluster: Cluster) -> None:
    asyncio.run(drain_scenario(cluster))
