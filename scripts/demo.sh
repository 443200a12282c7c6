#!/usr/bin/env bash
# Install nemo_run and run the main job: a small local experiment (a Script and a Partial).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
exec "$VENV/bin/python" "$ROOT/examples/hello_local.py" "$@"
