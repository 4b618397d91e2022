"""Clients nobody here wrote, from npm: the official TypeScript SDK client
(`StreamableHTTPClientTransport`, the one LobeHub uses) and the MCP Inspector CLI, over Streamable
HTTP (both protocol eras) and stdio. Install them with `npm ci` in tests/mcp."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BIN, Server, default_python, wrap

HERE = Path(__file__).resolve().parent
INSPECTOR = HERE / "node_modules/.bin/mcp-inspector"
SDK = HERE / "node_modules/@modelcontextprotocol/sdk"


def need(path: Path, what: str) -> None:
    if shutil.which("node") is None:
        pytest.skip("skipped: node is not installed (apt-get install nodejs npm)")
    if not path.exists():
        pytest.skip(f"skipped: {what} is not installed (run `npm ci` in tests/mcp)")


def node_env(tmp: str, token: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Keep the Inspector's catalog and client config out of the home directory.
    env["MCP_CATALOG_PATH"] = f"{tmp}/catalog.json"
    env["MCP_CLIENT_CONFIG_PATH"] = f"{tmp}/clients.json"
    if token:
        env["MCP_TOKEN"] = token
    return env


def test_typescript_sdk_client(server: Server) -> None:
    need(SDK, "@modelcontextprotocol/sdk")
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            ["node", str(HERE / "node/ts_client.mjs"), server.url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=node_env(tmp, server.token),
            cwd=HERE,
        )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["protocolVersion"] == "2025-11-25" and out["sessionId"] is True
    assert out["tools"] == [
        "command_output",
        "delete_file",
        "edit_file",
        "execute_code",
        "execute_python",
        "execute_shell",
        "glob_files",
        "grep_files",
        "kill_command",
        "list_files",
        "move_file",
        "read_file",
        "reset_python",
        "write_file",
    ]
    assert out["allOutputSchemas"] is True
    assert out["outputSchema"] is True
    assert out["python"]["isError"] is False and out["python"]["structured"]["stdout"] == "45\n"
    assert out["read"] == "from ts"
    assert out["bad"] == {"isError": True, "exit": 2, "stderr": "no\n"}
    assert out["escape"]["isError"] is True and ".." in out["escape"]["text"]
    assert out["persistent"] == [
        "42\n",
        {"cell": 2, "state_kept": True, "state_lost": None},
        "False\n",
    ]
    assert out["isolated"]["isError"] is True and "does not exist" in out["isolated"]["text"]
    assert "unknown format" not in r.stderr  # output schemas are plain JSON Schema


def test_typescript_sdk_client_uses_the_agent_tools(server: Server) -> None:
    need(SDK, "@modelcontextprotocol/sdk")
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            ["node", str(HERE / "node/agent_tools.mjs"), server.url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=node_env(tmp, server.token),
            cwd=HERE,
        )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["js"] == {"isError": False, "stdout": "2,4,6\n"}
    assert out["background"] == {
        "reason": "running",
        "stdout": "start\nend\n",
        "last": {"running": False, "exit_code": 3, "reason": "exited"},
    }
    assert out["edit"]["replacements"] == 1 and "+const port = 8080;" in out["edit"]["diff"]
    assert out["glob"] == ["src/app.js"] and out["grep"] == ["src/app.js:1", "src/app.js:2"]
    assert out["moved"] == {"isError": False, "replaced": False}
    assert out["escape"]["isError"] is True and '".."' in out["escape"]["text"]
    assert out["image"] == ["image/svg+xml"]
    assert out["resources"] == ["lib/app.js", "outputs/dot.svg"]
    assert out["read"] == "const port = 8080;\nconsole.log(port);\n"
    assert "unknown format" not in r.stderr  # every output schema is plain JSON Schema


def test_typescript_sdk_client_without_token_is_rejected(server: Server) -> None:
    need(SDK, "@modelcontextprotocol/sdk")
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            ["node", str(HERE / "node/ts_client.mjs"), server.url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=node_env(tmp),
            cwd=HERE,
        )
    assert r.returncode != 0 and "401" in r.stderr


def inspector(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the Inspector CLI; a stdio target goes last, after `--`."""
    opts, target = (
        (args, ()) if "--" not in args else (args[: args.index("--")], args[args.index("--") :])
    )
    with tempfile.TemporaryDirectory() as tmp:
        return subprocess.run(
            [str(INSPECTOR), "--cli", "--format", "json", "-q", *opts, *target],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env=node_env(tmp, token),
            cwd=HERE,
        )


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_inspector_cli_over_http(server: Server, era: str) -> None:
    need(INSPECTOR, "@modelcontextprotocol/inspector")
    common = [
        server.url,
        "--transport",
        "http",
        "--protocol-era",
        era,
        "--header",
        f"Authorization: Bearer {server.token}",
    ]
    listed = inspector(*common, "--method", "tools/list")
    assert listed.returncode == 0, listed.stderr
    names = {t["name"] for t in json.loads(listed.stdout)["result"]["tools"]}
    assert "execute_python" in names
    ok = inspector(
        *common,
        "--method",
        "tools/call",
        "--tool-name",
        "execute_python",
        "--tool-arg",
        "code=print(6*7)",
    )
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)["result"]
    assert result["structuredContent"]["stdout"] == "42\n" and result["isError"] is False
    # A non-zero exit is a tool error: the Inspector exits 5 and says so.
    bad = inspector(
        *common,
        "--method",
        "tools/call",
        "--tool-name",
        "execute_shell",
        "--tool-args-json",
        '{"command": "exit 4"}',
    )
    assert bad.returncode == 5 and "tool_is_error" in bad.stderr
    assert json.loads(bad.stdout)["result"]["structuredContent"]["exit_code"] == 4


def test_inspector_cli_is_refused_without_the_token(server: Server) -> None:
    need(INSPECTOR, "@modelcontextprotocol/inspector")
    r = inspector(server.url, "--transport", "http", "--method", "tools/list")
    # On a 401 challenge the Inspector wants to start OAuth, which it cannot do without a TTY.
    assert r.returncode != 0 and ("401" in r.stderr or "auth_required" in r.stderr), r.stderr
    assert "rejected a request without a bearer token" in server.logs()


def test_inspector_cli_over_stdio() -> None:
    need(INSPECTOR, "@modelcontextprotocol/inspector")
    if not BIN.exists():
        pytest.skip(f"skipped: {BIN} not built")
    with tempfile.TemporaryDirectory() as root:
        os.chmod(root, 0o777)  # under podsim the server is uid 1000
        r = inspector(
            "--method",
            "tools/call",
            "--tool-name",
            "execute_shell",
            "--tool-arg",
            "command=echo hi from stdio",
            "--",
            *wrap(
                [
                    str(BIN),
                    "mcp",
                    "--transport",
                    "stdio",
                    "--workspace-root",
                    f"{root}/ws",
                    "--python",
                    default_python(),
                ]
            ),
        )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["result"]["structuredContent"]["stdout"] == "hi from stdio\n"
