"""The seed reproduction: a real `mcp` client calls the seed app's sandboxed tool 20 times, 8 at
once, over Streamable HTTP served by uvicorn; every call must return the right output."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

for _module in ("mcp", "uvicorn", "pydantic"):
    try:
        importlib.import_module(_module)
    except ImportError as _e:  # pragma: no cover - depends on the environment
        pytest.skip(
            f"the seed reproduction needs {_module} (pip install -r python/requirements-dev.txt):"
            f" {_e}",
            allow_module_level=True,
        )

import uvicorn  # noqa: E402
from mcp import Client  # noqa: E402

SNIPPET = """
import hashlib, os
n = {n}
with open(f"out-{n}.txt", "w") as f:
    f.write(str(n * n))
print(hashlib.sha256(str(n).encode()).hexdigest(), open(f"out-{n}.txt").read(), os.getcwd())
"""


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    import seed_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(seed_app.app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()
        shutil.rmtree(seed_app.WORKSPACE, ignore_errors=True)


def expected(n: int, workspace: str) -> str:
    return f"{hashlib.sha256(str(n).encode()).hexdigest()} {n * n} {workspace}\n"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_mcp_client_calls_sandboxed_tool_20_times_8_at_once(server_url: str, mode: str) -> None:
    import os

    import seed_app

    workspace = os.path.realpath(seed_app.WORKSPACE)

    async def main() -> list[Any]:
        gate = asyncio.Semaphore(8)
        in_flight = 0
        peak = 0

        async with Client(server_url, mode=mode) as client:  # type: ignore[arg-type]

            async def call(n: int) -> Any:
                nonlocal in_flight, peak
                async with gate:
                    in_flight += 1
                    peak = max(peak, in_flight)
                    try:
                        return await client.call_tool("run_python", {"code": SNIPPET.format(n=n)})
                    finally:
                        in_flight -= 1

            results = await asyncio.gather(*(call(n) for n in range(20)))
        assert peak == 8
        return list(results)

    t0 = time.monotonic()
    results = asyncio.run(main())
    elapsed = time.monotonic() - t0
    for n, res in enumerate(results):
        assert not res.is_error, res
        out = res.structured_content
        assert out["success"] is True, out
        assert (out["reason"], out["exit_code"], out["stderr"]) == ("exited", 0, "")
        assert out["stdout"] == expected(n, workspace), out
    print(f"mcp ({mode}): 20 sandboxed tool calls, 8 at once, in {elapsed:.2f} s")


def test_mcp_tool_reports_confinement_and_limits(server_url: str, outside: str) -> None:
    secret = f"{outside}/secret"
    with open(secret, "w") as f:
        f.write("s3cret")
    code_outside = f"print(open({secret!r}).read())"
    code_bomb = "c = []\nwhile True: c.append(b'x' * (16 << 20))"

    async def main() -> tuple[Any, Any]:
        async with Client(server_url) as client:
            denied = await client.call_tool("run_python", {"code": code_outside})
            bomb = await client.call_tool("run_python", {"code": code_bomb})
        return denied.structured_content, bomb.structured_content

    denied, bomb = asyncio.run(main())
    assert denied["success"] is False
    assert "PermissionError" in denied["stderr"]
    assert "s3cret" not in denied["stdout"]
    assert (bomb["success"], bomb["reason"]) == (False, "memory")
