#!/usr/bin/env bash
# Apache Kafka for FoodLab on 127.0.0.1: one KRaft node (broker and controller in one JVM),
# or with KAFKA_NODES=3 a cluster of three such nodes.
#
#   scripts/kafka.sh install  fetch the jars once into the cache (Maven), reuse after
#   scripts/kafka.sh start    install if missing, format the storage once, start, wait until
#                             ready, create the topics
#   scripts/kafka.sh stop     stop the broker this script started
#   scripts/kafka.sh status   exit 0 if the broker answers
#   scripts/kafka.sh topics   create the topics (idempotent)
#   scripts/kafka.sh bootstrap
#                             print the bootstrap servers (127.0.0.1:9092)
#   scripts/kafka.sh libs     print the directory of the jars (install first if missing)
#   scripts/kafka.sh run TOOL ARGS...
#                             one of Kafka's command-line tools, e.g.
#                             run kafka-consumer-groups --bootstrap-server 127.0.0.1:9092 --describe --group analytics-group
#
# Three nodes: KAFKA_NODES=3 before any command above, plus commands for one node N (1-3):
#
#   KAFKA_NODES=3 scripts/kafka.sh start       start the nodes that are not running (each on
#                                               its own ports), wait until all three serve,
#                                               create the topics (replication factor 3,
#                                               min.insync.replicas=2)
#   KAFKA_NODES=3 scripts/kafka.sh stop        stop every node this script started
#   KAFKA_NODES=3 scripts/kafka.sh status      exit 0 if every node answers
#   KAFKA_NODES=3 scripts/kafka.sh bootstrap   127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194
#   KAFKA_NODES=3 scripts/kafka.sh pid N       print node N's pid (exit 1 if it is not running)
#   KAFKA_NODES=3 scripts/kafka.sh kill N      SIGKILL node N (by its pid file), as a crash would
#   KAFKA_NODES=3 scripts/kafka.sh start-node N
#                                               start node N again and wait until it listens
#
# (pid, kill and start-node work on the single node too, as node 1.)
#
# Node N's Kafka id is N; it listens on KAFKA_PORT + N - 1 (KAFKA_PORT is 9192 for three
# nodes), its controller on that port + 1000, and keeps its configuration, log, data and pid
# in .foodlab/kafka-<its port>, as a single node does. Every node has the broker and the
# controller roles: three JVMs instead of six on a two-core machine, and a quorum of three
# controllers still elects a leader with one of them gone. The internal topics (consumer
# offsets, transactions) are replicated three times too, and a topic created without a
# replication factor (as the services create theirs) gets 3 and min.insync.replicas=2.
#
# Settings (environment): KAFKA_NODES (1, or 3), KAFKA_PORT (9092; 9192 for three nodes),
# KAFKA_CONTROLLER_PORT (KAFKA_PORT + 1000; one node only),
# FOODLAB_KAFKA_DIR (.foodlab/kafka-<port> in the repo: configuration, log, data; for three
# nodes the directory that holds their kafka-<port> directories, .foodlab),
# FOODLAB_CACHE_DIR (~/.cache/foodlab: the jars, keyed on version), KAFKA_HEAP_OPTS
# (-Xms256m -Xmx768m; -Xms128m -Xmx384m per node of three),
# FOODLAB_ORDER_TOPIC (order-events), FOODLAB_INVENTORY_TOPIC (inventory-events),
# FOODLAB_TOPIC_PARTITIONS (3).
# The services take any bootstrap servers (FOODLAB_KAFKA_BROKERS); if a broker this script
# did not start already listens on the port, `start` leaves it as it is.
# Needs a JDK 17+ (installed from Debian if missing), Maven (likewise; first install only)
# and flock (util-linux).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
version=4.1.1 # also the default in scripts/kafka/pom.xml
nodes=${KAFKA_NODES:-1}
cache=${FOODLAB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/foodlab}
root="$cache/kafka-$version"
libs="$root/libs"
partitions=${FOODLAB_TOPIC_PARTITIONS:-3}
topics=("${FOODLAB_ORDER_TOPIC:-order-events}" "${FOODLAB_INVENTORY_TOPIC:-inventory-events}")
case "$nodes" in
  1)
    first_port=${KAFKA_PORT:-9092}
    heap=${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}
    # Any base64 UUID; fixed so a wiped data directory formats the same way.
    cluster_id=Zm9vZGxhYi1rYWZrYS0wMQ
    replication=1
    min_isr=1
    ;;
  3)
    first_port=${KAFKA_PORT:-9192}
    # Three JVMs beside the builds and tests of a two-core, 24 GiB machine.
    heap=${KAFKA_HEAP_OPTS:--Xms128m -Xmx384m}
    cluster_id=Zm9vZGxhYi1rYWZrYS0wMw
    replication=3
    # acks=all then waits for two copies, and a partition still takes writes with one node gone.
    min_isr=2
    cluster_dir=${FOODLAB_KAFKA_DIR:-$repo/.foodlab}
    ;;
  *) echo "kafka: KAFKA_NODES is 1 or 3, not $nodes" >&2; exit 2 ;;
esac
# Node $1's settings: its id, ports, directory and the marker of its JVM.
select_node() {
  node=$1
  port=$((first_port + node - 1))
  if [ "$nodes" = 1 ]; then
    controller_port=${KAFKA_CONTROLLER_PORT:-$((port + 1000))}
    base=${FOODLAB_KAFKA_DIR:-$repo/.foodlab/kafka-$port}
  else
    controller_port=$((port + 1000))
    base="$cluster_dir/kafka-$port"
  fi
  # Marks the broker's JVM, so its pid is known to be ours (see broker_pid).
  marker="-Dfoodlab.kafka.dir=$base"
}

bootstrap=""
voters=""
for ((i = 1; i <= nodes; i++)); do
  select_node "$i"
  bootstrap+="${bootstrap:+,}127.0.0.1:$port"
  voters+="${voters:+,}$i@127.0.0.1:$controller_port"
done
select_node 1

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
  local topic pids=() failed=0 pid settings=()
  [ "$nodes" = 1 ] || settings=(--config "min.insync.replicas=$min_isr")
  # One JVM per topic (kafka-topics creates one at a time), run side by side.
  for topic in "${topics[@]}"; do
    tool kafka-topics --bootstrap-server "$bootstrap" --create --if-not-exists \
      --topic "$topic" --partitions "$partitions" --replication-factor "$replication" \
      "${settings[@]}" >/dev/null &
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
node.id=$node
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$base/data
num.partitions=$partitions
default.replication.factor=$replication
offsets.topic.replication.factor=$replication
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_isr
# A group's first member starts consuming at once instead of after 3 s.
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=4
EOF
  # The services create their topics with no settings of their own: this holds for them too.
  [ "$nodes" = 1 ] || echo "min.insync.replicas=$min_isr" >>"$base/server.properties"
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

# Starts the selected node's JVM (configured and formatted) and records its pid in $pid.
launch() {
  log "starting Apache Kafka $version on 127.0.0.1:$port (controller 127.0.0.1:$controller_port, data $base/data)"
  # The broker must not inherit the locks (fds 7, 8, 9), or it would hold them for its lifetime.
  # shellcheck disable=SC2086 # $heap is a list of JVM options
  (exec setsid "$java" $heap "$marker" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$repo/scripts/kafka/log4j2-broker.properties" \
    -cp "$libs/*" kafka.Kafka "$base/server.properties" \
    >>"$base/broker.log" 2>&1 </dev/null 9>&- 8>&- 7>&-) &
  pid=$!
  echo "$pid" >"$base/broker.pid"
}

# Waits until the selected node (pid $1) listens; stops it and fails if it does not in 120 s.
wait_listening() {
  local pid=$1
  for _ in $(seq 1 600); do
    listening && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker exited; see $base/broker.log"
      rm -f "$base/broker.pid"
      return 1
    fi
    sleep 0.2
  done
  log "broker did not listen on 127.0.0.1:$port within 120 s; see $base/broker.log"
  stop_pid "$pid"
  return 1
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
  started=$(date +%s)
  launch
  wait_listening "$pid" || exit 1
  create_topics || { stop_pid "$pid"; exit 1; }
  log "ready in $(($(date +%s) - started)) s (topics: ${topics[*]}, $partitions partitions each)"
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

# Three nodes. One lock for the cluster: its commands run one at a time (a single node's
# commands take the node's lock, as start and stop do).
cluster_lock() {
  if [ "$nodes" = 1 ]; then
    mkdir -p "$base"
    exec 9>"$base/lock"
    flock 9
    return 0
  fi
  mkdir -p "$cluster_dir"
  exec 7>"$cluster_dir/kafka-cluster-$first_port.lock"
  flock 7
}

# The node number of a command's argument.
node_arg() {
  case "${1:-}" in
    [1-9]) [ "$1" -le "$nodes" ] && { echo "$1"; return 0; } ;;
  esac
  log "a node number from 1 to $nodes, not '${1:-}'"
  exit 2
}

# Starts node $1 unless it runs; its pid in $pid. A port held by a broker this script did
# not start cannot be one of the cluster's nodes.
start_node_unless_running() {
  select_node "$1"
  mkdir -p "$base"
  if pid=$(broker_pid); then
    return 0
  fi
  if listening; then
    log "node $node: something this script did not start listens on 127.0.0.1:$port"
    return 1
  fi
  write_config
  format_storage
  launch
  launched+=("$pid")
}

cluster_start() {
  local i attempt pids=() started errors
  launched=()
  cluster_lock
  install
  ensure_java
  started=$(date +%s)
  errors="$cluster_dir/kafka-cluster-$first_port.topics.log"
  # Started together: a node's controller waits for a quorum of the others.
  for i in $(seq 1 "$nodes"); do
    start_node_unless_running "$i" || { cluster_stop_nodes "${launched[@]}"; exit 1; }
    pids+=("$pid")
  done
  for i in $(seq 1 "$nodes"); do
    select_node "$i"
    wait_listening "${pids[$((i - 1))]}" || { cluster_stop_nodes "${launched[@]}"; exit 1; }
  done
  # A topic with three replicas can be created once all three brokers have registered.
  for attempt in $(seq 1 60); do
    if create_topics 2>"$errors"; then
      log "ready in $(($(date +%s) - started)) s: $bootstrap (topics: ${topics[*]}, $partitions partitions, replication factor $replication, min.insync.replicas $min_isr)"
      return 0
    fi
    [ "$attempt" = 60 ] || sleep 2
  done
  cat "$errors" >&2
  log "the topics could not be created on $bootstrap"
  cluster_stop_nodes "${launched[@]}"
  exit 1
}

# Stops the nodes whose pids are given (all: every node this script started), side by side.
cluster_stop_nodes() {
  local i pid waits=()
  for i in $(seq 1 "$nodes"); do
    select_node "$i"
    pid=$(broker_pid) || continue
    if [ "${1:-}" = all ] || printf '%s\n' "$@" | grep -qxF -- "$pid"; then
      stop_pid "$pid" &
      waits+=($!)
    fi
  done
  for pid in "${waits[@]}"; do
    wait "$pid" || true
  done
}

cluster_stop() {
  [ -d "$cluster_dir" ] || return 0
  cluster_lock
  cluster_stop_nodes all
}

cluster_status() {
  local i
  for i in $(seq 1 "$nodes"); do
    select_node "$i"
    listening || return 1
  done
}

node_pid() {
  local n
  n=$(node_arg "$@") || exit 2
  select_node "$n"
  broker_pid
}

# SIGKILL: no controlled shutdown, no clean close of the log, as a crash or the OOM killer.
node_kill() {
  local pid n
  n=$(node_arg "$@") || exit 2
  select_node "$n"
  cluster_lock
  pid=$(broker_pid) || { log "node $node is not running"; exit 1; }
  log "killing node $node (pid $pid) with SIGKILL"
  kill -9 "$pid"
  # Until every thread has exited (the main one can be a zombie before the others) and the
  # port is closed; its parent may not have reaped it yet.
  for _ in $(seq 1 300); do
    if [ "$(ls "/proc/$pid/task" 2>/dev/null | wc -l)" -le 1 ] &&
      [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || echo Z)" = Z ] && ! listening; then
      break
    fi
    sleep 0.1
  done
  rm -f "$base/broker.pid"
  echo "$pid"
}

node_start() {
  local started n
  n=$(node_arg "$@") || exit 2
  select_node "$n"
  cluster_lock
  install
  ensure_java
  started=$(date +%s)
  start_node_unless_running "$n" || exit 1
  wait_listening "$pid" || exit 1
  log "node $node listens on 127.0.0.1:$port ($(($(date +%s) - started)) s)"
}

if [ "$nodes" = 1 ]; then
  case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) listening ;;
    topics) create_topics ;;
    bootstrap) echo "$bootstrap" ;;
    pid) shift; node_pid "${1:-1}" ;;
    kill) shift; node_kill "${1:-1}" ;;
    start-node) shift; node_start "${1:-1}" ;;
    run) shift; run_tool "$@" ;;
    libs) install; echo "$libs" ;;
    *) echo "usage: $0 install|start|stop|status|topics|bootstrap|pid|kill|start-node|libs|run TOOL ARGS..." >&2; exit 2 ;;
  esac
else
  case "${1:-}" in
    install) install ;;
    start) cluster_start ;;
    stop) cluster_stop ;;
    status) cluster_status ;;
    topics) create_topics ;;
    bootstrap) echo "$bootstrap" ;;
    pid) shift; node_pid "$@" ;;
    kill) shift; node_kill "$@" ;;
    start-node) shift; node_start "$@" ;;
    run) shift; run_tool "$@" ;;
    libs) install; echo "$libs" ;;
    *) echo "usage: KAFKA_NODES=$nodes $0 install|start|stop|status|topics|bootstrap|pid N|kill N|start-node N|libs|run TOOL ARGS..." >&2; exit 2 ;;
  esac
fi
