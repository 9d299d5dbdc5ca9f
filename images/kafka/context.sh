#!/usr/bin/env bash
# The Docker build context of images/kafka/Dockerfile in DIR: the Dockerfile, the scripts,
# the log4j2 settings and the jars (fetched into the cache by scripts/kafka.sh if missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: context.sh DIR}
"$here/../../scripts/kafka.sh" install
rm -rf "$dir/context"
mkdir -p "$dir/context/conf"
cp "$here/Dockerfile" "$dir/"
cp "$here/install.sh" "$here/start.sh" "$here/kafka-tool.sh" "$dir/context/"
cp "$here/../../scripts/kafka/log4j2-broker.properties" "$here/../../scripts/kafka/log4j2-tools.properties" "$dir/context/conf/"
cp -r "$("$here/../../scripts/kafka.sh" libs)" "$dir/context/libs"
echo "build context in $dir: docker build -t foodlab-kafka:4.1.1 $dir" >&2
