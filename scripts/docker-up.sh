#!/usr/bin/env bash
# Start a Docker engine for the tests when none answers, and build the small local Python
# image they run (no registry needed). As root on Debian: installs docker.io, mmdebstrap.
# Prints "engine=ok" or "engine=unavailable: <reason>"; exit 0 either way unless CI=true,
# where a missing engine is an error.
set -uo pipefail
IMAGE="${NEMORUN_TEST_IMAGE:-localhost/nemorun-python:bookworm-1}"
SOCK=/var/run/docker.sock
STATE_DIR="${NEMORUN_TEST_STATE:-/tmp/nemorun-test-services}"
mkdir -p "$STATE_DIR"

unavailable() {
  echo "engine=unavailable: $*"
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  exit 0
}
answers() { curl -sf --unix-socket "$SOCK" http://engine/_ping >/dev/null 2>&1; }

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || unavailable "need ${need[*]} (run as root on Debian)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$STATE_DIR/apt.log" 2>&1 \
    || unavailable "apt-get install ${need[*]} failed (see $STATE_DIR/apt.log)"
fi

if ! answers; then
  [ "$(id -u)" = 0 ] || unavailable "no engine answers on $SOCK and starting dockerd needs root"
  # a dockerd that is starting or shutting down: give it time to answer or to exit
  for _ in $(seq 1 150); do
    pgrep -x dockerd >/dev/null || break
    answers && break
    sleep 0.1
  done
fi
if ! answers; then
  pgrep -x dockerd >/dev/null && unavailable "a dockerd process runs but does not answer on $SOCK"
  rm -f /var/run/docker.pid  # left by an engine that died
  setsid nohup dockerd >"$STATE_DIR/dockerd.log" 2>&1 </dev/null &
  echo $! >"$STATE_DIR/dockerd.pid"
  for _ in $(seq 1 300); do answers && break; sleep 0.1; done
  answers || unavailable "dockerd did not answer (see $STATE_DIR/dockerd.log)"
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  root=$(mktemp -d)
  src=$(ls /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  [ -n "$src" ] || src=/etc/apt/sources.list
  mmdebstrap --quiet --variant=extract --include=python3,bash,busybox-static \
    --format=directory bookworm "$root" "$src" </dev/null >"$STATE_DIR/mmdebstrap.log" 2>&1 \
    || unavailable "building the test image failed (see $STATE_DIR/mmdebstrap.log)"
  (
    cd "$root"
    for tool in $(./bin/busybox --list); do [ -e "bin/$tool" ] || [ -L "bin/$tool" ] || ln -s busybox "bin/$tool"; done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >etc/passwd
    printf 'root:x:0:\n' >etc/group
    mkdir -p root tmp proc sys dev && chmod 1777 tmp
    rm -rf usr/share/doc usr/share/man usr/share/locale
  )
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/usr/bin/python3"]' - "$IMAGE" >/dev/null || unavailable "docker import failed"
  rm -rf "$root"
fi
echo "engine=ok image=$IMAGE"
