#!/usr/bin/env bash
# Builds the distributed `sandlock` binary: statically linked against musl, so that it starts
# without a dynamic loader, without relocating and resolving symbols against libc, libm and
# libgcc_s, and without glibc's start-up CPU probing (CPUID, which traps to the hypervisor on a
# VM); whole-program optimised (the `dist` profile in Cargo.toml). docs/perf/startup-breakdown.md
# measures each part. Needs the Rust toolchain's musl target (rustup adds it here if it is missing)
# and musl-gcc (Debian's musl-tools, installed here if it is missing): the Rust code links against
# the target's own C library, but `ring` (the TLS of the HTTP proxy) compiles C and assembly for it.
# Usage: scripts/build-release.sh      (prints the binary's path last)
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(uname -m)-unknown-linux-musl"
if ! rustup target list --installed | grep -qx "$target"; then
  echo "==> rustup target add $target"
  rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null; then
  echo "==> apt-get install musl-tools (musl-gcc, for ring's C code)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
fi
cc_var="CC_$(echo "$target" | tr - _)"
export "$cc_var"="${!cc_var:-musl-gcc}"
cargo build --quiet --locked --profile dist -p sandlock-cli --target "$target"
bin="${CARGO_TARGET_DIR:-target}/$target/dist/sandlock"
file "$bin" >&2
echo "$bin"
