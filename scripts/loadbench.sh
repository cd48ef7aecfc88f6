#!/usr/bin/env bash
# ringway beside nginx and HAProxy, each given one core, in front of the same four
# backends, driven by wrk over 10,000 distinct paths. Prints a markdown table of
# requests/s, p50/p99 latency and proxy CPU time per request (medians over rounds).
#
#   scripts/loadbench.sh [ROUNDS] [SECONDS]      (defaults: 3 rounds of 8 s)
#
# Layout on this 2-core machine: every proxy runs one worker pinned to CPU 1; wrk and
# the backends share CPU 0. Proxy CPU time is utime+stime of the proxy's whole process
# tree from /proc, over the measured window, divided by requests completed. Installs
# nginx, haproxy and wrk from Debian's packages when missing (without starting their
# services). Everything runs on 127.0.0.1; every process it starts is stopped on exit.
set -euo pipefail
rounds=${1:-3}
secs=${2:-8}
warmup=2
uris=10000
conns=50
base_port=28080
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/ringway-loadbench-XXXXXX)
pids=()

log() { printf '[loadbench] %s\n' "$*" >&2; }
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap stop_all EXIT

install_missing() {
  local need=()
  command -v nginx >/dev/null || need+=(nginx)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v wrk >/dev/null || need+=(wrk)
  command -v taskset >/dev/null || need+=(util-linux)
  [ ${#need[@]} -eq 0 ] && return
  log "installing ${need[*]}"
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  if [ $made_policy -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

backends() {
  local conf=$work/backends.conf
  {
    printf 'worker_processes 1; daemon off; pid %s/backends.pid; error_log stderr warn;\n' "$work"
    printf 'events { worker_connections 4096; }\nhttp { access_log off; keepalive_requests 1000000;\n'
    for i in 1 2 3 4; do
      printf '  server { listen 127.0.0.1:%d; location / { add_header X-Upstream b%d; return 200 "ok\\n"; } }\n' $((base_port + 10 + i)) "$i"
    done
    printf '}\n'
  } >"$conf"
  taskset -c 0 nginx -c "$conf" -p "$work" 2>>"$work/backends.log" &
  pids+=($!)
}

backend_list() { local out=(); for i in 1 2 3 4; do out+=("127.0.0.1:$((base_port + 10 + i))"); done; (IFS=,; echo "${out[*]}"); }

nginx_conf() {
  local conf=$work/nginx.conf
  {
    printf 'worker_processes 1; daemon off; pid %s/nginx.pid; error_log stderr warn;\n' "$work"
    printf 'events { worker_connections 4096; }\nhttp { access_log off; keepalive_requests 1000000;\n'
    printf '  upstream be { hash $request_uri consistent; keepalive 64; keepalive_requests 1000000;\n'
    for b in ${1//,/ }; do printf '    server %s;\n' "$b"; done
    printf '  }\n  server { listen 127.0.0.1:%d; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }\n}\n' "$base_port"
  } >"$conf"
  echo "nginx -c $conf -p $work"
}

haproxy_conf() {
  local conf=$work/haproxy.cfg i=0
  {
    printf 'global\n  nbthread 1\n  maxconn 4096\n'
    printf 'defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n'
    printf 'frontend fe\n  bind 127.0.0.1:%d\n  default_backend be\n' "$base_port"
    printf 'backend be\n  balance uri\n  hash-type consistent\n'
    for b in ${1//,/ }; do i=$((i + 1)); printf '  server b%d %s\n' "$i" "$b"; done
  } >"$conf"
  echo "haproxy -db -f $conf"
}

ringway_cmd() {
  echo "env BENCH_PORT=$base_port BENCH_BACKENDS=$1 BENCH_WORKDIR=$work RINGWAY_BIN=${CARGO_TARGET_DIR:-$here/target}/release/ringway $here/scripts/bench-candidate.sh"
}

# Sum of utime+stime (clock ticks) over a process and its descendants.
cpu_ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    if [ -r "/proc/$p/stat" ]; then
      total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    fi
  done
  echo $total
}

wait_ready() {
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$base_port/item/1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "proxy did not become ready"; return 1
}

write_lua() {
  cat >"$work/paths.lua" <<LUA
local reqs = {}
local n = $uris
local i = 0
init = function(args) for k = 1, n do reqs[k] = wrk.format("GET", "/item/" .. k) end end
request = function() i = i % n + 1; return reqs[i] end
LUA
}

# Runs one measured round for one target; prints "name req/s p50ms p99ms us/req".
measure() {
  local name=$1 cmd=$2 pid out t0 t1 reqs rps p50 p99
  taskset -c 1 bash -c "exec $cmd" >"$work/$name.log" 2>&1 &
  pid=$!
  wait_ready
  taskset -c 0 wrk -t1 -c$conns -d${warmup}s -s "$work/paths.lua" "http://127.0.0.1:$base_port" >/dev/null
  t0=$(cpu_ticks $pid)
  out=$(taskset -c 0 wrk -t1 -c$conns -d${secs}s --latency -s "$work/paths.lua" "http://127.0.0.1:$base_port")
  t1=$(cpu_ticks $pid)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then log "$name: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ')"; fi
  local hz; hz=$(getconf CLK_TCK)
  awk -v n="$name" -v r="$rps" -v a="$p50" -v b="$p99" -v d=$((t1 - t0)) -v q="$reqs" -v hz="$hz" '
    function ms(x) { if (x ~ /us$/) return x / 1000; if (x ~ /ms$/) return x + 0; if (x ~ /s$/) return x * 1000; return x }
    BEGIN { printf "%s %.0f %.3f %.3f %.2f\n", n, r, ms(a), ms(b), d * 1e6 / hz / q }'
}

main() {
  install_missing
  log "building ringway (release)"
  (cd "$here" && cargo build --release --quiet)
  write_lua
  backends
  sleep 0.5
  local list; list=$(backend_list)
  local names=(ringway nginx haproxy)
  declare -A cmds=([ringway]="$(ringway_cmd "$list")" [nginx]="$(nginx_conf "$list")" [haproxy]="$(haproxy_conf "$list")")
  : >"$work/rows"
  for r in $(seq 1 "$rounds"); do
    for k in 0 1 2; do
      local name=${names[$(((k + r) % 3))]}
      log "round $r: $name"
      measure "$name" "${cmds[$name]}" | tee -a "$work/rows" >&2
    done
  done
  printf '\n| proxy (1 core) | req/s | p50 ms | p99 ms | CPU us/req |\n|---|--:|--:|--:|--:|\n'
  for name in "${names[@]}"; do
    awk -v n="$name" '$1 == n' "$work/rows" | sort -k5 -n | awk -v n="$name" '
      { r[NR] = $2; a[NR] = $3; b[NR] = $4; c[NR] = $5 }
      END { m = int((NR + 1) / 2); printf "| %s | %s | %s | %s | %s |\n", n, r[m], a[m], b[m], c[m] }'
  done
  printf '\nwrk -t1 -c%d, %d rounds of %ds after %ds warm-up, GET /item/1..%d; proxy on CPU 1, wrk + backends on CPU 0. Row = the round with the median CPU us/req. Raw rows: %s/rows\n' \
    "$conns" "$rounds" "$secs" "$warmup" "$uris" "$work"
}

main "$@"
