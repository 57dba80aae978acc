#!/usr/bin/env bash
# memcached on 127.0.0.1:${MEMCACHED_PORT:-21211} for MemcachedMemory's tests.
# Idempotent: installs Debian's package only when the binary is missing, starts the daemon
# only when nothing answers on the port, then health-checks it and prints its URL.
set -euo pipefail

port="${MEMCACHED_PORT:-21211}"
state="${BRUNO_SERVICES_DIR:-/tmp/bruno-services}/memcached"
pidfile="$state/memcached.pid"

answers() {  # "version" over bash's /dev/tcp: no netcat needed
  local reply=""
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'version\r\n' >&3
  read -r -t 2 reply <&3 || true
  exec 3<&- 3>&-
  [[ "$reply" == VERSION* ]]
}

if ! command -v memcached >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq memcached >/dev/null
fi

if ! answers 2>/dev/null; then
  mkdir -p "$state"
  chmod 0777 "$state"  # memcached writes its pid file after dropping to 'nobody'
  # -U 0: no UDP; -c: enough connections for 200 concurrent test writers; 1 MB item limit.
  memcached -d -u nobody -l 127.0.0.1 -p "$port" -U 0 -m 128 -c 2048 -P "$pidfile"
  for _ in $(seq 1 50); do
    answers 2>/dev/null && break
    sleep 0.1
  done
fi

if ! answers 2>/dev/null; then
  echo "error: memcached does not answer on 127.0.0.1:$port" >&2
  exit 1
fi
echo "memcached://127.0.0.1:$port"
