#!/usr/bin/env bash
# A private PostgreSQL server for FoodLab on 127.0.0.1.
#
#   scripts/postgres.sh up       install (Debian package) if missing, initialise, start, wait until ready
#   scripts/postgres.sh down     stop the server (by the pid in its pid file)
#   scripts/postgres.sh url      print the URL of its `foodlab` database
#   scripts/postgres.sh status   exit 0 if the server answers
#
# Settings (environment): FOODLAB_POSTGRES_PORT (55432), FOODLAB_POSTGRES_DIR
# (.foodlab/postgres in the repo). The server runs as the `postgres` user (it
# refuses root), listens on 127.0.0.1 only, and keeps its socket in its own
# directory. Idempotent and safe to call from several processes at once.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
port=${FOODLAB_POSTGRES_PORT:-55432}
base=${FOODLAB_POSTGRES_DIR:-$repo/.foodlab/postgres}
data="$base/data"
run="$base/run"
user=foodlab
password=foodlab
database=foodlab

log() { echo "postgres: $*" >&2; }

bin_dir() {
  # The newest server Debian installed.
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1
}

install() {
  [ -n "$(bin_dir)" ] && [ -x "$(bin_dir)/postgres" ] && return 0
  log "installing postgresql from Debian"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # The package's own cluster is not wanted: only the binaries.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
}

# Runs a command as the server's owner (root cannot run PostgreSQL).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

url() { echo "postgres://$user:$password@127.0.0.1:$port/$database"; }

ready() {
  local bin
  bin=$(bin_dir)
  [ -n "$bin" ] && "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -d "$database" -U "$user" 2>/dev/null
}

pid_of_server() {
  [ -f "$data/postmaster.pid" ] && head -n1 "$data/postmaster.pid"
}

up() {
  install
  local bin
  bin=$(bin_dir)
  mkdir -p "$base"
  exec 9>"$base/lock"
  flock 9
  if ready; then
    return 0
  fi
  mkdir -p "$data" "$run"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$data" "$run"
    chmod 700 "$data"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising $data"
    local pwfile="$run/pwfile"
    echo "$password" >"$pwfile"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$pwfile"
    as_owner "$bin/initdb" -D "$data" -U "$user" --pwfile="$pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$base/initdb.log" 2>&1 \
      || { cat "$base/initdb.log" >&2; exit 1; }
    rm -f "$pwfile"
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$run'
max_connections = 300
shared_buffers = 128MB
# As the embedded SQLite (WAL, synchronous=NORMAL): a commit survives a crash
# of a service; a crash of the machine may lose the last commits, never consistency.
synchronous_commit = off
CONF
  fi
  log "starting on 127.0.0.1:$port (data $data)"
  # The server must not inherit the lock (fd 9), or it would hold it for its lifetime.
  as_owner "$bin/pg_ctl" -D "$data" -l "$run/server.log" -w -t 60 start >/dev/null 9>&- \
    || { tail -n 20 "$run/server.log" >&2; exit 1; }
  if ! as_owner "$bin/psql" -h "$run" -p "$port" -U "$user" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
    as_owner "$bin/createdb" -h "$run" -p "$port" -U "$user" "$database"
  fi
  for _ in $(seq 1 100); do
    if ready; then
      log "ready: $(url)"
      return 0
    fi
    sleep 0.2
  done
  log "did not become ready; see $run/server.log"
  exit 1
}

down() {
  local pid
  pid=$(pid_of_server || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    log "stopping (pid $pid)"
    # SIGINT is PostgreSQL's fast shutdown: sessions ended, no waiting for clients.
    kill -INT "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || return 0
      sleep 0.1
    done
    log "still running after 10 s (pid $pid)"
    exit 1
  fi
}

case "${1:-}" in
  up | start) up ;;
  down | stop) down ;;
  url) url ;;
  status) ready ;;
  *) echo "usage: $0 up|down|url|status" >&2; exit 2 ;;
esac
