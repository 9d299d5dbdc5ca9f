#!/usr/bin/env bash
# Fails if a FoodLab service process built from this checkout is still running
# (tests must stop everything they start).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
left=$(pgrep -af "^$here/target/[a-z]+/(order|inventory|notification|analytics|foodlab)( |$)" || true)
# A RabbitMQ node started from this checkout's scripts (its data lives here).
left+=$(pgrep -af "beam.smp.*$here/.foodlab/rabbitmq" || true)
# The Kafka broker started from this checkout's scripts (its JVM names its data dir).
for pidfile in "$here"/.foodlab/kafka-*/broker.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '^-Dfoodlab.kafka.dir=' &&
    left+="kafka broker pid $pid ($pidfile)"
done
if [ -n "$left" ]; then
  echo "processes left running after the tests:" >&2
  echo "$left" >&2
  exit 1
fi
echo "no FoodLab processes left running"
