#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the test suite.
#
#   bash .ci/postgres.sh [start]   start it unless one already answers on the
#                                  port; print the URL to use (stdout, alone)
#   bash .ci/postgres.sh status    exit 0 when a server answers on the port
#   bash .ci/postgres.sh stop      stop the cluster of this script's data
#                                  directory, when it runs
#
# Port and data directory: $KILN_TEST_PG_PORT (55432), $KILN_TEST_PG_DIR
# (/tmp/kiln-test-pg). Installs PostgreSQL with apt-get when its server
# binaries are missing.
set -euo pipefail

action=${1:-start}
case "$action" in
  start|status|stop) ;;
  *) echo "usage: bash .ci/postgres.sh [start|status|stop]" >&2; exit 2 ;;
esac

port=${KILN_TEST_PG_PORT:-55432}
dir=${KILN_TEST_PG_DIR:-/tmp/kiln-test-pg}
url="postgres://postgres@127.0.0.1:${port}/postgres?sslmode=disable"

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ "$action" != start ] && { [ -z "$bindir" ] || [ ! -x "$bindir/pg_ctl" ]; }; then
  exit 1 # no PostgreSQL here: nothing answers, nothing to stop
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "postgres: server binaries missing, installing with apt-get" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

run_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

answers() { "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; }

case "$action" in
  status)
    answers
    exit
    ;;
  stop)
    if [ -f "$dir/postmaster.pid" ]; then
      run_pg "'$bindir/pg_ctl' -D '$dir' -m fast -w stop" >/dev/null
      echo "postgres: stopped the cluster in $dir" >&2
    fi
    exit 0
    ;;
esac

if answers; then
  echo "$url"
  exit 0
fi

mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
if [ ! -f "$dir/PG_VERSION" ]; then
  run_pg "'$bindir/initdb' -D '$dir' -A trust -U postgres" >/dev/null
fi
run_pg "'$bindir/pg_ctl' -D '$dir' -o \"-k '$dir' -p $port -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off\" -l '$dir/log' -w start" >/dev/null
echo "$url"
