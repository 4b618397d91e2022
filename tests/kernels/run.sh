#!/usr/bin/env bash
# The kernel matrix: boots another Linux kernel under qemu (TCG: no KVM needed) and runs sandlock's
# suites inside it, as root and as uid 1000 in the restricted-pod harness, then reports per suite.
#
#   tests/kernels/run.sh [--kernel 6.1] [--suites LIST] [--list] [--keep] [--verbose] [--filter NAME]
#                        [--run CMD] [--suite-timeout S]
#
# --kernel   a kernel from tests/kernels/kernels.txt (default: 6.1)
# --suites   comma-separated suite names (default: all of them; --list shows them)
# --keep     keep the work directory (target/kernels/<kernel>/) with the image and logs
# --verbose  every line of every suite on the console as it comes (slow; for finding a hang)
# --filter   only the Rust tests whose names contain this (core, core-podsim, cli, cli-podsim)
# --run CMD  run CMD (a shell command, from the repository) in the guest as the only suite, "run"
# --suite-timeout S  stop a suite that runs longer than S seconds (default 900, or
#            $SANDLOCK_KERNELS_SUITE_TIMEOUT); the whole boot is bounded by $SANDLOCK_KERNELS_TIMEOUT (3000)
#
# It needs root (apt-get for qemu and the kernel, and the podsim suites), the workspace's test
# binaries (it builds them), and for the Python and MCP smoke the repository's .venv with the SDK
# installed (scripts/test.sh makes it; without it those suites are skipped with the reason).
# The guest sees the host's own /usr and /etc (copied into an ext4 image, hardlinked where
# possible), so the binaries built here run there unchanged. Logs: target/kernels/<kernel>/logs/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
HERE=$ROOT/tests/kernels

kernel=6.1
suites=
keep=0
verbose=0
filter=
adhoc=
suite_timeout=${SANDLOCK_KERNELS_SUITE_TIMEOUT:-900}
list=0
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel=$2; shift 2 ;;
    --suites) suites=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --verbose) verbose=1; shift ;;
    --filter) filter=$2; shift 2 ;;
    --run) adhoc=$2; shift 2 ;;
    --suite-timeout) suite_timeout=$2; shift 2 ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "[kernels $kernel] $*"; }
die() { echo "[kernels $kernel] FAILED: $*" >&2; exit 1; }

line=$(grep -E "^$kernel[[:space:]]" "$HERE/kernels.txt" || true)
[ -n "$line" ] || die "unknown kernel '$kernel'; known: $(grep -vE '^(#|$)' "$HERE/kernels.txt" | awk '{print $1}' | tr '\n' ' ')"
read -r _ package fallback <<< "$line"

# Each suite: NAME, directory to run in (relative to the repository), command; in the guest.
# Binaries are resolved below; @BIN:crate:target@ stands for a test executable.
SUITES=$(cat <<'EOF'
check           .                   @ROOT@/target/debug/sandlock check
check-podsim    .                   @ROOT@/target/debug/podsim -- @ROOT@/target/debug/sandlock check
core-unit       target/debug/deps   @BIN:sandlock-core:sandlock_core@ -q
core            target/debug/deps   @BIN:sandlock-core:all@ -q @FILTER@
core-leaks      target/debug/deps   SANDLOCK_LEAK_RUNS=200 @BIN:sandlock-core:leaks@ -q
cli             target/debug/deps   @BIN:sandlock-cli:cli@ -q @FILTER@
podsim-self     target/debug/deps   @BIN:podsim:podsim@ -q && @BIN:podsim:all@ -q
core-podsim     target/debug/deps   @ROOT@/target/debug/podsim -- @BIN:sandlock-core:all@ -q @FILTER@
cli-podsim      target/debug/deps   @ROOT@/target/debug/podsim -- @BIN:sandlock-cli:cli@ -q @FILTER@
python          .                   @PY@ -m pytest -p no:cacheprovider -q -rs python/tests/test_api.py python/tests/test_limits.py
python-podsim   .                   @ROOT@/target/debug/podsim -- @PY@ -m pytest -p no:cacheprovider -q -rs python/tests/test_api.py
mcp             tests/mcp           SANDLOCK_STRESS_ITERATIONS=30 @PY@ -m pytest -p no:cacheprovider -q -rs test_python_client.py test_fork_mode.py test_large_output.py test_stress.py -k "returns_text or file_tools_share or cannot_reach_the_server or per_call_limits or stdio_transport or start_policy or killed_fork_server or (python_client_gets_any_output_size and 10MiB) or pipelines_after_an_output_cap"
EOF
)
[ -n "$adhoc" ] && SUITES="run . $adhoc"
if [ "$list" = 1 ]; then echo "$SUITES" | awk '{print $1}'; exit 0; fi
if [ -n "$suites" ]; then
  SUITES=$(echo "$SUITES" | awk -v want=",$suites," 'index(want, "," $1 ",") > 0')
  [ -n "$SUITES" ] || die "no such suite in '$suites' (see --list)"
fi

[ "$(id -u)" = 0 ] || die "run it as root (apt-get, and the podsim suites start as root)"
WORK=$ROOT/target/kernels/$kernel
mkdir -p "$WORK"

# --- what the host needs -------------------------------------------------------------------
t_setup=$(date +%s)
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v cpio >/dev/null || need+=(cpio)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
fetch() {  # PACKAGE DIR: download a Debian package (not installed) and unpack it into DIR
  local pkg=$1 dir=$2
  [ -e "$dir/.done" ] && return 0
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && apt-get download "$pkg" >/dev/null 2>&1) \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && (cd "$dir" && apt-get download "$pkg" >/dev/null 2>&1); } \
    || return 1
  dpkg-deb -x "$dir"/*.deb "$dir/root" && touch "$dir/.done"
}
if ! fetch "$package" "$WORK/kernel"; then
  [ -n "${fallback:-}" ] || die "cannot download $package"
  say "$package is not in the archive any more; using what $fallback depends on"
  package=$(apt-cache depends "$fallback" | awk '/Depends: linux-image-/{print $2; exit}')
  fetch "$package" "$WORK/kernel" || die "cannot download $package"
fi
fetch busybox-static "$WORK/busybox" || die "cannot download busybox-static"
vmlinuz=$(ls "$WORK"/kernel/root/boot/vmlinuz-* | head -1)
modules=$(ls -d "$WORK"/kernel/root/lib/modules/* | head -1)
say "kernel $(basename "$vmlinuz"), host setup $(( $(date +%s) - t_setup )) s"

# --- the test binaries ----------------------------------------------------------------------
t_build=$(date +%s)
cargo build --workspace --all-targets --quiet
bins=$(cargo test --workspace --no-run --message-format=json --quiet 2>/dev/null \
  | /usr/bin/python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("profile", {}).get("test") and m.get("executable"):
        pkg = m["package_id"].split("#")[0].rsplit("/", 1)[-1]
        print(pkg + ":" + m["target"]["name"], m["executable"])')
bin_of() { echo "$bins" | awk -v k="$1" '$1 == k {print $2; exit}'; }
PY=$ROOT/.venv/bin/python
resolved=""
while read -r name dir cmd; do
  [ -n "$name" ] || continue
  if [[ "$cmd" == *@PY@* ]] && ! "$PY" -c 'import sandlock, mcp' 2>/dev/null; then
    say "SKIP $name: the repository's .venv with the sandlock SDK and mcp is missing (scripts/test.sh makes it)"
    continue
  fi
  while [[ "$cmd" =~ @BIN:([^@]+)@ ]]; do
    key=${BASH_REMATCH[1]}
    exe=$(bin_of "$key")
    [ -n "$exe" ] || die "no test binary for $key"
    cmd=${cmd//@BIN:$key@/$exe}
  done
  cmd=${cmd//@FILTER@/${filter:+$(printf %q "$filter")}}
  cmd=${cmd//@ROOT@/$ROOT}
  cmd=${cmd//@PY@/$PY}
  resolved+="$name $ROOT/$dir $cmd"$'\n'
done <<< "$SUITES"
say "test binaries ready in $(( $(date +%s) - t_build )) s"

# --- the guest's disk: the host's /usr and /etc, the repository, the test binaries ------------
t_image=$(date +%s)
STAGE=$WORK/stage
rm -rf "$STAGE"; mkdir -p "$STAGE"
copy() {  # copy PATH... (absolute) into the stage at the same place; hard links where possible
  for p in "$@"; do
    [ -e "$p" ] || continue
    mkdir -p "$STAGE$(dirname "$p")"
    cp -al "$p" "$STAGE$(dirname "$p")/" 2>/dev/null || cp -a "$p" "$STAGE$(dirname "$p")/"
  done
}
copy /usr/bin /usr/sbin /usr/lib64 /usr/libexec /usr/include /usr/share/zoneinfo /usr/share/ca-certificates
copy /usr/lib/x86_64-linux-gnu /usr/lib/python3 /usr/lib/python3.11 /usr/lib/gcc /usr/lib/locale /usr/lib/os-release
# OpenSSL's directory: its default CA file (cert.pem) is a symlink to the bundle in /etc/ssl.
copy /usr/lib/ssl
copy /usr/local/bin /usr/local/lib
cp -a /etc "$STAGE/"
for l in bin sbin lib lib64; do ln -sfn "usr/$l" "$STAGE/$l"; done
mkdir -p "$STAGE"/{proc,sys,dev,tmp,run,root,var/tmp,sandlock-vm} "$STAGE/sys/fs/cgroup"
chmod 1777 "$STAGE/tmp" "$STAGE/var/tmp"
# The suites write under /tmp, which stays on this disk in the guest (see guest.sh).
# The repository at the same path (test binaries embed it), with ../shared beside it.
mkdir -p "$STAGE$ROOT"
git ls-files -z | (cd "$ROOT" && cpio -0 -pdm --quiet "$STAGE$ROOT")
[ -d "$ROOT/../shared" ] && { mkdir -p "$STAGE$(dirname "$ROOT")"; cp -aL "$ROOT/../shared" "$STAGE$(dirname "$ROOT")/"; }
mkdir -p "$STAGE$ROOT/target/debug/deps"
cp -al "$ROOT/target/debug/sandlock" "$ROOT/target/debug/podsim" "$STAGE$ROOT/target/debug/" 2>/dev/null \
  || cp -a "$ROOT/target/debug/sandlock" "$ROOT/target/debug/podsim" "$STAGE$ROOT/target/debug/"
for exe in $(echo "$bins" | awk '{print $2}'); do
  cp -al "$exe" "$STAGE$ROOT/target/debug/deps/" 2>/dev/null || cp -a "$exe" "$STAGE$ROOT/target/debug/deps/"
done
[ -d "$ROOT/.venv" ] && copy "$ROOT/.venv"
# uid 1000 (the podsim suites) must reach the repository and the venv.
d=$STAGE$ROOT
while [ "$d" != "$STAGE" ]; do chmod o+x "$d"; d=$(dirname "$d"); done
cp "$WORK/busybox/root/bin/busybox" "$STAGE/sandlock-vm/busybox"
install -m 755 "$HERE/guest.sh" "$STAGE/sandlock-vm/guest.sh"
printf '%s' "$resolved" > "$STAGE/sandlock-vm/suites"
[ "$verbose" = 1 ] && touch "$STAGE/sandlock-vm/verbose"
echo "$suite_timeout" > "$STAGE/sandlock-vm/suite-timeout"
size_mb=$(( $(du -sm "$STAGE" | cut -f1) + 1024 ))
rm -f "$WORK/root.img" "$WORK/results.img"
truncate -s "${size_mb}M" "$WORK/root.img"
mkfs.ext4 -q -F -E root_owner=0:0 -d "$STAGE" "$WORK/root.img"
truncate -s 256M "$WORK/results.img"
rm -rf "$STAGE"

# The initramfs: busybox and the virtio modules, enough to mount the disk and switch to it.
INITRD=$WORK/initrd
rm -rf "$INITRD"; mkdir -p "$INITRD"/{bin,dev,proc,sys,mnt,modules}
cp "$WORK/busybox/root/bin/busybox" "$INITRD/bin/"
mods="virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk"
for m in $mods; do
  f=$(find "$modules" -name "$m.ko*" | head -1)
  [ -n "$f" ] || die "module $m not found in $modules"
  cp "$f" "$INITRD/modules/"
done
cat > "$INITRD/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $mods; do insmod /modules/\$m.ko* || echo "insmod \$m failed"; done
for i in \$(seq 50); do [ -b /dev/vda ] && [ -b /dev/vdb ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /mnt || { echo "@@ cannot mount the root disk"; poweroff -f; }
umount /proc /sys /dev
exec switch_root /mnt /sandlock-vm/guest.sh
EOF
chmod +x "$INITRD/init"
(cd "$INITRD" && find . | cpio -o -H newc --quiet) > "$WORK/initrd.cpio"
say "image ${size_mb} MiB built in $(( $(date +%s) - t_image )) s"

# --- boot ---------------------------------------------------------------------------------
t_boot=$(date +%s)
say "booting under qemu (TCG); progress follows"
set +e
timeout --foreground "${SANDLOCK_KERNELS_TIMEOUT:-3000}" qemu-system-x86_64 \
  -accel tcg -cpu max -smp 2 -m 8192 -nographic -no-reboot \
  -kernel "$vmlinuz" -initrd "$WORK/initrd.cpio" \
  -drive "file=$WORK/root.img,format=raw,if=virtio,cache=unsafe" \
  -drive "file=$WORK/results.img,format=raw,if=virtio,cache=unsafe" \
  -append "console=ttyS0 loglevel=1 panic=-1" \
  < /dev/null 2>&1 | tee "$WORK/console.log" | grep --line-buffered '^@@' | sed -u 's/^@@ /  /'
qemu_rc=${PIPESTATUS[0]}
set -e
rm -rf "$WORK/logs"; mkdir -p "$WORK/logs"
tar xf "$WORK/results.img" -C "$WORK" 2>/dev/null || true
[ "$keep" = 1 ] || rm -f "$WORK/root.img" "$WORK/results.img"

# --- report -------------------------------------------------------------------------------
echo
printf '%-16s %-8s %8s  %s\n' suite result seconds tests
failed=0
while read -r name _; do
  [ -n "$name" ] || continue
  end=$(grep -a "^@@ end $name " "$WORK/console.log" | tail -1 || true)
  if [ -z "$end" ]; then
    printf '%-16s %-8s %8s  %s\n' "$name" "NOT RUN" - "the VM stopped before it"; failed=1; continue
  fi
  read -r _ _ _ rc secs <<< "$end"
  counts=$(grep -aoE '[0-9]+ passed|[0-9]+ failed|[0-9]+ skipped' "$WORK/logs/$name.log" 2>/dev/null \
    | awk '{s[$2]+=$1} END {printf "%d passed, %d failed, %d skipped", s["passed"], s["failed"], s["skipped"]}' || true)
  verdict=$(grep -a '^verdict' "$WORK/logs/$name.log" 2>/dev/null | sed 's/^verdict *//' || true)
  [ -n "$verdict" ] && counts=$verdict
  skips=$(grep -ac '^SKIP' "$WORK/logs/$name.log" 2>/dev/null || true)
  [ "${skips:-0}" -gt 0 ] && counts="$counts; $skips SKIP lines"
  if [ "$rc" = 0 ]; then res=passed; else res=FAILED; failed=1; fi
  printf '%-16s %-8s %8s  %s\n' "$name" "$res" "$secs" "$counts"
done <<< "$resolved"
say "boot and suites $(( $(date +%s) - t_boot )) s (qemu exit $qemu_rc); logs in ${WORK#"$ROOT"/}/logs/"
grep -aq '^@@ done' "$WORK/console.log" || { say "the VM did not finish (timeout or crash; see ${WORK#"$ROOT"/}/console.log)"; failed=1; }
exit $failed
