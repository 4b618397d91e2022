"""A client of the Onlyboxes provider API, written from the protocol as LobeHub speaks it
(issue 15), plus a local object store for exports and uploaded-file downloads.

Tokens: `obx_jit_v1.<payload>.<sig>`, payload = unpadded base64url of JSON {exp (Unix ms), iss,
sub}, sig = unpadded base64url of HMAC-SHA256(key, "obx_jit_v1." + payload); a fresh one per
request. The account is (iss, sub).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2

from conftest import Server


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(key: bytes, iss: str, sub: str, exp_ms: int | None = None) -> str:
    exp = exp_ms if exp_ms is not None else int(time.time() * 1000) + 1_800_000
    payload = b64url(json.dumps({"exp": exp, "iss": iss, "sub": sub}).encode())
    signed = f"obx_jit_v1.{payload}"
    sig = b64url(hmac.new(key, signed.encode(), hashlib.sha256).digest())
    return f"{signed}.{sig}"


class Client:
    """One LobeHub user (account) talking to the server."""

    def __init__(self, base: str, key: bytes, sub: str = "user-1", iss: str = "lobehub"):
        self.base, self.key, self.iss, self.sub = base, key, iss, sub
        self.http = httpx2.Client(timeout=httpx2.Timeout(30, read=700))

    def as_user(self, sub: str) -> Client:
        return Client(self.base, self.key, sub=sub, iss=self.iss)

    def request(
        self, method: str, path: str, body: dict | None = None, token: str | None = None
    ) -> tuple[int, dict]:
        headers = {
            "Authorization": f"Bearer {token or make_token(self.key, self.iss, self.sub)}",
            "Content-Type": "application/json",
        }
        r = self.http.request(
            method,
            self.base + path,
            headers=headers,
            content=None if body is None else json.dumps(body),
        )
        try:
            data = r.json()
        except ValueError:
            data = {"raw": r.text}
        return r.status_code, data

    def terminal(
        self,
        command: str,
        session: str | None,
        timeout_ms: int | None = None,
        lease: int | None = 900,
        create: bool = True,
    ) -> tuple[int, dict]:
        body: dict = {"command": command, "create_if_missing": create}
        if session is not None:
            body["session_id"] = session
        if lease is not None:
            body["lease_ttl_sec"] = lease
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        return self.request("POST", "/api/v1/commands/terminal", body)

    def run(self, command: str, session: str, **kw) -> dict:
        """A terminal call that must succeed with exit code 0; returns its body."""
        status, body = self.terminal(command, session, **kw)
        assert status == 200, (status, body)
        assert body["exit_code"] == 0, body
        return body

    def background(
        self, command: str, session: str, timeout_ms: int = 120_000, lease: int = 900
    ) -> tuple[int, dict]:
        """A background command, the way LobeHub's runCommand(background) submits one."""
        return self.request(
            "POST",
            "/api/v1/tasks",
            {
                "capability": "terminalExec",
                "input": {
                    "command": command,
                    "create_if_missing": True,
                    "lease_ttl_sec": lease,
                    "session_id": session,
                },
                "mode": "async",
                "timeout_ms": timeout_ms,
                "wait_ms": 1,
            },
        )

    def export(
        self, session: str, file_path: str, url: str, headers: dict[str, str]
    ) -> tuple[int, dict]:
        """A file export, the way LobeHub's exportFileToUploadUrl submits one."""
        return self.request(
            "POST",
            "/api/v1/tasks",
            {
                "capability": "terminalResource",
                "input": {
                    "action": "export",
                    "file_path": file_path,
                    "headers": headers,
                    "session_id": session,
                    "signed_url": url,
                },
                "mode": "sync",
                "timeout_ms": 120_000,
                "wait_ms": 60_000,
            },
        )

    def task(self, task_id: str) -> tuple[int, dict]:
        return self.request("GET", f"/api/v1/tasks/{task_id}")

    def cancel(self, task_id: str) -> tuple[int, dict]:
        return self.request("POST", f"/api/v1/tasks/{task_id}/cancel")

    def wait_task(self, task_id: str, limit: float = 30) -> dict:
        deadline = time.monotonic() + limit
        while True:
            status, body = self.task(task_id)
            assert status == 200, (status, body)
            if body["status"] not in ("pending", "dispatched", "running"):
                return body
            assert time.monotonic() < deadline, f"task still running after {limit} s: {body}"
            time.sleep(0.1)


class Storage:
    """A local object store: records PUTs (headers and bytes) and serves registered blobs to GET."""

    def __init__(self, put_status: int = 200, bind: str = "127.0.0.1", name: str | None = None):
        self.puts: list[dict] = []
        self.blobs: dict[str, bytes] = {}
        self.put_status = put_status
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_PUT(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                store.puts.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                self.send_response(store.put_status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                blob = store.blobs.get(self.path.split("?")[0])
                if blob is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob)

        self.server = ThreadingHTTPServer((bind, 0), Handler)
        self.port = self.server.server_address[1]
        self.host = f"{name or bind}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def key_file(key: bytes) -> Path:
    """Writes the signing key where the server (uid 1000 under podsim) can read it."""
    d = Path(tempfile.mkdtemp(prefix="sandlock-obx-key-"))
    os.chmod(d, 0o755)
    p = d / "key"
    p.write_bytes(key + b"\n")
    os.chmod(p, 0o644)
    return p


class Provider:
    """A `sandlock mcp` server with the provider API on, an object store, and a client."""

    def __init__(self, *args: str, storage: Storage | None = None):
        self.key = secrets.token_hex(32).encode()
        self.key_path = key_file(self.key)
        self.storage = storage or Storage()
        self.server = Server(
            "--onlyboxes-jit-key-file",
            str(self.key_path),
            "--onlyboxes-storage-host",
            self.storage.host,
            *args,
        )
        self.client = Client(self.server.base, self.key)

    def views(self) -> bool:
        """Whether the server says sessions have their own /tmp and /mnt/data (its metadata)."""
        status, meta = self.client.request("GET", "/api/v1/sandbox/metadata")
        assert status == 200, meta
        return bool(meta["session_paths"]["private"])

    def stop(self) -> None:
        self.server.stop()
        self.storage.close()
        self.key_path.unlink(missing_ok=True)
        self.key_path.parent.rmdir()
