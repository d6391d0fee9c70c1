#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs the project into it, again only when pyproject.toml changes.
# Usage: scripts/ensure_venv.sh [EXTRA]   e.g. `test` to add the test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
python="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
if [ -z "$python" ] || ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)${extra:+-$extra}"
if [ ! -f "$stamp" ]; then
  echo "Installing Loraworks into .venv (first run takes a few minutes)…"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".${extra:+[$extra]}"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
