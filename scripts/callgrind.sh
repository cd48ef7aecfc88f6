#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: deterministic
# enough to compare two builds on a noisy machine, where timings are not.
#
#   scripts/callgrind.sh [BINARY] [N1] [N2]      (defaults: release build, 2000, 12000)
#
# ringway runs under callgrind with one worker thread (`--threads 1`: the whole request
# path on the main thread) and no access log, in front of one `ringway echo` upstream.
# curl sends N requests over one keep-alive connection, GET /k1 .. /kN. Two runs, N1
# and N2 requests; only the main thread is counted (the cluster driver has a thread of
# its own), and (I2 - I1) / (N2 - N1) cancels startup and shutdown.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$here/target}/release/ringway}
n1=${2:-2000}
n2=${3:-12000}
work=$(mktemp -d /tmp/ringway-callgrind-XXXXXX)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop_all EXIT
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }

port() { echo $((20000 + RANDOM % 10000)); }
up=$(port)
"$bin" echo --listen "127.0.0.1:$up" --name e 2>/dev/null &
pids+=($!)

# Runs ringway under callgrind for $1 requests; prints the main thread's instructions.
measure() {
  local n=$1 listen cfg out
  listen=$(port)
  cfg=$work/ringway-$n.yaml
  out=$work/cg-$n
  printf 'node: {id: cg, data_dir: %s/data-%s}\nlisteners:\n  - address: 127.0.0.1:%s\n' "$work" "$n" "$listen" >"$cfg"
  printf 'pools:\n  - name: cg\n    hash_key: uri\n    upstreams:\n      - address: 127.0.0.1:%s\n' "$up" >>"$cfg"
  RUST_LOG=warn valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out" \
    "$bin" run --config "$cfg" --threads 1 2>"$work/vg-$n.log" &
  local pid=$!
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$listen/ready" && break
    sleep 0.2
  done
  local ok
  ok=$(curl -s -w '%{http_code}\n' "http://127.0.0.1:$listen/k[1-$n]" | grep -c '^200$' || true)
  kill -TERM "$pid"
  wait "$pid" || true
  [ "$ok" -eq "$n" ] || { echo "only $ok of $n requests answered 200" >&2; exit 1; }
  # Thread 1 is the main thread: the runtime every request runs on.
  grep -h '^summary:' "$out-01" | awk '{print $2}'
}

i1=$(measure "$n1")
i2=$(measure "$n2")
echo "binary: $bin"
echo "main-thread instructions: $i1 ($n1 requests), $i2 ($n2 requests)"
awk -v a="$i1" -v b="$i2" -v n1="$n1" -v n2="$n2" \
  'BEGIN { printf "instructions per request: %.0f\n", (b - a) / (n2 - n1) }'
