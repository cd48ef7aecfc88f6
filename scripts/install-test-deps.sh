#!/usr/bin/env bash
# Installs what the test suite runs besides cargo, from Debian packages:
#   promtool, prometheus  (package prometheus)  tests/http/metrics.rs, tests/http/deploy.rs
#   curl                  (package curl)        tests/http/tls.rs
#   chromium              (package chromium)    the status page test, headless
#   jq                    (package jq)          scripts/msrv.sh
#   systemd-analyze       (package systemd)     tests/units/package.rs (verifies the unit)
#   faketime              (package faketime)    tests/cluster/nemesis.rs (one instance's clock skewed)
#   cargo-deb             (cargo install)       tests/units/package.rs (builds the .deb)
# Idempotent: installs only the packages whose commands are missing, and does nothing
# when every command is on the PATH. scripts/test.sh runs it before `cargo test`.
#
# The prometheus package's own service is never left running: it would hold port 9090
# and scrape nothing of ours. Its start is refused during the install (policy-rc.d), and
# stopped and disabled afterwards wherever systemd or an init script started it anyway.
set -euo pipefail

log() { printf '[install-test-deps] %s\n' "$*" >&2; }

# command:package, one per tool the tests run.
needs=(promtool:prometheus prometheus:prometheus curl:curl chromium:chromium jq:jq
  systemd-analyze:systemd faketime:faketime)

# cargo-deb is a cargo tool, not a Debian package: built once (a few minutes).
if ! command -v cargo-deb >/dev/null; then
  log "installing cargo-deb with cargo install (builds it: a few minutes)"
  cargo install cargo-deb --locked --quiet
fi

missing=()
for need in "${needs[@]}"; do
  cmd=${need%%:*} pkg=${need##*:}
  if ! command -v "$cmd" >/dev/null; then
    case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
  command -v sudo >/dev/null || { log "not root and no sudo: install by hand: apt-get install ${missing[*]}"; exit 1; }
else
  sudo=
fi
command -v apt-get >/dev/null || { log "no apt-get: install ${missing[*]} (Debian package names) by hand"; exit 1; }

made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  made_policy=1
fi
cleanup() { if [ $made_policy -eq 1 ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

log "installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

if [[ " ${missing[*]} " == *" prometheus "* ]]; then
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
fi

still=()
for need in "${needs[@]}"; do
  command -v "${need%%:*}" >/dev/null || still+=("${need%%:*}")
done
if [ ${#still[@]} -ne 0 ]; then
  log "installed ${missing[*]} but still not on the PATH: ${still[*]}"
  exit 1
fi
log "promtool: $(promtool --version 2>&1 | head -n 1)"
