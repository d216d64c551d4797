#!/usr/bin/env bash
# Install what tunnel needs on a fresh Debian/Ubuntu machine, idempotently.
#   scripts/install.sh          runtime only: a venv in .venv with tunnel installed
#   scripts/install.sh --dev    also the system packages the tests use and the dev tools
# System packages are installed with apt-get when missing (needs root, or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

# Packages the test suite drives for real: libtoxcore (ctypes peers), tox-bootstrapd,
# iproute2/nftables/iptables (network namespaces and NAT routers), microsocks/tinyproxy
# (SOCKS5 and HTTP CONNECT proxies for the TCP relay proxy tests), conntrack (NAT rebinding
# tests in the network-namespace lab), tor (tor + tor-gencert: the private Tor network of
# tests/tor), iperf3 and iputils-ping (tunnel vpn end-to-end tests, bench/vpn.py).
TEST_PKGS=(libtoxcore2 toxcore-utils iproute2 nftables iptables procps microsocks tinyproxy conntrack tor iperf3 iputils-ping openssh-server openssh-client curl)
RUNTIME_PKGS=(python3-venv)

missing=()
want=("${RUNTIME_PKGS[@]}")
[[ $DEV == 1 ]] && want+=("${TEST_PKGS[@]}")
if command -v dpkg-query >/dev/null; then
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    echo "installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
if [[ $DEV == 1 ]]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
else
    .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
