#!/usr/bin/env python3
"""What starting sandlock costs: the CLI against `/bin/true`, measured side by side in one run.

    scripts/bench_startup.py STATIC_BIN [--dynamic DYNAMIC_BIN] [--rounds N] [--out FILE.md]

STATIC_BIN is the release binary as scripts/build-release.sh makes it (static, musl); the
optional DYNAMIC_BIN is a plain `cargo build --release` (glibc, dynamically linked), measured for
comparison. Every command runs once per round, in an order that reverses every round, so that
drift of the machine (it is shared) hits every command alike. Each run is timed on the wall clock
and by the CPU time the kernel accounts to it and to the children it reaped (`wait4`'s rusage:
for `sandlock run`, the sandboxed `/bin/true` too); the tables give medians and their ratios to
`/bin/true` in the same run. Goal: `sandlock run -p system -- /bin/true` within 2.0x of
`/bin/true` (issue 16). If hyperfine is installed, the same pair is timed with it too, as the
issue first measured it. Not a test: it only reports.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

GOAL = 2.0


def once(argv: list[str], devnull: int) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (the process and the children it reaped) and the exit status."""
    t0 = time.perf_counter()
    pid = os.posix_spawn(
        argv[0],
        argv,
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0),
            (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2),
        ],
    )
    _, status, ru = os.wait4(pid, 0)
    return time.perf_counter() - t0, ru.ru_utime + ru.ru_stime, status


def measure(commands: list[list[str]], rounds: int) -> list[tuple[float, float]]:
    """Median wall and CPU seconds of each command, interleaved round by round."""
    devnull = os.open(os.devnull, os.O_RDWR)
    wall: list[list[float]] = [[] for _ in commands]
    cpu: list[list[float]] = [[] for _ in commands]
    order = list(range(len(commands)))
    for i in order:
        for _ in range(10):
            once(commands[i], devnull)
    for r in range(rounds):
        for i in order if r % 2 == 0 else reversed(order):
            w, c, status = once(commands[i], devnull)
            if status != 0:
                sys.exit(f"{' '.join(commands[i])} failed (wait status {status})")
            wall[i].append(w)
            cpu[i].append(c)
    os.close(devnull)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu)]


def hyperfine(base: list[str], ours: list[str], runs: int) -> str | None:
    """The issue's own measurement (hyperfine, one command after the other), or None."""
    exe = shutil.which("hyperfine")
    if not exe:
        return None
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [
                exe,
                "-N",
                "--warmup",
                "50",
                "--runs",
                str(runs),
                "--export-json",
                out.name,
            ]
            + [" ".join(base), " ".join(ours)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(out.name) as f:
            results = json.load(f)["results"]
    (b, o) = (results[0]["mean"], results[1]["mean"])
    return (
        f"hyperfine (`-N`, {runs} runs each, one command after the other), means: "
        f"`/bin/true` {b * 1e3:.3f} ms, `sandlock run -p system -- /bin/true` {o * 1e3:.3f} ms, "
        f"**{o / b:.2f}x**."
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "static", help="the static release binary (scripts/build-release.sh)"
    )
    ap.add_argument("--dynamic", help="a dynamically linked build, for comparison")
    ap.add_argument("--rounds", type=int, default=500)
    ap.add_argument("--out", default="docs/perf/startup.md")
    a = ap.parse_args()

    true = ["/bin/true"]
    rows: list[tuple[str, list[str]]] = [("`/bin/true` (the baseline)", true)]
    builds = [("static", a.static)] + ([("dynamic", a.dynamic)] if a.dynamic else [])
    for label, binary in builds:
        rows += [
            (
                f"`sandlock run -p system -- /bin/true` ({label})",
                [binary, "run", "-p", "system", "--", "/bin/true"],
            ),
            (
                f"`sandlock --version` ({label}): starting the binary alone",
                [binary, "--version"],
            ),
            (
                f"`sandlock run -p system --print-policy` ({label}): start, flags, policy",
                [binary, "run", "-p", "system", "--print-policy"],
            ),
        ]
    medians = measure([argv for _, argv in rows], a.rounds)
    base_wall, base_cpu = medians[0]
    run_wall, _ = medians[1]
    ratio = run_wall / base_wall
    cross = hyperfine(true, rows[1][1], 300)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Starting sandlock: the CLI against `/bin/true`",
        "",
        "Produced by `scripts/bench.sh startup` (`scripts/bench_startup.py`). Every command runs",
        f"once per round, {a.rounds} rounds, in an order that reverses every round; medians. Wall",
        "is the time from spawn to reaped; CPU is what the kernel accounted to the process and the",
        "children it reaped (for `sandlock run`, the sandboxed `/bin/true` too). The static build",
        "is what `scripts/build-release.sh` makes; where time goes, and why, is in",
        "`docs/perf/startup-breakdown.md`.",
        "",
        (
            f"- Date: {when}; machine: {os.cpu_count()} CPUs, Linux {platform.release()},"
            f" uid {os.getuid()}, load average {load} at the end (the machine is shared)"
        ),
        (
            f"- Goal: `sandlock run -p system -- /bin/true` (static) within {GOAL}x of"
            f" `/bin/true` on the wall clock: **{ratio:.2f}x,"
            f" {'met' if ratio <= GOAL else 'not met'}**"
        ),
        "",
        "| command | wall | vs `/bin/true` | CPU | vs `/bin/true` |",
        "|---|---|---|---|---|",
    ]
    for (name, _), (w, c) in zip(rows, medians):
        lines.append(
            f"| {name} | {w * 1e3:.3f} ms | {w / base_wall:.2f}x | {c * 1e3:.3f} ms"
            f" | {c / base_cpu:.2f}x |"
        )
    if cross:
        lines += ["", cross]
    lines.append("")
    text = "\n".join(lines)
    print(text)
    with open(a.out, "w") as f:
        f.write(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
