#!/usr/bin/env bash
# The whole check, exactly what CI runs: install, lint, format check, type check, test suite.
# Usage: scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev
echo "== ruff";          .venv/bin/ruff check tunnel tests bench scripts
echo "== ruff format";   .venv/bin/ruff format --check tunnel tests bench scripts
echo "== mypy --strict"; .venv/bin/mypy --strict tunnel
# Tests bind explicit ports in 41000-56999; keep the kernel from handing them out as ephemeral
# source ports to other connections meanwhile (a Tor lab once found one of its ports taken).
reserved=/proc/sys/net/ipv4/ip_local_reserved_ports
if [ -w "$reserved" ] && ! grep -q "41000-56999" "$reserved"; then
    current=$(cat "$reserved")
    echo "${current:+$current,}41000-56999" > "$reserved"
fi
echo "== pytest";        .venv/bin/python -m pytest "$@"
