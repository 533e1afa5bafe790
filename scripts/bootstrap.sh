#!/usr/bin/env bash
# Prepare this checkout on a Debian 12 machine: Python 3.11+ with venv, then the project and
# its dev tools in .venv. Safe to run again; a re-run with an unchanged pyproject.toml is
# instant. Everything else (PostgreSQL, RabbitMQ, sipp, the Asterisk/Kamailio chroot) is
# installed by `softswitch stack up`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: run as root (it installs Debian packages and builds a chroot)" >&2
    exit 1
fi

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

if ! python3 -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    apt_install python3
fi
# docker-compose 1.29 (Debian 12): tests/unit/test_compose.py checks compose/ with
# `docker-compose config`, which needs no Docker daemon.
if ! command -v docker-compose >/dev/null 2>&1; then
    apt_install docker-compose
fi
# Debian splits venv/ensurepip out of python3; a half-made .venv is recreated.
if [ ! -x .venv/bin/pip ]; then
    rm -rf .venv
    if ! python3 -m venv .venv 2>/dev/null; then
        apt_install python3-venv
        rm -rf .venv
        python3 -m venv .venv
    fi
fi

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
