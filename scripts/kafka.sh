#!/usr/bin/env bash
# Apache Kafka for FoodLab on 127.0.0.1: one KRaft node (broker and controller in one JVM).
#
#   scripts/kafka.sh install  fetch the jars once into the cache (Maven), reuse after
#   scripts/kafka.sh start    install if missing, format the storage once, start, wait until
#                             ready, create the topics
#   scripts/kafka.sh stop     stop the broker this script started
#   scripts/kafka.sh status   exit 0 if the broker answers
#   scripts/kafka.sh topics   create the topics (idempotent)
#   scripts/kafka.sh libs     print the directory of the jars (install first if missing)
#   scripts/kafka.sh run TOOL ARGS...
#                             one of Kafka's command-line tools, e.g.
#                             run kafka-consumer-groups --bootstrap-server 127.0.0.1:9092 --describe --group analytics-group
#
# Settings (environment): KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT + 1000),
# FOODLAB_KAFKA_DIR (.foodlab/kafka-<port> in the repo: configuration, log, data),
# FOODLAB_CACHE_DIR (~/.cache/foodlab: the jars, keyed on version), KAFKA_HEAP_OPTS,
# FOODLAB_ORDER_TOPIC (order-events), FOODLAB_INVENTORY_TOPIC (inventory-events),
# FOODLAB_TOPIC_PARTITIONS (3).
# The services take any bootstrap servers (FOODLAB_KAFKA_BROKERS); if a broker this script
# did not start already listens on the port, `start` leaves it as it is.
# Needs a JDK 17+ (installed from Debian if missing), Maven (likewise; first install only)
# and flock (util-linux).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
version=4.1.1 # also the default in scripts/kafka/pom.xml
port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-$((port + 1000))}
base=${FOODLAB_KAFKA_DIR:-$repo/.foodlab/kafka-$port}
cache=${FOODLAB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/foodlab}
root="$cache/kafka-$version"
libs="$root/libs"
bootstrap="127.0.0.1:$port"
partitions=${FOODLAB_TOPIC_PARTITIONS:-3}
topics=("${FOODLAB_ORDER_TOPIC:-order-events}" "${FOODLAB_INVENTORY_TOPIC:-inventory-events}")
heap=${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}
# Any base64 UUID; fixed so a wiped data directory formats the same way.
cluster_id=Zm9vZGxhYi1rYWZrYS0wMQ
# Marks the broker's JVM, so its pid is known to be ours (see broker_pid).
marker="-Dfoodlab.kafka.dir=$base"

log() { echo "kafka: $*" >&2; }

java_major() {
  "$1" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p'
}

# A java of 17 or later: JAVA_HOME's, the one on PATH, or Debian's openjdk-17 (installed if need be).
find_java() {
  local candidate major
  for candidate in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" \
    /usr/lib/jvm/java-17-openjdk-*/bin/java; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    major=$(java_major "$candidate")
    if [ -n "$major" ] && [ "$major" -ge 17 ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_java() {
  java=$(find_java) && return 0
  log "no JDK 17+ found; installing openjdk-17-jre-headless from Debian"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >&2
  java=$(find_java) || { log "no JDK 17+ after installing openjdk-17-jre-headless"; exit 1; }
}

install() {
  [ -f "$root/complete" ] && return 0
  mkdir -p "$cache"
  exec 8>"$cache/kafka-$version.lock"
  flock 8
  [ -f "$root/complete" ] && { exec 8>&-; return 0; }
  ensure_java
  if ! command -v mvn >/dev/null; then
    log "installing Maven from Debian"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >&2
  fi
  log "fetching Apache Kafka $version's jars into $libs (once)"
  rm -rf "$root"
  mkdir -p "$root"
  # -C: fail on a checksum mismatch instead of warning.
  if ! mvn -B -q -C -Dstyle.color=never -f "$repo/scripts/kafka/pom.xml" -Dkafka.version="$version" \
    dependency:copy-dependencies -DoutputDirectory="$libs.partial" >"$root/mvn.log" 2>&1; then
    cat "$root/mvn.log" >&2
    log "fetching the jars failed (Maven's output above, kept in $root/mvn.log)"
    exit 1
  fi
  mv "$libs.partial" "$libs"
  touch "$root/complete"
  exec 8>&-
  log "installed $(ls "$libs" | wc -l) jars in $libs"
}

listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

main_class() {
  case "$1" in
    kafka-topics) echo org.apache.kafka.tools.TopicCommand ;;
    kafka-consumer-groups) echo org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    kafka-console-consumer) echo org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    kafka-console-producer) echo org.apache.kafka.tools.ConsoleProducer ;;
    kafka-get-offsets) echo org.apache.kafka.tools.GetOffsetShell ;;
    kafka-delete-records) echo org.apache.kafka.tools.DeleteRecordsCommand ;;
    kafka-configs) echo kafka.admin.ConfigCommand ;;
    kafka-groups) echo org.apache.kafka.tools.GroupsCommand ;;
    kafka-log-dirs) echo org.apache.kafka.tools.LogDirsCommand ;;
    kafka-metadata-quorum) echo org.apache.kafka.tools.MetadataQuorumCommand ;;
    kafka-broker-api-versions) echo org.apache.kafka.tools.BrokerApiVersionsCommand ;;
    kafka-transactions) echo org.apache.kafka.tools.TransactionsCommand ;;
    kafka-storage) echo kafka.tools.StorageTool ;;
    *) return 1 ;;
  esac
}

# One of Kafka's tools, the way bin/kafka-*.sh runs it (small heap, quick JIT: it runs once).
tool() {
  local class
  class=$(main_class "$1") || {
    log "unknown tool $1 (kafka-topics, kafka-consumer-groups, kafka-console-consumer, kafka-console-producer, kafka-get-offsets, kafka-delete-records, kafka-configs, kafka-groups, kafka-log-dirs, kafka-metadata-quorum, kafka-broker-api-versions, kafka-transactions, kafka-storage)"
    exit 2
  }
  shift
  "$java" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$repo/scripts/kafka/log4j2-tools.properties" \
    -cp "$libs/*" "$class" "$@"
}

run_tool() {
  [ $# -ge 1 ] || { echo "usage: $0 run TOOL ARGS..." >&2; exit 2; }
  install
  ensure_java
  tool "$@"
}

create_topics() {
  install
  ensure_java
  local topic pids=() failed=0 pid
  # One JVM per topic (kafka-topics creates one at a time), run side by side.
  for topic in "${topics[@]}"; do
    tool kafka-topics --bootstrap-server "$bootstrap" --create --if-not-exists \
      --topic "$topic" --partitions "$partitions" --replication-factor 1 >/dev/null &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
  done
  [ "$failed" = 0 ] || { log "creating the topics ${topics[*]} failed"; return 1; }
}

write_config() {
  mkdir -p "$base/data"
  cat >"$base/server.properties" <<EOF
# Written by scripts/kafka.sh on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$base/data
num.partitions=$partitions
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# A group's first member starts consuming at once instead of after 3 s.
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=4
EOF
}

format_storage() {
  [ -f "$base/data/meta.properties" ] && return 0
  log "formatting $base/data (cluster $cluster_id)"
  tool kafka-storage format --ignore-formatted -t "$cluster_id" -c "$base/server.properties" >&2
}

# The pid of the broker this script started, if that process is still it.
broker_pid() {
  local pid
  [ -f "$base/broker.pid" ] || return 1
  pid=$(cat "$base/broker.pid")
  [ -n "$pid" ] && tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$marker" && echo "$pid"
}

start() {
  local pid started
  mkdir -p "$base"
  exec 9>"$base/lock"
  flock 9
  if listening; then
    if broker_pid >/dev/null; then
      create_topics
    else
      # Another broker (another checkout's, one started by hand): the services create the
      # topics they need; its storage is not ours to touch.
      log "a broker this script did not start listens on $bootstrap; using it as it is"
    fi
    return 0
  fi
  install
  ensure_java
  write_config
  format_storage
  log "starting Apache Kafka $version on $bootstrap (controller 127.0.0.1:$controller_port, data $base/data)"
  started=$(date +%s)
  # The broker must not inherit the locks (fds 8, 9), or it would hold them for its lifetime.
  # shellcheck disable=SC2086 # $heap is a list of JVM options
  (exec setsid "$java" $heap "$marker" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$repo/scripts/kafka/log4j2-broker.properties" \
    -cp "$libs/*" kafka.Kafka "$base/server.properties" \
    >>"$base/broker.log" 2>&1 </dev/null 9>&- 8>&-) &
  pid=$!
  echo "$pid" >"$base/broker.pid"
  for _ in $(seq 1 600); do
    if listening; then
      create_topics || { stop_pid "$pid"; exit 1; }
      log "ready in $(($(date +%s) - started)) s (topics: ${topics[*]}, $partitions partitions each)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker exited; see $base/broker.log"
      rm -f "$base/broker.pid"
      exit 1
    fi
    sleep 0.2
  done
  log "broker did not listen on $bootstrap within 120 s; see $base/broker.log"
  stop_pid "$pid"
  exit 1
}

# SIGTERM lets Kafka close its log cleanly (no recovery on the next start); a broker that
# has not exited after 30 s is killed.
stop_pid() {
  local pid=$1
  log "stopping broker (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$base/broker.pid"
}

stop() {
  local pid
  [ -d "$base" ] || return 0
  exec 9>"$base/lock"
  flock 9
  if pid=$(broker_pid); then
    stop_pid "$pid"
  fi
  rm -f "$base/broker.pid"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) listening ;;
  topics) create_topics ;;
  run) shift; run_tool "$@" ;;
  libs) install; echo "$libs" ;;
  *) echo "usage: $0 install|start|stop|status|topics|libs|run TOOL ARGS..." >&2; exit 2 ;;
esac
