#!/usr/bin/env bash
# Creates, once, the Python virtual environment with moto's S3-compatible server (`moto[server]`
# from PyPI) that the G4 S3 tests (`cargo test -p kvtier-storage --features s3`) run against on
# loopback, and prints the path of its `moto_server` on stdout.
#
#   scripts/moto-env.sh              # venv in target/moto-venv
#   KVTIER_MOTO_VENV=/tmp/v scripts/moto-env.sh
#   KVTIER_PYTHON=python3.12 scripts/moto-env.sh   # interpreter used to create it
#
# Same pattern as scripts/python-env.sh: idempotent (a stamp file records the requirements),
# serialized with flock(1), everything but the final path on stderr. Exits 3 when PyPI cannot
# be reached, so that the tests can tell "no network" (skip) from a broken script (fail).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KVTIER_MOTO_VENV:-$root/target/moto-venv}"
base_python="${KVTIER_PYTHON:-python3}"
requirements=("moto[server]>=5,<6")
stamp="$venv/.kvtier-requirements"
wanted="${requirements[*]}"

ready() {
    [ -x "$venv/bin/moto_server" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]
}

if ! ready; then
    mkdir -p "$(dirname "$venv")"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$venv.lock"
        flock 9
    fi
    if ! ready; then
        echo "moto-env: creating $venv" >&2
        if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
            echo "moto-env: $venv exists and is not a virtual environment; not touching it" >&2
            exit 1
        fi
        rm -rf "$venv"
        "$base_python" -m venv "$venv" >&2
        if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "${requirements[@]}" >&2; then
            if ! "$venv/bin/python" -m pip download --quiet --no-deps -d "$venv/probe" \
                pip >/dev/null 2>&1; then
                echo "moto-env: PyPI unreachable" >&2
                exit 3
            fi
            echo "moto-env: pip install failed" >&2
            exit 1
        fi
        "$venv/bin/python" -c 'import moto.server' >&2
        printf '%s' "$wanted" >"$stamp"
    fi
fi

echo "$venv/bin/moto_server"
