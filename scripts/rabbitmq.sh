#!/usr/bin/env bash
# A private RabbitMQ node for FoodLab on 127.0.0.1.
#
#   scripts/rabbitmq.sh start    install (Debian package) if missing, start, wait until ready
#   scripts/rabbitmq.sh stop     stop the node
#   scripts/rabbitmq.sh status   exit 0 if the node answers
#
# Settings (environment): RABBITMQ_PORT (5672), RABBITMQ_MGMT_PORT (15672),
# RABBITMQ_DIST_PORT (25672), FOODLAB_RABBITMQ_DIR (.foodlab/rabbitmq in the repo).
# Idempotent and safe to call from several processes at once.
#
# Three nodes in one cluster: RABBITMQ_NODES=3 before a command.
#
#   RABBITMQ_NODES=3 scripts/rabbitmq.sh start         start the nodes that are not running,
#                                                       wait until all three serve as one cluster
#   RABBITMQ_NODES=3 scripts/rabbitmq.sh stop          stop every node of the cluster
#   RABBITMQ_NODES=3 scripts/rabbitmq.sh status        exit 0 if every node answers
#   RABBITMQ_NODES=3 scripts/rabbitmq.sh urls          the AMQP URLs, comma-separated
#   RABBITMQ_NODES=3 scripts/rabbitmq.sh management N  node N's management URL
#   RABBITMQ_NODES=3 scripts/rabbitmq.sh pid N         node N's pid (exit 1 if it is not running)
#   RABBITMQ_NODES=3 scripts/rabbitmq.sh kill N        SIGKILL node N by its pid file, as a crash
#                                                       would; prints the pid
#   RABBITMQ_NODES=3 scripts/rabbitmq.sh start-node N  start node N again, wait until it serves
#                                                       and is back in the cluster
#
# Node N (1-3) is foodlab-<AMQP port>@localhost: AMQP on RABBITMQ_PORT + N - 1 (RABBITMQ_PORT
# is 5691 for three nodes), management on RABBITMQ_MGMT_PORT + N - 1 (15691), distribution
# on RABBITMQ_DIST_PORT + N - 1 (25691), its data and log in FOODLAB_RABBITMQ_DIR/node-N
# (.foodlab/rabbitmq-cluster). The nodes share one Erlang cookie (in that directory's home/)
# and find each other by classic config peer discovery; a node killed and started again
# rejoins with its data. The default node above is a different node and is never touched.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
nodes=${RABBITMQ_NODES:-1}
case "$nodes" in
  1)
    port=${RABBITMQ_PORT:-5672}
    mgmt_port=${RABBITMQ_MGMT_PORT:-15672}
    dist_port=${RABBITMQ_DIST_PORT:-25672}
    base=${FOODLAB_RABBITMQ_DIR:-$repo/.foodlab/rabbitmq}
    home="$base/home"
    ;;
  3)
    first_port=${RABBITMQ_PORT:-5691}
    first_mgmt_port=${RABBITMQ_MGMT_PORT:-15691}
    first_dist_port=${RABBITMQ_DIST_PORT:-25691}
    cluster_dir=${FOODLAB_RABBITMQ_DIR:-$repo/.foodlab/rabbitmq-cluster}
    home="$cluster_dir/home"
    ;;
  *) echo "rabbitmq: RABBITMQ_NODES is 1 or 3, not $nodes" >&2; exit 2 ;;
esac
# Node $1 of the cluster: its name, ports and directory.
select_node() {
  port=$((first_port + $1 - 1))
  mgmt_port=$((first_mgmt_port + $1 - 1))
  dist_port=$((first_dist_port + $1 - 1))
  base="$cluster_dir/node-$1"
  node="foodlab-$port@localhost"
}
[ "$nodes" = 1 ] || select_node 1
node="foodlab-$port@localhost"
bin=/usr/lib/rabbitmq/bin

log() { echo "rabbitmq: $*" >&2; }

install() {
  [ -x "$bin/rabbitmq-server" ] && return 0
  log "installing rabbitmq-server from Debian"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rabbitmq-server >/dev/null
}

node_env() {
  export HOME="$home"
  export RABBITMQ_NODENAME="$node"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$port"
  export RABBITMQ_DIST_PORT="$dist_port"
  export RABBITMQ_MNESIA_BASE="$base/mnesia"
  export RABBITMQ_LOG_BASE="$base/log"
  export RABBITMQ_PID_FILE="$base/rabbitmq.pid"
  export RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf"
  export RABBITMQ_CONF_ENV_FILE="$base/rabbitmq-env.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
  export ERL_EPMD_ADDRESS=127.0.0.1
  # Keep the Erlang distribution listener on loopback too.
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

management_up() {
  curl -fsS -u guest:guest "http://127.0.0.1:$mgmt_port/api/overview" >/dev/null 2>&1
}

ctl() { "$bin/rabbitmqctl" -n "$node" "$@"; }

start() {
  install
  mkdir -p "$base/home" "$base/mnesia" "$base/log"
  node_env
  exec 9>"$base/lock"
  flock 9
  if management_up; then
    return 0
  fi
  cat >"$RABBITMQ_CONFIG_FILE" <<CONF
listeners.tcp.default = 127.0.0.1:$port
management.tcp.ip = 127.0.0.1
management.tcp.port = $mgmt_port
loopback_users = none
# Queue depths in the management API are at most this old (ms); labs read them.
collect_statistics_interval = 500
CONF
  : >"$RABBITMQ_CONF_ENV_FILE"
  echo "[rabbitmq_management]." >"$RABBITMQ_ENABLED_PLUGINS_FILE"
  log "starting node $node (AMQP 127.0.0.1:$port, management 127.0.0.1:$mgmt_port, data $base)"
  # The node must not inherit the lock (fd 9), or it would hold it for its lifetime.
  setsid "$bin/rabbitmq-server" >"$base/log/server.out" 2>&1 </dev/null 9>&- &
  ctl wait "$RABBITMQ_PID_FILE" --timeout 60 >/dev/null
  for _ in $(seq 1 300); do
    if management_up; then
      log "ready"
      return 0
    fi
    sleep 0.2
  done
  log "management API did not come up; see $base/log"
  exit 1
}

stop() {
  node_env
  if [ -f "$RABBITMQ_PID_FILE" ] && kill -0 "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null; then
    log "stopping node $node"
    ctl stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || kill "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null || true
  fi
  # The node started epmd, which outlives it; `epmd -kill` ends it only if no node is left.
  local epmd
  epmd=$(command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -n1 || true)
  [ -n "$epmd" ] && ERL_EPMD_ADDRESS=127.0.0.1 "$epmd" -kill >/dev/null 2>&1 || true
}

# Three nodes. One lock for the cluster: its commands run one at a time.
cluster_lock() {
  mkdir -p "$cluster_dir"
  exec 9>"$cluster_dir/lock"
  flock 9
}

node_arg() {
  case "${1:-}" in
    1 | 2 | 3) echo "$1" ;;
    *) log "a node number from 1 to 3, not '${1:-}'"; exit 2 ;;
  esac
}

# The pid in the selected node's pid file, if that process is alive and is this node (its
# command line names the node's directory, see launch_node).
node_pid() {
  local pid state
  pid=$(cat "$base/rabbitmq.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] || return 1
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -qxF -- "$base" || return 1
  state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ] || return 1
  echo "$pid"
}

cookie() {
  mkdir -p "$home"
  [ -s "$home/.erlang.cookie" ] && return 0
  (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$home/.erlang.cookie")
  chmod 400 "$home/.erlang.cookie"
}

# Starts the selected node in the background (its configuration written first).
launch_node() {
  local i peers=""
  mkdir -p "$base/mnesia" "$base/log"
  for i in 1 2 3; do
    peers+="cluster_formation.classic_config.nodes.$i = foodlab-$((first_port + i - 1))@localhost"$'\n'
  done
  cat >"$base/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$port
management.tcp.ip = 127.0.0.1
management.tcp.port = $mgmt_port
loopback_users = none
# Queue depths in the management API are at most this old (ms); labs read them.
collect_statistics_interval = 500
cluster_formation.peer_discovery_backend = classic_config
$peers
CONF
  (
    node_env
    # Names the node's directory on its command line, so its pid is known to be this node's.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS -foodlab_rabbitmq_dir $base"
    : >"$RABBITMQ_CONF_ENV_FILE"
    echo "[rabbitmq_management]." >"$RABBITMQ_ENABLED_PLUGINS_FILE"
    # A pid file left by a killed node would make `rabbitmqctl wait` look at a dead process.
    rm -f "$RABBITMQ_PID_FILE"
    log "starting node $node (AMQP 127.0.0.1:$port, management 127.0.0.1:$mgmt_port, data $base)"
    setsid "$bin/rabbitmq-server" >>"$base/log/server.out" 2>&1 </dev/null 9>&- &
  )
}

# The cluster's running nodes as the selected node sees them, one a line.
running_nodes() {
  (node_env && ctl cluster_status --formatter json 2>/dev/null) |
    python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)["running_nodes"]))' 2>/dev/null
}

# Waits until the selected node serves (AMQP and management) and sees all three nodes running.
wait_node() {
  local waited=0
  (node_env && ctl wait "$RABBITMQ_PID_FILE" --timeout 180 >/dev/null) || {
    log "node $node did not start; see $base/log"
    return 1
  }
  until management_up && [ "$(running_nodes | wc -l)" = 3 ]; do
    if [ "$waited" -ge 900 ]; then
      log "node $node is not serving in a cluster of three: $(running_nodes | tr '\n' ' '); see $base/log"
      return 1
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
}

cluster_serves() {
  local i
  for i in 1 2 3; do
    select_node "$i"
    node_pid >/dev/null && management_up || return 1
  done
  select_node 1
  [ "$(running_nodes | wc -l)" = 3 ]
}

# Stops the selected node: rabbitmqctl's stop, SIGKILL if it has not gone in 60 s.
stop_node() {
  local pid
  pid=$(node_pid) || { rm -f "$base/rabbitmq.pid"; return 0; }
  log "stopping node $node (pid $pid)"
  (node_env && timeout 60 "$bin/rabbitmqctl" -n "$node" stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1) ||
    kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    node_pid >/dev/null || break
    sleep 0.1
  done
  rm -f "$base/rabbitmq.pid"
}

stop_nodes() {
  local i waits=()
  for i in "$@"; do
    (select_node "$i" && stop_node) &
    waits+=($!)
  done
  for i in "${waits[@]}"; do
    wait "$i" || true
  done
}

cluster_start() {
  local i started launched=()
  install
  cluster_lock
  cookie
  cluster_serves && return 0
  started=$(date +%s)
  if [ ! -f "$cluster_dir/formed" ]; then
    # Never formed (or not to the end): from scratch, node 1 first, so that the others
    # find it by peer discovery and join it instead of forming clusters of their own.
    stop_nodes 1 2 3
    rm -rf "$cluster_dir"/node-*
    select_node 1
    launch_node
    launched+=(1)
    (node_env && ctl wait "$RABBITMQ_PID_FILE" --timeout 180 >/dev/null) || {
      log "node $node did not start; see $base/log"
      stop_nodes "${launched[@]}"
      exit 1
    }
  fi
  # A formed cluster's nodes start together: each waits for the others' tables.
  for i in 1 2 3; do
    select_node "$i"
    node_pid >/dev/null && continue
    launch_node
    launched+=("$i")
  done
  for i in 1 2 3; do
    select_node "$i"
    wait_node || { stop_nodes "${launched[@]}"; exit 1; }
  done
  touch "$cluster_dir/formed"
  log "cluster of three ready in $(($(date +%s) - started)) s: $(cluster_urls)"
}

cluster_stop() {
  [ -d "$cluster_dir" ] || return 0
  cluster_lock
  stop_nodes 1 2 3
  local epmd
  epmd=$(command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -n1 || true)
  [ -n "$epmd" ] && ERL_EPMD_ADDRESS=127.0.0.1 "$epmd" -kill >/dev/null 2>&1 || true
}

cluster_status() {
  local i
  for i in 1 2 3; do
    select_node "$i"
    management_up || return 1
  done
}

cluster_urls() {
  local i urls=""
  for i in 1 2 3; do
    urls+="${urls:+,}amqp://guest:guest@127.0.0.1:$((first_port + i - 1))/%2f"
  done
  echo "$urls"
}

# SIGKILL: no orderly shutdown, as a crash or the OOM killer would end it.
cluster_kill() {
  local pid n
  n=$(node_arg "$@") || exit 2
  select_node "$n"
  cluster_lock
  pid=$(node_pid) || { log "node $node is not running"; exit 1; }
  log "killing node $node (pid $pid) with SIGKILL"
  kill -9 "$pid"
  for _ in $(seq 1 300); do
    node_pid >/dev/null || break
    sleep 0.1
  done
  echo "$pid"
}

cluster_start_node() {
  local n started
  n=$(node_arg "$@") || exit 2
  install
  select_node "$n"
  cluster_lock
  [ -f "$cluster_dir/formed" ] || { log "the cluster was never formed: start it first"; exit 1; }
  started=$(date +%s)
  node_pid >/dev/null || launch_node
  wait_node || exit 1
  log "node $node back in the cluster ($(($(date +%s) - started)) s)"
}

if [ "$nodes" = 1 ]; then
  case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) management_up ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
  esac
else
  case "${1:-}" in
    start) cluster_start ;;
    stop) cluster_stop ;;
    status) cluster_status ;;
    urls) cluster_urls ;;
    management) n=$(node_arg "${2:-}") && select_node "$n" && echo "http://127.0.0.1:$mgmt_port" ;;
    pid) n=$(node_arg "${2:-}") && select_node "$n" && { node_pid || { log "node $node is not running"; exit 1; }; } ;;
    kill) shift; cluster_kill "$@" ;;
    start-node) shift; cluster_start_node "$@" ;;
    *) echo "usage: RABBITMQ_NODES=3 $0 start|stop|status|urls|management N|pid N|kill N|start-node N" >&2; exit 2 ;;
  esac
fi
