#!/usr/bin/env bash
# Start what the SkyPilot integration tests talk to, on one machine, as root on Debian:
#   - a single-node Slurm cluster "localcluster" (munged, slurmctld, slurmd),
#   - an sshd on 127.0.0.1:$NEMORUN_SKY_SSH_PORT (default 2222) letting an unprivileged
#     user (skyuser) in with a key: SkyPilot reaches Slurm through this "login node",
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
UHOME="$BASE/skyuser-home"
LOGS="$BASE/logs"
PIDS="$BASE/pids"
T0=$SECONDS

unavailable() {
  echo "skypilot=unavailable: $*"
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  exit 0
}
say() { echo "skypilot-up: $* ($((SECONDS - T0))s)" >&2; }
alive() { [ -s "$PIDS/$1" ] && kill -0 "$(cat "$PIDS/$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS CMD...: poll CMD every 0.2 s
  local n=$(($1 * 5)); shift
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  "$@" >/dev/null 2>&1
}
start_daemon() {  # start_daemon NAME CMD...: run CMD in the foreground mode, in the background
  local name=$1; shift
  setsid nohup "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name"
}

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

mkdir -p "$BASE" "$PIDS" "$LOGS" "$BASE/sshd" "$BASE/slurm/state" "$BASE/slurm/spool" "$BASE/bin"
chmod 755 "$BASE"
echo "$PY" >"$BASE/python"

# --- Debian packages ----------------------------------------------------------------------
need=()
command -v slurmctld >/dev/null 2>&1 || need+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || need+=(slurmd)
command -v sinfo >/dev/null 2>&1 || need+=(slurm-client)
command -v munged >/dev/null 2>&1 || need+=(munge)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v patchelf >/dev/null 2>&1 || need+=(patchelf)
if [ ${#need[@]} -gt 0 ]; then
  say "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # daemons must not be started by the packages' maintainer scripts: we start our own
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    >"$LOGS/apt.log" 2>&1
  rc=$?
  rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || unavailable "apt-get install ${need[*]} failed (see $LOGS/apt.log)"
fi

# --- the cluster user ---------------------------------------------------------------------
if ! id "$SKYUSER" >/dev/null 2>&1; then
  useradd -m -d "$UHOME" -s /bin/bash "$SKYUSER" || unavailable "useradd $SKYUSER failed"
elif [ "$(getent passwd "$SKYUSER" | cut -d: -f6)" != "$UHOME" ]; then
  usermod -d "$UHOME" "$SKYUSER"
fi
usermod -p '*' "$SKYUSER"  # no password, but not locked (sshd refuses locked accounts)
mkdir -p "$UHOME" && chown "$SKYUSER": "$UHOME"

# --- munge --------------------------------------------------------------------------------
munge_ok() { munge -n </dev/null | unmunge >/dev/null; }
mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || { mungekey -c -k /etc/munge/munge.key && chown munge:munge /etc/munge/munge.key; } \
  || unavailable "no munge key and mungekey failed"
if ! munge_ok 2>/dev/null; then
  say "starting munged"
  start_daemon munged setpriv --reuid=munge --regid=munge --init-groups -- /usr/sbin/munged -F
  wait_for 10 munge_ok || unavailable "munged does not answer (see $LOGS/munged.log)"
fi

# --- slurm --------------------------------------------------------------------------------
NODE="$(hostname -s)"
CPUS="$(nproc)"
MEM="$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"
cat >"$BASE/slurm/slurm.conf.new" <<CONF
# written by nemo_run scripts/skypilot-up.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
StateSaveLocation=$BASE/slurm/state
SlurmdSpoolDir=$BASE/slurm/spool
SlurmctldPidFile=$BASE/slurm/slurmctld.pid
SlurmdPidFile=$BASE/slurm/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld-file.log
SlurmdLogFile=$LOGS/slurmd-file.log
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE DefaultTime=12:00:00 State=UP
CONF
conf_changed=0
cmp -s "$BASE/slurm/slurm.conf.new" "$BASE/slurm/slurm.conf" || conf_changed=1
mv "$BASE/slurm/slurm.conf.new" "$BASE/slurm/slurm.conf"
chmod 644 "$BASE/slurm/slurm.conf"
mkdir -p /etc/slurm
if [ "$(readlink /etc/slurm/slurm.conf)" != "$BASE/slurm/slurm.conf" ]; then
  [ -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ] && mv /etc/slurm/slurm.conf /etc/slurm/slurm.conf.nemorun-bak
  ln -sfn "$BASE/slurm/slurm.conf" /etc/slurm/slurm.conf
fi
if [ $conf_changed = 1 ]; then
  for d in slurmd slurmctld; do alive $d && { kill "$(cat "$PIDS/$d")"; sleep 1; }; done
fi
node_ready() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }
if ! alive slurmctld; then
  say "starting slurmctld"
  start_daemon slurmctld slurmctld -D
  wait_for 20 scontrol ping || unavailable "slurmctld does not answer (see $LOGS/slurmctld.log)"
fi
if ! alive slurmd; then
  say "starting slurmd"
  start_daemon slurmd slurmd -D
fi
if ! wait_for 30 node_ready; then
  scontrol update nodename="$NODE" state=resume >/dev/null 2>&1
  wait_for 10 node_ready || unavailable "slurm node $NODE not ready: $(sinfo -h -N -o '%T %E' 2>&1) (see $LOGS/slurmd.log)"
fi

# --- sshd: the "login node" SkyPilot reaches as skyuser -------------------------------------
[ -s "$BASE/sshd/host_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$BASE/sshd/host_key"
[ -s "$BASE/sshd/client_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$BASE/sshd/client_key"
install -d -o "$SKYUSER" -m 700 "$UHOME/.ssh"
install -o "$SKYUSER" -m 600 "$BASE/sshd/client_key.pub" "$UHOME/.ssh/authorized_keys"
cat >"$BASE/sshd/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $BASE/sshd/host_key
PidFile $BASE/sshd/sshd.pid
AllowUsers $SKYUSER
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
MaxSessions 100
MaxStartups 100:30:200
CONF
ssh_ok() {
  ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -o ConnectTimeout=5 -i "$BASE/sshd/client_key" -p "$PORT" "$SKYUSER@127.0.0.1" true
}
if ! alive sshd; then
  say "starting sshd on 127.0.0.1:$PORT"
  mkdir -p /run/sshd && chmod 755 /run/sshd
  start_daemon sshd /usr/sbin/sshd -D -e -f "$BASE/sshd/sshd_config"
fi
wait_for 10 ssh_ok || unavailable "ssh $SKYUSER@127.0.0.1:$PORT fails (see $LOGS/sshd.log)"

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
