#!/usr/bin/env bash
# Install nemo_run with its test extras, start the services the tests talk to (a Docker
# engine with a local image; a SkyPilot API server with a local Slurm cluster), and run the
# whole test suite (lint and type check included). The emulators start inside the tests as
# processes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="test,docker,lepton,skypilot" source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"  # [tool.mypy] in pyproject.toml: the whole package, no error allowed

engine="$(bash "$ROOT/scripts/docker-up.sh" | tail -n 1)"
echo "docker: $engine"
case "$engine" in
  engine=ok*) export NEMORUN_TEST_IMAGE="${engine#*image=}" ;;
  *) export NEMORUN_TEST_DOCKER_SKIP="${engine#engine=}" ;;
esac
# SkyPilot: a local Slurm cluster, sshd on loopback and an API server; stopped by PID on exit
skylog="${TMPDIR:-/tmp}/nemorun-skypilot-up.log"
if NEMORUN_SKY_PYTHON="$VENV/bin/python" bash "$ROOT/scripts/skypilot-up.sh" >"$skylog" 2>&1; then
  sky="$(tail -n 1 "$skylog")"
else
  tail -n 30 "$skylog"
  exit 1
fi
echo "skypilot: $sky"
case "$sky" in
  skypilot=ok*)
    home="${sky#*home=}"
    export NEMORUN_TEST_SKY_HOME="${home%% *}"
    trap 'bash "$ROOT/scripts/skypilot-down.sh" >/dev/null 2>&1 || true' EXIT
    ;;
  *) export NEMORUN_TEST_SKY_SKIP="${sky#skypilot=}" ;;
esac
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=15 "$@"
