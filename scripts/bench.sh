#!/usr/bin/env bash
# Benchmarks (not tests): each measures sandlock against a baseline taken in the same run and
# writes its results to docs/perf/*.md; this script then assembles docs/PERFORMANCE.md.
# Needs about 6 GiB of free memory (the "big host" measurements hold 4 GiB) and a quiet machine.
# Usage: scripts/bench.sh [all|core|startup|standins|fsview|before-after|python|mcp|net|assemble]   (default all; after
# scripts/test.sh has set up .venv). `assemble` only rebuilds docs/PERFORMANCE.md from docs/perf/
# (after editing notes). `before-after [REV]` compares the release CLI of REV (default 419a517, main
# before the stand-ins for Landlock features) with this checkout's, on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

what=${1:-all}
case "$what" in all|core|startup|standins|fsview|before-after|python|mcp|net|assemble) ;; *) echo "usage: scripts/bench.sh [all|core|startup|standins|fsview|before-after|python|mcp|net|assemble]" >&2; exit 2;; esac

if [ "$what" != assemble ]; then
  echo "==> building the release CLI"
  cargo build --release --quiet -p sandlock-cli
fi

if [ "$what" = all ] || [ "$what" = core ]; then
  echo "==> core and CLI (issues 2 and 3): cargo bench -p sandlock-core --bench spawn"
  cargo bench --quiet -p sandlock-core --bench spawn
  echo "==> leaks: 10,000 runs"
  SANDLOCK_LEAK_RUNS=10000 cargo test --release --quiet -p sandlock-core --test leaks -- --nocapture repeated_runs 2>&1 \
    | grep -E "runs:" | tail -1 > docs/perf/leaks.txt
  cat docs/perf/leaks.txt
fi

if [ "$what" = all ] || [ "$what" = startup ]; then
  echo "==> start-up (issue 16): the static release CLI against /bin/true"
  command -v hyperfine >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends hyperfine >/dev/null
  static=$(scripts/build-release.sh | tail -1)
  python3 scripts/bench_startup.py "$static" --dynamic "$CARGO_TARGET_DIR/release/sandlock"
fi

if [ "$what" = all ] || [ "$what" = standins ]; then
  echo "==> stand-ins for Landlock features: cargo bench -p sandlock-core --bench standins"
  cargo bench --quiet -p sandlock-core --bench standins
fi

if [ "$what" = all ] || [ "$what" = fsview ]; then
  echo "==> filesystem views (issue 14): cargo bench -p sandlock-core --bench fsview"
  cargo bench --quiet -p sandlock-core --bench fsview
fi

if [ "$what" = all ] || [ "$what" = net ]; then
  echo "==> network (issue 12): redis-benchmark by host name, and HTTP through the ACL proxy (ab against nginx), bare and in a sandbox"
  command -v redis-benchmark >/dev/null && command -v nginx >/dev/null && command -v ab >/dev/null \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server redis-tools nginx-light apache2-utils >/dev/null
  python3 scripts/bench_net.py "$CARGO_TARGET_DIR/release/sandlock"
fi

if [ "$what" = before-after ]; then
  rev=${2:-419a517}
  echo "==> before/after: the release CLI of $rev against this checkout's"
  wt=$CARGO_TARGET_DIR/bench-before/src
  rm -rf "$wt"; git worktree prune
  git worktree add --quiet --detach "$wt" "$rev"
  CARGO_TARGET_DIR=$CARGO_TARGET_DIR/bench-before/target cargo build --release --quiet -p sandlock-cli --manifest-path "$wt/Cargo.toml"
  python3 scripts/ab_cli.py "$CARGO_TARGET_DIR/bench-before/target/release/sandlock" "$CARGO_TARGET_DIR/release/sandlock" \
    --label-before "$rev" --label-after "$(git rev-parse --short HEAD)"
  git worktree remove --force "$wt"
fi

if [ "$what" = assemble ] || [ "$what" = startup ] || [ "$what" = standins ] || [ "$what" = fsview ] || [ "$what" = before-after ] || [ "$what" = net ]; then
  :
elif [ ! -x .venv/bin/python ] && [ "$what" != core ]; then
  echo "SKIP Python and MCP benchmarks: run scripts/test.sh first (it creates .venv)"
else
  if [ "$what" = all ] || [ "$what" = python ]; then
    echo "==> Python SDK (issue 4)"
    .venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./python
    .venv/bin/python python/bench/bench_sdk.py
  fi
  if [ "$what" = all ] || [ "$what" = mcp ]; then
    echo "==> MCP server (issue 5)"
    .venv/bin/python tests/mcp/bench_mcp.py --calls 400
  fi
fi
leak_line=$(cat docs/perf/leaks.txt 2>/dev/null || echo "not measured")

{
  cat <<HEADER
# Performance

Assembled by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d) from the files in \`docs/perf/\`, each
written by the benchmark that measured it. Every ratio compares sandlock with a baseline measured in
the same run. Machine: $(nproc) CPUs, Linux $(uname -r), $(free -g | awk '/Mem:/ {print $2}') GiB.

Leak check (\`tests/leaks.rs\`, release build): ${leak_line}.

HEADER
  cat docs/perf/notes.md
  for f in docs/perf/core.md docs/perf/startup.md docs/perf/startup-breakdown.md docs/perf/standins.md docs/perf/fsview.md docs/perf/before-after.md docs/perf/python-sdk.md docs/perf/mcp.md docs/perf/net.md; do
    [ -f "$f" ] || continue
    echo
    sed 's/^# /## /' "$f"
  done
} > docs/PERFORMANCE.md
echo "==> wrote docs/PERFORMANCE.md"
