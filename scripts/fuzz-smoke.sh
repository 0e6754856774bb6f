#!/usr/bin/env bash
# Fuzz smoke run: builds every cargo-fuzz target in fuzz/ with debug assertions and overflow
# checks on, then runs each one for FUZZ_SECONDS seconds (default 20) from its committed seeds
# (fuzz/seeds/<target>/; for vllm_batch also the msgspec golden batches under
# crates/kvtier-router/tests/data/vllm/ when present). Any crash, overflow, failed assertion,
# leak or slow input fails the script; libFuzzer prints the input and cargo fuzz keeps it under
# fuzz/artifacts/<target>/, to reproduce with `cargo fuzz run --debug-assertions TARGET FILE`.
#
# Installs cargo-fuzz from crates.io when missing. It needs nightly flags, which the stable
# toolchain accepts with RUSTC_BOOTSTRAP=1 (see docs: NOTES on cargo fuzz).
#
# Usage: scripts/fuzz-smoke.sh [TARGET...]     (default: every target of `cargo fuzz list`)
#        FUZZ_SECONDS=60 scripts/fuzz-smoke.sh router_snapshot_body
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd fuzz
# The fuzz workspace's release profile also sets overflow-checks = true; --debug-assertions
# keeps them on even when cargo-fuzz's own flags change.
cargo fuzz build --debug-assertions

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
  # libFuzzer writes new inputs into the first corpus folder: a scratch one, so the committed
  # seeds stay as they are.
  corpora=("$work/$target")
  mkdir -p "$work/$target"
  if [ -d "seeds/$target" ]; then
    corpora+=("seeds/$target")
  else
    echo "fuzz-smoke: warning: no seeds for $target (fuzz/seeds/$target)" >&2
  fi
  if [ "$target" = vllm_batch ] && [ -d ../crates/kvtier-router/tests/data/vllm ]; then
    corpora+=(../crates/kvtier-router/tests/data/vllm)
  fi
  echo "fuzz-smoke: $target for ${seconds}s from ${corpora[*]:1}"
  start=$(date +%s)
  cargo fuzz run --debug-assertions "$target" "${corpora[@]}" -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    2>"$work/$target.log" || {
    grep -m 4 -A 3 -E 'panicked at|ERROR: (AddressSanitizer|libFuzzer)' "$work/$target.log" >&2 || true
    tail -n 25 "$work/$target.log" >&2
    echo "fuzz-smoke: $target FAILED (input kept under fuzz/artifacts/$target/)" >&2
    failed+=("$target")
    continue
  }
  grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$work/$target.log" \
    | tr '\n' ' ' || true
  echo "($(($(date +%s) - start))s)"
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz-smoke: crashes in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz-smoke: ${#targets[@]} targets, ${seconds}s each, no crash"
