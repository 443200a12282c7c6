#!/usr/bin/env bash
# Install nemo_run with its test extras, start the services the tests talk to (a Docker
# engine with a local image), and run the whole test suite (lint included).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="test,docker,lepton,skypilot" source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
"$VENV/bin/ruff" check .

engine="$(bash "$ROOT/scripts/docker-up.sh" | tail -n 1)"
echo "docker: $engine"
case "$engine" in
  engine=ok*) export NEMORUN_TEST_IMAGE="${engine#*image=}" ;;
  *) export NEMORUN_TEST_DOCKER_SKIP="${engine#engine=}" ;;
esac
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
