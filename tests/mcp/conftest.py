"""Fixtures that start the real `sandlock mcp` binary and connect real MCP clients to it.

Environment:
  SANDLOCK_BIN          the sandlock binary (default: target/debug/sandlock)
  SANDLOCK_MCP_PODSIM   1 = run the server under the restricted-pod harness (target/debug/podsim,
                        needs root); the clients stay outside it
  SANDLOCK_MCP_PYTHON   interpreter for execute_python (default: the repo's .venv, else python3)

Servers get `--tsx tests/mcp/node_modules/tsx` when `npm ci` installed it, so that execute_code's
typescript has a runner whatever the host's Node.js.

A test that needs something missing is skipped with the reason, never passed silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SANDLOCK_BIN", REPO / "target/debug/sandlock"))
PODSIM = REPO / "target/debug/podsim"
TSX = Path(__file__).resolve().parent / "node_modules/tsx"
UNDER_PODSIM = os.environ.get("SANDLOCK_MCP_PODSIM") == "1"


def default_python() -> str:
    if "SANDLOCK_MCP_PYTHON" in os.environ:
        return os.environ["SANDLOCK_MCP_PYTHON"]
    venv = REPO / ".venv/bin/python"
    return str(venv) if venv.exists() else shutil.which("python3") or "python3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrap(argv: list[str]) -> list[str]:
    """Prefixes podsim when the suite runs under the restricted-pod harness."""
    return [str(PODSIM), "--", *argv] if UNDER_PODSIM else argv


class Server:
    """One `sandlock mcp` process on a free loopback port."""

    def __init__(
        self,
        *args: str,
        token: str | None = "auto",
        env: dict[str, str] | None = None,
        tsx: bool = True,
        port: int | None = None,
    ):
        if not BIN.exists():
            pytest.skip(f"skipped: {BIN} not built (run `cargo build -p sandlock-cli`)")
        if UNDER_PODSIM and (os.geteuid() != 0 or not PODSIM.exists()):
            pytest.skip("skipped: SANDLOCK_MCP_PODSIM=1 needs root and target/debug/podsim")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_urlsafe(24) if token == "auto" else token
        self.dir = Path(tempfile.mkdtemp(prefix="sandlock-mcp-test-"))
        # Under podsim the server runs as uid 1000 and must be able to create the root itself.
        os.chmod(self.dir, 0o777)
        self.root = self.dir / "ws"
        self.log_path = self.dir / "server.log"
        argv = [
            str(BIN),
            "mcp",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--workspace-root",
            str(self.root),
            "--python",
            default_python(),
            "--log-format",
            "json",
            *(["--tsx", str(TSX)] if tsx and TSX.exists() else []),
            *args,
        ]
        argv = wrap(argv)
        self.env = {k: v for k, v in os.environ.items() if k != "SANDLOCK_MCP_TOKEN"}
        if self.token:
            self.env["SANDLOCK_MCP_TOKEN"] = self.token
        self.env.update(env or {})
        self.argv = argv
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sandlock mcp exited with {self.proc.returncode}:\n{self.logs()}"
                )
            try:
                if httpx2.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sandlock mcp did not come up:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def signal(self, sig: int = signal.SIGTERM) -> None:
        # Under podsim the server is podsim's exec'd process, so the pid is the server's.
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode

    def metrics(self) -> str:
        return httpx2.get(self.base + "/metrics", timeout=5).text

    def workspaces(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()) if self.root.exists() else []


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@contextlib.asynccontextmanager
async def connect(
    server: Server, mode: str = "legacy", token: str | None = None, terminate: bool = True
) -> AsyncIterator[Client]:
    """A high-level Python `mcp` client; mode is "legacy" (2025-11-25) or "2026-07-28"."""
    headers = (
        {"Authorization": f"Bearer {token or server.token}"} if (token or server.token) else {}
    )
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120))
    transport = streamable_http_client(server.url, http_client=http, terminate_on_close=terminate)
    async with http, Client(transport, mode=mode) as c:
        yield c


def run(coro):  # a tiny sync bridge: pytest here has no asyncio plugin
    return asyncio.run(coro)


def call(server: Server, mode: str, *calls: tuple[str, dict]) -> list:
    """Runs tool calls in one session (or, stateless, threading the workspace handle through);
    returns their results, then the protocol revision."""

    async def go():
        out = []
        ws = None
        async with connect(server, mode) as c:
            for name, args in calls:
                if mode == "2026-07-28" and ws and "workspace" not in args:
                    args = {**args, "workspace": ws}
                r = await c.call_tool(name, args)
                if r.structured_content and r.structured_content.get("workspace"):
                    ws = r.structured_content["workspace"]
                out.append(r)
            out.append(c.session.protocol_version)
        return out

    return run(go())
