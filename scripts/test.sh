#!/usr/bin/env bash
# The whole check, exactly what CI runs: install, lint, format check, type check, test suite.
# Usage: scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
echo "== ruff";          .venv/bin/ruff check tunnel tests bench scripts
echo "== ruff format";   .venv/bin/ruff format --check tunnel tests bench scripts
echo "== mypy --strict"; .venv/bin/mypy --strict tunnel
echo "== pytest";        .venv/bin/python -m pytest "$@"
