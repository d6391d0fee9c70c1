#!/usr/bin/env bash
# Fuzzes the JSON API from its own OpenAPI schema with schemathesis, against a server and worker on loopback with
# a throwaway database (var/fuzz) and Redis db 11. Extra arguments go to `schemathesis run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_venv.sh test
export VAR_DIR=$PWD/var/fuzz REDIS_URL=redis://127.0.0.1:6379/11 HF_HUB_OFFLINE=1
export DATABASE_URL=sqlite:///$VAR_DIR/db.sqlite3 MEDIA_ROOT=$VAR_DIR/media
rm -rf "$VAR_DIR" && mkdir -p "$VAR_DIR"
.venv/bin/python manage.py migrate -v0
TOKEN=$(.venv/bin/python manage.py shell < scripts/api_fuzz_seed.py | tail -1)
.venv/bin/python manage.py runserver 127.0.0.1:8765 --noreload > "$VAR_DIR/server.log" 2>&1 &
SERVER=$!
setsid .venv/bin/celery -A workers worker -Q default,train,infer -n fuzz@localhost --concurrency 1 \
  --without-gossip --without-mingle > "$VAR_DIR/worker.log" 2>&1 &
WORKER=$!
trap 'kill $SERVER; kill -9 -- -$WORKER' EXIT  # the whole worker group: a busy pool child too
sleep 4
.venv/bin/schemathesis run http://127.0.0.1:8765/api/schema -H "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "${EXAMPLES:-40}" --seed 1 --workers 1 --request-timeout 200 --no-color \
  --phases examples,coverage,fuzzing "$@"
