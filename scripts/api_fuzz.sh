#!/usr/bin/env bash
# Fuzzes the JSON API from its own OpenAPI schema with schemathesis, against gunicorn (gthread, as ./run.sh and
# compose run it) and a worker on loopback, with a throwaway database and Redis db 11. Extra arguments go to
# `schemathesis run`; EXAMPLES (default 40) is the examples per operation.
# Database: a fresh SQLite file in var/fuzz; when DATABASE_URL names a PostgreSQL server (as in CI), a fresh
# database `loraworks_fuzz` on that server instead (dropped and made again; the one DATABASE_URL names is untouched).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_venv.sh test
export VAR_DIR=$PWD/var/fuzz REDIS_URL=${FUZZ_REDIS_URL:-redis://127.0.0.1:6379/11} HF_HUB_OFFLINE=1
export MEDIA_ROOT=$VAR_DIR/media
rm -rf "$VAR_DIR" && mkdir -p "$VAR_DIR"
case "${DATABASE_URL:-}" in
  postgres://*|postgresql://*)
    export DATABASE_URL="${DATABASE_URL%/*}/loraworks_fuzz"
    .venv/bin/python - "${DATABASE_URL%/*}/postgres" <<'EOF'
import sys

import psycopg

with psycopg.connect(sys.argv[1], autocommit=True) as connection:
    connection.execute("DROP DATABASE IF EXISTS loraworks_fuzz WITH (FORCE)")
    connection.execute("CREATE DATABASE loraworks_fuzz")
EOF
    ;;
  *) export DATABASE_URL=sqlite:///$VAR_DIR/db.sqlite3 ;;
esac
echo "api_fuzz: database ${DATABASE_URL%%:*} (${DATABASE_URL##*/}), Redis ${REDIS_URL}"
.venv/bin/python manage.py migrate -v0
TOKEN=$(.venv/bin/python manage.py shell < scripts/api_fuzz_seed.py | tail -1)
PORT=${FUZZ_PORT:-$(.venv/bin/python -c 'from webapp.localrun import free_loopback_port; print(free_loopback_port())')}
# No request-line or header-size limit: gunicorn would answer an over-long fuzzed URL itself (400, text/html), and
# every request should reach the app, whose answers are what is checked.
setsid .venv/bin/python -m gunicorn webapp.wsgi -c python:webapp.gunicorn_conf --bind "127.0.0.1:$PORT" \
  --workers 1 --limit-request-line 0 --limit-request-field_size 0 > "$VAR_DIR/server.log" 2>&1 &
SERVER=$!
setsid .venv/bin/celery -A workers worker -Q default,train,infer -n "fuzz-$PORT@localhost" --concurrency 1 \
  --without-gossip --without-mingle > "$VAR_DIR/worker.log" 2>&1 &
WORKER=$!
trap 'kill -- -$SERVER 2>/dev/null; kill -9 -- -$WORKER 2>/dev/null' EXIT  # whole groups: gunicorn's and the pool's children too
.venv/bin/python - "http://127.0.0.1:$PORT/api/schema" <<'EOF' || { cat "$VAR_DIR/server.log" >&2; exit 1; }
import sys, time, urllib.request

for _ in range(120):
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2)
        break
    except OSError:
        time.sleep(0.25)
else:
    sys.exit(f"api_fuzz: no answer from {sys.argv[1]} after 30 s (server log follows)")
EOF
.venv/bin/schemathesis run "http://127.0.0.1:$PORT/api/schema" -H "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "${EXAMPLES:-40}" --seed 1 --workers 1 --request-timeout 200 --no-color \
  --phases examples,coverage,fuzzing "$@"
