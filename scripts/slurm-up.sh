#!/usr/bin/env bash
# Start a local Slurm cluster the tests talk to, on one machine, as root on Debian 12:
#   - munged (the distribution's /etc/munge key; socket in /run/munge),
#   - MariaDB (mariadbd as user mysql, data in $BASE/mariadb/data, socket
#     $BASE/mariadb/run/mysqld.sock, TCP 127.0.0.1:$NEMORUN_SLURM_DB_PORT, default 6830)
#     holding the accounting database, and slurmdbd on port 6819 in front of it, so `sacct`
#     answers (and keeps finished jobs); cluster "localcluster", account "nemorun" with root
#     and skyuser (AccountingStorageEnforce off: any user may submit),
#   - slurmctld on port 6817, partition "debug" (default),
#   - $NEMORUN_SLURM_NODES slurmd (default 2): node1 on port 6818, node2 on 6820, each one
#     slurmd -N on this host (own spool, pid and log file, own hostname node<i> through a
#     UTS namespace where unshare is allowed) and each offered all the CPUs
#     (oversubscribed: a 2-node job of 1 task per node still leaves room for other jobs);
#     the names node1/node2 resolve to 127.0.0.1 through a marked line in /etc/hosts,
#   - an sshd on 127.0.0.1:$NEMORUN_SKY_SSH_PORT (default 2222) letting the unprivileged
#     skyuser in with the key $BASE/sshd/client_key: the cluster's "login node".
# Config: $BASE/slurm/slurm.conf and slurmdbd.conf (linked from /etc/slurm), state and spool
# under $BASE/slurm, logs under $BASE/logs, PIDs of the daemons started here in $BASE/pids/
# (scripts/skypilot-down.sh stops them). $BASE/slurm/stack.env describes the stack for the
# tests (tests/slurm_stack.py). Idempotent: whatever already runs is kept; a daemon restarts
# only when its config changed.
#
# Env: NEMORUN_SKY_BASE     base dir (default /tmp/nemorun-sky; shared with skypilot-up.sh)
#      NEMORUN_SKY_SSH_PORT sshd port (default 2222)
#      NEMORUN_SLURM_NODES  number of slurmd nodes, 1 or 2 (default 2)
#      NEMORUN_SLURM_DB_PORT MariaDB port on 127.0.0.1 (default 6830)
#
# Last line printed: "slurm=ok base=$BASE ssh=skyuser@127.0.0.1:$PORT key=<key> nodes=<N>
# sacct=yes" or "slurm=unavailable: <reason>". Exit 0 either way, unless CI=true and
# unavailable (exit 1).
set -uo pipefail
BASE="${NEMORUN_SKY_BASE:-/tmp/nemorun-sky}"
PORT="${NEMORUN_SKY_SSH_PORT:-2222}"
NNODES="${NEMORUN_SLURM_NODES:-2}"
DBPORT="${NEMORUN_SLURM_DB_PORT:-6830}"
SKYUSER=skyuser
CLUSTER=localcluster
PARTITION=debug
ACCOUNT=nemorun
UHOME="$BASE/skyuser-home"
LOGS="$BASE/logs"
PIDS="$BASE/pids"
SL="$BASE/slurm"
DB="$BASE/mariadb"
STACK=slurm
# shellcheck source=scripts/stack-lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/stack-lib.sh"
stop_daemon() {  # stop_daemon NAME: TERM the daemon started here, wait up to 10 s, then KILL
  local pid
  alive "$1" || { rm -f "$PIDS/$1"; return 0; }
  pid="$(cat "$PIDS/$1")"
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null
  rm -f "$PIDS/$1"
}
install_conf() {  # install_conf NEW FILE: move NEW over FILE; status 0 when FILE changed
  if cmp -s "$1" "$2"; then rm -f "$1"; return 1; fi
  mv "$1" "$2"
}
link_etc() {  # link_etc FILE: /etc/slurm/<name> -> FILE (a real file there is kept aside)
  local etc="/etc/slurm/$(basename "$1")"
  [ "$(readlink "$etc")" = "$1" ] && return 0
  [ -e "$etc" ] && [ ! -L "$etc" ] && mv "$etc" "$etc.nemorun-bak"
  ln -sfn "$1" "$etc"
}

[ "$(id -u)" = 0 ] || unavailable "must run as root (starts slurm, munge, mariadb, sshd)"
command -v apt-get >/dev/null 2>&1 || unavailable "needs Debian/apt-get"
case "$NNODES" in 1 | 2) ;; *) unavailable "NEMORUN_SLURM_NODES=$NNODES: use 1 or 2" ;; esac
mkdir -p "$BASE" "$PIDS" "$LOGS" "$BASE/sshd" "$SL/state" "$DB" /etc/slurm
chmod 755 "$BASE"

# --- Debian packages ----------------------------------------------------------------------
need=()
command -v slurmctld >/dev/null 2>&1 || need+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || need+=(slurmd)
command -v slurmdbd >/dev/null 2>&1 || need+=(slurmdbd)
command -v sacct >/dev/null 2>&1 || need+=(slurm-client)
command -v munged >/dev/null 2>&1 || need+=(munge)
[ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  say "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # daemons must not be started by the packages' maintainer scripts: we start our own
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  # the package lists are refreshed only when the install fails without
  { apt-get install -y -qq --no-install-recommends "${need[@]}" \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; }; } \
    >"$LOGS/apt-slurm.log" 2>&1
  rc=$?
  rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || unavailable "apt-get install ${need[*]} failed (see $LOGS/apt-slurm.log)"
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

# --- node names: SkyPilot's cluster side resolves them and wants this host's own address ----
HOSTS_MARK="# nemo_run scripts/slurm-up.sh"
names_ok() {
  local n
  for n in $(seq 1 "$NNODES"); do
    [ "$(getent ahostsv4 "node$n" | awk 'NR == 1 {print $1}')" = 127.0.0.1 ] || return 1
  done
}
if ! names_ok; then
  # rewritten in place (a container's /etc/hosts is a bind mount: no rename over it)
  { grep -vF "$HOSTS_MARK" /etc/hosts; echo "127.0.0.1 node1 node2 $HOSTS_MARK"; } >"$BASE/hosts.new" \
    && cat "$BASE/hosts.new" >/etc/hosts && rm -f "$BASE/hosts.new"
  names_ok || unavailable "node1/node2 do not resolve to 127.0.0.1 (/etc/hosts not writable?)"
fi

# --- the configs --------------------------------------------------------------------------
HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM="$(awk -v n="$NNODES" '/MemTotal/ {print int($2 / 1024 * 0.8 / n)}' /proc/meminfo)"
# each slurmd in a UTS namespace of its own named after its node, so that jobs on node1 and
# node2 see different hostnames (as on a real cluster); where unshare is not allowed (an
# unprivileged container) both keep this host's name
if unshare --uts true 2>/dev/null; then OWN_NAMES=1; else OWN_NAMES=0; fi
NODES=""
nodes_conf=""
for i in $(seq 1 "$NNODES"); do
  p=$((6816 + 2 * i))  # 6818, 6820 (6819 is slurmdbd's)
  if [ $OWN_NAMES = 1 ]; then nodehost="node$i"; else nodehost="$HOST"; fi
  NODES="$NODES${NODES:+,}node$i"
  nodes_conf+="NodeName=node$i NodeHostname=$nodehost NodeAddr=127.0.0.1 Port=$p CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"$'\n'
  mkdir -p "$SL/spool-node$i"
done
cat >"$SL/slurm.conf.new" <<CONF
# written by nemo_run scripts/slurm-up.sh
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmctldPort=6817
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
MpiDefault=none
StateSaveLocation=$SL/state
SlurmdSpoolDir=$SL/spool-%n
SlurmctldPidFile=$SL/slurmctld.pid
SlurmdPidFile=$SL/slurmd-%n.pid
SlurmctldLogFile=$LOGS/slurmctld-file.log
SlurmdLogFile=$LOGS/slurmd-%n-file.log
${nodes_conf}PartitionName=$PARTITION Nodes=$NODES Default=YES MaxTime=INFINITE DefaultTime=12:00:00 State=UP
CONF
slurm_changed=0
install_conf "$SL/slurm.conf.new" "$SL/slurm.conf" && slurm_changed=1
chmod 644 "$SL/slurm.conf"
link_etc "$SL/slurm.conf"

# the database password: made once, kept only in slurmdbd.conf (mode 600, root)
PW="$(sed -n 's/^StoragePass=//p' "$SL/slurmdbd.conf" 2>/dev/null)"
[ -n "$PW" ] || PW="$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
(
  umask 077
  cat >"$SL/slurmdbd.conf.new" <<CONF
# written by nemo_run scripts/slurm-up.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DBPORT
StorageUser=slurm
StoragePass=$PW
StorageLoc=slurm_acct_db
PidFile=$SL/slurmdbd.pid
LogFile=$LOGS/slurmdbd-file.log
CONF
)
dbd_changed=0
install_conf "$SL/slurmdbd.conf.new" "$SL/slurmdbd.conf" && dbd_changed=1
chmod 600 "$SL/slurmdbd.conf"
link_etc "$SL/slurmdbd.conf"

if [ $slurm_changed = 1 ]; then
  # slurmds from before (the single "slurmd" of older versions of this script included)
  for f in "$PIDS"/slurmd "$PIDS"/slurmd-*; do [ -e "$f" ] && stop_daemon "$(basename "$f")"; done
  stop_daemon slurmctld
fi
[ $dbd_changed = 1 ] && stop_daemon slurmdbd

# --- MariaDB ------------------------------------------------------------------------------
SOCK="$DB/run/mysqld.sock"
sql() { mariadb --no-defaults -u root -S "$SOCK" -e "$1"; }
mkdir -p "$DB/run" && chown mysql:mysql "$DB" "$DB/run"
if [ ! -e "$DB/data/.nemorun-ready" ] && ! alive mariadb; then
  say "initialising the MariaDB data dir"
  rm -rf "$DB/data" && mkdir -p "$DB/data" && chown mysql:mysql "$DB/data"
  mariadb-install-db --no-defaults --user=mysql --datadir="$DB/data" \
    --auth-root-authentication-method=socket --skip-test-db >"$LOGS/mariadb-install.log" 2>&1 \
    || unavailable "mariadb-install-db failed (see $LOGS/mariadb-install.log)"
  touch "$DB/data/.nemorun-ready"
fi
if ! alive mariadb; then
  say "starting MariaDB on 127.0.0.1:$DBPORT"
  start_daemon mariadb /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB/data" \
    --socket="$SOCK" --pid-file="$DB/run/mysqld.pid" --port="$DBPORT" --bind-address=127.0.0.1 \
    --skip-name-resolve --innodb-lock-wait-timeout=900 --log-error="$LOGS/mariadb-file.log"
fi
wait_for 30 sql 'SELECT 1' || unavailable "MariaDB does not answer (see $LOGS/mariadb.log, $LOGS/mariadb-file.log)"
sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$PW';
     ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$PW';
     GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" 2>"$LOGS/mariadb-grant.log" \
  || unavailable "creating the MariaDB user slurm failed (see $LOGS/mariadb-grant.log)"

# --- slurmdbd, the cluster and its account ------------------------------------------------
dbd_ok() { sacctmgr -n -P list cluster format=cluster; }
if ! alive slurmdbd; then
  say "starting slurmdbd"
  start_daemon slurmdbd slurmdbd -D
fi
# its first start creates the tables: allow it time
wait_for 60 dbd_ok || unavailable "slurmdbd does not answer (see $LOGS/slurmdbd.log)"
if ! dbd_ok 2>/dev/null | grep -qx "$CLUSTER"; then
  sacctmgr -i add cluster "$CLUSTER" >"$LOGS/sacctmgr.log" 2>&1 \
    || unavailable "sacctmgr add cluster $CLUSTER failed (see $LOGS/sacctmgr.log)"
fi
assocs="$(sacctmgr -n -P list assoc cluster="$CLUSTER" format=account,user 2>/dev/null)"
if ! grep -qx "$ACCOUNT|" <<<"$assocs"; then
  sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" Description=nemo_run-tests Organization=nemo_run \
    >>"$LOGS/sacctmgr.log" 2>&1 || unavailable "sacctmgr add account $ACCOUNT failed (see $LOGS/sacctmgr.log)"
fi
for u in root "$SKYUSER"; do
  if ! grep -qx "$ACCOUNT|$u" <<<"$assocs"; then
    sacctmgr -i add user "$u" account="$ACCOUNT" cluster="$CLUSTER" >>"$LOGS/sacctmgr.log" 2>&1 \
      || unavailable "sacctmgr add user $u failed (see $LOGS/sacctmgr.log)"
  fi
done

# --- slurmctld and the slurmds ------------------------------------------------------------
if ! alive slurmctld; then
  say "starting slurmctld"
  start_daemon slurmctld slurmctld -D
  wait_for 20 scontrol ping || unavailable "slurmctld does not answer (see $LOGS/slurmctld.log)"
fi
for i in $(seq 1 "$NNODES"); do
  if ! alive "slurmd-node$i"; then
    say "starting slurmd node$i"
    if [ $OWN_NAMES = 1 ]; then
      start_daemon "slurmd-node$i" unshare --uts sh -c "hostname node$i && exec slurmd -D -N node$i"
    else
      start_daemon "slurmd-node$i" slurmd -D -N "node$i"
    fi
  fi
done
nodes_ready() {  # every node of the partition is up (idle, mixed or allocated)
  local ready
  ready="$(sinfo -h -N -p "$PARTITION" -o '%N %T' 2>/dev/null | grep -Ec ' (idle|mixed|allocated)')"
  [ "$ready" = "$NNODES" ]
}
if ! wait_for 30 nodes_ready; then
  scontrol update nodename="$NODES" state=resume >/dev/null 2>&1
  wait_for 10 nodes_ready \
    || unavailable "slurm nodes not ready: $(sinfo -h -N -o '%N %T %E' 2>&1 | tr '\n' ';') (see $LOGS/slurmd-node*.log)"
fi
sacct -n -X -S now >/dev/null 2>&1 || unavailable "sacct fails: $(sacct -n -X -S now 2>&1 | head -n 1)"

# --- sshd: the "login node", reached as skyuser -------------------------------------------
[ -s "$BASE/sshd/host_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$BASE/sshd/host_key"
[ -s "$BASE/sshd/client_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$BASE/sshd/client_key"
install -d -o "$SKYUSER" -m 700 "$UHOME/.ssh"
install -o "$SKYUSER" -m 600 "$BASE/sshd/client_key.pub" "$UHOME/.ssh/authorized_keys"
cat >"$BASE/sshd/sshd_config.new" <<CONF
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
install_conf "$BASE/sshd/sshd_config.new" "$BASE/sshd/sshd_config" && stop_daemon sshd
ssh_ok() {
  ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -o ConnectTimeout=5 -i "$BASE/sshd/client_key" -p "$PORT" "$SKYUSER@127.0.0.1" sinfo -h -o %P
}
if ! alive sshd; then
  say "starting sshd on 127.0.0.1:$PORT"
  mkdir -p /run/sshd && chmod 755 /run/sshd
  start_daemon sshd /usr/sbin/sshd -D -e -f "$BASE/sshd/sshd_config"
fi
wait_for 10 ssh_ok || unavailable "ssh $SKYUSER@127.0.0.1:$PORT sinfo fails (see $LOGS/sshd.log)"

# --- what the tests read (tests/slurm_stack.py) ---------------------------------------------
cat >"$SL/stack.env.new" <<CONF
SSH_HOST=127.0.0.1
SSH_PORT=$PORT
SSH_USER=$SKYUSER
SSH_KEY=$BASE/sshd/client_key
PARTITION=$PARTITION
NODES=$NNODES
CLUSTER=$CLUSTER
ACCOUNT=$ACCOUNT
OWN_HOSTNAMES=$OWN_NAMES
CONF
install_conf "$SL/stack.env.new" "$SL/stack.env"
chmod 644 "$SL/stack.env"
say "ready"
echo "slurm=ok base=$BASE ssh=$SKYUSER@127.0.0.1:$PORT key=$BASE/sshd/client_key nodes=$NNODES sacct=yes"
