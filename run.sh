#!/usr/bin/env bash
# Starts Loraworks on this machine: web (gunicorn) + Celery worker + Redis if none is running. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure_venv.sh
exec .venv/bin/python -m webapp.localrun "$@"
