#!/usr/bin/env bash
# Install nemo_run with its test extras, start the services the tests talk to (a Docker
# engine with a local image; a SkyPilot API server with a local Slurm cluster), and run the
# whole test suite (lint and type check included). The emulators start inside the tests as
# processes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="test,docker,lepton,skypilot,dashboard" source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"  # [tool.mypy] in pyproject.toml: the whole package, no error allowed

# nemo-run 0.11.1 in its own venv (bench/.peer-venv), built while the services start: the
# tests that reopen what 0.11.1 wrote and the API report against it use it (they skip without)
peerlog="${TMPDIR:-/tmp}/nemorun-peer-venv.log"
(
  cd "${TMPDIR:-/tmp}"
  ok='import importlib.metadata as m, sys; sys.exit(m.version("nemo-run") != "0.11.1")'
  if ! "$ROOT/bench/.peer-venv/bin/python" -c "$ok" 2>/dev/null; then
    "$VENV/bin/python" -m venv "$ROOT/bench/.peer-venv"
    "$ROOT/bench/.peer-venv/bin/pip" install -q --disable-pip-version-check \
      "nemo-run==0.11.1" "leptonai==0.27.3"  # newer leptonai breaks its import
  fi
) >"$peerlog" 2>&1 &
peer_pid=$!
# headless Chromium and its driver for the dashboard's browser tests (apt-get only if missing)
browser="$(bash "$ROOT/scripts/browser-up.sh" | tail -n 1)"
echo "browser: $browser"
case "$browser" in
  browser=ok*) ;;
  *) export NEMORUN_TEST_BROWSER_SKIP="${browser#browser=unavailable: }" ;;
esac
engine="$(bash "$ROOT/scripts/docker-up.sh" | tail -n 1)"
echo "docker: $engine"
case "$engine" in
  engine=ok*) export NEMORUN_TEST_IMAGE="${engine#*image=}" ;;
  *) export NEMORUN_TEST_DOCKER_SKIP="${engine#engine=}" ;;
esac
# Slurm: a local cluster with accounting (sacct) and an sshd login node on loopback; the
# SkyPilot stack below is built on it. Both are stopped by PID on exit.
slurmlog="${TMPDIR:-/tmp}/nemorun-slurm-up.log"
if bash "$ROOT/scripts/slurm-up.sh" >"$slurmlog" 2>&1; then
  slurm="$(tail -n 1 "$slurmlog")"
else
  tail -n 30 "$slurmlog"
  exit 1
fi
echo "slurm: $slurm"
case "$slurm" in
  slurm=ok*)
    base="${slurm#*base=}"
    export NEMORUN_TEST_SLURM_BASE="${base%% *}"
    trap 'bash "$ROOT/scripts/skypilot-down.sh" >/dev/null 2>&1 || true' EXIT
    ;;
  *) export NEMORUN_TEST_SLURM_SKIP="${slurm#slurm=unavailable: }" ;;
esac
# SkyPilot: an API server using that cluster
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
if wait "$peer_pid"; then echo "peer: nemo-run 0.11.1 in bench/.peer-venv"; else
  echo "peer: bench/.peer-venv could not be built (see $peerlog); its tests skip"; fi
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=15 "$@"
