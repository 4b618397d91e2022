#!/usr/bin/env python3
"""Network benchmark: clients inside a sandbox against the same clients bare, in one run.

    scripts/bench_net.py SANDLOCK_BIN [--rounds N] [--requests N] [--out docs/perf/net.md]

Three parts, each in alternating rounds whose order rotates, medians reported, each begun once
the connections of the part before have left TIME_WAIT:

- redis-benchmark by host name: a redis-server on 127.0.0.2 (``allowed.test`` in /etc/hosts, as
  scripts/test.sh sets it up); ``redis-benchmark -h allowed.test`` bare and inside
  ``sandlock run --net-allow allowed.test:PORT``, on kept-alive connections (``-k 1``) and with a
  new connection per request (``-k 0``, where every request pays a supervised connect).
- HTTP through the ACL proxy: nginx on 127.0.0.2 (plain and TLS, with a CA made for the run);
  ApacheBench (``ab``) bare, inside a sandbox that reaches nginx directly (``--net-allow``), and
  inside one whose requests go through sandlock's proxy (``--http-allow``, HTTPS intercepted and
  the upstream verified against the run's CA with ``--http-upstream-ca``).
- One connect: ``scripts/bench_connect.c`` connecting to a redis-server on 127.0.0.2, bare and
  inside ``sandlock run --net-allow allowed.test:PORT`` (blocking, non-blocking, refused), and the
  kernel's seccomp notification round trip by itself (the floor of a supervised connect).

Not a test: it only reports.
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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HOST, NAME = "127.0.0.2", "allowed.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_listening(port: int, what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.05)


def redis_rps(cmd: list[str]) -> float:
    """Requests per second of one redis-benchmark run (its --csv output)."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        fields = [f.strip('"') for f in line.split(",")]
        if fields and fields[0] in ("PING_INLINE", "GET", "SET") and len(fields) > 1:
            return float(fields[1])
    raise SystemExit(f"no result from {' '.join(cmd)}:\n{out.stdout}\n{out.stderr}")


def ab_rps(cmd: list[str]) -> float:
    """Requests per second of one ab run; every request must have succeeded."""
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    rps = failed = non2xx = None
    for line in out.stdout.splitlines():
        if line.startswith("Requests per second:"):
            rps = float(line.split()[3])
        elif line.startswith("Failed requests:"):
            failed = int(line.split()[2])
        elif line.startswith("Non-2xx responses:"):
            non2xx = int(line.split()[2])
    if rps is None or failed or non2xx:
        raise SystemExit(f"ab failed ({' '.join(cmd)}):\n{out.stdout}\n{out.stderr}")
    return rps


def settle() -> None:
    """Waits (up to 70 s) until the connections of the part before have left TIME_WAIT: with tens
    of thousands of them, every new connect searches longer for a free port, and a part would pay
    for the one before it."""
    deadline = time.monotonic() + 70
    while time.monotonic() < deadline:
        tw = 0
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                fields = line.split()
                tw = int(fields[fields.index("tw") + 1])
        if tw < 1000:
            return
        time.sleep(1)


def rounds(
    n: int, sides: dict[str, Callable[[], float]], label: str, unit: str = "/s"
) -> dict[str, float]:
    """Runs every side once per round, in an order that rotates; the median of each side."""
    got: dict[str, list[float]] = {s: [] for s in sides}
    names = list(sides)
    for r in range(n):
        order = names[r % len(names) :] + names[: r % len(names)]
        for side in order:
            got[side].append(sides[side]())
        shown = ", ".join(f"{s} {got[s][-1]:.1f}{unit}" for s in names)
        print(f"{label} round {r + 1}/{n}: {shown}", file=sys.stderr)
    return {s: statistics.median(v) for s, v in got.items()}


def connect_part(a: argparse.Namespace) -> list[str]:
    """What one connect costs (scripts/bench_connect.c), bare and in a sandbox, and what the
    kernel's seccomp notification costs here by itself."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise SystemExit("a C compiler is missing (apt-get install gcc)")
    src = Path(__file__).with_name("bench_connect.c")
    port, refused = free_port(), free_port()
    with tempfile.TemporaryDirectory() as t:
        os.chmod(t, 0o755)
        exe = str(Path(t) / "bench_connect")
        subprocess.run([cc, "-O2", "-o", exe, str(src)], check=True)

        def one(cmd: list[str]) -> float:
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0 or not out.stdout.split():
                raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
            return float(out.stdout.split()[-1])

        server = subprocess.Popen(
            ["redis-server", "--bind", HOST, "--port", str(port), "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        sandbox = [a.sandlock, "run", "-p", "system", "-r", t]
        sandbox += ["--net-allow", f"{NAME}:{port}", "--"]
        n = str(a.connects)
        rows = []
        try:
            wait_listening(port, "redis-server")
            cases = (
                ("blocking, to a listening port", ["connect", n, str(port)]),
                ("non-blocking, to a listening port", ["connect", n, str(port), "nb"]),
                (
                    "refused (outside: nothing listens; inside: the policy)",
                    ["denied", n, str(refused)],
                ),
            )
            for what, args in cases:
                m = rounds(
                    a.rounds,
                    {
                        "bare": lambda x=args: one([exe, *x]),
                        "sandlock": lambda x=args: one(sandbox + [exe, *x]),
                    },
                    f"connect {what}",
                    " us",
                )
                rows.append(
                    f"| {what} | {m['bare']:.1f} | {m['sandlock']:.1f} | "
                    f"+{m['sandlock'] - m['bare']:.1f} |"
                )
        finally:
            server.terminate()
            server.wait()
        kernel = {}
        for addfd in (0, 1):
            for sync in (0, 1):
                runs = [
                    one([exe, "notify", "20000", str(addfd), str(sync)])
                    for _ in range(a.rounds)
                ]
                kernel[addfd, sync] = statistics.median(runs)
    return [
        "### One connect",
        "",
        (
            f"`scripts/bench_connect.c`: {a.connects} connects to redis-server on {HOST} (each "
            "closed at once; non-blocking ones first wait until writable), bare and inside "
            f"`sandlock run -p system --net-allow {NAME}:PORT`; the time spent in `connect()`, "
            f"mean per call, median of {a.rounds} alternating rounds."
        ),
        "",
        "| connect | bare (us) | in sandlock (us) | added (us) |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        (
            "The kernel's part, measured by the same program acting as its own supervisor (a "
            "child's `getppid` notified and answered; median of "
            f"{a.rounds} runs of 20,000 calls):"
        ),
        "",
        "| answer | plain wake-up (us) | `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (us) |",
        "|---|---:|---:|",
        f"| reply only | {kernel[0, 0]:.1f} | {kernel[0, 1]:.1f} |",
        f"| install a descriptor (`ADDFD`), then reply | {kernel[1, 0]:.1f} | {kernel[1, 1]:.1f} |",
        "",
        (
            "sandlock sets the synchronous wake-up (Linux 6.6 and later). No connect is continued "
            "(docs/security.md), so an allowed one is always the second row, and more: the "
            "supervisor reads the address, reads the descriptor's flags from `/proc` (a kept "
            "`fdinfo` file, one `pread`), makes and connects a socket of its own, and installs it "
            "in place of the sandbox's, whose own `socket()` was made for nothing. The handshake "
            "and, later, the FIN are then the supervisor's work instead of the client's, and in "
            "`perf` the same connect costs it about 1.7 times what it costs a bare client (run "
            "between two hand-offs, on a CPU that has just switched tasks). A refused connect is "
            "the first row plus reading the address and the flags."
        ),
    ]


def redis_part(a: argparse.Namespace) -> list[str]:
    bench = shutil.which("redis-benchmark") or "redis-benchmark"
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
    rows = []
    try:
        wait_listening(port, "redis-server")
        sandbox = [
            a.sandlock,
            "run",
            "-p",
            "system",
            "--net-allow",
            f"{NAME}:{port}",
            "--",
        ]
        for keep in (1, 0):
            cmd = [bench, "-h", NAME, "-p", str(port), "-t", "get", "-c", "10"]
            cmd += ["-n", str(a.requests), "-k", str(keep), "--csv"]
            m = rounds(
                a.rounds,
                {
                    "bare": lambda c=cmd: redis_rps(c),
                    "sandlock": lambda c=cmd: redis_rps(sandbox + c),
                },
                f"redis -k {keep}",
            )
            what = "kept alive (`-k 1`)" if keep else "new per request (`-k 0`)"
            ratio = m["sandlock"] / m["bare"]
            rows.append(
                f"| {what} | {m['bare']:,.0f} | {m['sandlock']:,.0f} | {ratio:.2f}x |"
            )
    finally:
        server.terminate()
        server.wait()
    return [
        "### redis-benchmark by host name",
        "",
        (
            f"`redis-benchmark -h {NAME} -t get -c 10 -n {a.requests}` against redis-server on "
            f"{HOST}, bare and inside `sandlock run -p system --net-allow {NAME}:PORT`, "
            f"{a.rounds} alternating rounds, medians."
        ),
        "",
        "| connections | bare (req/s) | in sandlock (req/s) | ratio |",
        "|---|---:|---:|---:|",
        *rows,
    ]


def make_pki(d: Path) -> None:
    """A CA and a certificate for allowed.test signed by it (openssl)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=bench CA",
    )
    openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        f"/CN={NAME}",
    )
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{NAME}\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )


def http_part(a: argparse.Namespace) -> list[str]:
    d = Path(tempfile.mkdtemp(prefix="sandlock-bench-http-"))
    make_pki(d)
    plain, tls = free_port(), free_port()
    (d / "nginx.conf").write_text(
        f"""daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    server {{
        listen {HOST}:{plain};
        listen {HOST}:{tls} ssl;
        ssl_certificate {d}/srv.pem;
        ssl_certificate_key {d}/srv.key;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
    )
    server = subprocess.Popen(
        ["nginx", "-p", str(d), "-c", str(d / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        wait_listening(plain, "nginx")
        wait_listening(tls, "nginx (TLS)")
        for scheme, port in (("http", plain), ("https", tls)):
            direct = [
                a.sandlock,
                "run",
                "-p",
                "system",
                "--net-allow",
                f"{NAME}:{port}",
                "--",
            ]
            proxied = [
                a.sandlock,
                "run",
                "-p",
                "system",
                "--http-allow",
                f"GET {NAME}:{port}/*",
            ]
            proxied += ["--http-upstream-ca", str(d / "ca.pem"), "--"]
            for keep in (True, False):
                cmd = ["ab", "-q", "-c", "10", "-n", str(a.requests)]
                cmd += (["-k"] if keep else []) + [f"{scheme}://{NAME}:{port}/"]
                m = rounds(
                    a.rounds,
                    {
                        "bare": lambda c=cmd: ab_rps(c),
                        "direct": lambda c=cmd, p=direct: ab_rps(p + c),
                        "proxy": lambda c=cmd, p=proxied: ab_rps(p + c),
                    },
                    f"{scheme} {'keep-alive' if keep else 'new connections'}",
                )
                what = "kept alive (`-k`)" if keep else "new per request"
                rows.append(
                    f"| {scheme.upper()} | {what} | {m['bare']:,.0f} | {m['direct']:,.0f} | "
                    f"{m['proxy']:,.0f} | {m['proxy'] / m['bare']:.2f}x | "
                    f"{m['proxy'] / m['direct']:.2f}x |"
                )
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(d, ignore_errors=True)
    return [
        "### HTTP through the ACL proxy",
        "",
        (
            f"`ab -c 10 -n {a.requests}` against nginx on {HOST} (a 3-byte answer), bare; inside "
            f"`sandlock run -p system --net-allow {NAME}:PORT` (direct); and inside `sandlock run "
            f"-p system --http-allow 'GET {NAME}:PORT/*'` (every request decided by the proxy; "
            "HTTPS intercepted with the sandbox's CA and verified upstream against the run's CA). "
            f"{a.rounds} rounds in rotating order, medians."
        ),
        "",
        (
            "| protocol | connections | bare (req/s) | direct (req/s) | through the proxy (req/s) "
            "| proxy / bare | proxy / direct |"
        ),
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
    ]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("sandlock", help="the sandlock CLI to measure (a release build)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument(
        "--connects",
        type=int,
        default=1000,
        help="connects per round of the connect part",
    )
    ap.add_argument("--out", default="docs/perf/net.md")
    a = ap.parse_args()
    for tool in ("redis-server", "redis-benchmark", "nginx", "ab", "openssl"):
        if not shutil.which(tool):
            raise SystemExit(
                f"{tool} is missing (apt-get install redis-server redis-tools nginx-light "
                "apache2-utils openssl)"
            )
    if f"{HOST} {NAME}" not in Path("/etc/hosts").read_text():
        raise SystemExit(
            f"/etc/hosts lacks '{HOST} {NAME}' (scripts/test.sh adds it as root)"
        )
    head = (
        f"Produced by `scripts/bench.sh net` (`scripts/bench_net.py`) on "
        f"{time.strftime('%Y-%m-%d')}: Linux {platform.release()}, {os.cpu_count()} CPUs, "
        f"uid {os.getuid()}, niceness {os.nice(0)}, load average {os.getloadavg()[0]:.1f} at the "
        "start."
    )
    lines = ["## Network", "", head, ""]
    for part in (redis_part, http_part, connect_part):
        settle()
        lines += [*part(a), ""]
    Path(a.out).write_text("\n".join(lines).rstrip() + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
