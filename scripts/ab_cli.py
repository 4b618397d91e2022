#!/usr/bin/env python3
"""Before/after benchmark of two sandlock CLI binaries on this machine, in one run.

    scripts/ab_cli.py BEFORE_BIN AFTER_BIN [--rounds N] [--out docs/perf/before-after.md]

Each workload runs under both binaries and bare, in alternating rounds (the order rotates every
round, so that drift of the machine does not pass for an effect of either binary); the report gives
medians, the after/before ratio and each against bare. Not a test: it only reports.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

WORKLOADS = [
    ("`/bin/true` (the spawn path)", ["/bin/true"], 60),
    ("`python3 -c pass` (interpreter start)", ["/usr/bin/python3", "-c", "pass"], 30),
    (
        "300,000 `getppid()` (the seccomp filter on every syscall)",
        ["/usr/bin/python3", "-c", "import os\nfor _ in range(300000): os.getppid()"],
        10,
    ),
    (
        "2,000 small files written and read back",
        [
            "/usr/bin/python3",
            "-c",
            (
                "import os\nd = os.environ['HOME']\nfor i in range(2000):\n"
                "    p = os.path.join(d, 'f%d' % i)\n    open(p, 'w').write('x' * 100)\n"
                "    open(p).read()\n    os.unlink(p)"
            ),
        ],
        10,
    ),
    (
        "20,000 `kill(getpid(), 0)` (signals: Landlock here, the supervisor before 6.12)",
        [
            "/usr/bin/python3",
            "-c",
            "import os\np = os.getpid()\nfor _ in range(20000): os.kill(p, 0)",
        ],
        10,
    ),
]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument(
        "--rounds", type=int, default=0, help="override each workload's round count"
    )
    ap.add_argument("--out", default="docs/perf/before-after.md")
    ap.add_argument("--label-before", default="before")
    ap.add_argument("--label-after", default="after")
    a = ap.parse_args()
    ws = tempfile.mkdtemp(prefix="sandlock-ab-")
    env = dict(os.environ, HOME=ws)
    rows = []
    for name, argv, rounds in WORKLOADS:
        rounds = a.rounds or rounds
        sides = {
            "before": [a.before, "run", "-p", "system", "-w", ws, "--"] + argv,
            "after": [a.after, "run", "-p", "system", "-w", ws, "--"] + argv,
            "bare": argv,
        }
        got: dict[str, list[float]] = {k: [] for k in sides}
        order = list(sides)
        for _ in range(2):  # warm-up
            for k in order:
                timed(sides[k], env)
        for r in range(rounds):
            for k in order[r % 3 :] + order[: r % 3]:
                got[k].append(timed(sides[k], env))
        med = {k: statistics.median(v) * 1000 for k, v in got.items()}
        row = (
            f"| {name} | {med['before']:.2f} ms | {med['after']:.2f} ms | "
            f"{med['after'] / med['before']:.3f}x | {med['before'] / med['bare']:.2f}x | "
            f"{med['after'] / med['bare']:.2f}x | {rounds} |"
        )
        print(row, flush=True)
        rows.append(row)
    uname = platform.uname()
    text = (
        "# Before and after: the same workloads under two sandlock builds\n\n"
        f"Produced by `scripts/bench.sh before-after` (`scripts/ab_cli.py`): {a.label_before} vs "
        f"{a.label_after}, release builds, on Linux {uname.release}, {os.cpu_count()} CPUs, "
        f"uid {os.getuid()}. Each workload runs under both binaries and bare, in rounds whose "
        "order rotates; medians. A ratio under 1.0 means the after build is faster.\n\n"
        "| workload | before | after | after / before | before / bare | after / bare | rounds |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    Path(a.out).write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
