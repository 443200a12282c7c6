# Helpers shared by the stack scripts (slurm-up.sh, skypilot-up.sh); source it after setting
# STACK (the name printed in "<STACK>=unavailable: ..."), LOGS and PIDS.
T0=$SECONDS

unavailable() {  # print the protocol's last line and stop (exit 1 only when CI=true)
  echo "$STACK=unavailable: $*"
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  exit 0
}
say() { echo "$STACK-up: $* ($((SECONDS - T0))s)" >&2; }
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
