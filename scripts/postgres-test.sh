#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suite, from Debian's `postgresql` package binaries.
#
#   eval "$(scripts/postgres-test.sh start)"   # exports MCPWORKS_TEST_DATABASE_URL and MCPWORKS_TEST_PG_DIR
#   scripts/postgres-test.sh stop [DIR]        # stops it and removes everything (DIR defaults to $MCPWORKS_TEST_PG_DIR)
#   scripts/postgres-test.sh clean             # stops and removes stale instances left by killed runs
#
# MCPWORKS_TEST_PG_SETTINGS: more server options for `start`, e.g. "-c shared_preload_libraries=pg_stat_statements"
# (bench/cluster counts the statements the nodes send).
#
# The cluster lives in a fresh `mktemp -d` dir (owned by the postgres user when run as root, since
# PostgreSQL refuses to run as root), listens on a free port on 127.0.0.1 only, accepts only
# loopback TCP connections with trust auth, and has no Unix socket outside its own dir. `start`
# prints shell `export` lines on stdout; everything else goes to stderr.
set -euo pipefail

PREFIX=mcpworks-pgtest
# Not $TMPDIR: the postgres user must be able to reach the dir, and stale runs are found here.
TMP=${MCPWORKS_TEST_PG_TMP:-/tmp}

log() { echo "postgres-test: $*" >&2; }

pg_bindir() {
  local dir
  # Debian's binaries, newest major first; never whatever `pg_ctl` is first on PATH.
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -rn); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      echo "$dir"
      return 0
    fi
  done
  log "no Debian PostgreSQL binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
  return 1
}

# Runs a command as the cluster owner: the postgres user when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

stop_dir() {
  local dir=$1 bin
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  case "$(basename "$dir")" in "$PREFIX".*) ;; *) log "refusing to remove $dir: not a $PREFIX dir"; return 1 ;; esac
  bin=$(cat "$dir/bindir" 2>/dev/null || pg_bindir)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    # A postmaster that ignored pg_ctl (or whose pid file is stale): kill it by its own pid.
    local pid
    pid=$(head -1 "$dir/data/postmaster.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa "$dir/data" "/proc/$pid/cmdline" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$dir"
}

# Instances whose owning test run died (its recorded pid is gone) are stale: stop and remove them.
clean_stale() {
  local dir owner
  for dir in "$TMP/$PREFIX".*; do
    [ -d "$dir" ] || continue
    owner=$(cat "$dir/owner.pid" 2>/dev/null || echo)
    if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then continue; fi
    # A dir without an owner file may be one being created right now: leave young ones alone.
    if [ -z "$owner" ] && [ -z "$(find "$dir" -maxdepth 0 -mmin +10 2>/dev/null)" ]; then continue; fi
    log "removing stale instance $dir"
    stop_dir "$dir" || true
  done
}

start() {
  local bin dir port attempt
  bin=$(pg_bindir)
  clean_stale
  dir=$(mktemp -d "$TMP/$PREFIX.XXXXXXXX")
  # The pid that owns this instance: the caller's shell (a stale check looks at it later).
  echo "${MCPWORKS_TEST_PG_OWNER:-$PPID}" >"$dir/owner.pid"
  echo "$bin" >"$dir/bindir"
  chmod 755 "$dir"
  mkdir "$dir/data" "$dir/run"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir/data" "$dir/run"; fi
  if ! as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    rm -rf "$dir"
    return 1
  fi
  # Trust, on loopback TCP only; the Unix socket sits inside our own dir.
  as_owner sh -c "printf '%s\n' \
    'local all all trust' \
    'host all all 127.0.0.1/32 trust' >'$dir/data/pg_hba.conf'"
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/run/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/run -c max_connections=200 -c fsync=off -c shared_buffers=32MB ${MCPWORKS_TEST_PG_SETTINGS:-}" \
      start >/dev/null 2>&1; then
      echo "$port" >"$dir/port"
      log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)"
      echo "export MCPWORKS_TEST_DATABASE_URL='postgres://postgres@127.0.0.1:$port/postgres'"
      echo "export MCPWORKS_TEST_PG_DIR='$dir'"
      return 0
    fi
    log "start on port $port failed (attempt $attempt):"
    tail -5 "$dir/run/server.log" >&2 2>/dev/null || true
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  done
  stop_dir "$dir" || true
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop_dir "${2:-${MCPWORKS_TEST_PG_DIR:-}}" ;;
  clean) clean_stale ;;
  *)
    echo "usage: $0 start|stop [DIR]|clean" >&2
    exit 2
    ;;
esac
