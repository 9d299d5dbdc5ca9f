#!/usr/bin/env bash
# Kafka's command-line tools in the FoodLab Kafka image, under the names of the official
# image (/opt/kafka/bin/kafka-topics.sh, kafka-consumer-groups.sh, ...): each name is a link
# to this script, which runs the tool's main class from /opt/kafka/libs.
set -euo pipefail

home=${KAFKA_HOME:-/opt/kafka}
name=$(basename "$0" .sh)
case "$name" in
  kafka-topics) class=org.apache.kafka.tools.TopicCommand ;;
  kafka-consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  kafka-console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
  kafka-console-producer) class=org.apache.kafka.tools.ConsoleProducer ;;
  kafka-get-offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
  kafka-configs) class=kafka.admin.ConfigCommand ;;
  kafka-metadata-quorum) class=org.apache.kafka.tools.MetadataQuorumCommand ;;
  kafka-storage) class=kafka.tools.StorageTool ;;
  *) echo "$name: not a tool of this image" >&2; exit 2 ;;
esac
exec java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$home/config/log4j2-tools.properties" \
  -cp "$home/libs/*" "$class" "$@"
