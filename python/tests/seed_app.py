"""The seed user's service, written the way they write it: an `mcp` server app, served by uvicorn
over Streamable HTTP, whose tool runs a Python snippet with `Sandbox(policy).run` on the event
loop's thread pool. Imported by test_seed_mcp.py."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Optional

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel

from sandlock import Policy, Result, Sandbox

WORKSPACE = tempfile.mkdtemp(prefix="sandlock-seed-ws-", dir="/tmp")

policy = Policy(
    fs_readable=["/usr", "/lib", "/etc"],
    fs_writable=[WORKSPACE],
    cwd=WORKSPACE,
    max_memory="256M",
    max_processes=16,
    timeout=30,
)

mcp = MCPServer("sandlock-seed", version="0.0.1")


class RunOutput(BaseModel):
    stdout: str
    stderr: str
    exit_code: Optional[int]
    reason: str
    success: bool


def execute(code: str) -> Result:
    return Sandbox(policy).run(["python3", "-c", code])


@mcp.tool(description="Run a Python snippet in a sandbox and return its output")
async def run_python(code: str) -> RunOutput:
    loop = asyncio.get_running_loop()
    r = await loop.run_in_executor(None, execute, code)
    return RunOutput(
        stdout=r.stdout.decode(errors="replace"),
        stderr=r.stderr.decode(errors="replace"),
        exit_code=r.exit_code,
        reason=r.reason,
        success=r.success,
    )


app = mcp.streamable_http_app()
