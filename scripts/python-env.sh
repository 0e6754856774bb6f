#!/usr/bin/env bash
# Creates, once, the Python virtual environment that kvtier's tests use to run real
# publishers (pyzmq, and msgspec: what vLLM encodes its KV events with; msgpack for ad-hoc
# checks) and scripts/vllm_golden.py, and real clients (redis: redis-py, for the RESP port),
# and prints the path of its python interpreter on stdout.
#
#   scripts/python-env.sh            # venv in target/py-venv
#   KVTIER_PY_VENV=/tmp/v scripts/python-env.sh
#   KVTIER_PYTHON=python3.12 scripts/python-env.sh   # interpreter used to create it
#
# Idempotent and cheap when the venv is already complete (a stamp file records the
# requirements it was built with). Safe to run concurrently: creation is serialized with
# flock(1) when available. Everything but the final path goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KVTIER_PY_VENV:-$root/target/py-venv}"
base_python="${KVTIER_PYTHON:-python3}"
requirements=("pyzmq>=25" "msgpack>=1.0" "msgspec>=0.18" "redis>=5")
stamp="$venv/.kvtier-requirements"
wanted="${requirements[*]}"

ready() {
    [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]
}

if ! ready; then
    mkdir -p "$(dirname "$venv")"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$venv.lock"
        flock 9
    fi
    # Another process may have finished the job while this one waited for the lock.
    if ! ready; then
        echo "python-env: creating $venv" >&2
        if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
            echo "python-env: $venv exists and is not a virtual environment; not touching it" >&2
            exit 1
        fi
        rm -rf "$venv"
        "$base_python" -m venv "$venv" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "${requirements[@]}" >&2
        "$venv/bin/python" -c 'import zmq, msgpack, msgspec, redis' >&2
        printf '%s' "$wanted" >"$stamp"
    fi
fi

echo "$venv/bin/python"
