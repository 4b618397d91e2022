#!/usr/bin/env bash
# The whole test suite, with all set-up, on a fresh Debian machine that has the Rust toolchain.
# Usage: scripts/test.sh            (CI calls exactly this through .ci/run)
#
# Stages: system packages, build, format and lint, the Rust suites run directly, the same suites
# under the restricted-pod harness (podsim: uid 1000, no capabilities, RuntimeDefault-like seccomp,
# read-only root), the suites again with Landlock capped at ABI 2 and at ABI 1 (the supervisor's stand-ins at
# work, as on Linux 6.1 and 5.13-5.18), the Python SDK and MCP server suites, and the kernel matrix (Debian 12's
# Linux 6.1 under qemu, tests/kernels). Each stage prints its time; the first failure stops the run
# with its name.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export PYTHONDONTWRITEBYTECODE=1

stage_start=0
stage() {
  local now; now=$(date +%s)
  if [ "$stage_start" != 0 ]; then echo "    ($(( now - stage_start )) s)"; fi
  stage_start=$now
  echo; echo "==> $*"
}
fail() { echo "FAILED: $*" >&2; exit 1; }
trap 'echo "FAILED in stage above (line $LINENO)" >&2' ERR

stage "system packages"
need=()
command -v gcc >/dev/null || need+=(gcc)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
[ -e /usr/include/python3.11/Python.h ] || ls /usr/include/python3*/Python.h >/dev/null 2>&1 || need+=(python3-dev)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# The scale-out test runs the shipped HAProxy configuration in front of three servers.
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
# LobeHub's Cloud Sandbox tools fetch uploads and skills with curl and unpack skills with unzip.
command -v curl >/dev/null || need+=(curl)
command -v unzip >/dev/null || need+=(unzip)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    fail "missing packages (${need[*]}); install them or run as root"
  fi
else
  echo "all present"
fi

if [ "$(id -u)" = 0 ]; then
  # The network-rule tests resolve two names to loopback addresses, the way a host resolves any
  # name it knows (the kernel matrix copies /etc, so the VM knows them too).
  grep -q ' allowed.test$' /etc/hosts || printf '127.0.0.2 allowed.test\n127.0.0.3 other.test\n' >> /etc/hosts
  # The podsim stages run as uid 1000, which must be able to reach the checkout and its build output.
  d="$ROOT"
  while [ "$d" != / ]; do
    if [ "$(stat -c %A "$d" | cut -c10)" != x ] && [ "$(stat -c %A "$d" | cut -c10)" != t ]; then echo "chmod o+x $d (so uid 1000 can reach the checkout)"; chmod o+x "$d"; fi
    d=$(dirname "$d")
  done
fi

stage "build (workspace, all targets)"
cargo build --workspace --all-targets --quiet

stage "format and lint"
cargo fmt --all -- --check || fail "cargo fmt: run 'cargo fmt --all'"
cargo clippy --workspace --all-targets --quiet -- -D warnings

stage "Rust tests, directly (as $(id -un))"
cargo test --workspace --quiet 2>&1 | tee /tmp/sandlock-test-direct.log | grep -E '^(test result|SKIP|running|failures|---- )' || true
grep -q 'test result: FAILED' /tmp/sandlock-test-direct.log && fail "Rust tests (see /tmp/sandlock-test-direct.log)"
grep -q 'test result: ok' /tmp/sandlock-test-direct.log || fail "Rust tests did not run"

stage "Rust tests under the restricted-pod harness (podsim)"
if [ "$(id -u)" != 0 ]; then
  echo "SKIP podsim: it must start as root (it then drops to uid 1000)"
else
  bins=$(cargo test --workspace --no-run --message-format=json --quiet 2>/dev/null \
    | /usr/bin/python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    pkg = m.get("package_id", "").split("#")[0].rsplit("/", 1)[-1]
    # podsim tests its own filter from outside; under itself they would test the wrong thing.
    if m.get("profile", {}).get("test") and m.get("executable") and "podsim" not in pkg:
        print(pkg + "-" + m["target"]["name"], m["executable"])')
  while read -r name exe; do
    [ -n "$exe" ] || continue
    echo "--- $name (uid 1000 in podsim)"
    (cd "$(dirname "$exe")" && "$ROOT/target/debug/podsim" -- "$exe" -q) 2>&1 | tee /tmp/sandlock-podsim-$name.log | grep -E '^(test result|SKIP)' || true
    grep -q 'test result: ok' /tmp/sandlock-podsim-$name.log || fail "$name under podsim (see /tmp/sandlock-podsim-$name.log)"
  done <<< "$bins"
fi

stage "Rust suites against the stand-ins for Landlock features (SANDLOCK_MAX_LANDLOCK_ABI=2, as on Linux 6.1, and =1, as on 5.13-5.18), directly and under podsim"
capped_bins=$(cargo test -p sandlock-core -p sandlock-cli --no-run --message-format=json --quiet 2>/dev/null \
  | /usr/bin/python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("profile", {}).get("test") and m.get("executable") and m["target"]["name"] in ("all", "cli"):
        print(m["target"]["name"], m["executable"])')
while read -r name exe; do
  [ -n "$exe" ] || continue
  for abi in 2 1; do
    for how in direct podsim; do
      if [ "$how" = podsim ]; then
        [ "$(id -u)" = 0 ] || { echo "SKIP $name under podsim: it must start as root"; continue; }
        run=("$ROOT/target/debug/podsim" -- "$exe" -q)
      else
        run=("$exe" -q)
      fi
      log="/tmp/sandlock-capped$abi-$name-$how.log"
      echo "--- $name, $how, Landlock ABI $abi at most"
      (cd "$(dirname "$exe")" && SANDLOCK_MAX_LANDLOCK_ABI=$abi "${run[@]}") 2>&1 | tee "$log" | grep -E '^(test result|SKIP)' || true
      grep -q 'test result: ok' "$log" || fail "$name ($how) with Landlock capped at ABI $abi (see $log)"
    done
  done
done <<< "$capped_bins"

stage "Python environment (venv, pinned test dependencies, the SDK built from source, npm clients)"
# /usr/bin/python3 (the distribution's), not a per-user interpreter: uid 1000 must be able to run it.
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r python/requirements-dev.txt -r tests/mcp/requirements.txt
CARGO_TARGET_DIR="$ROOT/target" .venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./python
(cd tests/mcp && npm ci --silent --no-audit --no-fund)

stage "Python lint (ruff)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

pytest_run() {  # name, then the command; fails the stage unless pytest reports a pass
  local name=$1; shift
  "$@" 2>&1 | tee "/tmp/sandlock-$name.log" | grep -E '^(SKIPPED|FAILED|ERROR)|passed|failed' || true
  grep -qE '[0-9]+ passed' "/tmp/sandlock-$name.log" && ! grep -qE '[0-9]+ (failed|error)' "/tmp/sandlock-$name.log" \
    || fail "$name (see /tmp/sandlock-$name.log)"
}
PYTEST=(-m pytest -p no:cacheprovider -q -rs)

stage "Python SDK tests, directly"
pytest_run python-direct .venv/bin/python "${PYTEST[@]}" python/tests

stage "Python SDK tests under podsim (uid 1000, restricted-pod profile)"
if [ "$(id -u)" = 0 ]; then
  pytest_run python-podsim target/debug/podsim -- "$ROOT/.venv/bin/python" "${PYTEST[@]}" python/tests
else
  echo "SKIP podsim: it must start as root"
fi

stage "MCP server tests with real clients (Python mcp, TypeScript SDK, Inspector), directly"
pytest_run mcp-direct bash -c 'cd tests/mcp && ../../.venv/bin/python "$@"' _ "${PYTEST[@]}"

stage "MCP server tests, every server under podsim, clients outside"
if [ "$(id -u)" = 0 ]; then
  pytest_run mcp-podsim env SANDLOCK_MCP_PODSIM=1 bash -c 'cd tests/mcp && ../../.venv/bin/python "$@"' _ "${PYTEST[@]}"
else
  echo "SKIP podsim: it must start as root"
fi

stage "Python SDK and MCP tests against the stand-ins (SANDLOCK_MAX_LANDLOCK_ABI=2)"
pytest_run python-capped env SANDLOCK_MAX_LANDLOCK_ABI=2 .venv/bin/python "${PYTEST[@]}" python/tests
pytest_run mcp-capped env SANDLOCK_MAX_LANDLOCK_ABI=2 bash -c 'cd tests/mcp && ../../.venv/bin/python "$@"' _ "${PYTEST[@]}"

stage "Kubernetes manifests (offline, strict) and the HAProxy configuration"
.venv/bin/kubernetes-validate --strict -k 1.30 deploy/kubernetes/*.yaml
/usr/sbin/haproxy -c -q -f deploy/haproxy/haproxy.cfg || fail "deploy/haproxy/haproxy.cfg (haproxy -c)"

stage "Kernel matrix: Debian 12's Linux 6.1 under qemu (TCG), root and uid 1000 (tests/kernels)"
if [ "$(id -u)" = 0 ]; then
  tests/kernels/run.sh --kernel 6.1 || fail "kernel matrix on Linux 6.1 (see target/kernels/6.1/logs/)"
else
  echo "SKIP kernel matrix: it must start as root (apt-get, and podsim inside the VM)"
fi

stage "done"
echo "all stages passed"
