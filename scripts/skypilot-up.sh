#!/usr/bin/env bash
# Start what the SkyPilot integration tests talk to, on one machine, as root on Debian:
#   - the local Slurm cluster "localcluster" of scripts/slurm-up.sh (munged, MariaDB,
#     slurmdbd, slurmctld, slurmds; partition debug) with its "login node": an sshd on
#     127.0.0.1:$NEMORUN_SKY_SSH_PORT (default 2222) letting an unprivileged user (skyuser) in
#     with a key; SkyPilot reaches Slurm through it,
#   - a Python 3.10 on PATH (SkyPilot's cluster runtime runs `uv venv --python 3.10`),
#   - the SkyPilot API server, run with HOME=$BASE/skyhome, whose ~/.slurm/config points
#     at the cluster; then `sky check slurm` must report Slurm enabled.
# Everything lives under $BASE (env NEMORUN_SKY_BASE, default /tmp/nemorun-sky); PIDs of the
# daemons started here go to $BASE/pids/ (scripts/skypilot-down.sh stops them). Idempotent:
# whatever already runs is kept.
#
# Env: NEMORUN_SKY_BASE    base dir (default /tmp/nemorun-sky)
#      NEMORUN_SKY_PYTHON  python with skypilot installed (default: the `python` next to the
#                          first `sky` on PATH)
#      NEMORUN_SKY_PY310   a Python 3.10 interpreter to use on the cluster side (default:
#                          python3.10 on PATH, else pyenv's newest 3.10.x, else uv-managed)
#      NEMORUN_SKY_SSH_PORT sshd port (default 2222)
#      (and those of scripts/slurm-up.sh)
#
# Before each sky.launch of a new cluster NAME, run `scripts/skypilot-prepare-cluster.sh NAME`
# (SkyPilot's cluster side must find uv pre-seeded: its installer site is unreachable here).
#
# Last line printed: "skypilot=ok home=<HOME for clients> cluster_infra=slurm/localcluster" or
# "skypilot=unavailable: <reason>". Exit 0 either way, unless CI=true and unavailable (exit 1).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE="${NEMORUN_SKY_BASE:-/tmp/nemorun-sky}"
PORT="${NEMORUN_SKY_SSH_PORT:-2222}"
SKYUSER=skyuser
CLUSTER=localcluster
INFRA="slurm/$CLUSTER"
SKYHOME="$BASE/skyhome"
LOGS="$BASE/logs"
PIDS="$BASE/pids"
STACK=skypilot
# shellcheck source=scripts/stack-lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/stack-lib.sh"

[ "$(id -u)" = 0 ] || unavailable "must run as root (starts slurm, munge, sshd)"
command -v apt-get >/dev/null 2>&1 || unavailable "needs Debian/apt-get"

# --- the client-side Python (the one with skypilot) ------------------------------------
PY="${NEMORUN_SKY_PYTHON:-}"
if [ -z "$PY" ] && command -v sky >/dev/null 2>&1; then PY="$(dirname "$(command -v sky)")/python"; fi
[ -n "$PY" ] || unavailable "no python with skypilot: set NEMORUN_SKY_PYTHON or put sky on PATH"
"$PY" -c 'import sky' >/dev/null 2>&1 || unavailable "$PY cannot import sky (pip install 'skypilot[slurm]')"
sky_cli() {  # the `sky` CLI of that python, with the API server's HOME
  if [ -x "$(dirname "$PY")/sky" ]; then HOME="$SKYHOME" "$(dirname "$PY")/sky" "$@"
  else HOME="$SKYHOME" "$PY" -c 'import sys; from sky.cli import cli; sys.argv[0] = "sky"; cli()' "$@"; fi
}

mkdir -p "$BASE" "$PIDS" "$LOGS" "$BASE/bin"
chmod 755 "$BASE"
echo "$PY" >"$BASE/python"

# --- Debian packages (Slurm's: scripts/slurm-up.sh) ---------------------------------------
need=()
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v patchelf >/dev/null 2>&1 || need+=(patchelf)
if [ ${#need[@]} -gt 0 ]; then
  say "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # the package lists are refreshed only when the install fails without
  { apt-get install -y -qq --no-install-recommends "${need[@]}" \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; }; } \
    >"$LOGS/apt.log" 2>&1
  rc=$?
  [ $rc = 0 ] || unavailable "apt-get install ${need[*]} failed (see $LOGS/apt.log)"
fi

# --- the Slurm cluster and its login node (sshd, skyuser) ----------------------------------
slurm="$(NEMORUN_SKY_BASE="$BASE" NEMORUN_SKY_SSH_PORT="$PORT" CI= bash "$HERE/slurm-up.sh" | tail -n 1)"
say "$slurm"
case "$slurm" in
  slurm=ok*) ;;
  *) unavailable "the local Slurm cluster: ${slurm#slurm=}" ;;
esac

# --- uv binary for the cluster side (from the uv wheel on PyPI) ----------------------------
if ! "$BASE/bin/uv" --version >/dev/null 2>&1; then
  say "fetching the uv wheel"
  rm -rf "$BASE/uv-wheel" && mkdir -p "$BASE/uv-wheel"
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$BASE/uv-wheel" uv \
      >"$LOGS/uv-download.log" 2>&1
  fi
  whl="$(ls "$BASE"/uv-wheel/uv-*.whl 2>/dev/null | head -n1)"
  if [ -n "$whl" ]; then
    "$PY" - "$whl" "$BASE/bin/uv" <<'PYEOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith('.data/scripts/uv'))
    with z.open(name) as src, open(sys.argv[2], 'wb') as dst:
        shutil.copyfileobj(src, dst)
PYEOF
  elif command -v uv >/dev/null 2>&1; then
    cp "$(command -v uv)" "$BASE/bin/uv"
  fi
  chmod 755 "$BASE/bin/uv" 2>/dev/null
  "$BASE/bin/uv" --version >/dev/null 2>&1 || unavailable "no uv binary (pip download uv failed, see $LOGS/uv-download.log)"
fi

# --- Python 3.10 on PATH for the cluster runtime -------------------------------------------
py310_ok() { [ -n "$1" ] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; }
if py310_ok "$(runuser -u "$SKYUSER" -- bash -lc 'command -v python3.10' 2>/dev/null)"; then
  :  # skyuser already finds one
else
  src=""
  if py310_ok "${NEMORUN_SKY_PY310:-}"; then src="$(cd "$(dirname "$NEMORUN_SKY_PY310")/.." && pwd)"; fi
  if [ -z "$src" ]; then
    for d in $(ls -d "${PYENV_ROOT:-/root/.pyenv}"/versions/3.10.* /root/.pyenv/versions/3.10.* 2>/dev/null | sort -Vr); do
      py310_ok "$d/bin/python3.10" && { src="$d"; break; }
    done
  fi
  if [ -z "$src" ]; then
    say "no Python 3.10 found (NEMORUN_SKY_PY310, python3.10 on PATH, pyenv 3.10.x): trying 'uv python install 3.10'"
    UV_PYTHON_INSTALL_DIR="$BASE/uv-python" timeout 120 "$BASE/bin/uv" python install --native-tls 3.10 \
      >"$LOGS/uv-python.log" 2>&1
    p="$(UV_PYTHON_INSTALL_DIR="$BASE/uv-python" "$BASE/bin/uv" python find --python-preference only-managed 3.10 2>/dev/null)"
    py310_ok "$p" && src="$(cd "$(dirname "$p")/.." && pwd)"
  fi
  [ -n "$src" ] || unavailable "no Python 3.10 for the cluster runtime (SkyPilot runs 'uv venv --python 3.10'): none on PATH, no pyenv 3.10.x, 'uv python install 3.10' failed (see $LOGS/uv-python.log); set NEMORUN_SKY_PY310"
  if [ "$src" != "$BASE/py310" ] && [ ! -x "$BASE/py310/bin/python3.10" ]; then
    # a copy skyuser can read (pyenv's lives under /root), its library found relative to it
    say "copying Python 3.10 from $src"
    rm -rf "$BASE/py310.tmp"
    rsync -a --exclude 'lib/python3.10/test/' --exclude '__pycache__/' "$src/" "$BASE/py310.tmp/" \
      || unavailable "copying $src failed"
    for f in "$BASE"/py310.tmp/bin/python3.10; do
      if readelf -d "$f" 2>/dev/null | grep -q 'R\(UN\)\?PATH'; then patchelf --set-rpath '$ORIGIN/../lib' "$f"; fi
    done
    chmod -R a+rX "$BASE/py310.tmp" && mv "$BASE/py310.tmp" "$BASE/py310"
  fi
  py310_ok "$BASE/py310/bin/python3.10" || unavailable "the Python 3.10 copied to $BASE/py310 does not run"
  # skyuser's jobs get the default PATH (they run with a per-cluster HOME): /usr/local/bin it is
  if [ ! -e /usr/local/bin/python3.10 ] || [ "$(readlink /usr/local/bin/python3.10)" = "$BASE/py310/bin/python3.10" ]; then
    ln -sfn "$BASE/py310/bin/python3.10" /usr/local/bin/python3.10
    echo /usr/local/bin/python3.10 >"$BASE/created-links"
  else
    unavailable "/usr/local/bin/python3.10 exists but is not a Python 3.10"
  fi
fi

# --- SkyPilot client/API-server HOME --------------------------------------------------------
mkdir -p "$SKYHOME/.slurm" "$SKYHOME/.sky"
cat >"$SKYHOME/.slurm/config" <<CONF
Host $CLUSTER
  HostName 127.0.0.1
  Port $PORT
  User $SKYUSER
  IdentityFile $BASE/sshd/client_key
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
CONF
api_ok() { HOME="$SKYHOME" "$PY" -c 'import sys; from sky.server import common as c; sys.exit(0 if c.get_api_server_status().status.value == "healthy" else 1)'; }
if ! alive apiserver || ! api_ok >/dev/null 2>&1; then
  say "starting the SkyPilot API server"
  sky_cli api start >"$LOGS/api-start.log" 2>&1 || unavailable "sky api start failed (see $LOGS/api-start.log)"
  # remember its PID (the uvicorn server listening on SkyPilot's port, started with our HOME)
  pid=""
  for p in $(pgrep -f 'sky.server.server' 2>/dev/null); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "HOME=$SKYHOME"; then pid=$p; break; fi
  done
  [ -n "$pid" ] && echo "$pid" >"$PIDS/apiserver"
fi
api_ok >/dev/null 2>&1 || unavailable "the SkyPilot API server is not healthy (see $SKYHOME/.sky/api_server/server.log)"

say "sky check slurm"
sky_cli check slurm >"$LOGS/sky-check.log" 2>&1
grep -Eiq 'enabled infra.*' "$LOGS/sky-check.log" && sed -n '/Enabled infra/,$p' "$LOGS/sky-check.log" | grep -q "Slurm" \
  || unavailable "sky check slurm does not enable Slurm (see $LOGS/sky-check.log)"
say "ready"
echo "skypilot=ok home=$SKYHOME cluster_infra=$INFRA"
