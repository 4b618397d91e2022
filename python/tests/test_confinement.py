"""Confinement seen through the Python API. Each claim is an attempt that must fail beside a
control that must succeed; the core's own suite attacks each rule in depth."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from sandlock import Sandbox


def test_write_outside_workspace_is_denied(workspace: str, outside: str) -> None:
    sb = Sandbox(presets=["system"], fs_writable=[workspace])
    denied = sb.run(["sh", "-c", f"echo x > {outside}/f"])
    assert denied.exit_code != 0
    assert b"Permission denied" in denied.stderr
    assert not os.path.exists(f"{outside}/f")
    # Control: the same write inside the workspace succeeds.
    allowed = sb.run(["sh", "-c", f"echo x > {workspace}/f"])
    assert allowed.success, allowed
    with open(f"{workspace}/f") as f:
        assert f.read() == "x\n"


def test_read_outside_policy_is_denied(workspace: str, outside: str) -> None:
    for d in (workspace, outside):
        with open(f"{d}/secret", "w") as f:
            f.write("s3cret")
    sb = Sandbox(presets=["system"], fs_readable=[workspace])
    denied = sb.run(["cat", f"{outside}/secret"])
    assert (denied.exit_code, denied.stdout) == (1, b"")
    assert sb.run(["cat", f"{workspace}/secret"]).stdout == b"s3cret"


def test_symlink_out_of_the_workspace_is_denied(workspace: str, outside: str) -> None:
    with open(f"{outside}/secret", "w") as f:
        f.write("s3cret")
    os.symlink(f"{outside}/secret", f"{workspace}/link")
    with open(f"{workspace}/plain", "w") as f:
        f.write("mine")
    sb = Sandbox(presets=["system"], fs_writable=[workspace])
    assert sb.run(["cat", f"{workspace}/link"]).stdout == b""
    assert sb.run(["cat", f"{workspace}/plain"]).stdout == b"mine"


def test_host_environment_is_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDLOCK_TEST_SECRET", "hunter2")
    r = Sandbox(presets=["system"]).run(["env"])
    assert b"hunter2" not in r.stdout and b"PATH=" in r.stdout
    # Control: passing it through by name works.
    passed = Sandbox(presets=["system"], pass_env=["SANDLOCK_TEST_SECRET"]).run(["env"])
    assert b"SANDLOCK_TEST_SECRET=hunter2" in passed.stdout


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on loopback that answers every connection with b"pong"."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"pong")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join()
        srv.close()


CONNECT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
print(s.recv(4).decode())
"""


def test_network_is_denied_by_default(listener: int) -> None:
    denied = Sandbox(presets=["system"]).run(["python3", "-c", CONNECT, str(listener)], timeout=20)
    assert denied.exit_code == 1
    assert b"PermissionError" in denied.stderr or b"Permission denied" in denied.stderr
    # Control: the same connection with the port allowed reaches the listener.
    allowed = Sandbox(presets=["system"], net_allow=[f":{listener}"]).run(
        ["python3", "-c", CONNECT, str(listener)], timeout=20
    )
    assert allowed.success, allowed.stderr
    assert allowed.stdout == b"pong\n"


def test_sandbox_cannot_signal_its_host(system: Sandbox) -> None:
    if "scope_signal" in system.not_enforced:
        pytest.skip("signal scoping needs Landlock ABI 6 (Linux 6.12); this kernel lacks it")
    denied = system.run(["sh", "-c", f"kill -0 {os.getpid()}"])
    assert denied.exit_code != 0
    # Control: signalling its own process works.
    assert system.run(["sh", "-c", "kill -0 $$"]).success
