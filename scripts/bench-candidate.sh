#!/usr/bin/env bash
# Runs ringway as a benchmark candidate: one pool over $BENCH_BACKENDS (comma-separated
# host:port), hashed on the request URI, listening on 127.0.0.1:$BENCH_PORT, one worker
# thread, no access log. Stays in the foreground.
#
# RINGWAY_HEADERS picks the header work (listeners[].headers):
#   all        (default) everything ringway does out of the box: X-Forwarded-For/-Proto/
#              -Host, Via, X-Request-Id and traceparent
#   forwarded  what compare.sh --peer-headers forwarded asks of nginx and HAProxy:
#              X-Forwarded-*, Via and X-Request-Id; no traceparent
#   minimal    none of it, as compare.sh --peer-headers minimal runs the peers
# RINGWAY_POOL_EXTRA adds one line to the pool's settings, e.g.
#   RINGWAY_POOL_EXTRA="retry: {on: [connect]}"   (nothing kept to send again)
#   ../shared/bench/compare.sh --candidate-cmd "$PWD/scripts/bench-candidate.sh" \
#       --candidate-port 18083 --candidate-name ringway
set -euo pipefail
: "${BENCH_PORT:?}" "${BENCH_BACKENDS:?}"
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${RINGWAY_BIN:-${CARGO_TARGET_DIR:-$here/target}/release/ringway}
dir=${BENCH_WORKDIR:-$(mktemp -d /tmp/ringway-bench-XXXXXX)}
cfg=$dir/ringway.yaml
{
  printf 'node: {id: bench, data_dir: %s/data}\n' "$dir"
  printf 'listeners:\n  - address: 127.0.0.1:%s\n' "$BENCH_PORT"
  case ${RINGWAY_HEADERS:-all} in
    all) ;;
    forwarded) printf '    headers: {traceparent: false}\n' ;;
    minimal) printf '    headers: {forwarded: false, via: false, request_id: false, traceparent: false}\n' ;;
    *) echo "RINGWAY_HEADERS must be all, forwarded or minimal" >&2; exit 2 ;;
  esac
  printf 'pools:\n  - name: bench\n    hash_key: uri\n'
  if [ -n "${RINGWAY_POOL_EXTRA:-}" ]; then printf '    %s\n' "$RINGWAY_POOL_EXTRA"; fi
  printf '    upstreams:\n'
  for b in ${BENCH_BACKENDS//,/ }; do printf '      - address: %s\n' "$b"; done
} >"$cfg"
RUST_LOG=${RUST_LOG:-warn} exec "$bin" run --config "$cfg" --threads "${RINGWAY_THREADS:-1}"
