#!/usr/bin/env bash
# The router's pure part (contract C6): kvtier-router without default features builds, lints
# and runs its doc examples, and neither it nor the fuzz workspace pulls an async runtime, a
# socket or an HTTP library into its normal dependency tree. Fails if one comes back.
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden='^(tokio|axum|hyper|zeromq|mio|tower)([- ]|$)'
check_tree() {
  local what=$1
  shift
  local tree bad
  tree=$(cargo tree "$@" -e normal --prefix none)
  if bad=$(grep -E "$forbidden" <<<"$tree"); then
    echo "ci-pure-router: $what depends on a runtime, socket or HTTP crate:" >&2
    sort -u <<<"$bad" >&2
    echo "(put such code behind kvtier-router's \`zmq\` or \`service\` feature)" >&2
    exit 1
  fi
  echo "ci-pure-router: $what: $(sort -u <<<"$tree" | wc -l) crates, none of tokio/axum/hyper/zeromq"
}

check_tree "kvtier-router --no-default-features" -p kvtier-router --no-default-features
check_tree "the fuzz workspace" --manifest-path fuzz/Cargo.toml

cargo clippy -p kvtier-router --no-default-features --all-targets -- -D warnings
cargo test -p kvtier-router --no-default-features --doc
