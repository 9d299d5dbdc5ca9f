#!/usr/bin/env bash
# The broker's start in the FoodLab Kafka image, configured like the official apache/kafka
# image so charts/streaming-kafka sets either the same way: every KAFKA_FOO_BAR=value in the
# environment becomes foo.bar=value in server.properties (KAFKA_HEAP_OPTS, KAFKA_OPTS and
# the other *_OPTS excepted: JVM options), CLUSTER_ID formats the storage on the first start.
set -euo pipefail

home=${KAFKA_HOME:-/opt/kafka}
config=${KAFKA_CONFIG_DIR:-/tmp/kafka-config}
mkdir -p "$config"
: "${CLUSTER_ID:?CLUSTER_ID must be set (any base64 UUID; it formats the storage once)}"

{
  echo "# Written by start.sh from the KAFKA_* environment."
  env | sort | while IFS='=' read -r name value; do
    case "$name" in
      KAFKA_HOME | KAFKA_CONFIG_DIR | KAFKA_VERSION | KAFKA_*_OPTS | KAFKA_OPTS | KAFKA_LOG4J_*) continue ;;
      KAFKA_*) ;;
      *) continue ;;
    esac
    # KAFKA_LOG_DIRS -> log.dirs; a double underscore stands for an underscore, a triple
    # one for a dash (the official image's convention).
    key=${name#KAFKA_}
    key=${key//___/#d#}
    key=${key//__/#u#}
    key=${key//_/.}
    key=${key//#d#/-}
    key=${key//#u#/_}
    echo "${key,,}=$value"
  done
} >"$config/server.properties"

log_dirs=$(sed -n 's/^log\.dirs=//p' "$config/server.properties")
first_dir=${log_dirs%%,*}
java=(java -cp "$home/libs/*" -Djava.awt.headless=true)
if [ -n "$first_dir" ] && [ ! -f "$first_dir/meta.properties" ]; then
  "${java[@]}" -Xmx256m -Dlog4j2.configurationFile="$home/config/log4j2-tools.properties" \
    kafka.tools.StorageTool format --ignore-formatted -t "$CLUSTER_ID" -c "$config/server.properties"
fi

# shellcheck disable=SC2086 # lists of JVM options
exec "${java[@]}" ${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m} ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError} \
  ${KAFKA_OPTS:-} -Dlog4j2.configurationFile="$home/config/log4j2-broker.properties" \
  kafka.Kafka "$config/server.properties"
