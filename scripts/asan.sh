#!/usr/bin/env bash
# AddressSanitizer run of kvtier-storage's unsafe module (`arena/raw.rs`) and of the arena's
# public tests, with the nightly toolchain (Miri cannot be installed here; see NOTES.md).
# `--target` keeps build scripts and proc macros uninstrumented; a separate target dir keeps
# the normal one untouched. Any heap overflow, use after free or double free fails the run.
#
# Usage: scripts/asan.sh        (ASAN_TARGET_DIR overrides target/asan)
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="-Zsanitizer=address"
export RUSTDOCFLAGS="-Zsanitizer=address"
export CARGO_TARGET_DIR=${ASAN_TARGET_DIR:-target/asan}
# allocator_may_return_null: the tests ask for absurd sizes on purpose and expect an error back.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
target=x86_64-unknown-linux-gnu

# Unit tests of the arena (raw.rs included), then the arena's integration tests.
cargo +nightly test -p kvtier-storage --target "$target" --lib -- arena::
cargo +nightly test -p kvtier-storage --target "$target" --test arena
