#!/usr/bin/env bash
# Stop what scripts/skypilot-up.sh and scripts/slurm-up.sh started: the SkyPilot API server
# (`sky api stop`, with the HOME it was started with, since a plain SIGTERM leaves its workers
# running), then sshd, the slurmds, slurmctld, slurmdbd, MariaDB and munged by the PIDs saved
# under $BASE/pids/. Keeps $BASE (pass --purge to remove it, with skyuser, the python3.10 link
# the /etc/slurm links and the /etc/hosts line). Env: NEMORUN_SKY_BASE.
set -uo pipefail
BASE="${NEMORUN_SKY_BASE:-/tmp/nemorun-sky}"
SKYHOME="$BASE/skyhome"
PIDS="$BASE/pids"
PY="$(cat "$BASE/python" 2>/dev/null || true)"

if [ -n "$PY" ] && [ -x "$PY" ] && [ -d "$SKYHOME" ]; then
  if [ -x "$(dirname "$PY")/sky" ]; then HOME="$SKYHOME" timeout 60 "$(dirname "$PY")/sky" api stop
  else HOME="$SKYHOME" timeout 60 "$PY" -c 'import sys; from sky.cli import cli; sys.argv[0] = "sky"; cli()' api stop; fi
fi

stop_pid() {  # stop_pid NAME: TERM, wait up to 10 s, then KILL
  local f="$PIDS/$1" pid
  [ -s "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    echo "skypilot-down: stopped $1 ($pid)"
  fi
  rm -f "$f"
}
stop_pids() {  # stop_pids LABEL PID...: TERM, then KILL what is left after 5 s
  local label=$1; shift
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null
  for _ in $(seq 1 25); do kill -0 "$@" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$@" 2>/dev/null
  echo "skypilot-down: stopped $label ($*)"
}
stop_pid apiserver
# SkyPilot's ssh control masters (ControlPath /tmp/sky_ssh_<user hash>/...) outlive the server
hash="$(cat "$SKYHOME/.sky/user_hash" 2>/dev/null || true)"
if [ -n "$hash" ]; then
  mux=()
  for p in $(pgrep -x ssh 2>/dev/null); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "/tmp/sky_ssh_$hash/" && mux+=("$p")
  done
  stop_pids "ssh control masters" "${mux[@]}"
fi
# the sshd's open sessions, then whatever skyuser still runs (jobs of clusters left up)
if [ -s "$PIDS/sshd" ]; then stop_pids "sshd sessions" $(pgrep -P "$(cat "$PIDS/sshd")" 2>/dev/null); fi
stop_pid sshd
if id skyuser >/dev/null 2>&1; then stop_pids "skyuser processes" $(pgrep -u skyuser 2>/dev/null); fi
# the slurmds first (and "slurmd", from older versions of slurm-up.sh), the database last
for f in "$PIDS"/slurmd "$PIDS"/slurmd-*; do [ -e "$f" ] && stop_pid "$(basename "$f")"; done
for d in slurmctld slurmdbd mariadb munged; do stop_pid "$d"; done

if [ "${1:-}" = "--purge" ]; then
  while read -r link; do
    case "$(readlink "$link")" in "$BASE"/*) rm -f "$link" ;; esac
  done <"$BASE/created-links" 2>/dev/null
  if grep -qF "# nemo_run scripts/slurm-up.sh" /etc/hosts; then
    grep -vF "# nemo_run scripts/slurm-up.sh" /etc/hosts >"$BASE/hosts.new" && cat "$BASE/hosts.new" >/etc/hosts
  fi
  for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
    case "$(readlink "$f")" in "$BASE"/*) rm -f "$f" ;; esac
  done
  id skyuser >/dev/null 2>&1 && userdel skyuser
  rm -rf "$BASE"
fi
echo "skypilot-down: done"
