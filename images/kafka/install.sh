#!/usr/bin/env bash
# Lays out Apache Kafka under ROOT/opt/kafka from the jars scripts/kafka.sh caches: libs/,
# config/ (the log4j2 settings), bin/start.sh and the tools' names. The Dockerfile runs it
# on its own build context; the local cluster's image builder can run it on a rootfs
# (that also needs `openjdk-17-jre-headless` installed in it, and the uid 1000 user).
#
#   images/kafka/install.sh ROOT          jars from the cache (fetched first if missing)
#   KAFKA_LIBS=DIR images/kafka/install.sh ROOT
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=${1:?usage: install.sh ROOT}
if [ -z "${KAFKA_LIBS:-}" ]; then
  "$here/../../scripts/kafka.sh" install
  KAFKA_LIBS=$("$here/../../scripts/kafka.sh" libs)
fi
kafka_conf=${KAFKA_CONF:-$here/../../scripts/kafka}
tools=(kafka-topics kafka-consumer-groups kafka-console-consumer kafka-console-producer
  kafka-get-offsets kafka-configs kafka-metadata-quorum kafka-storage)

install -d "$root/opt/kafka/libs" "$root/opt/kafka/config" "$root/opt/kafka/bin"
cp "$KAFKA_LIBS"/*.jar "$root/opt/kafka/libs/"
cp "$kafka_conf/log4j2-broker.properties" "$kafka_conf/log4j2-tools.properties" "$root/opt/kafka/config/"
install -m 0755 "$here/start.sh" "$here/kafka-tool.sh" "$root/opt/kafka/bin/"
for tool in "${tools[@]}"; do
  ln -sf kafka-tool.sh "$root/opt/kafka/bin/$tool.sh"
done
echo "kafka image layout in $root/opt/kafka ($(ls "$root/opt/kafka/libs" | wc -l) jars)" >&2
