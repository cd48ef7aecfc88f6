#!/usr/bin/env bash
# User-space instructions and heap allocations (malloc, calloc and realloc calls) per
# proxied request, counted by callgrind: deterministic enough to compare two builds on
# a noisy machine, where timings are not.
#
#   scripts/callgrind.sh [BINARY] [N1] [N2]      (defaults: release build, 2000, 12000)
#
# ringway runs under callgrind with one worker thread (`--threads 1`: the whole request
# path on the main thread) and no access log, in front of one `ringway echo` upstream.
# curl sends N requests over one keep-alive connection, GET /k1 .. /kN. Two runs, N1
# and N2 requests; only the main thread is counted (the cluster driver has a thread of
# its own), and (I2 - I1) / (N2 - N1) cancels startup and shutdown.
#
# PROTO=h2c sends the requests as streams of one cleartext HTTP/2 connection (h2load,
# one stream at a time) instead of HTTP/1.1 with curl.
# RINGWAY_HEADERS=all|forwarded|minimal picks the header work, as in bench-candidate.sh.
# CALLGRIND_OUT=FILE keeps the second run's profile of the main thread there, for
# `callgrind_annotate FILE`.
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
case ${PROTO:-h1} in
  h1) proto= ;;
  h2c) proto=h2c; command -v h2load >/dev/null || { echo "h2load is needed (apt-get install nghttp2-client)" >&2; exit 1; } ;;
  *) echo "PROTO must be h1 or h2c" >&2; exit 2 ;;
esac
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
  case ${RINGWAY_HEADERS:-all} in
    all) ;;
    forwarded) printf '    headers: {traceparent: false}\n' >>"$cfg" ;;
    minimal) printf '    headers: {forwarded: false, via: false, request_id: false, traceparent: false}\n' >>"$cfg" ;;
    *) echo "RINGWAY_HEADERS must be all, forwarded or minimal" >&2; exit 2 ;;
  esac
  printf 'pools:\n  - name: cg\n    hash_key: uri\n    upstreams:\n      - address: 127.0.0.1:%s\n' "$up" >>"$cfg"
  RUST_LOG=warn valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out" \
    "$bin" run --config "$cfg" --threads 1 2>"$work/vg-$n.log" &
  local pid=$!
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$listen/ready" && break
    sleep 0.2
  done
  local ok
  if [ -z "$proto" ]; then
    ok=$(curl -s -w '%{http_code}\n' "http://127.0.0.1:$listen/k[1-$n]" | grep -c '^200$' || true)
  else
    # One connection, one stream at a time, so each request is measured alone.
    ok=$(h2load -n "$n" -c 1 -m 1 "http://127.0.0.1:$listen/k" 2>/dev/null |
      awk '/^status codes:/ {print $3}')
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  [ "$ok" -eq "$n" ] || { echo "only $ok of $n requests answered 200" >&2; exit 1; }
  # Thread 1 is the main thread: the runtime every request runs on.
  local ir allocs
  ir=$(grep -h '^summary:' "$out-01" | awk '{print $2}')
  allocs=$(count_allocs "$out-01")
  echo "$ir $allocs"
}

# Calls to malloc, calloc and realloc in a callgrind profile (names are compressed:
# "cfn=(id) name" the first time, "cfn=(id)" after).
count_allocs() {
  awk '
    function name_of(s,   id, rest) {
      if (match(s, /^\([0-9]+\)/)) {
        id = substr(s, RSTART, RLENGTH); rest = substr(s, RLENGTH + 1); sub(/^ /, "", rest)
        if (rest != "") names[id] = rest
        return names[id]
      }
      return s
    }
    /^fn=/  { name_of(substr($0, 4)); next }
    /^cfn=/ { callee = name_of(substr($0, 5)); next }
    /^calls=/ {
      if (callee == "malloc" || callee == "calloc" || callee == "realloc") { split(substr($0, 7), a, " "); n += a[1] }
      callee = ""; next
    }
    END { print n + 0 }' "$1"
}

read -r i1 a1 < <(measure "$n1")
read -r i2 a2 < <(measure "$n2")
[ -n "${i1:-}" ] && [ -n "${i2:-}" ] || { echo "a measured run failed" >&2; exit 1; }
if [ -n "${CALLGRIND_OUT:-}" ]; then cp "$work/cg-$n2-01" "$CALLGRIND_OUT"; fi
echo "binary: $bin"
echo "main-thread instructions: $i1 ($n1 requests), $i2 ($n2 requests)"
echo "main-thread allocations: $a1 ($n1 requests), $a2 ($n2 requests)"
awk -v a="$i1" -v b="$i2" -v n1="$n1" -v n2="$n2" \
  'BEGIN { printf "instructions per request: %.0f\n", (b - a) / (n2 - n1) }'
awk -v a="$a1" -v b="$a2" -v n1="$n1" -v n2="$n2" \
  'BEGIN { printf "allocations per request: %.2f\n", (b - a) / (n2 - n1) }'
