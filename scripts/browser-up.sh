#!/usr/bin/env bash
# Install Debian's headless Chromium and its WebDriver for the dashboard's browser tests, only
# when missing (idempotent: a second run costs a `command -v`). As root on Debian.
# Prints "browser=ok chromium=PATH driver=PATH seconds=N" or "browser=unavailable: <reason>";
# exit 0 either way unless CI=true, where a missing browser is an error.
set -uo pipefail
STATE_DIR="${NEMORUN_TEST_STATE:-/tmp/nemorun-test-services}"
mkdir -p "$STATE_DIR"
start=$SECONDS

unavailable() {
  echo "browser=unavailable: $*"
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  exit 0
}

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v fc-list >/dev/null 2>&1 || need+=(fonts-dejavu-core fontconfig)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || unavailable "need ${need[*]} (run as root on Debian)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    >"$STATE_DIR/browser-apt.log" 2>&1 \
    || unavailable "apt-get install ${need[*]} failed (see $STATE_DIR/browser-apt.log)"
fi
command -v chromium >/dev/null 2>&1 || unavailable "no chromium after install"
command -v chromedriver >/dev/null 2>&1 || unavailable "no chromedriver after install"
echo "browser=ok chromium=$(command -v chromium) driver=$(command -v chromedriver) seconds=$((SECONDS - start))"
