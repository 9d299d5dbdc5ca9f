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
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
port=${RABBITMQ_PORT:-5672}
mgmt_port=${RABBITMQ_MGMT_PORT:-15672}
dist_port=${RABBITMQ_DIST_PORT:-25672}
base=${FOODLAB_RABBITMQ_DIR:-$repo/.foodlab/rabbitmq}
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
  export HOME="$base/home"
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

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) management_up ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
