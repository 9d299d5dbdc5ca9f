#!/usr/bin/env bash
# Keeps one component of the local cluster running, as a kubelet keeps a static pod:
#
#   scripts/cluster/supervise.sh RUN_DIR NAME BINARY ARGS...
#
# runs BINARY ARGS, writes its pid to RUN_DIR/NAME.pid, and when it exits (a crash, a
# SIGKILL) starts it again after a second, counting the restarts in RUN_DIR/NAME.restarts
# and saying so on stderr (the component's log). SIGTERM stops the component and then the
# supervisor (scripts/cluster.sh stop_component sends it, and SIGKILLs both if the
# component does not end in time).
set -uo pipefail

run_dir=$1 name=$2
shift 2
child=

# A TERM interrupts `wait` below; this runs, and the supervisor ends with its component.
stop() {
  [ -z "$child" ] || { kill "$child" 2>/dev/null; wait "$child"; }
  rm -f "$run_dir/$name.pid"
  exit 0
}
trap stop TERM INT

restarts=0
echo 0 >"$run_dir/$name.restarts"
while :; do
  "$@" &
  child=$!
  echo "$child" >"$run_dir/$name.pid"
  wait "$child"
  status=$?
  restarts=$((restarts + 1))
  echo "$restarts" >"$run_dir/$name.restarts"
  echo "supervise: $name (pid $child) exited with status $status; starting it again (restart $restarts)" >&2
  sleep 1
done
