#!/usr/bin/env bash
# Usage: scripts/skypilot-prepare-cluster.sh NAME [NAME...]
# Run (as root, after scripts/skypilot-up.sh) before each sky.launch that creates cluster NAME
# on slurm/localcluster: SkyPilot's cluster side runs in ~skyuser/.sky_clusters/<NAME on cloud>
# (NAME lowercased, '.'/'_' -> '-', plus '-<user hash>') and expects uv in its
# ~/.local/bin (its installer site is unreachable here). This seeds uv there and a uv.toml
# with native-tls (trust the system CA store). `sky down` removes
# that home, so prepare again before launching the same NAME anew. Idempotent.
# Env: NEMORUN_SKY_BASE (default /tmp/nemorun-sky). Prints the cluster home per NAME.
set -euo pipefail
BASE="${NEMORUN_SKY_BASE:-/tmp/nemorun-sky}"
SKYHOME="$BASE/skyhome"
UHOME="$BASE/skyuser-home"
SKYUSER=skyuser
[ $# -ge 1 ] || { echo "usage: $0 NAME [NAME...]" >&2; exit 2; }
[ -x "$BASE/bin/uv" ] || { echo "$0: $BASE/bin/uv missing: run scripts/skypilot-up.sh first" >&2; exit 1; }
PY="$(cat "$BASE/python" 2>/dev/null || true)"
for name in "$@"; do
  # the name SkyPilot gives the cluster on Slurm, computed by SkyPilot itself when possible
  on_cloud="$(HOME="$SKYHOME" "$PY" -c '
import sys
from sky import clouds
from sky.utils import common_utils
print(common_utils.make_cluster_name_on_cloud(
    sys.argv[1], max_length=clouds.Slurm.max_cluster_name_length()))' "$name" 2>/dev/null)" || on_cloud=""
  if [ -z "$on_cloud" ]; then
    hash="$(cat "$SKYHOME/.sky/user_hash")"
    on_cloud="$(echo "$name" | tr '._' '--' | tr '[:upper:]' '[:lower:]')-$hash"
  fi
  home="$UHOME/.sky_clusters/$on_cloud"
  install -d -o "$SKYUSER" -g "$SKYUSER" "$UHOME/.sky_clusters" "$home" "$home/.local" "$home/.local/bin" \
    "$home/.config" "$home/.config/uv"
  install -o "$SKYUSER" -g "$SKYUSER" -m 755 "$BASE/bin/uv" "$home/.local/bin/uv"
  echo 'native-tls = true' >"$home/.config/uv/uv.toml"
  chown "$SKYUSER": "$home/.config/uv/uv.toml"
  echo "$home"
done
