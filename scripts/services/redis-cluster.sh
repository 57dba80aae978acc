#!/usr/bin/env bash
# A Redis Cluster of three masters and three replicas (Debian's redis-server) on loopback
# ports ${REDIS_CLUSTER_PORT:-27001} and the five after it (cluster bus: port + 10000), for the
# tests of RedisMemory in cluster mode. No persistence; cluster-node-timeout 2000 ms, so a
# replica takes over a master that stops answering within a few seconds.
# Idempotent: starts only the nodes that do not answer, creates the cluster only when it has
# no slots yet, waits for cluster_state:ok, then prints the cluster's URL.
set -euo pipefail

first="${REDIS_CLUSTER_PORT:-27001}"
state="${BRUNO_SERVICES_DIR:-/tmp/bruno-services}/redis-cluster"
ports=()
for i in 0 1 2 3 4 5; do ports+=("$((first + i))"); done

fail() {
  echo "error: redis-cluster: $*" >&2
  exit 1
}

command -v redis-server >/dev/null || fail "redis-server is missing (Debian package redis-server)"
command -v redis-cli >/dev/null || fail "redis-cli is missing (Debian package redis-tools)"
mkdir -p "$state"
exec 9>"$state/.lock"  # one run at a time; the servers are started with 9>&- so none holds it
flock -w 300 9 || fail "another run still holds $state/.lock after 300 s"

cli() { local port="$1"; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }
answers() { [ "$(cli "$1" ping 2>/dev/null)" = PONG ]; }
info() { cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"; }

for port in "${ports[@]}"; do
  answers "$port" && continue
  dir="$state/$port"
  mkdir -p "$dir"
  echo "redis-cluster: starting a node on 127.0.0.1:$port" >&2
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save "" --appendonly no \
    --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" \
    --cluster-node-timeout 2000 --cluster-replica-validity-factor 0 9>&- ||
    fail "redis-server on port $port did not start, see $dir/redis.log"
done
for port in "${ports[@]}"; do
  for _ in $(seq 1 100); do
    answers "$port" && break
    sleep 0.1
  done
  answers "$port" || fail "no answer on 127.0.0.1:$port, see $state/$port/redis.log"
  cli "$port" info cluster 2>/dev/null | tr -d '\r' | grep -qx cluster_enabled:1 ||
    fail "the server on 127.0.0.1:$port is not in cluster mode (is another Redis on that port?)"
done

if [ "$(info "$first" cluster_slots_assigned)" = "0" ]; then
  echo "redis-cluster: creating the cluster" >&2
  nodes=()
  for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >&2 ||
    fail "redis-cli --cluster create failed"
fi

for _ in $(seq 1 300); do
  ok=1
  for port in "${ports[@]}"; do
    [ "$(info "$port" cluster_state)" = ok ] || ok=0
  done
  [ "$ok" = 1 ] && break
  sleep 0.2
done
[ "$ok" = 1 ] || fail "the cluster is not ok after 60 s: $(cli "$first" cluster info | tr -d '\r' | head -n 3 | tr '\n' ' ')"

echo "redis+cluster://127.0.0.1:$first"
