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
# RINGWAY_POOL_EXTRA="retry: {on: [connect]}" adds one line to the pool's settings.
# CALLGRIND_OUT=FILE keeps the second run's profile of the main thread there, for
# `callgrind_annotate FILE`.
# PROXY=nginx or PROXY=haproxy measures that proxy instead, with the configuration
# compare.sh gives it (one worker, consistent hash on the URI, upstream keep-alive);
# RINGWAY_HEADERS=all or forwarded gives it the header work of `--peer-headers
# forwarded` (X-Forwarded-For/-Proto/-Host, Via, an X-Request-Id sent upstream and
# returned), minimal none. nginx allocates from its own pools, so its malloc count says
# little; the instructions compare.
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

headers=${RINGWAY_HEADERS:-all}
case $headers in all | forwarded | minimal) ;; *) echo "RINGWAY_HEADERS must be all, forwarded or minimal" >&2; exit 2 ;; esac

# Starts nginx with compare.sh's configuration on $1, under callgrind writing $2.
start_nginx() {
  local listen=$1 out=$2 d=$work/nginx-$1
  mkdir -p "$d"
  {
    echo "worker_processes 1; daemon off; master_process off; pid $d/nginx.pid; error_log $d/error.log warn;"
    echo "events { worker_connections 1024; }"
    echo "http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s;"
    for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $d/$t;"; done
    echo "  upstream backends { hash \$request_uri consistent; server 127.0.0.1:$up; keepalive 64;"
    echo "    keepalive_requests 100000000; keepalive_timeout 300s; }"
    echo "  server { listen 127.0.0.1:$listen; ${proto:+listen 127.0.0.1:$listen http2;}"
    echo "    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection \"\";"
    if [ "$headers" != minimal ]; then
      echo '      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;'
      echo '      proxy_set_header X-Forwarded-Proto $scheme;'
      echo '      proxy_set_header X-Forwarded-Host $host;'
      echo '      proxy_set_header Via "1.1 nginx";'
      echo '      proxy_set_header X-Request-Id $request_id;'
      echo '      add_header X-Request-Id $request_id always;'
    fi
    echo "} } }"
  } >"$d/nginx.conf"
  if [ -n "$proto" ]; then sed -i "s/listen 127.0.0.1:$listen; listen/listen/" "$d/nginx.conf"; fi
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out" \
    nginx -p "$d" -c "$d/nginx.conf" 2>"$work/vg-nginx-$listen.log" &
}

# Starts HAProxy with compare.sh's configuration on $1, under callgrind writing $2.
start_haproxy() {
  local listen=$1 out=$2 d=$work/haproxy-$1
  mkdir -p "$d"
  {
    printf 'global\n    nbthread 1\n    maxconn 4096\ndefaults\n    mode http\n'
    printf '    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n'
    printf '    timeout http-keep-alive 60s\n    option http-keep-alive\n    http-reuse always\n'
    printf 'frontend fe\n    bind 127.0.0.1:%s%s\n    default_backend be\n' "$listen" "${proto:+ proto h2}"
    if [ "$headers" != minimal ]; then
      printf '    option forwardfor\n    http-request set-header X-Forwarded-Proto http\n'
      printf '    http-request set-header X-Forwarded-Host %%[req.hdr(host)]\n'
      printf '    http-request add-header Via "1.1 haproxy"\n    unique-id-format %%[uuid()]\n'
      printf '    unique-id-header X-Request-Id\n    http-response set-header X-Request-Id %%[unique-id]\n'
    fi
    printf 'backend be\n    balance uri\n    hash-type consistent\n    server b1 127.0.0.1:%s\n' "$up"
  } >"$d/haproxy.cfg"
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out" \
    haproxy -db -f "$d/haproxy.cfg" 2>"$work/vg-haproxy-$listen.log" &
}

# Runs the proxy under callgrind for $1 requests; prints the main thread's instructions.
measure() {
  local n=$1 listen cfg out
  listen=$(port)
  cfg=$work/ringway-$n.yaml
  out=$work/cg-$n
  case ${PROXY:-ringway} in
    nginx) start_nginx "$listen" "$out" ;;
    haproxy) start_haproxy "$listen" "$out" ;;
    ringway) start_ringway "$n" "$listen" "$cfg" "$out" ;;
    *) echo "PROXY must be ringway, nginx or haproxy" >&2; exit 2 ;;
  esac
  finish "$n" "$listen" "$out" $!
}

start_ringway() {
  local n=$1 listen=$2 cfg=$3 out=$4
  printf 'node: {id: cg, data_dir: %s/data-%s}\nlisteners:\n  - address: 127.0.0.1:%s\n' "$work" "$n" "$listen" >"$cfg"
  case $headers in
    forwarded) printf '    headers: {traceparent: false}\n' >>"$cfg" ;;
    minimal) printf '    headers: {forwarded: false, via: false, request_id: false, traceparent: false}\n' >>"$cfg" ;;
  esac
  printf 'pools:\n  - name: cg\n    hash_key: uri\n    upstreams:\n      - address: 127.0.0.1:%s\n' "$up" >>"$cfg"
  # RINGWAY_POOL_EXTRA: one more line of pool settings, e.g. "retry: {on: [connect]}".
  if [ -n "${RINGWAY_POOL_EXTRA:-}" ]; then printf '    %s\n' "$RINGWAY_POOL_EXTRA" >>"$cfg"; fi
  RUST_LOG=warn valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out" \
    "$bin" run --config "$cfg" --threads 1 2>"$work/vg-$n.log" &
}

# Waits for the proxy (pid $4) on port $2, sends $1 requests, stops it and prints the
# main thread's instructions and allocations from profile $3.
finish() {
  local n=$1 listen=$2 out=$3 pid=$4
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
