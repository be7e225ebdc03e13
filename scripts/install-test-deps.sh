#!/usr/bin/env bash
# Installs the system packages the test suite drives as real processes. Each
# is installed only when missing, so a warm machine pays nothing.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v containerd   >/dev/null 2>&1 || need+=(containerd)
command -v ip           >/dev/null 2>&1 || need+=(iproute2)
command -v tc           >/dev/null 2>&1 || need+=(iproute2)
# The console's browser test (preheat/console_browser_test.go) drives it.
command -v chromium     >/dev/null 2>&1 || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing test dependencies (${need[*]}); run as root or install them" >&2
    exit 1
  fi
  echo "installing test dependencies: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
