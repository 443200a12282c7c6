#!/usr/bin/env bash
# Sourced by demo.sh and test.sh: make sure a Python >= 3.10 venv exists at $VENV with
# nemo_run installed (editable) with the extras in $EXTRAS. On a bare Debian machine, as
# root, installs python3-venv first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
EXTRAS="${EXTRAS:-}"

python_ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; }

pick_python() {
  for candidate in "${PYTHON:-}" python3 python3.12 python3.11 python3.10 /usr/bin/python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  if ! PY="$(pick_python)"; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "bootstrap: installing python3 and python3-venv with apt-get" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
      PY="$(pick_python)"
    else
      echo "bootstrap: need Python >= 3.10 with the venv module (Debian: apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
  "$PY" -m venv "$VENV"
fi
SPEC="$ROOT"
[ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$SPEC"
