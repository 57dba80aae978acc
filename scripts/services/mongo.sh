#!/usr/bin/env bash
# Two MongoDB wire-protocol emulators for the MongoDB backend's tests (no real mongod can be
# installed here), each in the venv <state>/mongo/venv, data under the state directory:
#   secantusdb (Python over WiredTiger; transactions, no text index) on 127.0.0.1:${MONGO_PORT:-27118}
#   nx-27017   (over SQLite; $text through FTS5)                      on 127.0.0.1:${MONGO_NX_PORT:-27119}
# Idempotent: installs only what is missing, starts a server only when it does not answer a
# ping, then prints both URLs, secantus's on the line before nx-27017's (the last line).
set -euo pipefail

secantus_version="0.7.0b3"
nx_version="0.8.1"
port="${MONGO_PORT:-27118}"
nx_port="${MONGO_NX_PORT:-27119}"
state="${BRUNO_SERVICES_DIR:-/tmp/bruno-services}/mongo"
venv="$state/venv"
python="$venv/bin/python"

fail() {
  echo "error: mongo: $*" >&2
  exit 1
}

mkdir -p "$state"
exec 9>"$state/.lock"  # one run at a time; servers are started with 9>&- so they never hold it
flock -w 600 9 || fail "another run still holds $state/.lock after 600 s"

if [ ! -x "$python" ]; then
  echo "mongo: creating $venv" >&2
  python3 -m venv "$venv" || fail "python3 -m venv failed"
fi

installed() {  # package, version
  "$python" -c 'import sys, importlib.metadata as m; sys.exit(m.version(sys.argv[1]) != sys.argv[2])' \
    "$1" "$2" 2>/dev/null
}

if ! installed secantusdb "$secantus_version" || ! installed nx-27017 "$nx_version"; then
  echo "mongo: installing secantusdb==$secantus_version and nx-27017==$nx_version into $venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check "secantusdb==$secantus_version" \
    "nx-27017==$nx_version" "pymongo>=4.13" "python-dateutil>=2.8,<3" >&2
fi

answers() {  # port: a ping through pymongo, half a second to answer
  "$python" - "$1" <<'EOF' >/dev/null 2>&1
import sys
import pymongo
url = f"mongodb://127.0.0.1:{sys.argv[1]}/?directConnection=true"
with pymongo.MongoClient(url, serverSelectionTimeoutMS=500) as client:
    client.admin.command("ping")
EOF
}

start() {  # name, port, command...
  local name="$1" at="$2"
  shift 2
  answers "$at" && return 0
  echo "mongo: starting $name on 127.0.0.1:$at" >&2
  mkdir -p "$state/$name"
  setsid "$@" </dev/null >"$state/$name/server.log" 2>&1 9>&- &
  echo $! >"$state/$name/pid"
  for _ in $(seq 1 300); do
    answers "$at" && return 0
    kill -0 "$(cat "$state/$name/pid")" 2>/dev/null || fail "$name exited, see $state/$name/server.log"
    sleep 0.2
  done
  fail "$name did not answer on 127.0.0.1:$at within 60 s, see $state/$name/server.log"
}

start secantus "$port" "$venv/bin/secantusd-py" --host 127.0.0.1 --port "$port" \
  --storage-path "$state/secantus/data" --log-level WARNING
# nx-27017 keeps a pid file (default /tmp/nx_27017.pid) and refuses to start beside another
# server's: each server gets its own.
start nx27017 "$nx_port" "$venv/bin/nx-27017" --data-dir "$state/nx27017/data" \
  --host 127.0.0.1 -p "$nx_port" --pid-file "$state/nx27017/nx.pid" --log-file "$state/nx27017/nx.log"

echo "mongodb://127.0.0.1:$port/?directConnection=true"
echo "mongodb://127.0.0.1:$nx_port/?directConnection=true"
