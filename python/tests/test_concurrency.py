"""Threaded and asyncio hosts: one Sandbox shared by many threads, the GIL released during runs,
asyncio runs without a thread each, and cancellation that kills the sandbox."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import raise_fd_limit, threads_now

from sandlock import Sandbox


def test_sixteen_threads_share_one_sandbox(system: Sandbox) -> None:
    def work(t: int) -> list[bytes]:
        return [system.run(["echo", f"{t}-{i}"]).stdout for i in range(25)]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(work, range(16)))
    for t, outs in enumerate(results):
        assert outs == [f"{t}-{i}\n".encode() for i in range(25)]


def test_threads_share_a_sandbox_while_others_allocate(system: Sandbox) -> None:
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            blobs = [bytearray(1 << 20) for _ in range(16)]
            del blobs

    churners = [threading.Thread(target=churn) for _ in range(2)]
    for c in churners:
        c.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda i: system.run(["echo", str(i)]).stdout, range(200)))
    finally:
        stop.set()
        for c in churners:
            c.join()
    assert outs == [f"{i}\n".encode() for i in range(200)]


def test_run_releases_the_gil(system: Sandbox) -> None:
    ticks: list[float] = []
    stop = threading.Event()

    def counter() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    t = threading.Thread(target=counter)
    t.start()
    try:
        time.sleep(0.05)
        start = time.monotonic()
        r = system.run(["sleep", "1"])
        end = time.monotonic()
    finally:
        stop.set()
        t.join()
    assert r.success and end - start >= 1.0
    during = [x for x in ticks if start <= x <= end]
    gaps = [b - a for a, b in zip(during, during[1:])]
    # Had the GIL been held, the other thread would have stalled for the whole second.
    assert len(during) > 50, f"only {len(during)} ticks during a 1 s run"
    assert max(gaps) < 0.25, f"the other thread stalled for {max(gaps):.3f} s"


def test_two_hundred_concurrent_run_async_without_threads(system: Sandbox) -> None:
    raise_fd_limit(8192)

    async def main() -> tuple[float, int, int, list[int]]:
        before = threads_now()
        peak = before
        t0 = time.monotonic()
        tasks = [asyncio.ensure_future(system.run_async(["sleep", "1"])) for _ in range(200)]
        while not all(t.done() for t in tasks):
            peak = max(peak, threads_now())
            await asyncio.sleep(0.05)
        results = await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        return elapsed, before, peak, [0 if r.success else 1 for r in results]

    elapsed, before, peak, failures = asyncio.run(main())
    assert sum(failures) == 0
    assert elapsed < 3.0, f"200 concurrent runs of sleep 1 took {elapsed:.2f} s"
    assert peak == before, f"the thread count grew from {before} to {peak}"
    print(f"200 x run_async(sleep 1): {elapsed:.2f} s, threads {before} -> {peak}")


def test_run_async_results_and_limits(system: Sandbox) -> None:
    async def main() -> None:
        outs = await asyncio.gather(
            *(system.run_async(["sh", "-c", "cat; echo $0", str(i)], input=b">") for i in range(20))
        )
        assert [o.stdout for o in outs] == [f">{i}\n".encode() for i in range(20)]
        r = await system.run_async(["sleep", "10"], timeout=0.3)
        assert (r.reason, r.success) == ("timeout", False)
        assert r.duration < 1.0
        missing = await system.run_async(["no-such-program"])
        assert missing.error is not None and missing.error.stage == "execve"

    asyncio.run(main())


def test_cancelling_run_async_kills_the_sandbox(workspace: str) -> None:
    sb = Sandbox(presets=["system"], fs_writable=[workspace])
    pids_file = os.path.join(workspace, "pids")
    script = f"sleep 30 & echo $$ $! > {pids_file}; wait"

    async def main() -> None:
        task = asyncio.ensure_future(sb.run_async(["sh", "-c", script]))
        for _ in range(200):
            if _read(pids_file).strip():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    t0 = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - t0 < 5
    pids = [int(p) for p in _read(pids_file).split()]
    assert len(pids) == 2
    # SIGKILL is delivered at once, but dying takes the kernel a moment.
    deadline = time.monotonic() + 5
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _is_running(p)]
        time.sleep(0.01)
    assert alive == [], f"processes {alive} outlived the cancelled run"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _is_running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a killed process may linger as one under init)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_popen_streams_lines_as_they_come(system: Sandbox) -> None:
    script = "for i in 1 2 3; do echo step $i; sleep 0.3; done; printf tail; echo oops >&2"
    seen: list[tuple[float, bytes]] = []
    t0 = time.monotonic()
    with system.popen(["sh", "-c", script], timeout=10) as proc:
        assert proc.pid is not None
        for line in proc:
            seen.append((time.monotonic() - t0, line))
    r = proc.wait()
    assert [line for _, line in seen] == [b"step 1\n", b"step 2\n", b"step 3\n", b"tail"]
    # Lines arrive as they are written, not all at the end (they are 0.3 s apart).
    assert seen[-1][0] - seen[0][0] >= 0.7, seen
    assert r.success and r.stdout == b"" and r.stderr == b"oops\n"


def test_popen_wait_timeout_and_kill(system: Sandbox) -> None:
    import subprocess

    proc = system.popen(["sleep", "30"])
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.2)
    proc.kill()
    r = proc.wait(timeout=5)
    assert (r.reason, r.signal) == ("signaled", 9)


def test_popen_async_streams_lines(system: Sandbox) -> None:
    async def main() -> None:
        script = "for i in 1 2 3; do echo $i; sleep 0.3; done"
        t0 = time.monotonic()
        stamps: list[tuple[float, bytes]] = []
        async with system.popen_async(["sh", "-c", script]) as proc:
            async for line in proc:
                stamps.append((time.monotonic() - t0, line))
        r = await proc.wait()
        assert [line for _, line in stamps] == [b"1\n", b"2\n", b"3\n"]
        assert stamps[-1][0] - stamps[0][0] >= 0.5, stamps
        assert r.success

        # Leaving the block early kills the sandbox.
        async with system.popen_async(["sh", "-c", "echo first; sleep 30"]) as proc:
            async for line in proc:
                assert line == b"first\n"
                break
        r = await proc.wait()
        assert r.reason == "signaled", (r, r.stdout, r.stderr)

    asyncio.run(main())


def test_popen_async_can_be_read_and_awaited_at_once(system: Sandbox) -> None:
    async def main() -> None:
        proc = system.popen_async(["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done"])

        async def read() -> list[bytes]:
            return [line async for line in proc]

        lines, result = await asyncio.wait_for(asyncio.gather(read(), proc.wait()), 10)
        assert lines == [b"1\n", b"2\n", b"3\n"]
        assert result.success

    asyncio.run(main())


def test_a_signal_handler_interrupts_run_and_the_sandbox_dies(workspace: str) -> None:
    import signal

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    sb = Sandbox(presets=["system"], fs_writable=[workspace])
    pid_file = os.path.join(workspace, "pid")
    old = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            sb.run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"])
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, old)
    # Like Ctrl-C: the handler's exception comes out of run() at once...
    assert time.monotonic() - t0 < 2
    # ...and the sandboxed command does not outlive it.
    pid = int(_read(pid_file))
    deadline = time.monotonic() + 5
    while _is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _is_running(pid)


def test_a_forked_host_runs_its_parents_sandbox(system: Sandbox) -> None:
    # Warm: from its second run on the sandbox keeps a confined child waiting, which shares this
    # process's memory; a fork must not hand it runs (it would read the parent's memory).
    for _ in range(3):
        assert system.run(["/bin/true"]).success
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            results = [system.run(["echo", f"child {i}"]) for i in range(3)]
            ok = all(r.success for r in results)
            code = (
                0
                if ok and [r.stdout for r in results] == [f"child {i}\n".encode() for i in range(3)]
                else 1
            )
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's sandbox, and its waiting child, still serve the parent.
    assert system.run(["echo", "parent"]).stdout == b"parent\n"
