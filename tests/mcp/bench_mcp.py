"""Benchmark (not a test): `execute_python("print(1)")` over Streamable HTTP against a bare
`python3 -c 'print(1)'`, both measured in the same run, at concurrency 1 and 8.

    .venv/bin/python tests/mcp/bench_mcp.py [--bin target/release/sandlock] [--calls 300]
        [--out docs/perf/mcp.md]

The client is a lean raw HTTP/1.1 client (httpx2, one keep-alive connection per worker), so that
what is measured is the server: transport, session lookup, the sandbox (Landlock + seccomp + the
supervisor) and the interpreter, not a client library's validation. Rounds of the baseline and of
the server alternate, so that drift in the machine affects both alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO, Server, default_python

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def parse(resp: httpx2.Response) -> dict:
    if resp.headers.get("content-type", "").startswith("application/json"):
        return resp.json()
    for line in resp.text.splitlines():
        if line.startswith("data:") and '"jsonrpc"' in line:
            return json.loads(line[5:])
    raise RuntimeError(f"no JSON-RPC message in {resp.text[:200]!r}")


class Session:
    """One MCP client connection: a 2025-11-25 session, or stateless 2026-07-28 requests."""

    def __init__(self, server: Server, mode: str):
        self.http = httpx2.Client(headers={**ACCEPT, **server.headers()}, timeout=60)
        self.url, self.mode, self.next_id, self.ws = server.url, mode, 1, None
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
            r = self.http.post(self.url, json=init)
            sid = r.headers["mcp-session-id"]
            self.http.headers.update({"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"})
            self.http.post(self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        else:
            self.http.headers.update(
                {
                    "mcp-protocol-version": "2026-07-28",
                    "mcp-method": "tools/call",
                    "mcp-name": "execute_python",
                }
            )

    def call(self, code: str) -> dict:
        self.next_id += 1
        params: dict = {"name": "execute_python", "arguments": {"code": code}}
        if self.mode == "stateless":
            if self.ws:  # the server-minted handle from the first result
                params["arguments"]["workspace"] = self.ws
            params["_meta"] = {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call", "params": params}
        out = parse(self.http.post(self.url, json=msg))
        sc = out["result"]["structuredContent"]
        self.ws = sc["workspace"]
        if sc["stdout"] != "1\n":
            raise RuntimeError(f"unexpected result: {out}")
        return sc

    def close(self) -> None:
        if self.mode == "session":
            self.http.delete(self.url)
        self.http.close()


def timed_parallel(n_workers: int, calls: int, one) -> list[float]:
    """Runs `calls` calls spread over `n_workers` threads; returns each call's latency (ms)."""
    lat: list[float] = []
    lock = threading.Lock()
    per = calls // n_workers

    def worker(fn) -> None:
        mine = []
        for _ in range(per):
            t0 = time.perf_counter()
            fn()
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            lat.extend(mine)

    fns = [one() for _ in range(n_workers)]
    threads = [threading.Thread(target=worker, args=(f,)) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat


def server_cpu_ms(pid: int) -> float:
    """User plus system CPU of the server process itself (its children not included), in ms."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(REPO / "target/release/sandlock"))
    ap.add_argument("--calls", type=int, default=320, help="calls per configuration")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    ap.add_argument("--out", default=str(REPO / "docs/perf/mcp.md"))
    a = ap.parse_args()
    os.environ["SANDLOCK_BIN"] = a.bin
    import conftest

    conftest.BIN = Path(a.bin)
    py = default_python()
    server = Server("--max-concurrent", "8", "--queue-depth", "64", "--log-level", "warn")
    sessions: list[Session] = []

    def bare_one():
        return lambda: subprocess.run([py, "-c", "print(1)"], capture_output=True, check=True)

    def mcp_one(mode: str):
        def make():
            s = Session(server, mode)
            sessions.append(s)
            return lambda: s.call("print(1)")

        return make

    results: dict[tuple[str, int], list[float]] = {}
    try:
        for c in (1, 8):  # warm-up: page cache, interpreter, first sandbox of each session
            timed_parallel(c, 16, bare_one)
            timed_parallel(c, 16, mcp_one("session"))
        per_round = max(8, a.calls // a.rounds)
        cpu0 = server_cpu_ms(server.proc.pid)
        for _ in range(a.rounds):
            for c in (1, 8):
                for name, fac in (
                    ("bare", bare_one),
                    ("session", mcp_one("session")),
                    ("stateless", mcp_one("stateless")),
                ):
                    results.setdefault((name, c), []).extend(timed_parallel(c, per_round, fac))
        mcp_calls = sum(len(v) for (name, _), v in results.items() if name != "bare")
        cpu_per_call = (server_cpu_ms(server.proc.pid) - cpu0) / mcp_calls
    finally:
        for s in sessions:
            s.close()
        server.stop()

    rows = []
    for c in (1, 8):
        b50, b99 = pct(results[("bare", c)], 50), pct(results[("bare", c)], 99)
        for name in ("session", "stateless"):
            xs = results[(name, c)]
            p50, p99 = pct(xs, 50), pct(xs, 99)
            rows.append((c, name, len(xs), b50, b99, p50, p99, p50 - b50, p99 - b99))
    mean_bare = statistics.mean(results[("bare", 1)])

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    kernel = platform.release()
    cpu = os.cpu_count()
    today = datetime.date.today().isoformat()
    cmd = "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    lines = [
        '# MCP server latency: `execute_python("print(1)")` over HTTP',
        "",
        f"Measured {today} on {cpu} cores, Linux {kernel}, interpreter `{py}`, server "
        f"`{os.path.relpath(a.bin, REPO)}` (`--max-concurrent 8`); load average at the end "
        f"{load} (the machine is shared with other work, which both sides of each comparison "
        "see alike).",
        "",
        "Command (from the repository root, after `cargo build --release -p sandlock-cli`):",
        "",
        "```sh",
        f".venv/bin/{cmd}",
        "```",
        "",
        "Each call is one HTTP POST of `tools/call` on a keep-alive connection, answered after the "
        "sandboxed interpreter exits. *bare* is `subprocess.run([python, '-c', 'print(1)'])` from "
        "the same number of threads, measured in the same run, alternating with the server in "
        f"{a.rounds} rounds. Overhead = server latency minus bare latency at the same percentile. "
        "*session* is the 2025-11-25 revision (`Mcp-Session-Id`, SSE responses); *stateless* is a "
        "2026-07-28 request (no handshake, a new handler per request, the workspace passed back "
        "by its handle).",
        "",
        "| concurrency | mode | calls | bare p50 ms | bare p99 ms | MCP p50 ms | MCP p99 ms "
        "| overhead p50 ms | overhead p99 ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, name, n, b50, b99, p50, p99, o50, o99 in rows:
        lines.append(
            f"| {c} | {name} | {n} | {b50:.1f} | {b99:.1f} | {p50:.1f} | {p99:.1f} "
            f"| **{o50:+.1f}** | {o99:+.1f} |"
        )
    lines += [
        "",
        f"Goal: at most 5 ms p50 overhead. Bare interpreter mean at concurrency 1: "
        f"{mean_bare:.1f} ms. For comparison (DESIGN.md), the other implementation's stdio server "
        "adds about 290 ms per call and a subprocess-based wrapper about 50 ms.",
        "",
        f"The server process itself used {cpu_per_call:.2f} ms of CPU per call (HTTP, MCP, "
        "spawning and supervising the sandbox; the interpreter's own CPU not included). At "
        "concurrency 8 on 2 cores, eight interpreters already queue for the CPU, so every "
        "millisecond the server (and the benchmark's own Python client threads) spends is added "
        "to the queue: that, not waiting, is the overhead there.",
        "",
    ]
    text = "\n".join(lines)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
