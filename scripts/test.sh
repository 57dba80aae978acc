#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the package and its test dependencies,
# starts every engine the tests talk to, checks lint, then runs pytest (extra args pass through)
# in BRUNO_TEST_WORKERS processes (default 2; 0 runs everything in this process), each test
# file in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash scripts/services/start.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -n "${BRUNO_TEST_WORKERS:-2}" --dist loadfile "$@"
