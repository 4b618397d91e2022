"""HTTP rules in an MCP tool's policy: `[tools.execute_python]` takes `http_allow`, `credentials`
and `http_auth` like any sandlock policy, and a call's requests go through sandlock's proxy (the
refused one never reaches the upstream, the allowed one carries the credential)."""

from __future__ import annotations

import http.server
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import Server, call


def test_a_tool_policy_with_http_rules_and_a_credential() -> None:
    hosts = Path("/etc/hosts").read_text()
    if "127.0.0.2 allowed.test" not in hosts:
        pytest.skip("skipped: /etc/hosts lacks 127.0.0.2 allowed.test (test.sh adds it)")
    seen: list[tuple[str, str | None]] = []

    class Upstream(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"hi")

        def log_message(self, *args: object) -> None:
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Upstream)
    port = upstream.server_address[1]
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    d = Path(tempfile.mkdtemp(prefix="sandlock-mcp-http-"))
    d.chmod(0o755)  # under podsim the server runs as uid 1000 and reads the file
    cfg = d / "c.toml"
    cfg.write_text(
        "[tools.execute_python]\n"
        'presets = ["system"]\n'
        f'http_allow = ["GET allowed.test:{port}/ok"]\n'
        f'http_auth = ["GET allowed.test:{port}/* bearer api"]\n'
        "[tools.execute_python.credentials]\n"
        'api = "env:SL_MCP_TEST_TOKEN"\n'
    )
    cfg.chmod(0o644)
    s = Server("--config", str(cfg), env={"SL_MCP_TEST_TOKEN": "mcp-secret"})
    code = (
        "import os, urllib.request, urllib.error\n"
        "for p in ('ok', 'no'):\n"
        "    try:\n"
        f"        r = urllib.request.urlopen('http://allowed.test:{port}/' + p, timeout=10)\n"
        "        print(r.status, r.read().decode())\n"
        "    except urllib.error.HTTPError as e:\n"
        "        print(e.code)\n"
        "print('SL_MCP_TEST_TOKEN' in os.environ)\n"
    )
    try:
        r = call(s, "legacy", ("execute_python", {"code": code}))[0]
        assert not r.is_error, r.content[0].text
        assert r.structured_content["stdout"].split("\n")[:3] == ["200 hi", "403", "False"]
        assert seen == [("/ok", "Bearer mcp-secret")]
    finally:
        s.stop()
        upstream.shutdown()
        upstream.server_close()
        shutil.rmtree(d, ignore_errors=True)
