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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=str(REPO / "target/release/sandlock"))
    ap.add_argument("--calls", type=int, default=320, help="calls per configuration")
    ap.add_argument("--rounds", type=int, default=16, help="alternating rounds at concurrency 8")
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
        kinds = (
            ("bare", bare_one),
            ("session", mcp_one("session")),
            ("stateless", mcp_one("stateless")),
        )
        cpu0, kids0, bare0 = *server_cpu_ms(server.proc.pid), children_cpu_ms()
        # Concurrency 1: call by call, the three kinds in turn (rotating which goes first), so that
        # the machine's drift (other work on a shared VM) lands on all three alike.
        ones = [(name, fac()) for name, fac in kinds]
        for i in range(a.calls):
            for k in range(len(ones)):
                name, fn = ones[(i + k) % len(ones)]
                t0 = time.perf_counter()
                fn()
                results.setdefault((name, 1), []).append((time.perf_counter() - t0) * 1000)
        # Concurrency 8: short alternating rounds.
        per_round = max(8, a.calls // a.rounds)
        for _ in range(a.rounds):
            for name, fac in kinds:
                results.setdefault((name, 8), []).extend(timed_parallel(8, per_round, fac))
        mcp_calls = sum(len(v) for (name, _), v in results.items() if name != "bare")
        cpu1, kids1 = server_cpu_ms(server.proc.pid)
        cpu_per_call = (cpu1 - cpu0) / mcp_calls
        sandboxed_cpu = (kids1 - kids0) / mcp_calls
        bare_calls = sum(len(v) for (name, _), v in results.items() if name == "bare")
        bare_cpu = (children_cpu_ms() - bare0) / bare_calls
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
        "CPU per call, over the whole run: the server process "
        f"{cpu_per_call:.2f} ms (HTTP, MCP, spawning and supervising the sandbox); the sandboxed "
        f"interpreter {sandboxed_cpu:.2f} ms against {bare_cpu:.2f} ms for the bare one (the "
        "bootstrap that reads the code from descriptor 3, about 0.3 ms; confinement, about "
        "0.1 ms; at concurrency 8 also the CPU lost to more preemptions, see the notes). At "
        "concurrency 8 on 2 cores the eight interpreters queue for the CPU, so latency is about "
        "four times the CPU each call needs: every extra millisecond of CPU per call (server, "
        "confinement, and this benchmark's client) shows up as about 4 ms of overhead there. "
        "That is the gap at concurrency 8, not waiting.",
        "",
    ]
    text = "\n".join(lines)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
