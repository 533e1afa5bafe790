#!/usr/bin/env bash
# Every test: lint and types, then unit, integration (PostgreSQL, RabbitMQ) and e2e (Kamailio,
# Asterisk, sipp). The e2e fixtures bring the local stack up themselves and take down only
# what they started. Extra arguments go to pytest (e.g. -m unit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest -m "unit or integration or e2e" "$@"
