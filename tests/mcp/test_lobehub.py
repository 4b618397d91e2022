"""Conformance of the Onlyboxes provider API (LobeHub's Cloud Sandbox) with a client written from
the protocol description: tokens, terminal calls, background tasks, exports, leases, isolation.

Every test runs against the real `sandlock mcp` binary, also under podsim (SANDLOCK_MCP_PODSIM=1)
and with Landlock capped at ABI 2, like the rest of this directory.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from conftest import BIN, Server, wrap
from onlyboxes import Client, Provider, Storage, key_file, make_token


@pytest.fixture(scope="module")
def obx() -> Iterator[Provider]:
    p = Provider("--max-output", "4K", "--max-concurrent", "4")
    yield p
    p.stop()


def session_name() -> str:
    return f"lobe-user-{secrets.token_hex(4)}"


def procs_with(marker: str) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(d))
        except OSError:
            continue
    return found


# --- tokens ---------------------------------------------------------------------------------


def test_a_good_token_is_accepted_and_bad_ones_get_401(obx: Provider):
    c = obx.client
    s = session_name()
    status, body = c.terminal("echo ok", s)
    assert status == 200 and body["stdout"] == "ok\n", body
    bad = {
        "missing": "",
        "not a jit token": "some-mcp-token",
        "signed with another key": make_token(b"x" * 64, "lobehub", "user-1"),
        "expired": make_token(obx.key, "lobehub", "user-1", exp_ms=int(time.time() * 1000) - 1),
        "tampered": make_token(obx.key, "lobehub", "user-1")[:-2] + "AA",
    }
    for why, token in bad.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx2.post(
            obx.server.base + "/api/v1/commands/terminal",
            headers=headers,
            json={"command": "echo should-not-run", "session_id": s},
            timeout=10,
        )
        assert r.status_code == 401, (why, r.status_code, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer"), why
        assert "error" in r.json(), why
        assert token not in r.text or not token, why
    good = make_token(obx.key, "lobehub", "user-1")
    assert c.request("POST", "/api/v1/commands/terminal", {"command": ":"}, token=good)[0] == 200
    # The signing key and the tokens never reach the log.
    log = obx.server.logs()
    assert obx.key.decode() not in log
    for token in [good, *bad.values()]:
        signature = token.rsplit(".", 1)[-1]
        assert not token or signature not in log, token


def test_another_account_gets_404_for_sessions_and_tasks(obx: Provider):
    alice, bob = obx.client, obx.client.as_user("bob")
    s = session_name()
    alice.run("echo alice-secret > note.txt", s)
    status, body = bob.terminal("cat note.txt", s, create=False)
    assert status == 404 and body["code"] == "session_not_found", body
    status, task = alice.background("sleep 30", s)
    assert status == 202, task
    for call in (bob.task, bob.cancel):
        status, body = call(task["task_id"])
        assert status == 404, body
        assert body["code"] == "task_not_found"
    # Another iss with the same sub is another account too.
    other_iss = Client(obx.server.base, obx.key, sub="user-1", iss="another-lobehub")
    status, _ = other_iss.task(task["task_id"])
    assert status == 404
    # The control: the owner sees and cancels it.
    status, body = alice.cancel(task["task_id"])
    assert status == 200 and body["status"] == "canceled", body
    # Bob's session of the same name is his own, with none of Alice's files.
    status, body = bob.terminal("cat note.txt", s)
    assert status == 200 and body["created"] is True, body
    assert body["exit_code"] != 0 and "alice-secret" not in body["stdout"], body


# --- terminal ---------------------------------------------------------------------------------


def test_terminal_calls_report_output_exit_code_and_lease(obx: Provider):
    c = obx.client
    s = session_name()
    status, first = c.terminal("echo out; echo err >&2; exit 3", s, lease=120)
    assert status == 200, first
    assert first["created"] is True and first["session_id"] == s
    assert (first["stdout"], first["stderr"], first["exit_code"]) == ("out\n", "err\n", 3)
    assert first["stdout_truncated"] is False and first["stderr_truncated"] is False
    now_ms = time.time() * 1000
    assert now_ms + 100_000 < first["lease_expires_unix_ms"] < now_ms + 140_000
    # Files persist between calls of a session; a shorter lease does not shorten it.
    c.run("echo kept > f.txt", s, lease=5)
    status, second = c.terminal("cat f.txt", s, lease=1)
    assert status == 200 and second["created"] is False and second["stdout"] == "kept\n"
    assert second["lease_expires_unix_ms"] >= first["lease_expires_unix_ms"]
    # A longer lease extends it.
    status, third = c.terminal(":", s, lease=600)
    assert third["lease_expires_unix_ms"] > second["lease_expires_unix_ms"] + 400_000


def test_terminal_errors_have_their_codes(obx: Provider):
    c = obx.client
    s = session_name()
    status, body = c.terminal("echo hi", f"never-made-{secrets.token_hex(3)}", create=False)
    assert status == 404 and body["code"] == "session_not_found", body
    for bad in (0, 600_001):
        status, body = c.terminal("echo hi", s, timeout_ms=bad)
        assert status == 400 and "timeout_ms" in body["error"], body
    status, body = c.terminal("   ", s)
    assert status == 400 and "command" in body["error"], body
    status, body = c.terminal("echo hi", "../../etc")
    assert status == 400 and "session_id" in body["error"], body
    status, body = c.request("POST", "/api/v1/commands/terminal", {"session_id": s})
    assert status == 400 and "command" in body["error"], body
    status, body = c.terminal("echo hi", s, lease=0)
    assert status == 400 and "lease_ttl_sec" in body["error"], body
    # A command past its timeout is killed: 504, with what it printed before.
    t0 = time.monotonic()
    status, body = c.terminal("echo started; sleep 30", s, timeout_ms=1000)
    assert status == 504 and body["code"] == "timeout", body
    assert body["stdout"] == "started\n", body
    assert time.monotonic() - t0 < 15


def test_output_past_the_cap_is_cut_and_the_command_goes_on(obx: Provider):
    c = obx.client
    s = session_name()
    body = c.run("head -c 10000 /dev/zero | tr '\\0' x; echo; echo after >&2", s)
    assert len(body["stdout"]) == 4096 and body["stdout_truncated"] is True, len(body["stdout"])
    assert body["stdout_bytes"] == 10001
    assert body["stderr"] == "after\n" and body["stderr_truncated"] is False


def test_commands_of_one_session_run_at_once_up_to_the_cap():
    p = Provider("--max-concurrent", "4")
    try:
        ts = session_name()
        c = p.client
        status, bg = c.background("sleep 20", ts)
        assert status == 202, bg
        t0 = time.monotonic()
        body = c.run("echo foreground", ts)
        assert body["stdout"] == "foreground\n"
        assert time.monotonic() - t0 < 10, "the foreground call waited for the background one"
        # Four at once (max_commands_per_session): the fifth is refused as busy.
        more = [c.background("sleep 20", ts) for _ in range(3)]
        assert all(st == 202 for st, _ in more), more
        status, body = c.terminal("echo fifth", ts)
        assert status == 409 and body["code"] == "session_busy", body
        for task_id in [bg["task_id"]] + [b["task_id"] for _, b in more]:
            assert c.cancel(task_id)[0] == 200
        c.run("echo free again", ts)
    finally:
        p.stop()


# --- background tasks ---------------------------------------------------------------------------


def test_a_background_task_is_polled_until_it_succeeds(obx: Provider):
    c = obx.client
    s = session_name()
    status, task = c.background("echo one; sleep 1.5; echo two; exit 4", s)
    assert status == 202 and task["status"] == "running", task
    assert task["status_url"] == f"/api/v1/tasks/{task['task_id']}"
    # Its output so far is readable while it runs.
    deadline = time.monotonic() + 10
    while True:
        status, snap = c.task(task["task_id"])
        assert status == 200
        if snap["status"] == "running" and snap["result"]["stdout"] == "one\n":
            break
        assert snap["status"] == "running" and time.monotonic() < deadline, snap
        time.sleep(0.05)
    done = c.wait_task(task["task_id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["stdout"] == "one\ntwo\n" and done["result"]["exit_code"] == 4
    assert "error" not in done
    # Cancelling a finished task is a conflict, and says why.
    status, body = c.cancel(task["task_id"])
    assert status == 409 and body["status"] == "succeeded", body
    assert body["error"]["code"] == "task_already_terminal"


def test_cancel_kills_a_background_command(obx: Provider):
    c = obx.client
    s = session_name()
    marker = f"obx-cancel-{secrets.token_hex(4)}"
    status, task = c.background(f"python3 -c 'import time; time.sleep(300)' {marker}", s)
    assert status == 202, task
    deadline = time.monotonic() + 10
    while not procs_with(marker):
        assert time.monotonic() < deadline, "the background command never started"
        time.sleep(0.05)
    status, body = c.cancel(task["task_id"])
    assert status == 200 and body["status"] == "canceled", body
    assert "error" not in body
    assert procs_with(marker) == []
    assert c.task(task["task_id"])[1]["status"] == "canceled"


def test_a_background_command_past_its_timeout_ends_as_timeout(obx: Provider):
    c = obx.client
    s = session_name()
    status, task = c.background("echo begun; sleep 30", s, timeout_ms=1000)
    assert status == 202, task
    done = c.wait_task(task["task_id"], limit=20)
    assert done["status"] == "timeout", done
    assert done["error"]["code"] == "timeout"
    assert done["result"]["stdout"] == "begun\n"
    # Submitted in sync mode, the answer waits and carries the status's HTTP code.
    status, body = c.request(
        "POST",
        "/api/v1/tasks",
        {
            "capability": "terminalExec",
            "input": {"command": "sleep 30", "session_id": s},
            "mode": "sync",
            "timeout_ms": 500,
            "wait_ms": 10_000,
        },
    )
    assert status == 504 and body["status"] == "timeout", body


def test_task_submissions_are_validated(obx: Provider):
    c = obx.client
    s = session_name()
    cases = [
        ({"capability": "pythonExec", "input": {"code": "1"}}, "capability"),
        ({"capability": "terminalExec", "input": {"session_id": s}}, "command"),
        ({"capability": "terminalExec", "input": {"command": "x"}, "mode": "later"}, "mode"),
        ({"capability": "terminalExec", "input": {"command": "x"}, "wait_ms": 60_001}, "wait_ms"),
        (
            {"capability": "terminalExec", "input": {"command": "x"}, "timeout_ms": 0},
            "timeout_ms",
        ),
    ]
    for body, field in cases:
        status, answer = c.request("POST", "/api/v1/tasks", body)
        assert status == 400 and field in answer["error"], (body, answer)
    status, answer = c.request(
        "POST",
        "/api/v1/tasks",
        {
            "capability": "terminalResource",
            "input": {"action": "export", "file_path": "x", "session_id": "no-such-session"},
        },
    )
    assert status == 404 and answer["code"] == "session_not_found", answer


# --- exports ------------------------------------------------------------------------------------


def test_export_puts_the_bytes_with_only_the_upload_headers(obx: Provider):
    c = obx.client
    s = session_name()
    # Within the 128 KiB a command may be once in base64.
    data = secrets.token_bytes(90_000)
    b64 = base64.b64encode(data).decode()
    write = "import base64,sys; open('report.bin','wb').write(base64.b64decode(sys.stdin.read()))"
    c.run(f"python3 -c \"{write}\" <<'EOF'\n{b64}\nEOF", s)
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    headers = {
        "Content-Type": "application/x-report",
        "Content-MD5": md5,
        "x-amz-meta-origin": "lobehub",
        "X-Amz-Acl": "private",
        "Authorization": "Bearer leaked-if-forwarded",
        "Cookie": "session=leaked",
        "X-Other": "not-for-the-store",
    }
    before = len(obx.storage.puts)
    url = obx.storage.url("/bucket/report.bin?X-Amz-Signature=abc")
    status, task = c.export(s, "/mnt/data/report.bin", url, headers)
    assert status == 200 and task["status"] == "succeeded", task
    assert task["result"]["size_bytes"] == len(data)
    assert task["result"]["mime_type"] == "application/x-report"
    assert len(obx.storage.puts) == before + 1
    put = obx.storage.puts[-1]
    assert put["path"] == "/bucket/report.bin?X-Amz-Signature=abc"
    assert put["body"] == data
    h = put["headers"]
    assert h["content-type"] == "application/x-report"
    assert h["content-md5"] == md5
    assert h["x-amz-meta-origin"] == "lobehub" and h["x-amz-acl"] == "private"
    assert h["content-length"] == str(len(data))
    assert "transfer-encoding" not in h
    for dropped in ("authorization", "cookie", "x-other"):
        assert dropped not in h, dropped
    # Relative paths are under /mnt/data, the working directory.
    status, task = c.export(s, "report.bin", obx.storage.url("/bucket/r2"), {})
    assert status == 200 and task["result"]["mime_type"] == "application/octet-stream", task


def test_export_failures_name_the_problem(obx: Provider):
    c = obx.client
    s = session_name()
    c.run("mkdir -p adir && echo x > f.txt", s)
    before = len(obx.storage.puts)
    cases = [
        ("/mnt/data/missing.txt", obx.storage.url("/b/m"), "file_not_found"),
        ("/mnt/data/adir", obx.storage.url("/b/d"), "path_is_directory"),
        ("/etc/passwd", obx.storage.url("/b/p"), "file_not_found"),
        ("/mnt/data/../../../etc/passwd", obx.storage.url("/b/p"), "invalid_payload"),
        ("/mnt/data/f.txt", "http://127.0.0.1:9/elsewhere", "destination_not_allowed"),
        ("/mnt/data/f.txt", "file:///etc/passwd", "invalid_payload"),
    ]
    for path, url, code in cases:
        status, task = c.export(s, path, url, {})
        assert status == 502 and task["status"] == "failed", (path, task)
        assert task["error"]["code"] == code, (path, task)
    assert len(obx.storage.puts) == before, "a failed export must send nothing"
    # A symlink the session planted towards the host's files is not followed out.
    c.run("ln -s /etc/passwd link.txt", s)
    status, task = c.export(s, "/mnt/data/link.txt", obx.storage.url("/b/l"), {})
    assert task["status"] == "failed" and task["error"]["code"] == "file_not_found", task
    assert len(obx.storage.puts) == before


def test_an_object_store_refusal_fails_the_export():
    p = Provider(storage=Storage(put_status=403))
    try:
        s = session_name()
        p.client.run("echo hi > f.txt", s)
        status, task = p.client.export(s, "/mnt/data/f.txt", p.storage.url("/b/f"), {})
        assert status == 502 and task["error"]["code"] == "upload_failed", task
        assert "403" in task["error"]["message"]
    finally:
        p.stop()


# --- leases and isolation -----------------------------------------------------------------------


def test_an_expired_lease_kills_the_session_processes_and_removes_its_files(obx: Provider):
    c = obx.client
    s = session_name()
    marker = f"obx-lease-{secrets.token_hex(4)}"
    first = c.run("echo data > kept.txt; pwd", s, lease=3)
    workspace = first["stdout"].strip()
    status, task = c.background(f"python3 -c 'import time; time.sleep(300)' {marker}", s, lease=3)
    assert status == 202, task
    deadline = time.monotonic() + 10
    while not procs_with(marker):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    done = c.wait_task(task["task_id"], limit=20)
    assert done["status"] == "failed" and done["error"]["code"] == "session_expired", done
    assert procs_with(marker) == []
    deadline = time.monotonic() + 10
    while os.path.exists(workspace):
        assert time.monotonic() < deadline, f"{workspace} was not removed"
        time.sleep(0.05)
    status, body = c.terminal("cat kept.txt", s, create=False)
    assert status == 404, body
    # The control: a session whose lease is long is still there.
    s2 = session_name()
    c.run("echo x > y", s2, lease=600)
    time.sleep(3)
    assert c.run("cat y", s2, create=False)["stdout"] == "x\n"


def test_sessions_do_not_see_each_others_files(obx: Provider):
    alice, bob = obx.client, obx.client.as_user("bob")
    topics = {
        "alice topic 1": (alice, session_name()),
        "alice topic 2": (alice, session_name()),
        "bob": (bob, session_name()),
    }
    dirs = {}
    for who, (c, s) in topics.items():
        body = c.run(f"echo {who!r} > mine.txt; pwd", s)
        dirs[who] = body["stdout"].strip()
    # Every session's working directory reads /mnt/data: the real ones are found on the host.
    assert obx.views()
    assert set(dirs.values()) == {"/mnt/data"}, dirs
    for f in obx.server.root.glob("*/data/mine.txt"):
        dirs[f.read_text().strip()] = str(f.parent)
    assert len(dirs) == len(topics), dirs
    for who, (c, s) in topics.items():
        assert c.run("cat mine.txt", s)["stdout"] == f"{who}\n"
        for other, d in dirs.items():
            if other == who:
                continue
            status, body = c.terminal(f"cat {d}/mine.txt; ls {d}", s)
            assert status == 200 and body["exit_code"] != 0, (who, other, body)
            assert other not in body["stdout"], (who, other, body)


def test_private_tmp_and_mnt_data_per_session(obx: Provider):
    assert obx.views(), "sessions have no private /tmp and /mnt/data (metadata)"
    alice, bob = obx.client, obx.client.as_user("bob")
    a1, a2, b = session_name(), session_name(), session_name()
    alice.run("echo a1 > /mnt/data/same.txt; echo a1 > /tmp/same.txt", a1)
    for c, s in ((alice, a2), (bob, b)):
        body = c.run("ls /mnt/data /tmp; cat /mnt/data/same.txt /tmp/same.txt || true", s)
        assert "a1" not in body["stdout"], body
    assert alice.run("cat /mnt/data/same.txt /tmp/same.txt", a1)["stdout"] == "a1\na1\n"


# --- operations ---------------------------------------------------------------------------------


def test_metrics_count_provider_requests(obx: Provider):
    obx.client.run("true", session_name())
    text = obx.server.metrics()
    assert 'sandlock_mcp_provider_requests_total{route="terminal",status="200"}' in text
    assert "sandlock_mcp_provider_sessions " in text
    assert 'sandlock_mcp_calls_total{tool="onlyboxes.terminal",outcome="exited"}' in text


def test_metadata_reports_the_limits(obx: Provider):
    status, meta = obx.client.request("GET", "/api/v1/sandbox/metadata")
    assert status == 200
    assert meta["limits"]["max_terminal_timeout_ms"] == 600_000
    assert {c["name"] for c in meta["capabilities"]} == {"terminalExec", "terminalResource"}


def test_the_server_refuses_to_start_with_a_bad_key_file():
    # Where uid 1000 (under podsim) can look.
    tmp_path = Path(tempfile.mkdtemp(prefix="sandlock-obx-badkey-"))
    os.chmod(tmp_path, 0o755)
    short = tmp_path / "short"
    short.write_text("too-short\n")
    os.chmod(short, 0o644)
    cases = {
        str(tmp_path / "missing"): "cannot read",
        str(short): "9 bytes long",
    }
    for path, words in cases.items():
        r = subprocess.run(
            wrap(
                [
                    str(BIN),
                    "mcp",
                    "--listen",
                    "127.0.0.1:0",
                    "--workspace-root",
                    str(tmp_path / "ws"),
                    "--onlyboxes-jit-key-file",
                    path,
                ]
            ),
            capture_output=True,
            check=False,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0, r
        assert "onlyboxes.jit_key_file" in r.stderr and words in r.stderr, r.stderr
    shutil.rmtree(tmp_path)


def test_without_a_key_the_api_is_not_served():
    # No MCP token either, so that nothing but the missing route can answer.
    s = Server(token=None)
    try:
        r = httpx2.post(s.base + "/api/v1/commands/terminal", json={"command": "id"}, timeout=10)
        assert r.status_code == 404
    finally:
        s.stop()


def test_a_key_file_is_read_once_and_not_logged():
    key = secrets.token_hex(32).encode()
    path = key_file(key)
    s = Server("--onlyboxes-jit-key-file", str(path), "--log-level", "debug")
    try:
        c = Client(s.base, key)
        assert c.run("echo hi", session_name())["stdout"] == "hi\n"
        assert key.decode() not in s.logs()
    finally:
        s.stop()
        path.unlink()
        path.parent.rmdir()
