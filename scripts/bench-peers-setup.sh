#!/usr/bin/env bash
# Virtualenvs for `python -m benchmarks.peers`: one per family of peers, pinned, under
# $BRUNO_PEERS_VENVS (default /tmp/bruno-memstore-peers), never in the checkout.
# Safe to run again: an existing venv is kept and pip only checks the pins.
# Ours runs from the project's own environment (scripts/setup.sh), on the checkout's src/.
set -euo pipefail

ROOT=${BRUNO_PEERS_VENVS:-/tmp/bruno-memstore-peers}
PYTHON=${PYTHON:-python3}
mkdir -p "$ROOT"

venv() {  # venv NAME PACKAGE...
  local dir="$ROOT/$1"
  shift
  [ -x "$dir/bin/python" ] || "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "$dir: $*"
}

# The engines' minimal drivers.
venv raw "aiosqlite==0.22.1" "asyncpg==0.32.0" "redis==8.1.0"

# bruno-memory 0.1.5 imports chromadb and qdrant-client when it is imported (they are an
# optional extra in its metadata), so both are installed though only SQLite, PostgreSQL
# and Redis are measured.
venv upstream "bruno-core==0.1.0" "bruno-memory==0.1.5" "bruno-llm==0.2.0" \
  "aiosqlite==0.22.1" "asyncpg==0.32.0" "redis==8.1.0" "chromadb==1.5.9" "qdrant-client==1.20.0"

venv langchain "langchain-community==0.4.2" "langchain-core==1.7.2" \
  "langchain-postgres==0.0.19" "psycopg[binary]==3.3.9" "psycopg-pool==3.3.3" \
  "redis==8.1.0" "aiosqlite==0.22.1" "sqlalchemy==2.1.9"
