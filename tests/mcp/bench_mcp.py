"""Benchmark (not a test): `execute_python("print(1)")` over Streamable HTTP against a bare
`python3 -c 'print(1)'`, both measured in the same run, at concurrency 1 and 8.

    .venv/bin/python tests/mcp/bench_mcp.py [--bin target/release/sandlock] [--calls 300]
        [--out docs/perf/mcp.md]

The client is a raw HTTP/1.1 client over one keep-alive socket per worker (a few lines of Python,
no HTTP library), so that what is measured is the server (transport, session lookup, the sandbox:
Landlock, seccomp and the supervisor, and the interpreter) and not a client library's CPU, which
on 2 cores at concurrency 8 would queue in front of the interpreters. Calls of the baseline and of
the server are interleaved, so that drift in the machine affects both alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO, Server, default_python

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class Raw:
    """A minimal HTTP/1.1 client on one keep-alive connection: requests with a JSON body, and
    responses with Content-Length or chunked bodies (an SSE response is chunked)."""

    def __init__(self, url: str, headers: dict[str, str]):
        u = urllib.parse.urlsplit(url)
        self.path, self.headers = u.path, dict(headers)
        self.headers["Host"] = u.netloc
        self.sock = socket.create_connection((u.hostname, u.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rf = self.sock.makefile("rb")

    def request(self, method: str, body: dict | None = None) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if body is not None else b""
        head = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        req = f"{method} {self.path} HTTP/1.1\r\n{head}Content-Length: {len(data)}\r\n\r\n"
        self.sock.sendall(req.encode() + data)
        status = int(self.rf.readline().split()[1])
        hdrs: dict[str, str] = {}
        while (line := self.rf.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rf.readline().split(b";")[0], 16):
                parts.append(self.rf.read(size))
                self.rf.readline()
            self.rf.readline()
            return status, hdrs, b"".join(parts)
        return status, hdrs, self.rf.read(int(hdrs.get("content-length", "0")))

    def close(self) -> None:
        self.rf.close()
        self.sock.close()


def parse(hdrs: dict[str, str], body: bytes) -> dict:
    if hdrs.get("content-type", "").startswith("application/json"):
        return json.loads(body)
    for line in body.decode().splitlines():
        if line.startswith("data:") and '"jsonrpc"' in line:
            return json.loads(line[5:])
    raise RuntimeError(f"no JSON-RPC message in {body[:200]!r}")


class Session:
    """One MCP client connection: a 2025-11-25 session, or stateless 2026-07-28 requests."""

    def __init__(self, server: Server, mode: str):
        self.http = Raw(server.url, {**ACCEPT, **server.headers()})
        self.mode, self.next_id, self.ws = mode, 1, None
        if mode == "session":
            init = {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "0"},
                },
            }
            _, hdrs, _ = self.http.request("POST", init)
            self.http.headers.update(
                {"mcp-session-id": hdrs["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
            )
            self.http.request("POST", {"jsonrpc": "2.0", "method": "notifications/initialized"})
        else:
            self.http.headers.update(
                {
                    "mcp-protocol-version": "2026-07-28",
                    "mcp-method": "tools/call",
                    "mcp-name": "execute_python",
                }
            )

    def call(self, code: str, persistent: bool = False) -> dict:
        self.next_id += 1
        params: dict = {"name": "execute_python", "arguments": {"code": code}}
        if persistent:
            params["arguments"]["persistent"] = True
        if self.mode == "stateless":
            if self.ws:  # the server-minted handle from the first result
                params["arguments"]["workspace"] = self.ws
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call", "params": params}
        status, hdrs, body = self.http.request("POST", msg)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
        out = parse(hdrs, body)
        sc = out["result"]["structuredContent"]
        self.ws = sc["workspace"]
        if sc["stdout"] != "1\n":
            raise RuntimeError(f"unexpected result: {out}")
        return sc

    def close(self) -> None:
        if self.mode == "session":
            self.http.request("DELETE")
        self.http.close()


def timed_parallel(fns: list, calls: int) -> list[float]:
    """Runs `calls` calls spread over one thread per function in `fns` (each thread calls its
    own); returns each call's latency (ms)."""
    lat: list[float] = []
    lock = threading.Lock()
    per = max(1, calls // len(fns))

    def worker(fn) -> None:
        mine = []
        for _ in range(per):
            t0 = time.perf_counter()
            fn()
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(f,)) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat


def server_cpu_ms(pid: int) -> tuple[float, float]:
    """User plus system CPU, in ms, of the server process itself, and of the children it has
    reaped (the sandboxed interpreters)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) * tick, (int(fields[13]) + int(fields[14])) * tick


def children_cpu_ms() -> float:
    """CPU of the children this process has reaped (the bare interpreters), in ms."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * 1000


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def sandboxes_cpu_ms(server_pid: int) -> float:
    """CPU of every sandboxed process the server started, in ms: the ones that ended (reaped by
    the server: fresh interpreters, fork servers and persistent interpreters that stopped, with
    everything they had reaped) and the ones alive (fork servers, the pool's included, and
    persistent interpreters: their own CPU and that of the calls they reaped)."""
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    total = server_cpu_ms(server_pid)[1]
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(f) for f in fields[11:15]) * tick
    return total


POLLS = {"n": 0}


def pool_full(server: Server) -> None:
    """Waits (untimed) until the server's pool of ready workspaces is full again, so that its
    refill (an interpreter start) never overlaps the next measurement. Counts its /metrics
    requests, whose server CPU is not the calls'."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        POLLS["n"] += 1
        m = dict(
            line.split(" ", 1)
            for line in server.metrics().splitlines()
            if line.startswith("sandlock_mcp_python_pool_")
            and not line.startswith("sandlock_mcp_python_pool_claims")
        )
        if m["sandlock_mcp_python_pool_ready"] == m["sandlock_mcp_python_pool_size"]:
            return
        time.sleep(0.01)
    raise RuntimeError("the pool of ready workspaces did not refill within 60 s")


def metrics_cpu_ms(server: Server, n: int = 1000) -> float:
    """Server CPU (ms) of one /metrics request, measured over `n` of them on a server that does
    nothing else meanwhile (no interpreter kept, whose sampling would be counted too)."""
    c0 = server_cpu_ms(server.proc.pid)[0]
    for _ in range(n):
        server.metrics()
    return (server_cpu_ms(server.proc.pid)[0] - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(REPO / "target/release/sandlock"))
    ap.add_argument("--calls", type=int, default=320, help="calls per configuration")
    ap.add_argument("--rounds", type=int, default=16, help="alternating rounds at concurrency 8")
    ap.add_argument("--out", default=str(REPO / "docs/perf/mcp.md"))
    ap.add_argument(
        "--pool",
        type=int,
        default=None,
        help="ready workspaces of the fork-mode server (default: the first calls of one round at "
        "concurrency 8)",
    )
    a = ap.parse_args()
    os.environ["SANDLOCK_BIN"] = a.bin
    import conftest

    conftest.BIN = Path(a.bin)
    py = default_python()
    common = ("--max-concurrent", "8", "--queue-depth", "64", "--log-level", "warn")
    per_round = max(8, a.calls // a.rounds)
    # The first calls of a round at concurrency 8 (8 threads, per_round // 8 calls each) all find a
    # ready workspace; the pool refills between rounds, untimed.
    pool = a.pool if a.pool is not None else 8 * (per_round // 8)
    servers = {
        "fork": Server(*common, "--python-start", "fork", "--python-pool", str(pool)),
        "fresh": Server(*common, "--python-start", "fresh"),
    }
    sessions: list[Session] = []

    def bare(_c: int) -> list:
        return [lambda: subprocess.run([py, "-c", "print(1)"], capture_output=True, check=True)]

    pools: dict[tuple[str, str], list[Session]] = {}

    def reused(start: str, mode: str):
        """Sessions that make many calls: created once, used by every round. Mode "persistent":
        cells of a session's persistent interpreter."""

        persistent = mode == "persistent"

        def fns(c: int) -> list:
            pool = pools.setdefault((start, mode), [])
            while len(pool) < c:
                pool.append(
                    Session(servers[start], "stateless" if mode == "stateless" else "session")
                )
                sessions.append(pool[-1])
            return [lambda s=s: s.call("print(1)", persistent) for s in pool[:c]]

        return fns

    def first(start: str):
        """The first call of a new session (its workspace, and in fork mode its fork server,
        start with it); the session is ended afterwards."""

        def fns(_c: int) -> list:
            def one() -> None:
                s = Session(servers[start], "session")
                try:
                    s.call("print(1)")
                finally:
                    s.close()

            return [one]

        return fns

    # (python start, calls of, the calls, what to wait for, untimed, after them)
    kinds = [("bare", "", bare, None)]
    for start in ("fork", "fresh"):
        kinds += [
            (start, "session", reused(start, "session"), None),
            (start, "stateless", reused(start, "stateless"), None),
            (
                start,
                "first call",
                first(start),
                (lambda: pool_full(servers["fork"])) if start == "fork" else None,
            ),
        ]
    kinds.append(("fork", "persistent cell", reused("fork", "persistent"), None))
    results: dict[tuple[str, str, int], list[float]] = {}
    try:
        for _, _, fac, after in kinds:  # warm-up: page cache, interpreter, first calls
            for c in (1, 8):
                fns = fac(c)
                timed_parallel(fns * c if len(fns) == 1 else fns, 2 * c)
                if after:
                    after()
        time.sleep(0.5)  # each reused session's fork server starts after its second call
        per_poll = metrics_cpu_ms(servers["fresh"])
        POLLS["n"] = 0
        cpu0 = {k: server_cpu_ms(v.proc.pid) for k, v in servers.items()}
        sandboxes0 = {k: sandboxes_cpu_ms(v.proc.pid) for k, v in servers.items()}
        bare0 = children_cpu_ms()
        # Concurrency 1: call by call, every kind in turn (rotating which goes first), so that the
        # machine's drift (other work on a shared VM) lands on all of them alike.
        ones = [(start, mode, fac(1)[0], after) for start, mode, fac, after in kinds]
        for i in range(a.calls):
            for k in range(len(ones)):
                start, mode, fn, after = ones[(i + k) % len(ones)]
                t0 = time.perf_counter()
                fn()
                results.setdefault((start, mode, 1), []).append((time.perf_counter() - t0) * 1000)
                if after:
                    after()
        # Concurrency 8: short alternating rounds.
        for _ in range(a.rounds):
            for start, mode, fac, after in kinds:
                fns = fac(8)
                fns = fns * 8 if len(fns) == 1 else fns
                results.setdefault((start, mode, 8), []).extend(timed_parallel(fns, per_round))
                if after:
                    after()
        calls = {
            k: sum(len(v) for (s, _, _), v in results.items() if s == k)
            for k in ("bare", "fork", "fresh")
        }
        cpu = {k: server_cpu_ms(v.proc.pid) for k, v in servers.items()}
        polled = {"fork": POLLS["n"] * per_poll, "fresh": 0.0}
        server_per_call = {k: (cpu[k][0] - cpu0[k][0] - polled[k]) / calls[k] for k in servers}
        interp_per_call = {
            k: (sandboxes_cpu_ms(v.proc.pid) - sandboxes0[k]) / calls[k] for k, v in servers.items()
        }
        bare_cpu = (children_cpu_ms() - bare0) / calls["bare"]
    finally:
        for s in sessions:
            s.close()
        for v in servers.values():
            v.stop()

    rows = []
    for c in (1, 8):
        b50, b99 = pct(results[("bare", "", c)], 50), pct(results[("bare", "", c)], 99)
        for start, mode, _, _ in kinds[1:]:
            xs = results[(start, mode, c)]
            p50, p99 = pct(xs, 50), pct(xs, 99)
            rows.append((c, start, mode, len(xs), b50, b99, p50, p99, p50 - b50, p99 - b99))
    mean_bare = statistics.mean(results[("bare", "", 1)])

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    kernel = platform.release()
    ncpu = os.cpu_count()
    today = datetime.date.today().isoformat()
    cmd = "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    lines = [
        '# MCP server latency: `execute_python("print(1)")` over HTTP',
        "",
        f"Measured {today} on {ncpu} cores, Linux {kernel}, interpreter `{py}`, server "
        f"`{os.path.relpath(a.bin, REPO)}` (`--max-concurrent 8`), once with `--python-start "
        f"fork` (the default, with `--python-pool {pool}`) and once with `--python-start fresh`, "
        "both running through the whole benchmark; load average at the end "
        f"{load} (the machine is shared with other work, which every side of each comparison "
        "sees alike).",
        "",
        "Command (from the repository root, after `cargo build --release -p sandlock-cli`):",
        "",
        "```sh",
        f".venv/bin/{cmd}",
        "```",
        "",
        "Each call is one HTTP POST of `tools/call` on a keep-alive connection, answered after the "
        "sandboxed interpreter exits. *bare* is `subprocess.run([python, '-c', 'print(1)'])` from "
        "the same number of threads, measured in the same run, alternating with the servers in "
        f"{a.rounds} rounds. Overhead = server latency minus bare latency at the same percentile. "
        "*session* is the 2025-11-25 revision (`Mcp-Session-Id`, SSE responses); *stateless* is a "
        "2026-07-28 request (no handshake, a new handler per request, the workspace passed back "
        "by its handle); both are sessions that make many calls (created once, used by every "
        "round). *first call* is a new session's first call, timed from the `initialize` "
        "request to the end of the session (`DELETE`): in fork mode its workspace is a ready "
        "one from the pool (`--python-pool`, see `crates/sandlock-mcp/src/pool.rs`), so the "
        "call forks; in fresh mode the workspace is made on the spot and the call starts an "
        "interpreter. After each first call at concurrency 1, and after each round at "
        "concurrency 8, the benchmark waits (untimed) until the pool is full again, so that its "
        "refill never overlaps another measurement; within a round at concurrency 8 the refill "
        "runs beside the calls being timed. *persistent cell* is a call with `persistent: true` "
        "in a session that made many: a cell of its persistent interpreter "
        "(`crates/sandlock-mcp/src/warm/persistent.rs`), run in that process, no interpreter "
        "or process started.",
        "",
        "*fork* (the default): each workspace starts one sandboxed interpreter, and its calls "
        "fork it (see `crates/sandlock-mcp/src/warm/zygote.rs`). *fresh*: every call starts a "
        "new sandboxed interpreter.",
        "",
        "| concurrency | python start | calls of | calls | bare p50 ms | bare p99 ms | MCP p50 ms "
        "| MCP p99 ms | overhead p50 ms | overhead p99 ms |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, start, mode, n, b50, b99, p50, p99, o50, o99 in rows:
        lines.append(
            f"| {c} | {start} | {mode} | {n} | {b50:.1f} | {b99:.1f} | {p50:.1f} | {p99:.1f} "
            f"| **{o50:+.1f}** | {o99:+.1f} |"
        )
    lines += [
        "",
        f"Goal: at most 5 ms p50 overhead. Bare interpreter mean at concurrency 1: "
        f"{mean_bare:.1f} ms. For comparison (DESIGN.md), the other implementation's stdio server "
        "adds about 290 ms per call and a subprocess-based wrapper about 50 ms.",
        "",
        "CPU per call, over the whole run (every kind of call together): the server process "
        f"{server_per_call['fork']:.2f} ms in fork mode and {server_per_call['fresh']:.2f} ms in "
        "fresh mode (HTTP, MCP, spawning or forking, supervising, and in fork mode refilling the "
        f"pool; the benchmark's own {POLLS['n']} requests of `/metrics` while it waited for the "
        f"pool, {per_poll:.2f} ms each, are not counted); the sandboxed processes "
        f"{interp_per_call['fork']:.2f} ms in fork mode (forked calls, persistent cells, and the "
        "start of every fork server, the pool's refills included) and "
        f"{interp_per_call['fresh']:.2f} ms in fresh mode, against {bare_cpu:.2f} ms for the "
        "bare interpreter. At concurrency 8 on 2 cores the calls queue for the CPU, so latency "
        "is about four times the CPU each call needs.",
        "",
    ]
    text = "\n".join(lines)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
