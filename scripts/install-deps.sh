#!/usr/bin/env bash
# Installs, once, the system packages kvtier's tests run against: redis-server and redis-tools
# (redis-cli, redis-benchmark) for the G4 Redis store's tests and bench. Idempotent: does
# nothing when `redis-server` and `redis-cli` are already on PATH. Needs root (or sudo) and a
# Debian/Ubuntu apt; anywhere else it says what to install and fails.
#
#   scripts/install-deps.sh
#
# Nothing is started: the tests start their own redis-server on a free 127.0.0.1 port.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    echo "install-deps: redis-server and redis-cli already present" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: no apt-get here; install redis-server and redis-tools (7.0+) by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-deps: installing redis-server redis-tools" >&2
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq --no-install-recommends redis-server redis-tools >&2
# Debian's package may start a system-wide instance on port 6379; the tests never use it.
redis-server --version >&2
