#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on loopback for the test suite, unless
# one already answers at $KILN_TEST_POSTGRES_URL. Prints the URL to use.
# Installs PostgreSQL with apt-get when its server binaries are missing.
set -euo pipefail

port=${KILN_TEST_PG_PORT:-55432}
dir=${KILN_TEST_PG_DIR:-/tmp/kiln-test-pg}
url="postgres://postgres@127.0.0.1:${port}/postgres?sslmode=disable"

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "postgres: server binaries missing, installing with apt-get" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

run_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" 2>/dev/null; then
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
