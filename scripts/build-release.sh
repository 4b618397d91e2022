#!/usr/bin/env bash
# Builds the distributed `sandlock` binary: statically linked against musl, so that it starts
# without a dynamic loader, without relocating and resolving symbols against libc, libm and
# libgcc_s, and without glibc's start-up CPU probing (CPUID, which traps to the hypervisor on a
# VM); whole-program optimised (the `dist` profile in Cargo.toml). docs/perf/startup-breakdown.md
# measures each part. Needs only the Rust toolchain: the musl target ships its own C library and
# start files (no musl-gcc), and rustup adds it here if it is missing.
# Usage: scripts/build-release.sh      (prints the binary's path last)
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(uname -m)-unknown-linux-musl"
if ! rustup target list --installed | grep -qx "$target"; then
  echo "==> rustup target add $target"
  rustup target add "$target"
fi
cargo build --quiet --locked --profile dist -p sandlock-cli --target "$target"
bin="${CARGO_TARGET_DIR:-target}/$target/dist/sandlock"
file "$bin" >&2
echo "$bin"
