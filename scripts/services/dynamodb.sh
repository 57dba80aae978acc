#!/usr/bin/env bash
# Two DynamoDB API emulators for the DynamoDB backend's tests, idempotently:
#   moto_server (PyPI moto[server], its own venv) on 127.0.0.1:${MOTO_PORT:-28001}:
#     TTL API and TransactWriteItems;
#   dynalite (npm, its own node_modules) on 127.0.0.1:${DYNALITE_PORT:-28000}:
#     faster, no TTL API, no transactions.
# Installs aiobotocore (the backend's client) into the project's .venv when missing, installs each
# emulator only when missing, starts each only when it does not answer, then prints both URLs.
set -euo pipefail

moto_version="5.2.5"
dynalite_version="4.0.0"
moto_port="${MOTO_PORT:-28001}"
dynalite_port="${DYNALITE_PORT:-28000}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
python="${BRUNO_PYTHON:-$repo/.venv/bin/python}"
state="${BRUNO_SERVICES_DIR:-/tmp/bruno-services}/dynamodb"

fail() {
  echo "error: dynamodb: $*" >&2
  exit 1
}

[ -x "$python" ] || fail "$python is missing: create the project's .venv first"
command -v node >/dev/null || fail "node is missing (dynalite runs on Node.js)"
mkdir -p "$state"
exec 9>"$state/.lock"  # one run at a time; servers are started with 9>&- so they never hold it
flock -w 600 9 || fail "another run still holds $state/.lock after 600 s"

if ! "$python" -c 'import aiobotocore' 2>/dev/null; then
  echo "dynamodb: installing aiobotocore into $python's environment" >&2
  "$python" -m pip install --quiet --disable-pip-version-check "aiobotocore>=2.13" >&2
fi

venv="$state/moto-venv"
if ! "$venv/bin/python" -c 'import sys, importlib.metadata as m; sys.exit(m.version("moto") != sys.argv[1])' \
  "$moto_version" 2>/dev/null; then
  echo "dynamodb: installing moto[server]==$moto_version into $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$moto_version" >&2
fi

npm_dir="$state/npm"
if [ ! -f "$npm_dir/node_modules/dynalite/cli.js" ]; then
  echo "dynamodb: installing dynalite@$dynalite_version into $npm_dir" >&2
  mkdir -p "$npm_dir"
  (cd "$npm_dir" && npm install --no-audit --no-fund --silent "dynalite@$dynalite_version" >&2)
fi

answers() {  # port: a DynamoDB ListTables over bash's /dev/tcp (no curl needed)
  local status="" body='{}'
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  (
    trap '' PIPE
    printf 'POST / HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\nContent-Type: application/x-amz-json-1.0\r\nAuthorization: AWS4-HMAC-SHA256 Credential=test/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0\r\nX-Amz-Date: 20200101T000000Z\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
      "$1" "${#body}" "$body" >&3
  ) || true
  read -r -t 5 status <&3 || true
  exec 3<&- 3>&-
  [[ "$status" == "HTTP/1."[01]" "[2-4]* ]]
}

start() {  # name, port, command...
  local name="$1" port="$2"
  shift 2
  if answers "$port" 2>/dev/null; then return 0; fi
  echo "dynamodb: starting $name on 127.0.0.1:$port" >&2
  setsid "$@" </dev/null >"$state/$name.log" 2>&1 9>&- &
  echo $! >"$state/$name.pid"
  for _ in $(seq 1 300); do
    answers "$port" 2>/dev/null && return 0
    kill -0 "$(cat "$state/$name.pid")" 2>/dev/null || fail "$name exited, see $state/$name.log"
    sleep 0.2
  done
  fail "$name did not answer on 127.0.0.1:$port within 60 s, see $state/$name.log"
}

# moto's own moto_server answers requests on threads, and its DynamoDB checks a write's
# condition and applies it without a lock: two racing conditional writes can both succeed, and
# concurrent transactions fail with HTTP 500. One request at a time makes each write atomic,
# as it is on DynamoDB. moto also backs up the whole table once per action of a transaction
# (100 copies for 100 actions); one backup per table and transaction keeps the same rollback
# at a hundredth of the cost (docs/backends/dynamodb.md, "Emulators").
start moto "$moto_port" "$venv/bin/python" -c '
import copy, sys
import moto.dynamodb.models as dynamodb
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from werkzeug.serving import run_simple

backups = {}

class OneBackupPerTable:
    @staticmethod
    def deepcopy(value, memo=None):
        if memo is None and isinstance(value, dynamodb.Table):
            if id(value) not in backups:
                backups[id(value)] = copy.deepcopy(value)
            return backups[id(value)]
        return copy.deepcopy(value, memo)

transact = dynamodb.DynamoDBBackend.transact_write_items

def transact_once(self, items):
    backups.clear()
    try:
        return transact(self, items)
    finally:
        backups.clear()

dynamodb.copy = OneBackupPerTable
dynamodb.DynamoDBBackend.transact_write_items = transact_once
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app),
           threaded=False, request_handler=MotoRequestHandler)
' 127.0.0.1 "$moto_port"
# A test server starts empty: dynalite keeps its tables in memory.
start dynalite "$dynalite_port" node "$npm_dir/node_modules/dynalite/cli.js" --host 127.0.0.1 \
  --port "$dynalite_port" --createTableMs 0 --deleteTableMs 0 --updateTableMs 0

echo "moto=http://127.0.0.1:$moto_port dynalite=http://127.0.0.1:$dynalite_port"
