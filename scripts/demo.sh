#!/usr/bin/env bash
# Install tunnel into .venv and run the self-contained local demo network (no internet).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/tunnel demo "$@"
