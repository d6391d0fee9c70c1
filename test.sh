#!/usr/bin/env bash
# Runs the whole test suite (arguments go to pytest). Uses SQLite unless DATABASE_URL says otherwise.
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure_venv.sh test
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Tests keep their state apart from a local run: their own var/ folder and Redis database 15 (flushed by them).
export VAR_DIR="${VAR_DIR:-$PWD/var/test}"
export LORAWORKS_MODEL_CACHE="${LORAWORKS_MODEL_CACHE:-$VAR_DIR/models}"  # built-in models the tests build
# If no Redis answers there, the helper starts the bundled redis-server on a free port for this run and prints its
# URL; the EXIT trap stops it (and its stdin, our pipe, closes if this script is killed outright).
coproc TEST_REDIS { exec .venv/bin/python scripts/redis_for_tests.py "${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}" "$VAR_DIR/redis"; }
redis_helper_pid=$TEST_REDIS_PID
stop_test_redis() { kill -TERM "$redis_helper_pid" 2>/dev/null || true; wait "$redis_helper_pid" 2>/dev/null || true; }
trap stop_test_redis EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
read -r REDIS_URL <&"${TEST_REDIS[0]}" || { echo "error: no Redis for the tests (see the message above)" >&2; exit 1; }
export REDIS_URL
.venv/bin/python -m pytest "$@"
