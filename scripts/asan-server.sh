#!/usr/bin/env bash
# AddressSanitizer run of kvtier-server's unsafe module (`uring/sys.rs`: io_uring submissions
# whose buffers the kernel uses after the call) and of every integration test on the io_uring
# backend, with the nightly toolchain (Miri cannot be installed here; see NOTES.md).
# `--target` keeps build scripts and proc macros uninstrumented; a separate target dir keeps
# the normal one untouched. A use after free or overflow of a submitted buffer fails the run.
#
# Usage: scripts/asan-server.sh        (ASAN_TARGET_DIR overrides target/asan)
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="-Zsanitizer=address"
export RUSTDOCFLAGS="-Zsanitizer=address"
export CARGO_TARGET_DIR=${ASAN_TARGET_DIR:-target/asan}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
target=x86_64-unknown-linux-gnu

# Unit tests of the ring's operation table, then the end-to-end tests on io_uring.
cargo +nightly test -p kvtier-server --target "$target" --lib -- uring::
for t in echo stream limits shutdown in_place; do
  cargo +nightly test -p kvtier-server --target "$target" --test "$t" -- uring
done
