#!/usr/bin/env bash
# Fails if a FoodLab service process built from this checkout is still running
# (tests must stop everything they start).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
left=$(pgrep -af "^$here/target/[a-z]+/(order|inventory|notification|analytics|foodlab|foodlab-operator)( |$)" || true)
# A RabbitMQ node started from this checkout's scripts (its data lives here).
left+=$(pgrep -af "beam.smp.*$here/.foodlab/rabbitmq" || true)
# The Kafka broker started from this checkout's scripts (its JVM names its data dir).
for pidfile in "$here"/.foodlab/kafka-*/broker.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '^-Dfoodlab.kafka.dir=' &&
    left+="kafka broker pid $pid ($pidfile)"
done
# e2e's port-forward to its Prometheus (scripts/e2e.sh with E2E_OBSERVE=1).
forward=$(pgrep -af "^kubectl -n [^ ]+ port-forward service/prometheus " || true)
[ -z "$forward" ] || left+=$'\n'"$forward"
# The PostgreSQL server started from this checkout's scripts (by its pid file).
pg_pidfile="$here/.foodlab/postgres/data/postmaster.pid"
if [ -f "$pg_pidfile" ]; then
  pid=$(head -n1 "$pg_pidfile")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && left+=$'\n'"postgres pid $pid ($pg_pidfile)"
fi
# The local cluster's components (scripts/cluster.sh): by pid file, and any process run
# from the binaries cluster.sh builds or with the cluster's data dir in its arguments.
for pidfile in "$here"/.foodlab/cluster/run/*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && left+=$'\n'"cluster component pid $pid ($pidfile)"
done
cluster_procs=$(pgrep -af "^[^ ]*/foodlab/(kubernetes|etcd)-[0-9.]+/bin/[a-z-]+( |$)|$here/.foodlab/cluster/" || true)
[ -n "$cluster_procs" ] && left+=$'\n'"$cluster_procs"
# Its routes and mounts: the unreachable routes for the service and pod ranges go with
# the cluster, and nothing stays mounted under its data dir.
if [ -f "$here/.foodlab/cluster/run/routes" ]; then
  left+=$'\n'"cluster routes still recorded in $here/.foodlab/cluster/run/routes"
fi
for range in "${CLUSTER_SERVICE_RANGE:-10.96.0.0/16}" "${CLUSTER_POD_RANGE:-10.244.0.0/16}"; do
  route=$(ip route show type unreachable "$range" 2>/dev/null || true)
  [ -n "$route" ] && left+=$'\n'"route left: unreachable $route"
done
# The node's (scripts/cluster.sh node-up): its bridge, pod network namespaces, pod cgroups.
bridge=${CLUSTER_BRIDGE:-foodlab0}
ip link show "$bridge" >/dev/null 2>&1 && left+=$'\n'"network interface left: $bridge"
iptables -S FORWARD 2>/dev/null | grep -q -- "-i $bridge " && left+=$'\n'"iptables FORWARD rule left for $bridge"
iptables -t nat -S PREROUTING 2>/dev/null | grep -q -- "-i $bridge " && left+=$'\n'"iptables nat PREROUTING rule left for $bridge"
for netns in /run/netns/cni-*; do
  [ -e "$netns" ] && left+=$'\n'"network namespace left: $netns"
done
[ -e "$here/.foodlab/cluster/run/made-run-containerd" ] && [ -e /run/containerd ] &&
  left+=$'\n'"/run/containerd left (made by the cluster's containerd)"
# Pod cgroups: under each controller on cgroup v1, at the root on v2 (cgroupfs or systemd names).
for cgroup in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/kubepods.slice; do
  [ -d "$cgroup" ] && left+=$'\n'"cgroup left: $cgroup"
done
for cmd in iptables ip6tables; do
  command -v "$cmd" >/dev/null || continue
  for table in filter nat mangle; do
    chains=$("$cmd" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { printf "%s ", $2 }')
    [ -n "$chains" ] && left+=$'\n'"$cmd $table chains left: $chains"
  done
done
mounts=$(awk -v dir="$here/.foodlab/cluster/" 'index($2, dir) == 1 { print "mount left: " $2 }' /proc/mounts)
[ -n "$mounts" ] && left+=$'\n'"$mounts"
if [ -n "$left" ]; then
  echo "processes left running after the tests:" >&2
  echo "$left" >&2
  exit 1
fi
echo "no FoodLab processes, cluster routes or mounts left"
