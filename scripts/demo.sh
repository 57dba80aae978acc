#!/usr/bin/env bash
# The main job on the embedded default (SQLite, no server): installs the package with its
# command-line extra, then runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh cli
.venv/bin/bruno-memstore demo "$@"
