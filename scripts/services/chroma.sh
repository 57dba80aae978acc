#!/usr/bin/env bash
# Chroma server (`chroma run` from the PyPI package chromadb, installed into the project's .venv)
# on 127.0.0.1:${CHROMA_PORT:-28100} for the Chroma backend's tests; data under the state directory.
# Idempotent: installs only what is missing, starts the server only when its heartbeat does not
# answer, then prints the server's URL.
set -euo pipefail

version="1.5.9"
port="${CHROMA_PORT:-28100}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
python="$repo/.venv/bin/python"
state="${BRUNO_SERVICES_DIR:-/tmp/bruno-services}/chroma"
pidfile="$state/chroma.pid"

fail() {
  echo "error: chroma: $*" >&2
  exit 1
}

[ -x "$python" ] || fail "$python is missing: create the project's .venv first"
mkdir -p "$state"
exec 9>"$state/.lock"  # one run at a time; the server is started with 9>&- so it never holds it
flock -w 600 9 || fail "another run still holds $state/.lock after 600 s"

installed() {  # package, version
  "$python" -c 'import sys, importlib.metadata as m; sys.exit(m.version(sys.argv[1]) != sys.argv[2])' \
    "$1" "$2" 2>/dev/null
}

if ! installed chromadb "$version"; then
  echo "chroma: installing chromadb==$version into $repo/.venv" >&2
  # kubernetes>=37 (a chromadb dependency) needs python-dateutil>=3, which botocore refuses:
  # the pin keeps chromadb installable next to boto3/aiobotocore in the same venv.
  "$python" -m pip install --quiet --disable-pip-version-check "chromadb==$version" "kubernetes<37" >&2
fi
[ -x "$repo/.venv/bin/chroma" ] || fail "$repo/.venv/bin/chroma is missing after installing chromadb"

answers() {  # GET /api/v2/heartbeat over bash's /dev/tcp: no curl needed
  local status=""
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  # In a subshell ignoring SIGPIPE: a server that hangs up on HTTP (Redis does) must not end us.
  (
    trap '' PIPE
    printf 'GET /api/v2/heartbeat HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' \
      "$port" >&3
  ) || true
  read -r -t 2 status <&3 || true
  exec 3<&- 3>&-
  [[ "$status" == "HTTP/1.1 200"* ]]
}

# The server keeps the files of every collection it has opened, deleted ones included, until
# it exits: one whole test run leaves it holding several thousand. A server started by an
# earlier run that holds more than half its limit is stopped, so that this run starts afresh.
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  held="$(ls "/proc/$(cat "$pidfile")/fd" 2>/dev/null | wc -l)"
  limit="$(awk '/Max open files/ {print $4}' "/proc/$(cat "$pidfile")/limits" 2>/dev/null || echo 0)"
  if [ "${limit:-0}" -gt 0 ] && [ "$held" -gt $((limit / 2)) ]; then
    echo "chroma: the server holds $held of $limit files; restarting it" >&2
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$(cat "$pidfile")" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  fi
fi

if ! answers 2>/dev/null; then
  echo "chroma: starting the Chroma server on 127.0.0.1:$port" >&2
  # A test server starts empty: collections left by earlier runs only cost memory and files.
  rm -rf "$state/data"
  # The server keeps files open per collection; the tests create many collections.
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  ANONYMIZED_TELEMETRY=False setsid "$repo/.venv/bin/chroma" run --path "$state/data" \
    --host 127.0.0.1 --port "$port" </dev/null >"$state/server.log" 2>&1 9>&- &
  echo $! >"$pidfile"
  for _ in $(seq 1 300); do
    answers 2>/dev/null && break
    kill -0 "$(cat "$pidfile")" 2>/dev/null || fail "the server exited, see $state/server.log"
    sleep 0.2
  done
fi
answers 2>/dev/null || fail "no heartbeat on 127.0.0.1:$port within 60 s, see $state/server.log"

echo "http://127.0.0.1:$port"
