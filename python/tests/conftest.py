"""Shared fixtures. Tests run against the real kernel, directly or under tests/podsim (uid 1000,
read-only root, writable /tmp), so every scratch path lives under /tmp."""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from sandlock import Sandbox


def threads_now() -> int:
    """Native threads of this process (what the kernel sees, not just Python's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError("no Threads: line in /proc/self/status")


def raise_fd_limit(want: int) -> None:
    """Concurrency tests hold a few descriptors per run; lift the soft limit toward the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@pytest.fixture
def workspace() -> Iterator[str]:
    """A fresh directory under /tmp (writable under podsim too)."""
    d = tempfile.mkdtemp(prefix="sandlock-py-ws-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def outside() -> Iterator[str]:
    """Another directory under /tmp that no policy grants."""
    d = tempfile.mkdtemp(prefix="sandlock-py-outside-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def system() -> Sandbox:
    """A sandbox that may only run the system's programs."""
    return Sandbox(presets=["system"])


@pytest.fixture(autouse=True)
def _no_leaked_children() -> Iterator[None]:
    """Every test must leave no child process behind: sandlock reaps its own."""
    yield
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return
    assert pid == 0, f"a zombie child {pid} was left behind"
