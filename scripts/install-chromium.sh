#!/usr/bin/env bash
# Debian's chromium, for the report test (crates/cli/tests/compare_report.rs)
# that renders report.html headless and checks the screenshot. Idempotent.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-chromium: run as root (apt-get install -y chromium)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
