#!/usr/bin/env bash
# Keeps one component of the local cluster running, as a kubelet keeps a static pod:
#
#   scripts/cluster/supervise.sh RUN_DIR NAME BINARY ARGS...
#
# runs BINARY ARGS, writes its pid to RUN_DIR/NAME.pid, and when it exits (a crash, a
# SIGKILL) starts it again after a second, counting the restarts in RUN_DIR/NAME.restarts
# and saying so on stderr (the component's log). SIGTERM stops the component (SIGTERM, then
# SIGKILL after 10 s) and then the supervisor; scripts/cluster.sh stop_component sends it.
set -uo pipefail

run_dir=$1 name=$2
shift 2
child=
stopping=

stop() {
  stopping=1
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill "$child" 2>/dev/null
    for _ in $(seq 1 100); do
      kill -0 "$child" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$child" 2>/dev/null
  fi
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
  # A signal to the supervisor interrupts `wait`: the trap has run, and exited.
  [ -z "$stopping" ] || exit 0
  restarts=$((restarts + 1))
  echo "$restarts" >"$run_dir/$name.restarts"
  echo "supervise: $name (pid $child) exited with status $status; starting it again (restart $restarts)" >&2
  sleep 1
done
