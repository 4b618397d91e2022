#!/usr/bin/env python3
"""Network benchmark: redis-benchmark inside a sandbox with a host-name rule, against bare.

    scripts/bench_net.py SANDLOCK_BIN [--rounds N] [--requests N] [--out docs/perf/net.md]

A redis-server listens on 127.0.0.2 (``allowed.test`` in /etc/hosts, as scripts/test.sh sets it
up). redis-benchmark runs bare and inside ``sandlock run --net-allow allowed.test:PORT``, in
alternating rounds whose order rotates, on kept-alive connections (``-k 1``) and with a new
connection per request (``-k 0``, where every request pays a supervised connect). The report gives
the median requests per second of each side and their ratio, all measured in this run. Not a test:
it only reports.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HOST, NAME = "127.0.0.2", "allowed.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rps(cmd: list[str]) -> float:
    """Requests per second of one redis-benchmark run (its --csv output)."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        fields = [f.strip('"') for f in line.split(",")]
        if fields and fields[0] in ("PING_INLINE", "GET", "SET") and len(fields) > 1:
            return float(fields[1])
    raise SystemExit(f"no result from {' '.join(cmd)}:\n{out.stdout}\n{out.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("sandlock", help="the sandlock CLI to measure (a release build)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--out", default="docs/perf/net.md")
    a = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark"):
        if not shutil.which(tool):
            raise SystemExit(
                f"{tool} is missing (apt-get install redis-server redis-tools)"
            )
    if f"{HOST} {NAME}" not in Path("/etc/hosts").read_text():
        raise SystemExit(
            f"/etc/hosts lacks '{HOST} {NAME}' (scripts/test.sh adds it as root)"
        )
    bench = shutil.which("redis-benchmark")
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            HOST,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        sandbox = [
            a.sandlock,
            "run",
            "-p",
            "system",
            "--net-allow",
            f"{NAME}:{port}",
            "--",
        ]
        rows = []
        for keep in (1, 0):
            cmd = [
                bench,
                "-h",
                NAME,
                "-p",
                str(port),
                "-t",
                "get",
                "-c",
                "10",
                "-n",
                str(a.requests),
            ]
            cmd += ["-k", str(keep), "--csv"]
            sides: dict[str, list[float]] = {"bare": [], "sandlock": []}
            for r in range(a.rounds):
                order = ["bare", "sandlock"] if r % 2 == 0 else ["sandlock", "bare"]
                for side in order:
                    sides[side].append(rps(cmd if side == "bare" else sandbox + cmd))
                print(
                    f"-k {keep} round {r + 1}/{a.rounds}: bare {sides['bare'][-1]:.0f}/s, "
                    f"sandlock {sides['sandlock'][-1]:.0f}/s",
                    file=sys.stderr,
                )
            bare, inside = (
                statistics.median(sides["bare"]),
                statistics.median(sides["sandlock"]),
            )
            rows.append((keep, bare, inside, inside / bare))
    finally:
        server.terminate()
        server.wait()
    lines = [
        "## Network: redis-benchmark by host name",
        "",
        (
            f"Produced by `scripts/bench.sh net` (`scripts/bench_net.py`) on {time.strftime('%Y-%m-%d')}: "
            f"Linux {platform.release()}, {os.cpu_count()} CPUs, uid {os.getuid()}. redis-server on "
            f"{HOST}; `redis-benchmark -h {NAME} -t get -c 10 -n {a.requests}` bare and inside "
            f"`sandlock run -p system --net-allow {NAME}:PORT`, {a.rounds} alternating rounds, medians."
        ),
        "",
        "| connections | bare (req/s) | in sandlock (req/s) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for keep, bare, inside, ratio in rows:
        what = "kept alive (`-k 1`)" if keep else "new per request (`-k 0`)"
        lines.append(f"| {what} | {bare:,.0f} | {inside:,.0f} | {ratio:.2f}x |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
