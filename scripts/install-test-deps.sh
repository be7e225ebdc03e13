#!/usr/bin/env bash
# Installs the system packages the test suite drives as real processes. Each
# is installed only when missing, so a warm machine pays nothing.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v containerd   >/dev/null 2>&1 || need+=(containerd)
command -v ip           >/dev/null 2>&1 || need+=(iproute2)
command -v tc           >/dev/null 2>&1 || need+=(iproute2)
# Runtimes that pull through the agent in runtimes/ (Docker 20.10, Podman 4,
# Skopeo 1.9 on Debian 12). Installing docker.io does not start a daemon in
# a container without systemd; the tests start their own, on their own
# sockets and storage.
command -v dockerd      >/dev/null 2>&1 || need+=(docker.io)
command -v podman       >/dev/null 2>&1 || need+=(podman)
command -v skopeo       >/dev/null 2>&1 || need+=(skopeo)
# The SOCI snapshotter (runtimes/lazy, built by `make tools`) links zlib
# statically through cgo; its test runs containers with runc.
ls /usr/lib/*/libz.a    >/dev/null 2>&1 || need+=(zlib1g-dev)
command -v gcc          >/dev/null 2>&1 || need+=(gcc)
command -v runc         >/dev/null 2>&1 || need+=(runc)
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
