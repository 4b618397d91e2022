#!/usr/bin/env bash
# The main job: build sandlock and serve sandboxed code execution over MCP (Streamable HTTP on
# 127.0.0.1:8080/mcp, per-session workspaces under $TMPDIR, Python tools on python3), on a fresh
# Debian machine that has the Rust toolchain. Any argument is passed to `sandlock mcp`
# (e.g. scripts/run.sh --listen 0.0.0.0:8080 --auth-token-file token).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing python3 (for the execute_python tool)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
  else
    echo "python3 is missing: install it (the execute_python tool runs it), or pass --python PATH" >&2
  fi
fi

echo "==> building (release)"
cargo build --release --quiet -p sandlock-cli

echo "==> what this machine lets sandlock enforce"
target/release/sandlock check --no-live | tail -n 1 || true

echo "==> serving MCP; stop with Ctrl-C"
exec target/release/sandlock mcp "$@"
