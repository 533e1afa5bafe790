#!/usr/bin/env bash
# The main job: the local stack with demo data and our services, in the foreground.
# Ctrl-C stops our services; `.venv/bin/softswitch stack down` stops the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/softswitch stack up
exec .venv/bin/softswitch demo
