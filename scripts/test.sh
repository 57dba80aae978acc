#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the package and its test dependencies,
# starts every engine the tests talk to, checks lint, then runs pytest (extra args pass through)
# in BRUNO_TEST_WORKERS processes (default 2; 0 runs everything in this process), each test
# file in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash scripts/services/start.sh
# Every engine's address, read here once: the test processes then never run a service script
# themselves, which could restart a server (Chroma's, when it holds too many files) under the
# other process's tests. Addresses already set in the environment are kept.
line() { bash "scripts/services/$1" | tail -n "$2" | head -n 1; }
export BRUNO_TEST_MEMCACHED_URL="${BRUNO_TEST_MEMCACHED_URL:-$(line memcached.sh 1)}"
export BRUNO_TEST_PGVECTOR_URL="${BRUNO_TEST_PGVECTOR_URL:-$(line pgvector.sh 1)}"
export BRUNO_TEST_REDIS_SEARCH_URL="${BRUNO_TEST_REDIS_SEARCH_URL:-$(line redis-search.sh 1)}"
export BRUNO_TEST_REDIS_CLUSTER_URL="${BRUNO_TEST_REDIS_CLUSTER_URL:-$(line redis-cluster.sh 1)}"
export BRUNO_TEST_CHROMA_URL="${BRUNO_TEST_CHROMA_URL:-$(line chroma.sh 1)}"
export BRUNO_TEST_MONGO_URL="${BRUNO_TEST_MONGO_URL:-$(line mongo.sh 2)}"
export BRUNO_TEST_MONGO_NX_URL="${BRUNO_TEST_MONGO_NX_URL:-$(line mongo.sh 1)}"
dynamodb="$(line dynamodb.sh 1)"  # "moto=URL dynalite=URL"
moto="${dynamodb#moto=}"
export BRUNO_TEST_DYNAMODB_URL="${BRUNO_TEST_DYNAMODB_URL:-${moto%% *}}"
export BRUNO_TEST_DYNALITE_URL="${BRUNO_TEST_DYNALITE_URL:-${dynamodb##*dynalite=}}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -n "${BRUNO_TEST_WORKERS:-2}" --dist loadfile "$@"
