"""A/B comparison (not a test): two or more `sandlock` binaries serving `execute_python("print(1)")`
side by side, against bare `python3 -c 'print(1)'`, in alternating rounds of the same run.

    .venv/bin/python tests/mcp/ab_servers.py OLD_BIN NEW_BIN [--rounds 16] [--concurrency 8]

Use it to decide whether a change to the server or the core helps: on a shared 2-core VM two runs
of `bench_mcp.py` minutes apart differ by more than most changes do, while rounds that alternate
within one run see the same machine. For each kind it prints p50 latency (and the difference from
bare python), and the CPU per call of the server process and of the sandboxed interpreters.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import conftest
from bench_mcp import Session, children_cpu_ms, pct, server_cpu_ms, timed_parallel
from conftest import Server, default_python


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bins", nargs="+", help="sandlock binaries to compare")
    ap.add_argument("--rounds", type=int, default=16, help="alternating rounds")
    ap.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    a = ap.parse_args()
    c = a.concurrency
    py = default_python()
    servers: dict[str, Server] = {}
    try:
        for i, b in enumerate(a.bins):
            if not Path(b).is_file():
                sys.exit(f"ab_servers: {b}: no such binary")
            conftest.BIN = Path(b)
            servers[f"{i}:{b}"] = Server(
                "--max-concurrent", str(c), "--queue-depth", "64", "--log-level", "warn"
            )

        def bare():
            return lambda: subprocess.run([py, "-c", "print(1)"], capture_output=True, check=True)

        def served(name: str):
            def make():
                s = Session(servers[name], "session")
                return lambda: s.call("print(1)")

            return make

        kinds = [("bare", bare)] + [(name, served(name)) for name in servers]
        lat: dict[str, list[float]] = {k: [] for k, _ in kinds}
        cpu = {k: [0.0, 0.0] for k, _ in kinds}
        for _, make in kinds:  # warm-up
            timed_parallel([make() for _ in range(c)], 2 * c)
        for r in range(a.rounds):
            print(f"round {r + 1}/{a.rounds}", file=sys.stderr, end="\r")
            for name, make in kinds if r % 2 == 0 else kinds[::-1]:
                if name == "bare":
                    k0 = children_cpu_ms()
                    lat[name] += timed_parallel([make() for _ in range(c)], 4 * c)
                    cpu[name][1] += children_cpu_ms() - k0
                else:
                    s0, k0 = server_cpu_ms(servers[name].proc.pid)
                    lat[name] += timed_parallel([make() for _ in range(c)], 4 * c)
                    s1, k1 = server_cpu_ms(servers[name].proc.pid)
                    cpu[name][0] += s1 - s0
                    cpu[name][1] += k1 - k0
        print(file=sys.stderr)
        b50 = pct(lat["bare"], 50)
        print(f"concurrency {c}, {a.rounds} rounds of {4 * c} calls per kind")
        for name, _ in kinds:
            n = len(lat[name])
            p50 = pct(lat[name], 50)
            print(
                f"{name:>24}  p50 {p50:6.1f} ms ({p50 - b50:+5.1f})  server CPU "
                f"{cpu[name][0] / n:5.2f} ms/call  interpreter CPU {cpu[name][1] / n:6.2f} ms/call"
            )
    finally:
        for s in servers.values():
            s.stop()


if __name__ == "__main__":
    main()
