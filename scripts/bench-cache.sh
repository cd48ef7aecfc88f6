#!/usr/bin/env bash
# The response cache's hit path: ringway (`pools[].cache`) beside nginx (`proxy_cache`),
# each one worker pinned to CPU 1, in front of one nginx backend whose answers are
# cacheable (`Cache-Control: public, max-age=3600`, a 1 KiB body). h2load (HTTP/1.1,
# `--h1`) and the backend share CPU 0.
#
#   scripts/bench-cache.sh [--rounds N] [--duration S] [--rps N] [--clients N] [--uris N]
#
# Each run starts the proxy fresh, fills its cache with one pass over /item/1..URIS
# (a warm-up at the same rate), then measures DURATION seconds at a fixed offered rate
# (RPS in all, over CLIENTS connections). Reported, medians over interleaved rounds:
# requests/s, proxy CPU µs per request (utime+stime of the proxy's process tree from
# /proc over the measured window, divided by requests completed), p50/p99 latency
# (h2load's per-request log), and how many requests reached the backend in the
# measured window (a hit path sends none: more than 1 % fails the run).
#
# ringway runs with RINGWAY_HEADERS=minimal (scripts/bench-candidate.sh): a hit adds no
# forwarding headers in nginx either. Needs nginx, h2load (nghttp2-client), taskset and
# curl; builds ringway in release. Everything runs on 127.0.0.1 and is stopped on exit.
set -euo pipefail
export LC_ALL=C
export PATH="$PATH:/usr/sbin:/sbin"

ROUNDS=3 DURATION=8 RPS=5000 CLIENTS=10 URIS=1000
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --rps) RPS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --uris) URIS=$2; shift 2 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "bench-cache: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for c in nginx h2load taskset curl; do
  command -v "$c" >/dev/null || { echo "bench-cache: $c is required (apt-get install nginx nghttp2-client util-linux curl)" >&2; exit 2; }
done

here=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/ringway-cachebench-XXXXXX)
# nginx's workers run as an unprivileged user: they must reach the cache directory.
chmod 755 "$W"
PROXY_PORT=28180 BACKEND_PORT=28191 STATUS_PORT=28192
pids=()
log() { printf '[bench-cache] %s\n' "$*" >&2; }
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap stop_all EXIT

body=$(head -c 1024 /dev/zero | tr '\0' 'x')
cat >"$W/backend.conf" <<EOF
worker_processes 1; daemon off; pid $W/backend.pid; error_log stderr warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACKEND_PORT;
    location / { add_header Cache-Control "public, max-age=3600"; add_header X-Upstream b1; return 200 "$body"; } }
  server { listen 127.0.0.1:$STATUS_PORT; location / { stub_status; } }
}
EOF
cat >"$W/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $W/nginx.pid; error_log stderr warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  proxy_cache_path $W/nginx-cache levels=1:2 keys_zone=c:16m max_size=256m inactive=1h use_temp_path=off;
  upstream be { server 127.0.0.1:$BACKEND_PORT; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$PROXY_PORT;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_cache c; } }
}
EOF
for ((i = 1; i <= URIS; i++)); do echo "http://127.0.0.1:$PROXY_PORT/item/$i"; done >"$W/uris"

log "building ringway (release)"
(cd "$here" && cargo build --release --quiet)
taskset -c 0 nginx -c "$W/backend.conf" -p "$W" 2>>"$W/backend.log" &
pids+=($!)

declare -A cmds=(
  [ringway]="env BENCH_PORT=$PROXY_PORT BENCH_BACKENDS=127.0.0.1:$BACKEND_PORT BENCH_WORKDIR=$W RINGWAY_HEADERS=minimal RINGWAY_POOL_EXTRA='cache: {max_bytes: 268435456}' RINGWAY_BIN=${CARGO_TARGET_DIR:-$here/target}/release/ringway $here/scripts/bench-candidate.sh"
  [nginx]="nginx -c $W/nginx.conf -p $W"
)

backend_requests() { curl -s --max-time 2 "http://127.0.0.1:$STATUS_PORT/" | awk 'NR == 3 { print $3 }'; }
cpu_ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo $total
}
load() { # seconds logfile
  taskset -c 0 h2load --h1 -t 1 -c "$CLIENTS" --rps=$(((RPS + CLIENTS - 1) / CLIENTS)) -D "$1" \
    ${2:+--log-file="$2"} -i "$W/uris" 2>&1
}

measure() {
  local name=$1 pid out t0 t1 b0 b1 done rps hz
  rm -rf "$W/nginx-cache" "$W/data" "$W/lat"
  taskset -c 1 bash -c "exec ${cmds[$name]}" >"$W/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/item/1" && break; sleep 0.1; done
  # Fill: one pass over every URI, then a warm-up at the measured rate.
  taskset -c 0 h2load --h1 -t 1 -c 1 -n "$URIS" -i "$W/uris" >/dev/null 2>&1
  load 2 "" >/dev/null
  b0=$(backend_requests); t0=$(cpu_ticks $pid)
  out=$(load "$DURATION" "$W/lat")
  t1=$(cpu_ticks $pid); b1=$(backend_requests)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  done=$(awk '/^requests:/ { print $8 }' <<<"$out")
  rps=$(awk '/^finished in/ { print $4 }' <<<"$out")
  hz=$(getconf CLK_TCK)
  if [ -z "$done" ] || [ "$done" -eq 0 ] || [ ! -s "$W/lat" ]; then
    log "$name: no request completed; see $W/$name.log"
    echo "$name 0 0 0 0 0 0"
    return
  fi
  cut -f3 "$W/lat" | sort -n | awk -v n="$name" -v r="$rps" -v d=$((t1 - t0)) -v q="$done" -v hz="$hz" -v b=$((b1 - b0)) '
    { a[NR] = $1 }
    END { i = int(NR * 0.50); if (i < 1) i = 1; j = int(NR * 0.99); if (j < 1) j = 1
      printf "%s %.0f %.2f %.3f %.3f %d %d\n", n, r, d * 1e6 / hz / q, a[i] / 1000, a[j] / 1000, b, q }'
}

: >"$W/rows"
names=(ringway nginx)
for r in $(seq 1 "$ROUNDS"); do
  for k in 0 1; do
    name=${names[$(((k + r) % 2))]}
    log "round $r: $name"
    measure "$name" | tee -a "$W/rows" >&2
  done
done

status=0
echo "| at $RPS req/s offered, hits | req/s | CPU µs/req | p50 ms | p99 ms | backend requests |"
echo "|---|--:|--:|--:|--:|--:|"
for name in ringway nginx; do
  grep "^$name " "$W/rows" | awk -v n="$name" '
    { r[NR] = $2; c[NR] = $3; p5[NR] = $4; p9[NR] = $5; b += $6; q += $7 }
    function med(x, k, i, j, t) { for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
      return x[int((k + 1) / 2)] }
    END { printf "| %s | %.0f | %.2f | %.3f | %.3f | %d of %d |\n", n, med(r, NR), med(c, NR), med(p5, NR), med(p9, NR), b, q
      if (q == 0 || b * 100 > q) exit 1 }' || status=1
done
[ $status -eq 0 ] || log "a proxy completed no request, or sent more than 1 % of them to the backend (not a hit path)"
exit $status
