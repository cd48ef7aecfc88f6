#!/usr/bin/env bash
# HTTP/2 to the upstreams: h2c clients -> proxy -> four h2c backends, for ringway
# (`protocol: h2c`), HAProxy (`server ... proto h2`) and nginx (`grpc_pass`), beside
# `direct` (the load generator straight to one backend: the upper bound). Also per
# request: the proxy's kernel time, system calls (perf stat, warm-ups only) and
# upstream connections; optionally a perf profile of ringway (--perf) and user-space
# instruction counts under callgrind (--instructions).
#
#   scripts/bench-h2-upstream.sh [options]       (--help lists them; README "Benchmarks")
#
# Every proxy runs one worker / one thread pinned to CPU 1 and hashes the request URI
# onto a consistent-hash ring of the same four backends (one nginx 1.22 worker serving
# h2c with prior knowledge on four ports, each answering 200 with its name and port).
# h2load and the backends share CPU 0. Each client is its own h2load process (-c1 -mS,
# its own rotation of /item/1..N), at a fixed offered rate (and, with --saturation, in
# a closed loop). Targets run in interleaved rounds, the order rotated each round, every
# run on a freshly started proxy; the report gives medians over rounds of:
#   - proxy CPU µs per request: utime+stime of the proxy's process tree (all threads,
#     /proc/PID/stat) over the measured window / requests completed;
#   - p50/p99 latency from h2load's --log-file (every request of every client);
#   - requests that did not get 200 (from the per-request log) and failed ones.
# After each proxy's last measured run, GET /item/1..V as streams of one h2c connection
# (nghttp), then /item/V..1 on a second: every path must reach the same backend both
# times (X-Upstream), every answer must be 200, and all four backends must get paths.
#
# Everything it starts is started by PID and stopped by PID at exit; configs, logs and
# raw rows go to a fresh /tmp/ringway-h2bench-XXXXXX/. It installs nothing: h2load and
# nghttp (nghttp2-client), nginx, haproxy, taskset and curl must be on the PATH (perf
# and valgrind for the options that use them). Exit status: 0 all passed, 1 a run, a
# status check or the hashing check failed (the report is still printed), 2 bad usage,
# a missing tool or a port in use.
set -uo pipefail
export LC_ALL=C
export PATH="$PATH:/usr/sbin:/sbin"

usage() {
  cat <<'EOF'
Usage: scripts/bench-h2-upstream.sh [options]

  --rounds N          interleaved rounds, median reported (3)
  --duration S        measured seconds per run (5)
  --warmup S          warm-up seconds before each measured run, same load (2)
  --rps N             total offered requests/s, spread over the clients (10000)
  --clients N         h2load processes, one connection each (10)
  --streams N         concurrent streams per client connection, h2load -m (5)
  --saturation        add a closed-loop run (no rate limit) per target and round
  --targets LIST      from direct,ringway,haproxy,nginx (those four, the default)
                      and ringway-h1up: ringway speaking HTTP/1.1 to the same
                      backends (their HTTP/1.1 ports), to set the HTTP/2 upstream
                      side against ringway's HTTP/1.1 one
  --uris N            distinct paths /item/1..N (10000)
  --verify-paths N    paths in the hashing check, each sent twice (2000)
  --headers MODE      minimal: the proxies only proxy (default); forwarded: all three
                      also set X-Forwarded-For/-Proto/-Host and Via and make an
                      X-Request-Id, sent upstream and returned
  --grpc              send every request gRPC-shaped (content-type: application/grpc,
                      te: trailers), to every target alike
  --bin PATH          ringway binary (target/release/ringway)
  --proxy-cpu N       CPU of the proxy (1)
  --load-cpu N        CPU of h2load and the backends (0)
  --port-base N       ports: backends N+91..N+94 (h2c) and N+101..N+104
                      (HTTP/1.1), nginx N+81, haproxy N+82, ringway N+83,
                      ringway-h1up N+84, backend status N+90 (18400)
  --no-syscalls       do not count the proxy's system calls during the warm-ups
                      (counted with perf stat when perf is present; the measured
                      windows are never traced)
  --instructions N1,N2  also count each proxy's user-space instructions per request
                      under callgrind (valgrind): two runs of N1 and N2 requests,
                      one stream at a time over one h2c connection; the difference
                      cancels start-up and shutdown. Deterministic where the
                      timings are noisy. --rounds 0 runs only this
  --perf              after the rounds, one more fixed-rate ringway run under
                      `perf record` (DWARF call graphs); the report gives self time
                      by object and symbol and splits the samples by part of the
                      request path
  --out FILE          also write the markdown report to FILE
  --quick             smoke run, under 30 s: 1 round, 2 s after 1 s warm-up,
                      200 verify paths, no saturation
  -h, --help
EOF
}

ROUNDS=3 DURATION=5 WARMUP=2 RPS=10000 CLIENTS=10 STREAMS=5 SATURATION=0
TARGETS=direct,ringway,haproxy,nginx NURIS=10000 VERIFY_PATHS=2000 HEADERS=minimal
GRPC=0 PROXY_CPU=1 LOAD_CPU=0 PORT_BASE=18400 PERF=0 SYSCALLS=1 OUT="" INSTR=""
UNDER_VALGRIND=""            # set to a callgrind out-file while a proxy runs under it
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$HERE/target}/release/ringway

while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --rps) RPS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --saturation) SATURATION=1; shift ;;
    --targets) TARGETS=$2; shift 2 ;;
    --uris) NURIS=$2; shift 2 ;;
    --verify-paths) VERIFY_PATHS=$2; shift 2 ;;
    --headers) HEADERS=$2; shift 2 ;;
    --grpc) GRPC=1; shift ;;
    --bin) BIN=$2; shift 2 ;;
    --proxy-cpu) PROXY_CPU=$2; shift 2 ;;
    --load-cpu) LOAD_CPU=$2; shift 2 ;;
    --port-base) PORT_BASE=$2; shift 2 ;;
    --perf) PERF=1; shift ;;
    --instructions) INSTR=$2; shift 2 ;;
    --no-syscalls) SYSCALLS=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    --quick) ROUNDS=1; DURATION=2; WARMUP=1; VERIFY_PATHS=200; SATURATION=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench-h2-upstream.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

for v in ROUNDS DURATION WARMUP RPS CLIENTS STREAMS NURIS VERIFY_PATHS PROXY_CPU LOAD_CPU PORT_BASE; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v,,} must be a non-negative integer (got '${!v}')"
done
{ [ "$ROUNDS" -ge 1 ] || [ -n "$INSTR" ]; } && [ "$DURATION" -ge 1 ] && [ "$CLIENTS" -ge 1 ] && [ "$STREAMS" -ge 1 ] ||
  die "rounds, duration, clients and streams must be at least 1"
[ "$VERIFY_PATHS" -ge 4 ] && [ "$VERIFY_PATHS" -le "$NURIS" ] || die "--verify-paths must be 4..--uris"
case $HEADERS in minimal|forwarded) ;; *) die "--headers must be minimal or forwarded" ;; esac
IFS=, read -r -a T_LIST <<<"$TARGETS"
for t in "${T_LIST[@]}"; do
  case $t in direct|ringway|ringway-h1up|haproxy|nginx) ;;
    *) die "unknown target '$t' (direct,ringway,haproxy,nginx,ringway-h1up)" ;; esac
done
NT=${#T_LIST[@]}
for c in h2load nghttp nginx haproxy taskset curl ps ss awk; do
  command -v "$c" >/dev/null 2>&1 || die "$c is needed and not on the PATH (this script installs nothing)"
done
[ "$PERF" = 0 ] || command -v perf >/dev/null || die "--perf needs perf"
if [ -n "$INSTR" ]; then
  [[ $INSTR =~ ^([0-9]+),([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -lt "${BASH_REMATCH[2]}" ] ||
    die "--instructions takes N1,N2 with N1 < N2 (got '$INSTR')"
  command -v valgrind >/dev/null || die "--instructions needs valgrind"
fi
command -v perf >/dev/null || SYSCALLS=0
[ "$(nproc)" -gt "$PROXY_CPU" ] && [ "$(nproc)" -gt "$LOAD_CPU" ] || die "need CPUs $LOAD_CPU and $PROXY_CPU"
case " ${T_LIST[*]} " in *" ringway "*|*" ringway-h1up "*) [ -x "$BIN" ] || die "no ringway binary at $BIN (cargo build --release)" ;; esac

BACKEND_PORTS=($((PORT_BASE + 91)) $((PORT_BASE + 92)) $((PORT_BASE + 93)) $((PORT_BASE + 94)))
H1_BACKEND_PORTS=($((PORT_BASE + 101)) $((PORT_BASE + 102)) $((PORT_BASE + 103)) $((PORT_BASE + 104)))
STATUS_PORT=$((PORT_BASE + 90))
declare -A PORT=([direct]=${BACKEND_PORTS[0]} [nginx]=$((PORT_BASE + 81)) [haproxy]=$((PORT_BASE + 82))
                 [ringway]=$((PORT_BASE + 83)) [ringway-h1up]=$((PORT_BASE + 84)))
RATE_OPT=()
[ "$RPS" -gt 0 ] && RATE_OPT=(--rps="$(( (RPS + CLIENTS - 1) / CLIENTS ))")
SCEN_FIXED="fixed@${RPS}rps"
[ "$RPS" -gt 0 ] || SCEN_FIXED="closed-loop"
SCENARIOS=("$SCEN_FIXED")
[ "$SATURATION" = 1 ] && [ "$RPS" -gt 0 ] && SCENARIOS+=(saturation)
REQ_HDRS=()
[ "$GRPC" = 1 ] && REQ_HDRS=(-H 'content-type: application/grpc' -H 'te: trailers')

W=$(mktemp -d /tmp/ringway-h2bench-XXXXXX) || die "mktemp failed"
mkdir -p "$W/logs" "$W/verify" "$W/tmp"
RESULTS=$W/results.tsv
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------ process control
declare -A ALIVE=()          # pid -> name: every server this script started
BACKEND_PID="" PROXY_PID="" LOAD_PID="" LAUNCHED=""

tree_pids() {                # root and all its descendants, one per line (nothing if gone)
  [ -n "${1:-}" ] || return 0
  ps -e -o pid=,ppid= | awk -v r="$1" '
    { par[$1] = $2; if ($1 == r) alive = 1 }
    END { if (!alive) exit; in_t[r] = 1; ch = 1
          while (ch) { ch = 0; for (c in par) if (!(c in in_t) && (par[c] in in_t)) { in_t[c] = 1; ch = 1 } }
          for (p in in_t) print p }'
}

cpu_ticks() {                # pid [sys]: utime+stime (or stime) in clock ticks, summed over the tree
  local t=0 p s f pids only_sys=${2:-}
  pids=$(tree_pids "${1:-}")
  [ -n "$pids" ] || { echo "-"; return; }
  for p in $pids; do
    { s=$(</proc/"$p"/stat); } 2>/dev/null || continue
    s=${s##*) }
    read -r -a f <<<"$s"
    if [ "$only_sys" = sys ]; then t=$(( t + f[12] )); else t=$(( t + f[11] + f[12] )); fi
  done
  echo "$t"
}

peak_rss_kib() {             # VmHWM summed over the tree
  local t=0 p v pids
  pids=$(tree_pids "${1:-}")
  [ -n "$pids" ] || { echo "-"; return; }
  for p in $pids; do
    v=$(awk '/^VmHWM:/ {print $2}' /proc/"$p"/status 2>/dev/null)
    t=$(( t + ${v:-0} ))
  done
  echo "$t"
}

stop_tree() {                # TERM the tree, wait up to 5 s, then KILL what is left
  local root=$1 pids p i any
  [ -n "$root" ] || return 0
  pids=$(tree_pids "$root")
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null
    for ((i = 0; i < 50; i++)); do
      any=0
      for p in $pids; do kill -0 "$p" 2>/dev/null && [ "$(awk '{print $3}' /proc/"$p"/stat 2>/dev/null)" != Z ] && any=1; done
      [ $any = 0 ] && break
      sleep 0.1
    done
    for p in $pids; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
  fi
  wait "$root" 2>/dev/null
  unset "ALIVE[$root]"
  return 0
}

cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  [ -n "$LOAD_PID" ] && stop_tree "$LOAD_PID"
  for p in "${!ALIVE[@]}"; do [ "$p" != "$BACKEND_PID" ] && stop_tree "$p"; done
  [ -n "$BACKEND_PID" ] && stop_tree "$BACKEND_PID"
  if [ ${#ALIVE[@]} -eq 0 ]; then log "stopped every process this run started; work dir $W"
  else log "WARNING: could not stop: ${!ALIVE[*]}"; fi
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

launch() {                   # name cpu cmd...  -> LAUNCHED (pid)
  local name=$1 cpu=$2; shift 2
  taskset -c "$cpu" "$@" >"$W/logs/$name.out" 2>&1 &
  LAUNCHED=$!
  ALIVE[$LAUNCHED]=$name
}

wait_ready() {               # port pid timeout_s: GET /item/1 over h2c answers 200
  local port=$1 pid=$2 tmo=$3 i code=""
  for ((i = 0; i < tmo * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { log "process $pid (port $port) died"; return 1; }
    code=$(curl -s --http2-prior-knowledge "${REQ_HDRS[@]}" -o /dev/null -w '%{http_code}' --max-time 1 \
      "http://127.0.0.1:$port/item/1" 2>/dev/null)
    [ "$code" = 200 ] && return 0
    sleep 0.1
  done
  log "port $port did not answer 200 within ${tmo}s (last: $code)"
  return 1
}

# ------------------------------------------------------------------ configs
nginx_temp_paths() {
  local d=$1 t
  for t in client_body proxy fastcgi uwsgi scgi; do printf '  %s_temp_path %s/tmp/%s;\n' "$t" "$d" "$t"; done
}

write_backends_conf() {      # one nginx worker, four h2c (prior knowledge) servers + stub_status
  local d=$W/backends i p
  mkdir -p "$d/tmp"
  {
    printf 'worker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n' "$d" "$d"
    printf 'events { worker_connections 8192; }\nhttp {\n  access_log off;\n  default_type text/plain;\n'
    printf '  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n'
    nginx_temp_paths "$d"
    for i in 1 2 3 4; do
      p=${BACKEND_PORTS[$((i - 1))]}
      printf '  server {\n    listen 127.0.0.1:%s http2 backlog=4096;\n' "$p"
      printf '    listen 127.0.0.1:%s backlog=4096;\n' "${H1_BACKEND_PORTS[$((i - 1))]}"
      printf '    location / { add_header X-Upstream b%s always; return 200 "b%s %s\\n"; }\n  }\n' "$i" "$i" "$p"
    done
    printf '  server {\n    listen 127.0.0.1:%s;\n    location / { stub_status; }\n  }\n}\n' "$STATUS_PORT"
  } >"$d/nginx.conf"
}

write_nginx_conf() {         # the nginx peer: grpc_pass to a hashed upstream with keep-alive
  local d=$1 p
  mkdir -p "$d/tmp"
  {
    printf 'worker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n' "$d" "$d"
    # under callgrind: the worker's work in the one process
    [ -n "$UNDER_VALGRIND" ] && printf 'master_process off;\n'
    printf 'events { worker_connections 8192; }\nhttp {\n  access_log off;\n'
    printf '  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n'
    nginx_temp_paths "$d"
    printf '  upstream backends {\n    hash $request_uri consistent;\n'
    for p in "${BACKEND_PORTS[@]}"; do printf '    server 127.0.0.1:%s;\n' "$p"; done
    # grpc_pass opens one upstream connection per request in flight (no multiplexing);
    # keepalive must hold every connection the load keeps busy, or it churns.
    printf '    keepalive 256;\n    keepalive_requests 100000000;\n    keepalive_timeout 300s;\n  }\n'
    printf '  server {\n    listen 127.0.0.1:%s http2 backlog=4096;\n    location / {\n' "${PORT[nginx]}"
    printf '      grpc_pass grpc://backends;\n'
    if [ "$HEADERS" = forwarded ]; then
      printf '      grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n'
      printf '      grpc_set_header X-Forwarded-Proto $scheme;\n'
      printf '      grpc_set_header X-Forwarded-Host $host;\n'
      printf '      grpc_set_header Via "2 nginx";\n'
      printf '      grpc_set_header X-Request-Id $request_id;\n'
      printf '      add_header X-Request-Id $request_id always;\n'
    fi
    printf '    }\n  }\n}\n'
  } >"$d/nginx.conf"
}

write_haproxy_conf() {       # the HAProxy peer: h2 to the servers, connections shared
  local d=$1 i
  mkdir -p "$d"
  {
    printf 'global\n    nbthread 1\n    maxconn 8192\n    # no log line: no logging\n\n'
    printf 'defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n'
    printf '    timeout http-keep-alive 60s\n    option http-keep-alive\n    http-reuse always\n\n'
    printf 'frontend fe\n    bind 127.0.0.1:%s proto h2 backlog 4096\n    default_backend be\n' "${PORT[haproxy]}"
    if [ "$HEADERS" = forwarded ]; then
      printf '    option forwardfor\n    http-request set-header X-Forwarded-Proto http\n'
      printf '    http-request set-header X-Forwarded-Host %%[req.hdr(host)]\n'
      printf '    http-request add-header Via "2 haproxy"\n    unique-id-format %%[uuid()]\n'
      printf '    unique-id-header X-Request-Id\n    http-response set-header X-Request-Id %%[unique-id]\n'
    fi
    printf '\nbackend be\n    balance uri\n    hash-type consistent\n'
    for i in 1 2 3 4; do printf '    server b%s 127.0.0.1:%s proto h2\n' "$i" "${BACKEND_PORTS[$((i - 1))]}"; done
  } >"$d/haproxy.cfg"
}

write_ringway_conf() {       # dir listen protocol backend-ports...: one pool, hash on the URI
  local d=$1 listen=$2 proto=$3 p
  shift 3
  mkdir -p "$d"
  {
    printf 'node: {id: h2bench, data_dir: %s/data}\n' "$d"
    printf 'listeners:\n  - address: 127.0.0.1:%s\n' "$listen"
    case $HEADERS in
      minimal) printf '    headers: {forwarded: false, via: false, request_id: false, traceparent: false}\n' ;;
      forwarded) printf '    headers: {traceparent: false}\n' ;;
    esac
    printf 'pools:\n  - name: bench\n    hash_key: uri\n    protocol: %s\n    upstreams:\n' "$proto"
    for p in "$@"; do printf '      - address: 127.0.0.1:%s\n' "$p"; done
  } >"$d/ringway.yaml"
}

# ------------------------------------------------------------ start / stop
start_backends() {
  local p
  write_backends_conf
  launch backends "$LOAD_CPU" nginx -p "$W/backends/" -e "$W/backends/error.log" \
    -c "$W/backends/nginx.conf" -g 'daemon off;'
  BACKEND_PID=$LAUNCHED
  for p in "${BACKEND_PORTS[@]}"; do
    wait_ready "$p" "$BACKEND_PID" 10 || die "backends failed: $(tail -5 "$W/logs/backends.out")"
  done
  log "backends up: nginx pid $BACKEND_PID, h2c ports ${BACKEND_PORTS[*]}"
}

start_target() {             # target -> PROXY_PID (empty for direct); UNDER_VALGRIND=out-file
  local t=$1 d=$W/$1 vg=() tmo=20
  PROXY_PID=""
  if [ -n "$UNDER_VALGRIND" ]; then
    vg=(valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$UNDER_VALGRIND"); tmo=120
  fi
  [ "$t" = direct ] && return 0
  port_busy "${PORT[$t]}" && { log "port ${PORT[$t]} is in use"; return 1; }
  case $t in
    nginx) write_nginx_conf "$d"
      launch "$t" "$PROXY_CPU" "${vg[@]}" nginx -p "$d/" -e "$d/error.log" -c "$d/nginx.conf" -g 'daemon off;' ;;
    haproxy) write_haproxy_conf "$d"
      launch "$t" "$PROXY_CPU" "${vg[@]}" haproxy -db -f "$d/haproxy.cfg" ;;
    ringway|ringway-h1up)
      if [ "$t" = ringway ]; then write_ringway_conf "$d" "${PORT[$t]}" h2c "${BACKEND_PORTS[@]}"
      else write_ringway_conf "$d" "${PORT[$t]}" http1 "${H1_BACKEND_PORTS[@]}"; fi
      RUST_LOG=warn launch "$t" "$PROXY_CPU" "${vg[@]}" "$BIN" run --config "$d/ringway.yaml" --threads 1 ;;
  esac
  PROXY_PID=$LAUNCHED
  if ! wait_ready "${PORT[$t]}" "$PROXY_PID" "$tmo"; then
    log "$t failed to start; its output:"; tail -20 "$W/logs/$t.out" >&2
    stop_tree "$PROXY_PID"; PROXY_PID=""; return 1
  fi
}

# --------------------------------------------------------------- load
uri_file() {                 # port client -> URI list for h2load -i, rotated for that client
  # h2load walks one list from the top in every client: clients sharing a list would ask
  # for the same path at the same moment (one hot backend), so each gets its own rotation.
  local f=$W/uris-$1-$2.txt
  [ -s "$f" ] || awk -v p="$1" -v n="$NURIS" -v off="$(( $2 * NURIS / CLIENTS ))" \
    'BEGIN { for (k = 0; k < n; k++) printf "http://127.0.0.1:%s/item/%d\n", p, (k + off) % n + 1 }' >"$f"
  echo "$f"
}

run_load() {                 # port secs rate(0/1) outfile [measured]
  local port=$1 secs=$2 rated=$3 out=$4 measured=${5:-0} j lf=() rate=()
  [ "$rated" = 1 ] && rate=("${RATE_OPT[@]}")
  rm -f "$out" "$out".*
  ( for ((j = 0; j < CLIENTS; j++)); do
      [ "$measured" = 1 ] && lf=(--log-file="$out.log.$j")
      taskset -c "$LOAD_CPU" timeout -k 5 $((secs + 30)) h2load -t 1 -c 1 -m "$STREAMS" "${rate[@]}" \
        "${REQ_HDRS[@]}" "${lf[@]}" -D "$secs" -i "$(uri_file "$port" "$j")" >"$out.$j" 2>&1 &
    done
    wait
    cat "$out".[0-9]* >"$out"; rm -f "$out".[0-9]*
    if [ "$measured" = 1 ]; then cat "$out".log.* >"$out.log" 2>/dev/null; rm -f "$out".log.*; fi
    exit 0 ) &
  LOAD_PID=$!
  wait "$LOAD_PID"
  LOAD_PID=""
}

parse_load() {               # outfile -> "rps done failed non200 p50_us p99_us" or FAIL
  local out=$1 sums pct
  sums=$(awk '/^finished in/ { rps += $4 }            # one block per h2load process
    /^requests:/ { done += $6; failed += $10 + $12 + $14 }
    END { if (done == 0) { print "FAIL"; exit } printf "%.1f %d %d", rps, done, failed }' "$out")
  [ "$sums" = FAIL ] && { echo FAIL; return; }
  # per-request log: start (µs since epoch) <tab> status <tab> µs to the end of the response
  pct=$(awk -F'\t' '$2 != 200 { bad++ } { print $3 > "/dev/stderr" } END { print bad + 0 }' "$out.log" 2>"$out.lat")
  pct="$pct $(sort -n "$out.lat" | awk '{ a[NR] = $1 } END { if (NR == 0) { print "- -"; exit }
      i = int(NR * 0.50); if (i < NR * 0.50) i++; j = int(NR * 0.99); if (j < NR * 0.99) j++
      printf "%d %d", a[i], a[j] }')"
  rm -f "$out.lat"
  # requests h2load counted done but that left no log line (cut off) count as not-200
  awk -v s="$sums" -v p="$pct" -v n="$(wc -l <"$out.log")" 'BEGIN { split(s, a, " "); split(p, b, " ")
    miss = a[2] - n; if (miss < 0) miss = 0
    printf "%s %d %d %s %s %s\n", a[1], a[2], a[3], b[1] + miss, b[2], b[3] }'
}

backend_accepts() {          # connections the backends have accepted so far (stub_status)
  curl -s --max-time 2 "http://127.0.0.1:$STATUS_PORT/" | awk 'NR == 3 { print $1 }'
}

backend_conns_open() {       # established connections into the backends now
  local f="" p
  for p in "${BACKEND_PORTS[@]}" "${H1_BACKEND_PORTS[@]}"; do f+="${f:+ or }sport = :$p"; done
  ss -Htn state established "( $f )" | wc -l
}

# System calls of the proxy, counted (perf stat, in-kernel counters) over the warm-up
# run only, so that the measured window carries no tracing cost.
SYSCALL_EVENTS=(raw_syscalls:sys_enter syscalls:sys_enter_write syscalls:sys_enter_writev
  syscalls:sys_enter_sendto syscalls:sys_enter_sendmsg syscalls:sys_enter_read syscalls:sys_enter_readv
  syscalls:sys_enter_recvfrom syscalls:sys_enter_recvmsg syscalls:sys_enter_epoll_wait syscalls:sys_enter_epoll_pwait)
SC_PID=""
syscalls_start() {           # file
  local pids ev=() e
  SC_PID=""
  [ "$SYSCALLS" = 1 ] && [ -n "$PROXY_PID" ] || return 0
  pids=$(tree_pids "$PROXY_PID" | paste -sd,)
  for e in "${SYSCALL_EVENTS[@]}"; do ev+=(-e "$e"); done
  taskset -c "$LOAD_CPU" perf stat -x, -o "$1" "${ev[@]}" -p "$pids" >/dev/null 2>&1 &
  SC_PID=$!
  ALIVE[$SC_PID]=perf-stat
  sleep 0.2                  # attached before the load starts
}

syscalls_stop() {            # perf stat writes its counts when interrupted
  [ -n "$SC_PID" ] || return 0
  kill -INT "$SC_PID" 2>/dev/null; wait "$SC_PID" 2>/dev/null; unset "ALIVE[$SC_PID]"; SC_PID=""
}

syscalls_per_req() {         # file requests -> "total/req writes/req reads/req polls/req"
  [ -s "$1" ] || { echo "- - - -"; return; }
  awk -F, -v r="$2" '$3 ~ /sys_enter/ { n = $1 + 0; e = $3
      if (e ~ /raw_syscalls/) tot += n
      else if (e ~ /_(write|writev|sendto|sendmsg)$/) wr += n
      else if (e ~ /_(read|readv|recvfrom|recvmsg)$/) rd += n
      else if (e ~ /epoll/) po += n }
    END { if (r + 0 == 0 || tot == 0) { print "- - - -"; exit }
          printf "%.2f %.2f %.2f %.2f\n", tot / r, wr / r, rd / r, po / r }' "$1"
}

cpu_stat() { grep '^cpu[0-9]' /proc/stat; }

cpu_busy() {                 # two /proc/stat snapshots -> "cpu0busy% cpu1busy%"
  printf '%s\n--\n%s\n' "$1" "$2" | awk -v l="cpu$LOAD_CPU" -v p="cpu$PROXY_CPU" '
    /^--/ { second = 1; next }
    { tot = 0; for (i = 2; i <= 9; i++) tot += $i; idle = $5 + $6
      if (!second) { T[$1] = tot; I[$1] = idle } else { dt = tot - T[$1]; if (dt <= 0) dt = 1; b[$1] = 100 * (dt - (idle - I[$1])) / dt } }
    END { printf "%.0f %.0f", b[l], b[p] }'
}

measure() {                  # scenario round target verify(0/1)
  local sc=$1 round=$2 t=$3 verify=$4 rated=1 port out p0 p1 b0 b1 a0 a1 s0 s1 t0 t1 rss parsed open sysc k0 k1 kus
  [ "$sc" = saturation ] && rated=0
  [ "$RPS" -gt 0 ] || rated=0
  port=${PORT[$t]}
  out=$W/logs/$sc.r$round.$t.txt
  log "[$sc] round $round: $t (port $port)"
  if ! start_target "$t"; then
    printf '%s\t%s\t%s\tstart-failed\n' "$sc" "$round" "$t" >>"$RESULTS"; return 1
  fi
  syscalls_start "$W/logs/$sc.r$round.$t.syscalls.txt"
  run_load "$port" "$WARMUP" "$rated" "$W/logs/$sc.r$round.$t.warmup.txt"
  syscalls_stop
  sysc=$(syscalls_per_req "$W/logs/$sc.r$round.$t.syscalls.txt" \
    "$(awk '/^requests:/ { d += $6 } END { print d + 0 }' "$W/logs/$sc.r$round.$t.warmup.txt")")
  a0=$(backend_accepts); k0=$(cpu_ticks "$PROXY_PID" sys); p0=$(cpu_ticks "$PROXY_PID"); b0=$(cpu_ticks "$BACKEND_PID"); s0=$(cpu_stat); t0=$(date +%s%N)
  run_load "$port" "$DURATION" "$rated" "$out" 1
  t1=$(date +%s%N); s1=$(cpu_stat); b1=$(cpu_ticks "$BACKEND_PID"); p1=$(cpu_ticks "$PROXY_PID"); k1=$(cpu_ticks "$PROXY_PID" sys)
  a1=$(backend_accepts)
  open=$(backend_conns_open)
  rss=$(peak_rss_kib "$PROXY_PID")
  parsed=$(parse_load "$out")
  local ok=1
  if [ "$parsed" = FAIL ]; then
    log "  h2load reported no finished request; see $out"
    printf '%s\t%s\t%s\tno-requests\n' "$sc" "$round" "$t" >>"$RESULTS"; ok=0
  else
    # shellcheck disable=SC2086
    set -- $parsed $(cpu_busy "$s0" "$s1")
    local rps=$1 req=$2 failed=$3 non200=$4 p50=$5 p99=$6 c0=$7 c1=$8 win pus putil bus conns
    win=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    if [ -n "$PROXY_PID" ] && [ "$p0" != - ] && [ "$p1" != - ]; then
      pus=$(awk -v d=$((p1 - p0)) -v hz="$CLK_TCK" -v r="$req" 'BEGIN { printf "%.2f", d / hz * 1e6 / r }')
      kus=$(awk -v d=$((k1 - k0)) -v hz="$CLK_TCK" -v r="$req" 'BEGIN { printf "%.2f", d / hz * 1e6 / r }')
      putil=$(awk -v d=$((p1 - p0)) -v hz="$CLK_TCK" -v w="$win" 'BEGIN { printf "%.0f", 100 * d / hz / w }')
    else pus=-; putil=-; rss=-; kus=-; fi
    bus=$(awk -v d=$((b1 - b0)) -v hz="$CLK_TCK" -v r="$req" 'BEGIN { printf "%.2f", d / hz * 1e6 / r }')
    conns=$(( ${a1:-0} - ${a0:-0} - 1 ))   # minus the status probe's own connection
    # one row: scenario round target ok rps requests failed non200 p50 p99 proxy_us/req
    # proxy_core% backends_us/req cpuL% cpuP% conns_opened rss_kib conns_open
    # syscalls/req writes/req reads/req polls/req proxy_sys_us/req
    # shellcheck disable=SC2206
    local row=("$sc" "$round" "$t" ok "$rps" "$req" "$failed" "$non200" "$p50" "$p99" "$pus" "$putil" "$bus"
               "$c0" "$c1" "$conns" "$rss" "$open" $sysc "$kus")
    (IFS=$'\t'; echo "${row[*]}") >>"$RESULTS"
    log "  $(printf '%.0f' "$rps") req/s, $req done, $failed failed, $non200 not 200, p50 ${p50}us p99 ${p99}us," \
      "proxy $pus us/req ($kus in the kernel; $putil% of a core), backends $bus us/req," \
      "cpu$LOAD_CPU $c0% cpu$PROXY_CPU $c1%, upstream conns opened $conns, open at the end $open;" \
      "warm-up syscalls/req (all writes reads polls) $sysc"
    { [ "$failed" = 0 ] && [ "$non200" = 0 ]; } || ok=0
  fi
  [ "$verify" = 1 ] && { verify_hash "$t" || ok=0; }
  stop_tree "$PROXY_PID"; PROXY_PID=""
  [ $ok = 1 ]
}

# -------------------------------------------------------- hashing check
fetch_paths() {              # port order(fwd/rev) outfile: "path status x-upstream" per request
  # nghttp sends every path as a stream of one h2c connection (curl 7.88 cannot reuse a
  # prior-knowledge connection) and prints each stream's request and response headers.
  local port=$1 order=$2 out=$3 urls
  urls=$(awk -v port="$port" -v n="$VERIFY_PATHS" -v o="$order" 'BEGIN { for (k = 1; k <= n; k++)
    printf "http://127.0.0.1:%s/item/%d\n", port, (o == "fwd" ? k : n + 1 - k) }')
  # shellcheck disable=SC2086
  timeout -k 5 120 nghttp -n -v "${REQ_HDRS[@]}" $urls 2>&1 | awk '
    /send HEADERS frame/ { match($0, /stream_id=[0-9]+/); sid = substr($0, RSTART + 10, RLENGTH - 10); next }
    sid != "" && $1 == ":path:" { path[sid] = $2; sid = ""; next }
    /recv \(stream_id=[0-9]+\) :status:/ { match($0, /stream_id=[0-9]+/); st[substr($0, RSTART + 10, RLENGTH - 10)] = $NF; next }
    /recv \(stream_id=[0-9]+\) x-upstream:/ { match($0, /stream_id=[0-9]+/); up[substr($0, RSTART + 10, RLENGTH - 10)] = $NF; next }
    END { for (i in path) printf "%s %s %s\n", path[i], (i in st) ? st[i] : "none", (i in up) ? up[i] : "NONE" }' >"$out"
}

verify_hash() {              # target: /item/1..V, then /item/V..1 on a second connection
  local t=$1 res
  fetch_paths "${PORT[$t]}" fwd "$W/verify/$t.1"
  fetch_paths "${PORT[$t]}" rev "$W/verify/$t.2"
  res=$(awk -v n="$VERIFY_PATHS" '
    { if ($2 != 200) bad++ }
    FNR == NR { first[$1] = $3; dist[$3]++; next }
    { if (($1 in first) && first[$1] == $3 && $3 != "NONE") same++ }
    END { got = NR; d = ""; used = 0; mx = 0
          for (b = 1; b <= 4; b++) { c = dist["b" b] + 0; d = d (b > 1 ? " " : "") "b" b "=" c; if (c) used++; if (c > mx) mx = c }
          bad += 2 * n - got
          printf "%d\t%d\t%d\t%s\t%.2f\t%s\n", n, same + 0, bad, d, mx / (n / 4),
            (same == n && bad == 0 && used == 4) ? "OK" : "FAIL" }' "$W/verify/$t.1" "$W/verify/$t.2")
  printf '%s\t%s\n' "$t" "$res" >>"$W/verify/hash.tsv"
  log "  hash check $t: $(echo "$res" | awk -F'\t' '{ printf "%s/%s paths on the same backend twice, %s not 200, %s: %s", $2, $1, $3, $4, $6 }')"
  [ "$(echo "$res" | cut -f6)" = OK ]
}

# ---------------------------------------------------- instructions (--instructions)
instructions_run() {         # target n -> CG_IR: main-thread instructions of a run of n requests
  local t=$1 n=$2 out=$W/cg/$1-$2 ok i
  CG_IR=""
  mkdir -p "$W/cg"
  UNDER_VALGRIND=$out start_target "$t" || return 1
  ok=$(taskset -c "$LOAD_CPU" timeout -k 5 600 h2load -n "$n" -c 1 -m 1 "${REQ_HDRS[@]}" \
    -i "$(uri_file "${PORT[$t]}" 0)" 2>&1 | tee "$W/logs/cg-$t-$n.txt" | awk '/^status codes:/ { print $3 }')
  kill -TERM "$PROXY_PID" 2>/dev/null           # callgrind writes its files on exit
  for ((i = 0; i < 600 && $(tree_pids "$PROXY_PID" | wc -l) > 0; i++)); do sleep 0.1; done
  stop_tree "$PROXY_PID"; PROXY_PID=""
  [ "${ok:-0}" = "$n" ] || { log "  $t under callgrind: only ${ok:-0} of $n requests got 2xx"; return 1; }
  # thread 1 is the main thread: ringway's one runtime thread, HAProxy's and nginx's loop
  CG_IR=$(awk '/^summary:/ { print $2 }' "$out-01" 2>/dev/null)
  [ -n "$CG_IR" ]
}

instructions() {             # -> $W/instructions.tsv: target n1 i1 n2 i2 per-request
  local n1=${INSTR%,*} n2=${INSTR#*,} t i1 i2
  for t in "${T_LIST[@]}"; do
    [ "$t" = direct ] && continue
    log "[instructions] $t under callgrind: $n1 then $n2 requests"
    if instructions_run "$t" "$n1"; then i1=$CG_IR; else i1=""; fi
    if [ -n "$i1" ] && instructions_run "$t" "$n2"; then i2=$CG_IR; else i2=""; fi
    if [ -z "$i1" ] || [ -z "$i2" ]; then printf '%s\tFAILED\n' "$t" >>"$W/instructions.tsv"; return 1; fi
    printf '%s\t%s\t%s\t%s\t%s\t%.0f\n' "$t" "$n1" "$i1" "$n2" "$i2" "$(awk -v a="$i1" -v b="$i2" -v n="$n1" -v m="$n2" 'BEGIN { print (b - a) / (m - n) }')" \
      >>"$W/instructions.tsv"
    log "  $(tail -1 "$W/instructions.tsv" | cut -f6) instructions per request"
  done
}

# ------------------------------------------------------------ profile (--perf)
perf_profile() {
  local out=$W/logs/perf.fixed.ringway.txt
  log "[perf] one more fixed-rate ringway run under perf record"
  start_target ringway || return 1
  run_load "${PORT[ringway]}" "$WARMUP" 1 "$W/logs/perf.warmup.txt"
  # DWARF unwinding: the release build keeps line tables but no frame pointers.
  perf record -q --call-graph dwarf,16384 -F 999 -p "$PROXY_PID" -o "$W/perf.data" -- sleep "$DURATION" \
    >"$W/logs/perf-record.out" 2>&1 &
  local perf_pid=$!
  run_load "${PORT[ringway]}" "$DURATION" 1 "$out"
  wait "$perf_pid"
  stop_tree "$PROXY_PID"; PROXY_PID=""
  perf_table dso >"$W/perf.dso.txt"
  perf_table dso,symbol | head -30 >"$W/perf.top.txt"
  perf script -i "$W/perf.data" -F ip,sym 2>/dev/null | perf_components >"$W/perf.components.txt"
}

perf_components() {          # perf script call chains -> share of samples per part of ringway
  # Each sample goes to the innermost marked frame of its chain: the request path's own
  # code, hyper/h2 on the client side (connection, stream tasks) or on the upstream side
  # (connection and hyper's per-request client tasks); user and kernel counted apart.
  # Then, across parts: HPACK, malloc/free and hyper's per-request upstream task.
  awk 'BEGIN { RS = ""; FS = "\n" }
    function frame(i,   s) { s = $i; sub(/^[ \t]*[0-9a-f]+ /, "", s); return s }
    { tot++; leaf = $1; sub(/^[ \t]*/, "", leaf); kern = (leaf ~ /^ffffffff/); part = "other: runtime, timers, accept"
      for (i = 1; i <= NF; i++) { s = frame(i)
        if (s ~ /^ringway::proxy::Proxy::|^ringway::proxy::send|HttpService<B1>>::call/) { part = "ringway request handling (routing, hashing, headers, send)"; break }
        if (s ~ /H2Stream<F,B,Ex> as core::future::future::Future>::poll/) { part = "client side: hyper server stream tasks"; break }
        if (s ~ /h2::server::Connection<T,B>::poll_accept|hyper::proto::h2::server/) { part = "client side: h2 connection (frames, HPACK, flow control)"; break }
        if (s ~ /H2ClientFuture|hyper::proto::h2::client|handshake_h2/) { part = "upstream side: h2 connection and per-request client tasks"; break }
        if (s ~ /ProxyBody as http_body::Body/) { part = "response body relay"; break } }
      n[part]++; if (kern) k[part]++
      if (kern) next
      for (i = 1; i <= NF; i++) { s = frame(i)
        if (s ~ /malloc|free|realloc/) { x["malloc/free (user)"]++; break }
        if (s ~ /hpack::encoder|into_encoding/) { x["HPACK encode (user)"]++; break }
        if (s ~ /hpack::decoder|HeaderBlock::load/) { x["HPACK decode (user)"]++; break }
        if (s ~ /execute_h2_future|SendWhen/) { x["hyper: a task spawned per upstream request (user)"]++; break } } }
    END { if (!tot) exit
      for (p in n) printf "%5.1f%% (kernel %4.1f%%)  %s\n", 100 * n[p] / tot, 100 * k[p] / tot, p
      for (p in x) printf "%5.1f%%  across parts: %s\n", 100 * x[p] / tot, p
      printf "samples: %d\n", tot }' | sort -rn
}

perf_table() {               # sort keys -> "share  key..." lines of self time, no call chains
  perf report -i "$W/perf.data" --stdio --no-children -g none --sort "$1" --percent-limit 0.5 2>/dev/null |
    awk '/^ +[0-9.]+%/ { sub(/[ -]+$/, ""); $1 = $1; print }'
}

# ------------------------------------------------------------------ report
report() {
  local rev
  rev=$(git -C "$HERE" rev-parse --short HEAD 2>/dev/null)$(git -C "$HERE" diff --quiet 2>/dev/null || echo "+dirty")
  echo "# HTTP/2 upstreams: h2c clients -> proxy -> 4 h2c backends ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "- machine: $(nproc) CPUs, $(lscpu 2>/dev/null | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), kernel $(uname -r); load average at the end $(cut -d' ' -f1-3 /proc/loadavg); other load: $OTHER_LOAD"
  echo "- versions: nginx $(nginx -v 2>&1 | sed 's/^nginx version: nginx\///'); haproxy $(haproxy -v 2>/dev/null | head -1 | awk '{print $3}'); h2load $(h2load --version 2>/dev/null | awk '{print $2}'); ringway $rev ($BIN, built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC' 2>/dev/null))"
  echo "- load: $CLIENTS clients, each its own \`h2load -c1 -m$STREAMS${RATE_OPT[*]:+ ${RATE_OPT[*]}}\` process (h2c prior knowledge) over its own rotation of /item/1..$NURIS$( [ "$GRPC" = 1 ] && echo ', gRPC-shaped (content-type: application/grpc, te: trailers)'); ${DURATION}s measured after ${WARMUP}s warm-up; $ROUNDS interleaved round(s), order rotated, a fresh proxy every run$( [ ${#SCENARIOS[@]} -gt 1 ] && echo '; saturation = the same clients with no rate limit (closed loop)')"
  echo "- proxies: 1 worker / 1 thread on CPU $PROXY_CPU; h2load and the backends (one nginx worker, 4 h2c ports) on CPU $LOAD_CPU; hash on the URI, consistent; header work: $HEADERS"
  echo "  - ringway: \`protocol: h2c\`, \`hash_key: uri\`, http2 defaults (4 connections x 100 streams per upstream), \`run --threads 1\`"
  echo "  - haproxy: \`balance uri\`, \`hash-type consistent\`, \`server ... proto h2\`, \`http-reuse always\`, \`nbthread 1\`"
  case " ${T_LIST[*]} " in *" ringway-h1up "*)
    echo "  - ringway-h1up: ringway with \`protocol: http1\` to the same backends' HTTP/1.1 ports (pooled keep-alive connections), otherwise as ringway" ;; esac
  echo "  - nginx: \`grpc_pass\` to \`upstream { hash \$request_uri consistent; keepalive 256; }\`, \`worker_processes 1\`"
  echo "- CPU us/req = proxy utime+stime (/proc, whole process tree, all threads) over the measured window / requests completed; medians over rounds; 'vs best peer' = median of per-round ratios to the lower of haproxy and nginx in that round; 'upstream conns' = connections into the backends open at the end of the measured window / accepted during it (for direct: h2load's own $CLIENTS); syscalls/req counted over the warm-up runs (perf stat), never in the measured window"
  echo
  if [ -s "$RESULTS" ]; then   # timing rounds ran (not only --instructions)
  awk -F'\t' -v to="$TARGETS" -v sc="${SCENARIOS[*]}" '
    function med(s,   a, n, i, j, x) { n = split(s, a, " "); if (n == 0) return "-"
      for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    function add(k, c, x) { if (x != "-" && x != "") v[k, c] = v[k, c] " " x }
    $4 != "ok" { bad[$1, $3] = bad[$1, $3] " r" $2 ":" $4; next }
    { k = $1 SUBSEP $3; for (c = 5; c <= 23; c++) add(k, c, $c); cpu[$1, $2, $3] = $11; rounds[$1] = rounds[$1] " " $2
      tot[k, 6] += $6; tot[k, 7] += $7; tot[k, 8] += $8 }
    END {
      nt = split(to, T, ","); ns = split(sc, S, " ")
      print "| scenario | target | req/s | p50 ms | p99 ms | requests | failed | not 200 | proxy CPU us/req | of it kernel | vs best peer | proxy core % | upstream conns open / opened | backends us/req | peak RSS MiB | proxy syscalls/req (writes, reads, polls) | CPU us/req per round |"
      print "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
      for (a = 1; a <= ns; a++) for (c = 1; c <= nt; c++) {
        s = S[a]; t = T[c]; k = s SUBSEP t
        if (!((k, 5) in v)) { if ((s, t) in bad) printf "| %s | %s | FAILED:%s |||||||||||||||\n", s, t, bad[s, t]; continue }
        rr = ""; n = split(rounds[s], RD, " "); delete seen
        for (i = 1; i <= n; i++) { r = RD[i]; if (seen[r]++) continue
          x = cpu[s, r, t]; h = cpu[s, r, "haproxy"]; g = cpu[s, r, "nginx"]; best = ""
          if (h != "" && h != "-") best = h; if (g != "" && g != "-" && (best == "" || g + 0 < best + 0)) best = g
          if (x != "" && x != "-" && best != "" && best > 0) rr = rr " " x / best }
        pr = v[k, 11]; gsub(/^ /, "", pr); gsub(/ /, " / ", pr)
        rss = med(v[k, 17])
        printf "| %s | %s | %.0f | %.2f | %.2f | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s, t,
          med(v[k, 5]), med(v[k, 9]) / 1000, med(v[k, 10]) / 1000, tot[k, 6], tot[k, 7], tot[k, 8],
          (t == "direct" ? "-" : med(v[k, 11])), (t == "direct" ? "-" : med(v[k, 23])), (t == "direct" || rr == "" ? "-" : sprintf("%.2f", med(rr))),
          (t == "direct" ? "-" : med(v[k, 12])), med(v[k, 18]) " / " med(v[k, 16]), sprintf("%.2f", med(v[k, 13])),
          (rss == "-" ? "-" : sprintf("%.1f", rss / 1024)),
          (t == "direct" || med(v[k, 19]) == "-" ? "-" : sprintf("%.1f (%.1f, %.1f, %.1f)", med(v[k, 19]), med(v[k, 20]), med(v[k, 21]), med(v[k, 22]))),
          (t == "direct" ? "-" : pr)
        if ((s, t) in bad) printf "| %s | %s | also failed:%s |||||||||||||||\n", s, t, bad[s, t]
      }
    }' "$RESULTS"
  echo
  echo "Hashing check (right after each proxy's last measured run): GET /item/1..$VERIFY_PATHS as streams of one h2c connection, then /item/$VERIFY_PATHS..1 on a second"
  echo
  echo "| target | same backend both times | not 200 | paths per backend (first pass) | busiest / mean | verdict |"
  echo "|---|--:|--:|---|--:|---|"
  awk -F'\t' '{ printf "| %s | %d / %d | %d | %s | %s | %s |\n", $1, $3, $2, $4, $5, $6, $7 }' "$W/verify/hash.tsv"
  fi
  if [ -s "$W/instructions.tsv" ]; then
    echo
    echo "User-space instructions per request under callgrind (main thread; one h2c connection, one stream at a time, (I2 - I1) / (N2 - N1)):"
    echo
    echo "| target | instructions per request | N1 / N2 requests |"
    echo "|---|--:|--:|"
    awk -F'\t' '$2 == "FAILED" { printf "| %s | FAILED | |\n", $1; next }
      { printf "| %s | %d | %d / %d |\n", $1, $6, $2, $4 }' "$W/instructions.tsv"
  fi
  if [ -s "$W/perf.top.txt" ]; then
    echo
    echo "ringway profile (perf record, DWARF call graphs, one more fixed-rate run; self time by shared object, then by symbol; perf.data in the work dir):"
    echo
    echo '```'
    cat "$W/perf.dso.txt"
    echo
    cat "$W/perf.top.txt"
    echo
    cat "$W/perf.components.txt"
    echo '```'
  fi
}

# ------------------------------------------------------------------- main
for p in "${BACKEND_PORTS[@]}" "${H1_BACKEND_PORTS[@]}" "$STATUS_PORT" "${PORT[@]}"; do
  port_busy "$p" && die "port $p is already in use (not ours); pick another --port-base"
done
OTHER_LOAD="$(pgrep -f raft_sim | wc -l) raft_sim processes at the start"
log "work dir $W; targets $TARGETS; scenarios ${SCENARIOS[*]}; $ROUNDS round(s); $OTHER_LOAD"
: >"$RESULTS"; : >"$W/verify/hash.tsv"
start_backends
FAILED=0
for ((r = 1; r <= ROUNDS; r++)); do
  for sc in "${SCENARIOS[@]}"; do
    for ((k = 0; k < NT; k++)); do
      t=${T_LIST[$(( (k + r - 1) % NT ))]}
      vfy=0
      [ "$r" = "$ROUNDS" ] && [ "$sc" = "${SCENARIOS[0]}" ] && [ "$t" != direct ] && vfy=1
      measure "$sc" "$r" "$t" "$vfy" || FAILED=1
    done
  done
done
if [ -n "$INSTR" ]; then instructions || FAILED=1; fi
if [ "$PERF" = 1 ] && [[ " ${T_LIST[*]} " == *" ringway "* ]]; then perf_profile || FAILED=1; fi
OTHER_LOAD="$OTHER_LOAD, $(pgrep -f raft_sim | wc -l) at the end"
report >"$W/report.md"
[ -n "$OUT" ] && cp "$W/report.md" "$OUT"
cat "$W/report.md"
grep -q 'FAIL' "$W/report.md" && FAILED=1
log "report: $W/report.md${OUT:+ and $OUT}; raw rows: $RESULTS"
exit $(( FAILED ? 1 : 0 ))
