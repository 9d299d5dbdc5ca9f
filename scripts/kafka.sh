#!/usr/bin/env bash
# A Kafka-protocol broker for FoodLab on 127.0.0.1 (tansu, an Apache-Kafka-compatible
# broker written in Rust, with durable SQLite storage).
#
#   scripts/kafka.sh install  build the broker once into the cache (about 18 min), reuse after
#   scripts/kafka.sh start    install if missing, start, create the topics, wait until ready
#   scripts/kafka.sh stop     stop the broker
#   scripts/kafka.sh status   exit 0 if the broker answers
#   scripts/kafka.sh topics   create the topics (idempotent)
#
# Settings (environment): KAFKA_PORT (9092), FOODLAB_KAFKA_DIR (.foodlab/kafka-<port> in the repo),
# FOODLAB_CACHE_DIR (~/.cache/foodlab: where the broker binary is kept, keyed on version),
# FOODLAB_ORDER_TOPIC (order-events), FOODLAB_INVENTORY_TOPIC (inventory-events),
# FOODLAB_TOPIC_PARTITIONS (3).
# The services take any bootstrap servers (FOODLAB_KAFKA_BROKERS), Apache Kafka included;
# if something already listens on the port, `start` only makes sure the topics exist.
# Needs cargo (first install only), python3 and flock (util-linux).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
version=0.6.0
port=${KAFKA_PORT:-9092}
base=${FOODLAB_KAFKA_DIR:-$repo/.foodlab/kafka-$port}
cache=${FOODLAB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/foodlab}
root="$cache/tansu-$version"
tansu="$root/bin/tansu"
broker="tcp://127.0.0.1:$port"
partitions=${FOODLAB_TOPIC_PARTITIONS:-3}
topics=("${FOODLAB_ORDER_TOPIC:-order-events}" "${FOODLAB_INVENTORY_TOPIC:-inventory-events}")

log() { echo "kafka: $*" >&2; }

install() {
  [ -x "$tansu" ] && return 0
  mkdir -p "$cache"
  exec 8>"$cache/tansu-$version.lock"
  flock 8
  [ -x "$tansu" ] && return 0
  log "building tansu $version into $root (once; about 18 minutes on two cores)"
  local target="$cache/tansu-$version.build"
  CARGO_TARGET_DIR="$target" cargo install tansu --version "$version" --locked \
    --features dynostore,libsql --root "$root" --quiet
  rm -rf "$target"
  log "installed $tansu"
}

listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

create_topics() {
  local topic out
  for topic in "${topics[@]}"; do
    if ! out=$("$tansu" topic create "$topic" --partitions "$partitions" --broker "$broker" 2>&1); then
      case "$out" in
        *TopicAlreadyExists* | *already*) ;;
        *) log "creating topic $topic failed: $out"; return 1 ;;
      esac
    fi
  done
}

# tansu's SQLite schema has no index on record headers, and it looks up a
# record's headers once per record fetched: without this index every fetch
# scans every header ever stored, and consumers slow down as the log grows.
# Only for the broker this script runs (its database has a `header` table).
index_headers() {
  [ -s "$base/tansu.db" ] || return 0
  python3 - "$base/tansu.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=rw", uri=True, timeout=30)
if db.execute("select 1 from sqlite_master where type = 'table' and name = 'header'").fetchone():
    db.execute("create index if not exists foodlab_header_record on header (topition, offset_id)")
    db.commit()
PY
}

# The pid of the broker this script started, if that process is still it.
broker_pid() {
  local pid
  [ -f "$base/broker.pid" ] || return 1
  pid=$(cat "$base/broker.pid")
  [ -n "$pid" ] && grep -q tansu "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

start() {
  local pid
  mkdir -p "$base"
  exec 9>"$base/lock"
  flock 9
  if listening; then
    if broker_pid >/dev/null; then
      create_topics
      index_headers
    else
      # Another broker (Apache Kafka, another checkout's tansu): the services
      # create the topics they need; its storage is not ours to touch.
      log "a broker this script did not start listens on $broker; using it as it is"
    fi
    return 0
  fi
  install
  log "starting tansu $version on $broker (data $base/tansu.db)"
  # The broker must not inherit the lock (fd 9), or it would hold it for its lifetime.
  # It reads a sqlite:// path relative to its working directory: run it in $base.
  (cd "$base" && exec setsid "$tansu" broker \
    --listener-url "$broker" \
    --advertised-listener-url "$broker" \
    --storage-engine "sqlite://tansu.db" \
    >"$base/broker.log" 2>&1 </dev/null 9>&- 8>&-) &
  pid=$!
  echo "$pid" >"$base/broker.pid"
  for _ in $(seq 1 150); do
    if listening; then
      create_topics
      index_headers
      log "ready (topics: ${topics[*]}, $partitions partitions each)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker exited; see $base/broker.log"
      rm -f "$base/broker.pid"
      exit 1
    fi
    sleep 0.2
  done
  log "broker did not listen on $broker; see $base/broker.log"
  kill "$pid" 2>/dev/null || true
  rm -f "$base/broker.pid"
  exit 1
}

stop() {
  local pid
  [ -d "$base" ] || return 0
  exec 9>"$base/lock"
  flock 9
  if pid=$(broker_pid); then
    log "stopping broker (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$base/broker.pid"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) listening ;;
  topics) create_topics ;;
  *) echo "usage: $0 install|start|stop|status|topics" >&2; exit 2 ;;
esac
