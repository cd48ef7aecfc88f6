#!/usr/bin/env bash
# Runs ringway as a benchmark candidate: one pool over $BENCH_BACKENDS (comma-separated
# host:port), hashed on the request URI, listening on 127.0.0.1:$BENCH_PORT, one worker
# thread, no access log. Stays in the foreground.
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
  printf 'pools:\n  - name: bench\n    hash_key: uri\n    upstreams:\n'
  for b in ${BENCH_BACKENDS//,/ }; do printf '      - address: %s\n' "$b"; done
} >"$cfg"
RUST_LOG=${RUST_LOG:-warn} exec "$bin" run --config "$cfg" --threads "${RINGWAY_THREADS:-1}"
