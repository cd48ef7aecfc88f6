#!/usr/bin/env bash
# Quick start: three tiny `ringway echo` upstreams on 127.0.0.1:9001-9003 and the proxy
# on config.example.yaml (listening on 127.0.0.1:8080). Ctrl-C stops everything.
#
# In another terminal:
#   for p in /a /b /c /a /b /c; do curl -s localhost:8080$p; done
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
bin=${CARGO_TARGET_DIR:-target}/debug/ringway
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for i in 1 2 3; do
  "$bin" echo --listen "127.0.0.1:900$i" --name "upstream-$i" &
  pids+=($!)
done
"$bin" check --config config.example.yaml
# In the background with `wait`, so a TERM to this script runs the trap at once
# (bash defers traps while a foreground child runs).
"$bin" run --config config.example.yaml &
pids+=($!)
wait "${pids[-1]}"
