#!/bin/sh
# PID 1 inside the kernel-matrix VM (see run.sh): sets up a minimal machine, runs each suite named in
# /sandlock-vm/suites, and leaves its logs on the results disk (/dev/vdb) as a tar archive.
# Progress lines go to the console: "@@ start NAME", "@@ end NAME RC SECONDS".
BB=/sandlock-vm/busybox
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export HOME=/root LANG=C.UTF-8 CARGO_TERM_COLOR=never RUST_BACKTRACE=1
# Tests whose wall-clock bounds are meant for real CPUs read this (see emulated_cpu in the suites).
export SANDLOCK_TEST_EMULATED_CPU=qemu-tcg
# A suite that hangs is stopped here, so that the others still run and report.
SUITE_TIMEOUT=$(cat /sandlock-vm/suite-timeout 2>/dev/null || echo 900)
cd /

$BB mount -t proc proc /proc
$BB mount -t sysfs sys /sys
$BB mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
$BB mount -t devtmpfs dev /dev
$BB mkdir -p /dev/pts /dev/shm /run /tmp
$BB mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
$BB mount -t tmpfs -o mode=1777,size=512m shm /dev/shm
# /tmp stays on the disk: the repository may live under it (a CI checkout in a temporary directory).
$BB mount -t tmpfs -o mode=755 run /run
$BB ln -sf /proc/self/fd /dev/fd 2>/dev/null
# cgroup v2 with memory and pids delegated below the root, where the suites run: sandlock's
# cgroup = "auto" creates each run's cgroup there.
$BB mount -t cgroup2 none /sys/fs/cgroup
echo "+memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
$BB hostname sandlock-vm
$BB ip link set lo up

echo "@@ kernel $(uname -r) cpus $($BB nproc) landlock $(cat /sys/kernel/security/lsm 2>/dev/null)"
mkdir -p /sandlock-vm/logs
while read -r name dir cmd; do
  [ -n "$name" ] || continue
  case "$name" in \#*) continue ;; esac
  echo "@@ start $name"
  t0=$($BB date +%s)
  if [ -e /sandlock-vm/verbose ]; then
    # Each line on the console as it comes (slow, for finding what hangs).
    (cd "$dir" && timeout -k 10 "$SUITE_TIMEOUT" sh -c "$cmd"; echo "@rc $?") 2>&1 \
      | tee "/sandlock-vm/logs/$name.log" | sed "s/^/@@ > /"
    rc=$(sed -n 's/^@rc //p' "/sandlock-vm/logs/$name.log" | tail -n 1)
  else
    (cd "$dir" && timeout -k 10 "$SUITE_TIMEOUT" sh -c "$cmd") > "/sandlock-vm/logs/$name.log" 2>&1
    rc=$?
  fi
  [ "$rc" = 124 ] && echo "suite $name stopped after $SUITE_TIMEOUT s (timeout)" >> "/sandlock-vm/logs/$name.log"
  echo "@@ end $name $rc $(( $($BB date +%s) - t0 ))"
  grep -E '^(test result|SKIP|verdict|suite .* timeout)|[0-9]+ passed' "/sandlock-vm/logs/$name.log" | $BB tail -n 40 | sed "s/^/@@ | $name: /"
done < /sandlock-vm/suites

dmesg > /sandlock-vm/logs/dmesg.log 2>&1
(cd /sandlock-vm && $BB tar cf /dev/vdb logs)
sync
echo "@@ done"
$BB poweroff -f
