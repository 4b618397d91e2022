"""HTTP-level behaviour of `sandlock mcp`: authentication, Host and Origin checks, health,
readiness and metrics, the busy answer, and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time

import httpx2
import pytest

from conftest import BIN, Server, connect, run

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def post(server: Server, headers: dict[str, str]) -> httpx2.Response:
    return httpx2.post(server.url, json=INIT, headers={**ACCEPT, **headers}, timeout=10)


def test_missing_token_gets_401_with_a_challenge(server: Server) -> None:
    r = post(server, {})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "missing bearer token" in r.json()["error"]
    assert post(server, server.headers()).status_code == 200  # control


def test_wrong_token_gets_401_invalid_token(server: Server) -> None:
    for value in (f"Bearer {server.token}x", f"Bearer {server.token[:-1]}", "Basic abc", "Bearer"):
        r = post(server, {"Authorization": value})
        assert r.status_code == 401, value
    assert (
        'error="invalid_token"'
        in post(server, {"Authorization": "Bearer nope"}).headers["www-authenticate"]
    )


def test_bad_origin_gets_403_and_allowed_origins_pass(server: Server) -> None:
    r = post(server, {**server.headers(), "Origin": "http://evil.example"})
    assert r.status_code == 403
    for ok in ("http://localhost:3000", "http://127.0.0.1:6274"):
        assert post(server, {**server.headers(), "Origin": ok}).status_code == 200, ok
    assert post(server, server.headers()).status_code == 200  # no Origin: non-browser client


def test_extra_allowed_origin_and_host_are_accepted() -> None:
    s = Server("--allowed-origin", "https://chat.example.com", "--allowed-host", "mcp.internal")
    try:
        assert post(s, {**s.headers(), "Origin": "https://chat.example.com"}).status_code == 200
        assert post(s, {**s.headers(), "Origin": "https://evil.example.com"}).status_code == 403
        assert post(s, {**s.headers(), "Host": "mcp.internal"}).status_code == 200
        assert post(s, {**s.headers(), "Host": "evil.example"}).status_code == 403
    finally:
        s.stop()


def test_host_check_can_be_left_to_a_gateway_but_origin_is_still_checked() -> None:
    s = Server("--allowed-host", "*")
    try:
        assert post(s, {**s.headers(), "Host": "anything.example"}).status_code == 200
        assert post(s, {**s.headers(), "Origin": "http://evil.example"}).status_code == 403
    finally:
        s.stop()


def test_foreign_host_header_gets_403(server: Server) -> None:
    assert post(server, {**server.headers(), "Host": "attacker.example:8080"}).status_code == 403
    assert post(server, {**server.headers(), "Host": f"localhost:{server.port}"}).status_code == 200


def test_non_loopback_listener_without_a_token_refuses_to_start() -> None:
    if not BIN.exists():
        pytest.skip(f"skipped: {BIN} not built")
    r = subprocess.run(
        [str(BIN), "mcp", "--listen", "0.0.0.0:0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode != 0
    assert "without authentication" in r.stderr and "--auth-token-file" in r.stderr


def test_health_readiness_and_metrics(server: Server) -> None:
    assert httpx2.get(server.base + "/healthz").text == "ok\n"
    r = httpx2.get(server.base + "/readyz", timeout=30)
    assert r.status_code == 200 and r.text.startswith("ready"), r.text

    async def go():
        async with connect(server) as c:
            await c.call_tool("execute_shell", {"command": "exit 0"})
            await c.call_tool("execute_shell", {"command": "sleep 5", "timeout_s": 0.5})

    run(go())
    m = server.metrics()
    assert 'sandlock_mcp_calls_total{tool="execute_shell",outcome="exited"}' in m
    assert 'sandlock_mcp_calls_total{tool="execute_shell",outcome="timeout"}' in m
    assert 'sandlock_mcp_call_duration_seconds_bucket{tool="execute_shell",le="+Inf"}' in m
    for gauge in ("active_sandboxes", "queue_depth", "workspaces"):
        assert f"\nsandlock_mcp_{gauge} " in m


def test_busy_past_the_queue_depth_and_the_server_stays_up() -> None:
    s = Server("--max-concurrent", "1", "--queue-depth", "1")
    try:

        async def one(i: int):
            async with connect(s) as c:
                await asyncio.sleep(0.3 * (i > 0))  # the first call takes the slot first
                return await c.call_tool("execute_shell", {"command": "sleep 1.5; echo done"})

        async def go():
            return await asyncio.gather(*(one(i) for i in range(4)))

        results = run(go())
        reasons = sorted(r.structured_content["reason"] for r in results)
        assert reasons == ["busy", "busy", "exited", "exited"], reasons
        busy = next(r for r in results if r.structured_content["reason"] == "busy")
        assert busy.is_error and busy.content[0].text.startswith("server busy")
        assert 'outcome="busy"} 2' in s.metrics()
        # Control: once the load is gone, calls run again.
        (r,) = run(asyncio.wait_for(_single(s), 30))
        assert r.structured_content["stdout"] == "ok\n"
    finally:
        s.stop()


async def _single(s: Server) -> list:
    async with connect(s) as c:
        return [await c.call_tool("execute_shell", {"command": "echo ok"})]


def test_graceful_shutdown_finishes_short_runs_and_kills_long_ones() -> None:
    s = Server("--grace", "2")
    seen = {}
    try:

        async def go():
            # terminate=False: the DELETE on close would find the listener already closed.
            async with connect(s, terminate=False) as quick, connect(s, terminate=False) as slow:
                t_quick = asyncio.create_task(
                    quick.call_tool("execute_shell", {"command": "sleep 1; echo finished"})
                )
                t_slow = asyncio.create_task(
                    slow.call_tool(
                        "execute_shell", {"command": "echo begun; sleep 60", "timeout_s": 120}
                    )
                )
                await asyncio.sleep(0.4)
                s.signal(signal.SIGTERM)
                t0 = time.monotonic()
                seen["quick"], seen["slow"] = await asyncio.gather(t_quick, t_slow)
                seen["took"] = time.monotonic() - t0

        # The clients may trip over the closed listener while they hang up; the results are in.
        with contextlib.suppress(Exception):
            run(go())
        quick, slow = seen["quick"], seen["slow"]
        assert quick.structured_content["stdout"] == "finished\n" and not quick.is_error
        assert slow.is_error and slow.structured_content["stdout"] == "begun\n"
        assert "grace period" in slow.content[0].text
        assert seen["took"] < 8
        assert s.proc.wait(10) == 0
        assert s.workspaces() == []  # every session's workspace is gone
        assert "shutting down" in s.logs()
        with pytest.raises(httpx2.HTTPError):
            httpx2.get(s.base + "/healthz", timeout=2)
    finally:
        s.stop()


def test_while_draining_readyz_is_503_and_new_runs_are_refused() -> None:
    s = Server("--grace", "5")
    seen = {}
    try:

        async def go():
            async with connect(s, terminate=False) as c:
                task = asyncio.create_task(c.call_tool("execute_shell", {"command": "sleep 1.5"}))
                await asyncio.sleep(0.3)
                s.signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                seen["ready"] = httpx2.get(s.base + "/readyz", timeout=2)
                seen["late"] = await c.call_tool("execute_shell", {"command": "echo late"})
                seen["first"] = await task

        # The client may trip over the closed listener while it hangs up; the results are in.
        with contextlib.suppress(Exception):
            run(go())
        ready, late, first = seen["ready"], seen["late"], seen["first"]
        assert ready.status_code == 503 and "draining" in ready.text
        assert late.is_error and late.structured_content["reason"] == "shutting_down"
        assert first.structured_content["reason"] == "exited"  # control: the run finished
        assert s.proc.wait(10) == 0
    finally:
        s.stop()


def test_call_log_line_has_session_tool_reason_duration_and_no_code(server: Server) -> None:
    marker = "print('very-secret-code-marker')"

    async def go():
        async with connect(server) as c:
            await c.call_tool("execute_python", {"code": marker})

    run(go())
    time.sleep(0.2)
    logs = server.logs()
    assert "very-secret-code-marker" not in logs
    import json

    calls = [
        json.loads(line) for line in logs.splitlines() if line.startswith("{") and '"call"' in line
    ]
    last = [c for c in calls if c.get("tool") == "execute_python"][-1]
    assert {"session", "tool", "reason", "duration_ms"} <= set(last)
    assert last["reason"] == "exited"


def test_under_podsim_the_server_runs_as_a_restricted_pod_would() -> None:
    from conftest import UNDER_PODSIM

    if not UNDER_PODSIM:
        pytest.skip("skipped: only meaningful with SANDLOCK_MCP_PODSIM=1 (the podsim run)")
    s = Server()
    try:
        status = dict(
            line.split(":", 1) for line in open(f"/proc/{s.proc.pid}/status").read().splitlines()
        )
        assert status["Uid"].split()[0] == "1000"
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
        assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
        with open(f"/proc/{s.proc.pid}/mountinfo") as f:
            root = next(line for line in f if line.split()[4] == "/")
        assert " ro," in root or ",ro," in root or " ro " in root
        # And the code it runs still works, confined, with the workspace writable.
        from conftest import connect, run

        async def go():
            async with connect(s) as c:
                return await c.call_tool(
                    "execute_shell", {"command": "id -u; echo x > f && cat f; touch /etc/x"}
                )

        r = run(go())
        assert r.structured_content["stdout"] == "1000\nx\n"
        assert (
            "Permission denied" in r.structured_content["stderr"]
            or "Read-only" in (r.structured_content["stderr"])
        )
    finally:
        s.stop()


def test_a_call_the_client_cancels_has_its_run_killed(server: Server) -> None:
    async def go():
        async with connect(server) as c:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    c.call_tool("execute_shell", {"command": "sleep 30; echo never"}), 1
                )
            for _ in range(50):
                if "\nsandlock_mcp_active_sandboxes 0" in server.metrics():
                    break
                await asyncio.sleep(0.1)
            # Control: the session still works, and an uncancelled call completes.
            return await c.call_tool("execute_shell", {"command": "echo still here"})

    t0 = time.monotonic()
    after = run(go())
    assert time.monotonic() - t0 < 10  # not the 30 s the cancelled command asked for
    assert "\nsandlock_mcp_active_sandboxes 0" in server.metrics()
    assert after.structured_content["stdout"] == "still here\n"
    time.sleep(0.2)
    calls = [line for line in server.logs().splitlines() if '"call"' in line]
    assert any('"reason":"signaled"' in line for line in calls), calls[-3:]
