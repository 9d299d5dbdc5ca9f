#!/usr/bin/env bash
# Images for the local cluster's node, made here (no registry is reachable): a Debian
# bookworm base from debootstrap (once, cached), and the FoodLab image on it with the
# binaries built on the host, imported into the node's containerd.
#
#   scripts/cluster/images.sh base      debootstrap the base into the cache (once)
#   scripts/cluster/images.sh foodlab   the FoodLab image (docker.io/library/foodlab:dev, what
#                                       the charts name) from target/$FOODLAB_PROFILE (debug)
#   scripts/cluster/images.sh kafka     Apache Kafka (FOODLAB_KAFKA_IMAGE,
#                                       docker.io/library/foodlab-kafka:4.1.1): images/kafka
#   scripts/cluster/images.sh rabbitmq  RabbitMQ from Debian's package (FOODLAB_RABBITMQ_IMAGE,
#                                       docker.io/library/foodlab-rabbitmq:3.10)
#   scripts/cluster/images.sh postgres  PostgreSQL from Debian's package (FOODLAB_POSTGRES_IMAGE,
#                                       docker.io/library/foodlab-postgres:15)
#   scripts/cluster/images.sh prometheus  Prometheus from its Go module, pinned by
#                                       scripts/cluster/prometheus (FOODLAB_PROMETHEUS_IMAGE,
#                                       docker.io/library/foodlab-prometheus:3.16.0)
#
# What the Dockerfile's runtime stage does, minus the Rust builder stage: the binaries come
# from the host's cargo build (same Debian release, so the same shared libraries).
# Settings: FOODLAB_CACHE_DIR (~/.cache/foodlab), FOODLAB_CLUSTER_DIR (.foodlab/cluster),
# FOODLAB_PROFILE (debug), FOODLAB_IMAGE (docker.io/library/foodlab:dev).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${FOODLAB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/foodlab}
base=${FOODLAB_CLUSTER_DIR:-$repo/.foodlab/cluster}
profile=${FOODLAB_PROFILE:-debug}
image=${FOODLAB_IMAGE:-docker.io/library/foodlab:dev}
rootfs_base="$cache/debian-bookworm-minbase"
binaries=(order inventory notification analytics foodlab-operator foodlab)

log() { echo "images: $*" >&2; }
ctr_() { ctr --address "$base/run/containerd.sock" --namespace k8s.io "$@"; }

base_rootfs() {
  [ -d "$rootfs_base" ] && return 0
  mkdir -p "$cache"
  exec 8>"$cache/debian-bookworm-minbase.lock"
  flock 8
  [ -d "$rootfs_base" ] && return 0
  log "debootstrap of Debian bookworm (minbase) into $rootfs_base (once)"
  rm -rf "$rootfs_base.partial"
  nice -n 10 debootstrap --variant=minbase bookworm \
    "$rootfs_base.partial" http://deb.debian.org/debian >"$cache/debian-bookworm-minbase.log" 2>&1
  rm -rf "$rootfs_base.partial"/var/cache/apt/archives/*.deb "$rootfs_base.partial"/var/lib/apt/lists/*
  mv "$rootfs_base.partial" "$rootfs_base"
}

# A fresh copy of the base for the image NAME in $work/rootfs, one build of an image at a
# time (the e2e and the cluster test both make theirs). The caller declares `local work`.
image_start() {
  base_rootfs
  work="$base/images/${1//[\/:]/_}"
  mkdir -p "$base/images"
  exec 9>"$work.lock"
  flock 9
  rm -rf "$work" && mkdir -p "$work"
  cp -a "$rootfs_base" "$work/rootfs"
}

# A user NAME with uid and gid ID and HOME in ROOTFS, unless the id is taken (by a user a
# package made): ROOTFS NAME ID HOME.
image_user() {
  local root=$1 name=$2 id=$3 home=$4
  grep -q ":$id:" "$root/etc/passwd" ||
    echo "$name:x:$id:$id::$home:/usr/sbin/nologin" >>"$root/etc/passwd"
  grep -q ":$id:" "$root/etc/group" || echo "$name:x:$id:" >>"$root/etc/group"
}

# The image NAME made from $work/rootfs (the rest: oci-image.py's options) and imported into
# the node's containerd: NAME OPTION...
image_finish() {
  local name=$1
  shift
  python3 "$repo/scripts/cluster/oci-image.py" "$name" "$work/rootfs" "$work/image.tar" "$@"
  ctr_ images import "$work/image.tar" >/dev/null
  rm -rf "$work/rootfs"
  log "imported $name ($(du -h "$work/image.tar" | cut -f1))"
}

foodlab_image() {
  local work bin
  image_start "$image"
  image_user "$work/rootfs" foodlab 10001 /nonexistent
  install -d -o 10001 -g 10001 "$work/rootfs/data"
  for bin in "${binaries[@]}"; do
    [ -x "$repo/target/$profile/$bin" ] || { log "missing target/$profile/$bin: cargo build --workspace --bins"; exit 1; }
    objcopy --strip-debug "$repo/target/$profile/$bin" "$work/rootfs/usr/local/bin/$bin"
  done
  if chroot "$work/rootfs" sh -c 'for b in /usr/local/bin/*; do ldd "$b"; done' | grep 'not found'; then
    log "a binary misses a shared library in the image"
    exit 1
  fi
  image_finish "$image" --cmd "foodlab --help" --user 10001:10001 --workdir /data \
    --env FOODLAB_DATA_DIR=/data
}

# Debian packages installed into a copy of the base (apt from Debian's mirror, in a chroot
# with its own /proc, unmounted again whatever happens): ROOTFS PACKAGE...
chroot_install() {
  local rootfs=$1
  shift
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  # No service a package installs may start in the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod +x "$rootfs/usr/sbin/policy-rc.d"
  mount -t proc proc "$rootfs/proc"
  local status=0
  chroot "$rootfs" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null && apt-get clean \
    && rm -rf /var/lib/apt/lists/*' sh "$@" || status=$?
  umount "$rootfs/proc"
  : >"$rootfs/etc/resolv.conf"
  rm -f "$rootfs/usr/sbin/policy-rc.d"
  return $status
}

# Apache Kafka (images/kafka/install.sh lays it out) on the base with a JRE 17, started like
# the official image; charts/streaming-kafka takes it through kafka.image.*.
kafka_image() {
  local name=${FOODLAB_KAFKA_IMAGE:-docker.io/library/foodlab-kafka:4.1.1} work
  image_start "$name"
  chroot_install "$work/rootfs" openjdk-17-jre-headless
  image_user "$work/rootfs" appuser 1000 /nonexistent
  install -d -o 1000 -g 1000 "$work/rootfs/var/lib/kafka/data"
  "$repo/images/kafka/install.sh" "$work/rootfs"
  image_finish "$name" --cmd /opt/kafka/bin/start.sh --user 1000:1000 --workdir /opt/kafka \
    --env PATH=/opt/kafka/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
}

# RabbitMQ from Debian's package (3.10), run the way charts/async-rabbitmq runs the
# official rabbitmq:3-management image: uid 999, HOME and data in /var/lib/rabbitmq, config
# files from /etc/rabbitmq/conf.d, the management and Prometheus plugins enabled, the user
# from RABBITMQ_DEFAULT_USER/PASS.
rabbitmq_image() {
  local name=${FOODLAB_RABBITMQ_IMAGE:-docker.io/library/foodlab-rabbitmq:3.10} work
  image_start "$name"
  chroot_install "$work/rootfs" rabbitmq-server
  local root="$work/rootfs"
  image_user "$root" rabbitmq-image 999 /var/lib/rabbitmq
  install -d -o 999 -g 999 "$root/var/lib/rabbitmq" "$root/var/log/rabbitmq" "$root/etc/rabbitmq/conf.d"
  echo "[rabbitmq_management,rabbitmq_prometheus]." >"$root/etc/rabbitmq/enabled_plugins"
  printf 'loopback_users.guest = false\nlisteners.tcp.default = 5672\nmanagement.tcp.port = 15672\n' \
    >"$root/etc/rabbitmq/conf.d/10-defaults.conf"
  image_finish "$name" \
    --cmd /usr/lib/rabbitmq/bin/rabbitmq-server --user 999:999 --workdir /var/lib/rabbitmq \
    --env HOME=/var/lib/rabbitmq RABBITMQ_CONFIG_FILES=/etc/rabbitmq/conf.d \
    PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
}

# PostgreSQL from Debian's package (15), run the way the charts run the official
# postgres:15 image: uid 999, POSTGRES_USER/PASSWORD/DB and PGDATA honoured by
# images/postgres/entrypoint.sh, the socket in /var/run/postgresql.
postgres_image() {
  local name=${FOODLAB_POSTGRES_IMAGE:-docker.io/library/foodlab-postgres:15} work
  image_start "$name"
  chroot_install "$work/rootfs" postgresql
  local root="$work/rootfs"
  # The cluster the package's postinst made: the image's PGDATA is made at first start.
  rm -rf "$root"/var/lib/postgresql/[0-9]* "$root"/etc/postgresql/[0-9]*
  image_user "$root" postgres-image 999 /var/lib/postgresql
  install -d -o 999 -g 999 "$root/var/lib/postgresql/data" "$root/var/run/postgresql"
  install -m 0755 "$repo/images/postgres/entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  image_finish "$name" \
    --entrypoint /usr/local/bin/docker-entrypoint.sh --cmd postgres --user 999:999 \
    --workdir /var/lib/postgresql \
    --env PGDATA=/var/lib/postgresql/data PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
}

# Prometheus, for e2e's check of the dashboard's queries: built once per version into the
# cache (Kubernetes discovery only; no web UI assets, the HTTP API answers), on the base.
prometheus_image() {
  local name=${FOODLAB_PROMETHEUS_IMAGE:-docker.io/library/foodlab-prometheus:3.16.0} work
  local module="$repo/scripts/cluster/prometheus" version bin
  version=$(cd "$module" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go list -m -f '{{.Version}}' github.com/prometheus/prometheus)
  bin="$cache/prometheus-$version/prometheus"
  if [ ! -x "$bin" ]; then
    mkdir -p "$cache/prometheus-$version"
    exec 8>"$cache/prometheus-$version.lock"
    flock 8
    if [ ! -x "$bin" ]; then
      log "building prometheus $version into $cache/prometheus-$version (once)"
      local started=$SECONDS
      (cd "$module" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod nice -n 10 go build -trimpath \
        -tags remove_all_sd,enable_kubernetes_sd -ldflags='-s -w' \
        -o "$bin.partial" github.com/prometheus/prometheus/cmd/prometheus)
      mv "$bin.partial" "$bin"
      log "built prometheus in $((SECONDS - started)) s"
    fi
    exec 8>&-
  fi
  image_start "$name"
  install -m 0755 "$bin" "$work/rootfs/usr/local/bin/prometheus"
  install -d -o 65534 -g 65534 "$work/rootfs/prometheus"
  image_finish "$name" --entrypoint /usr/local/bin/prometheus --user 65534:65534 --workdir /prometheus
}

case "${1:-}" in
  base) base_rootfs ;;
  postgres) postgres_image ;;
  prometheus) prometheus_image ;;
  rabbitmq) rabbitmq_image ;;
  foodlab) foodlab_image ;;
  kafka) kafka_image ;;
  *)
    echo "usage: $0 base|foodlab|kafka|postgres|prometheus|rabbitmq" >&2
    exit 2
    ;;
esac
