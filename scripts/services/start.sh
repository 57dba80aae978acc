#!/usr/bin/env bash
# Starts every engine the test suite needs, idempotently, and waits until each answers.
# PostgreSQL, MariaDB and Redis are installed on the machine (installed here if missing);
# memcached is installed and started by its own script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

apt_install() {
  if [ -z "${_apt_updated:-}" ]; then apt-get update -qq; _apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # name, command...
  local name="$1"; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then echo "ok: $name"; return 0; fi
    sleep 0.5
  done
  echo "error: $name did not come up" >&2
  return 1
}

# PostgreSQL on 127.0.0.1:5432, database "test".
if ! command -v pg_ctlcluster >/dev/null; then apt_install postgresql; fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
wait_for postgresql pg_isready -q -h 127.0.0.1 -p 5432
if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='test'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -c "create database test" >/dev/null
fi

# MariaDB on 127.0.0.1:3306, database "test".
if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then apt_install mariadb-server; fi
if ! mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
wait_for mariadb mariadb-admin -h 127.0.0.1 -u root ping
mariadb -h 127.0.0.1 -u root -e "create database if not exists test" >/dev/null

# Redis on 127.0.0.1:6379.
if ! command -v redis-server >/dev/null; then apt_install redis-server; fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for redis redis-cli -h 127.0.0.1 -p 6379 ping

# memcached on 127.0.0.1:21211.
if [ -f "$here/memcached.sh" ]; then bash "$here/memcached.sh"; fi

# PostgreSQL 18 with pgvector (25432), Redis with RediSearch (26379), a Redis Cluster
# (27001-27006), Chroma (28100) and the two MongoDB emulators (27118, 27119).
for engine in pgvector redis-search redis-cluster chroma mongo; do bash "$here/$engine.sh"; done

# DynamoDB emulators: moto (28001) and dynalite (28000).
bash "$here/dynamodb.sh"
