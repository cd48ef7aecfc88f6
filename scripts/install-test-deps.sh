#!/usr/bin/env bash
# Installs what the test suite runs besides cargo: promtool and the Prometheus server
# (Debian package `prometheus`), used by tests/http/metrics.rs. Idempotent: does nothing
# when promtool and prometheus are already on the PATH.
#
# The package's own service is never left running: it would hold port 9090 and scrape
# nothing of ours. Its start is refused during the install (policy-rc.d), and stopped
# and disabled afterwards wherever systemd or an init script started it anyway.
set -euo pipefail

log() { printf '[install-test-deps] %s\n' "$*" >&2; }

if command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v curl >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
  command -v sudo >/dev/null || { log "not root and no sudo: install the 'prometheus' package by hand"; exit 1; }
else
  sudo=
fi

made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  made_policy=1
fi
cleanup() { if [ $made_policy -eq 1 ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

log "installing prometheus (promtool and the server) and curl (TLS tests)"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus curl >/dev/null

# Whatever started the service anyway, stop it and keep it from starting at boot.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  $sudo systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/prometheus ]; then
  $sudo /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi
if command -v update-rc.d >/dev/null; then
  $sudo update-rc.d prometheus disable >/dev/null 2>&1 || true
fi

command -v promtool >/dev/null && command -v prometheus >/dev/null || {
  log "prometheus installed but promtool or prometheus is not on the PATH"
  exit 1
}
log "promtool: $(promtool --version 2>&1 | head -n 1)"
