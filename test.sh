#!/usr/bin/env bash
# Runs the whole test suite (arguments go to pytest). Uses SQLite unless DATABASE_URL says otherwise.
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure_venv.sh test
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Tests keep their state apart from a local run: their own var/ folder and Redis database 15 (flushed by them).
export VAR_DIR="${VAR_DIR:-$PWD/var/test}" REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
export LORAWORKS_MODEL_CACHE="${LORAWORKS_MODEL_CACHE:-$VAR_DIR/models}"  # built-in models the tests build
exec .venv/bin/python -m pytest "$@"
