#!/usr/bin/env bash
# Benchmarks (not tests): each measures sandlock against a baseline taken in the same run and
# writes its results to docs/perf/*.md; this script then assembles docs/PERFORMANCE.md.
# Needs about 6 GiB of free memory (the "big host" measurements hold 4 GiB) and a quiet machine.
# Usage: scripts/bench.sh            (after scripts/test.sh has set up .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

echo "==> building the release CLI"
cargo build --release --quiet -p sandlock-cli

echo "==> core and CLI (issues 2 and 3): cargo bench -p sandlock-core --bench spawn"
cargo bench --quiet -p sandlock-core --bench spawn

echo "==> leaks: 10,000 runs"
SANDLOCK_LEAK_RUNS=10000 cargo test --release --quiet -p sandlock-core --test leaks -- --nocapture repeated_runs 2>&1 \
  | tee /tmp/sandlock-leaks.log | grep -E "runs:|test result"
leak_line=$(grep -E "runs:" /tmp/sandlock-leaks.log | tail -1)

if [ -x .venv/bin/python ]; then
  echo "==> Python SDK (issue 4)"
  .venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./python
  .venv/bin/python python/bench/bench_sdk.py
  echo "==> MCP server (issue 5)"
  .venv/bin/python tests/mcp/bench_mcp.py --calls 400
else
  echo "SKIP Python and MCP benchmarks: run scripts/test.sh first (it creates .venv)"
fi

{
  cat <<HEADER
# Performance

Assembled by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d) from the files in \`docs/perf/\`, each
written by the benchmark that measured it. Every ratio compares sandlock with a baseline measured in
the same run. Machine: $(nproc) CPUs, Linux $(uname -r), $(free -g | awk '/Mem:/ {print $2}') GiB.

Leak check (\`tests/leaks.rs\`, release build): ${leak_line}.

HEADER
  cat docs/perf/notes.md
  for f in docs/perf/core.md docs/perf/python-sdk.md docs/perf/mcp.md; do
    [ -f "$f" ] || continue
    echo
    sed 's/^# /## /' "$f"
  done
} > docs/PERFORMANCE.md
echo "==> wrote docs/PERFORMANCE.md"
