#!/usr/bin/env bash
# A three-instance ringway cluster on this machine, narrated step by step.
#
#   scripts/cluster-demo.sh           # interactive: Enter moves to the next step
#   scripts/cluster-demo.sh --auto    # every step without waiting (also DEMO_STEPS=auto)
#
# Starts four `ringway echo` upstreams and three `ringway run` instances on 127.0.0.1
# (ports DEMO_PORT_BASE+1 .. DEMO_PORT_BASE+33; default base 47100), prints the status
# page's address, then walks through: where a key goes on every instance; killing the
# leader and watching the failover; stopping an upstream and watching all three eject
# it; bringing it back. Each step checks what it shows and says PASS or FAIL. Ctrl-C
# (or the end of --auto) stops every process and removes the temporary directory.
#
# It builds the debug binary first (`cargo build`; DEMO_PROFILE=release for an
# optimised one). RINGWAY_BIN=/path/to/ringway skips the build and uses that binary.
# Needs curl.
set -euo pipefail
cd "$(dirname "$0")/.."

auto=0
case "${1:-}" in
  --auto) auto=1 ;;
  "") ;;
  -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--auto]" >&2; exit 2 ;;
esac
[[ "${DEMO_STEPS:-}" == auto ]] && auto=1

base=${DEMO_PORT_BASE:-47100}
if ! [[ "$base" =~ ^[0-9]+$ ]] || (( base < 1024 || base > 65000 )); then
  echo "DEMO_PORT_BASE must be a number from 1024 to 65000, got '$base'" >&2
  exit 2
fi
# How long (seconds) a step waits for the cluster before it counts as failed.
patience=${DEMO_PATIENCE:-30}
command -v curl >/dev/null || { echo "the demo needs curl: apt-get install -y curl" >&2; exit 2; }

names=(n1 n2 n3)
echo_port() { echo $((base + $1)); }          # upstream i = 1..4
listen_port() { echo $((base + 10 + $1)); }   # instance i = 1..3
admin_port() { echo $((base + 20 + $1)); }
raft_port() { echo $((base + 30 + $1)); }

bold() { if [[ -t 1 ]]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
say() { printf '  %s\n' "$*"; }

cat <<EOF

  ringway cluster demo
  Status page: http://127.0.0.1:$(admin_port 1)/   (n1; n2 and n3 on :$(admin_port 2) and :$(admin_port 3))
  Open it in a browser now: it follows every step below.

EOF

# --- build ------------------------------------------------------------------------
if [[ -n "${RINGWAY_BIN:-}" ]]; then
  bin=$RINGWAY_BIN
  [[ -x "$bin" ]] || { echo "RINGWAY_BIN=$bin is not an executable" >&2; exit 2; }
else
  profile=${DEMO_PROFILE:-debug}
  flags=()
  [[ "$profile" == release ]] && flags=(--release)
  bold "Building ringway ($profile). The first build takes minutes; cargo shows its progress:"
  cargo build "${flags[@]}" --bin ringway
  bin=${CARGO_TARGET_DIR:-target}/$profile/ringway
fi

# --- processes and cleanup --------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/ringway-demo.XXXXXX")
declare -A pid=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "stopping everything"; exit 130' INT TERM

start_echo() {  # i
  "$bin" echo --listen "127.0.0.1:$(echo_port "$1")" --name "up$1" >>"$work/up$1.log" 2>&1 &
  pid[up$1]=$!
}
stop_echo() {
  kill "${pid[up$1]}" 2>/dev/null || true
  wait "${pid[up$1]}" 2>/dev/null || true
  unset "pid[up$1]"
}

write_config() {  # i
  local i=$1 peers="" ups=""
  for j in 1 2 3; do peers+="n$j: 127.0.0.1:$(raft_port "$j"), "; done
  for j in 1 2 3 4; do ups+="{id: up$j, address: \"127.0.0.1:$(echo_port "$j")\"}, "; done
  cat >"$work/n$i.yaml" <<EOF
node: {id: n$i, data_dir: "$work/n$i"}
cluster:
  address: 127.0.0.1:$(raft_port "$i")
  peers: {${peers%, }}
  heartbeat_ms: 100
  election_timeout_ms: 1000
  secret_file: "$work/cluster.secret"
listeners: [{address: "127.0.0.1:$(listen_port "$i")"}]
admin: {address: "127.0.0.1:$(admin_port "$i")", token_file: "$work/token"}
pools:
  - name: web
    hash_key: path
    connect_timeout_ms: 500
    upstreams: [${ups%, }]
    health:
      active: {path: /healthz, interval_ms: 500, timeout_ms: 400, fall: 2, rise: 1}
      breaker: {base_ejection_ms: 5000, max_ejection_ms: 20000, half_open_successes: 2, probe_interval_ms: 500, min_reporters: 2}
EOF
}

start_node() {  # i
  NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "$bin" run --config "$work/n$1.yaml" >>"$work/n$1.log" 2>&1 &
  pid[n$1]=$!
}
kill_node() {
  kill -9 "${pid[n$1]}" 2>/dev/null || true
  wait "${pid[n$1]}" 2>/dev/null || true
  unset "pid[n$1]"
}

# --- reading the cluster ----------------------------------------------------------
get() {  # admin port, path
  curl -sf --max-time 2 "http://127.0.0.1:$1$2" 2>/dev/null || true
}
leader_of() {  # i: the leader instance i names, if any
  get "$(admin_port "$1")" /api/cluster | sed -n 's/^  "leader": "\(.*\)",\{0,1\}$/\1/p'
}
role_of() {
  get "$(admin_port "$1")" /api/cluster | sed -n 's/^  "role": "\(.*\)",\{0,1\}$/\1/p'
}
breaker_of() {  # i, upstream: the breaker state instance i exports
  get "$(admin_port "$1")" /metrics |
    sed -n "s/^ringway_upstream_breaker_state{pool=\"web\",state=\"\([a-z_]*\)\",upstream=\"$2\"} 1\$/\1/p"
}
bootstrapped() {  # i: instance i applied the cluster's pools
  get "$(admin_port "$1")" /api/pools | grep -q '"replicated": \['
}
route_on() {  # i, key: the upstream instance i sends key to
  get "$(admin_port "$1")" "/api/route?pool=web&key=$2" | sed -n 's/^  "upstream": "\(.*\)",\{0,1\}$/\1/p'
}

# until DESCRIPTION COMMAND...: retries COMMAND every 0.2 s for $patience seconds.
until_ok() {
  local what=$1; shift
  local deadline=$((SECONDS + patience))
  while ! "$@"; do
    if ((SECONDS >= deadline)); then
      say "gave up after ${patience} s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
alive() { local out=(); for i in 1 2 3; do [[ -n "${pid[n$i]:-}" ]] && out+=("$i"); done; echo "${out[@]}"; }
agreed_leader() {  # every running instance names the same leader; sets $leader
  local first="" l
  for i in $(alive); do
    l=$(leader_of "$i")
    [[ -n "$l" ]] || return 1
    [[ -z "$first" || "$l" == "$first" ]] || return 1
    first=$l
  done
  leader=$first
}
all_bootstrapped() { for i in $(alive); do bootstrapped "$i" || return 1; done; }
all_breakers() {  # upstream, state
  for i in $(alive); do [[ "$(breaker_of "$i" "$1")" == "$2" ]] || return 1; done
}
new_leader() { agreed_leader && [[ "$leader" != "$old_leader" ]]; }

# --- steps --------------------------------------------------------------------------
passed=0
failed=0
step_no=0
step() {  # title; explanation lines follow as arguments
  step_no=$((step_no + 1))
  echo
  bold "Step $step_no: $1"
  shift
  for line in "$@"; do say "$line"; done
  if ((auto == 0)); then
    read -r -p "  [Enter to run it] " _ || true
  fi
}
result() {  # status of the check just run
  if [[ $1 == 0 ]]; then
    passed=$((passed + 1)); say "PASS"
  else
    failed=$((failed + 1)); say "FAIL (logs: $work/*.log)"
  fi
}

bold "Starting four upstreams and three instances (files and logs in $work)"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/cluster.secret"
chmod 600 "$work/cluster.secret"
echo "demo-token" >"$work/token"
for j in 1 2 3 4; do start_echo "$j"; done
for i in 1 2 3; do write_config "$i"; start_node "$i"; done

step "the three instances elect a leader and agree on the pool" \
  "Each instance starts serving its file at once; the first leader proposes the file's" \
  "pools to the cluster, and every instance applies them at the same log position." \
  "Watch: curl -s 127.0.0.1:$(admin_port 1)/api/cluster"
status=0
until_ok "a leader" agreed_leader && until_ok "the pools applied on all three" all_bootstrapped || status=1
[[ $status == 0 ]] && say "leader: $leader"
result $status

keys=(/users/1 /users/2 /cart/7 /img/logo.png)
step "where a key goes, on every instance" \
  "The same key lands on the same upstream whichever instance it reaches." \
  "Try: $bin route --live --config $work/n1.yaml ${keys[*]}" \
  "  or curl -s '127.0.0.1:$(admin_port 2)/api/route?pool=web&key=/users/1'" \
  "  or curl -s 127.0.0.1:$(listen_port 3)/users/1   (the echo upstream answers with its name)"
status=0
for k in "${keys[@]}"; do
  row=""
  for i in 1 2 3; do row+=" n$i:$(route_on "$i" "$k")"; done
  say "$(printf '%-14s' "$k")$row"
  set -- $row
  [[ "${1#*:}" != "" && "${1#*:}" == "${2#*:}" && "${2#*:}" == "${3#*:}" ]] || status=1
done
served=$(curl -sf --max-time 2 "127.0.0.1:$(listen_port 3)/users/1" || true)
say "GET /users/1 through n3: ${served:-no answer}"
[[ "$served" == "$(route_on 1 /users/1) "* ]] || status=1
result $status

old_leader=$leader
step "kill the leader ($old_leader) and watch the failover" \
  "kill -9 $old_leader: the other two elect a new leader within a few election timeouts;" \
  "requests keep being served meanwhile (the data plane never waits on the cluster)." \
  "On the status page, the leader changes (open another instance's page once $old_leader is gone)."
status=0
killed_at=$(now_ms)
kill_node "${old_leader#n}"
until_ok "a new leader" new_leader || status=1
if [[ $status == 0 ]]; then
  say "new leader: $leader, $(( $(now_ms) - killed_at )) ms after the kill (as seen by polling every 0.2 s)"
  for i in $(alive); do
    served=$(curl -sf --max-time 2 "127.0.0.1:$(listen_port "$i")/users/2" || true)
    say "GET /users/2 through n$i: ${served:-no answer}"
    [[ -n "$served" ]] || status=1
  done
fi
say "restarting $old_leader: it rejoins as a follower and catches up"
start_node "${old_leader#n}"
until_ok "$old_leader back with the agreed leader" agreed_leader || status=1
until_ok "$old_leader applying the pools again" all_bootstrapped || status=1
result $status

step "stop upstream up2 and watch all three eject it" \
  "Every instance's active check fails on up2; two reports (min_reporters: 2) make the" \
  "cluster eject it, and all three skip it on the ring from the same log position." \
  "On the status page, up2's arcs turn hatched and its row says ejected."
status=0
stopped_at=$(now_ms)
stop_echo 2
until_ok "up2 ejected on all three" all_breakers up2 open || status=1
say "ejected everywhere $(( $(now_ms) - stopped_at )) ms after the stop"
for i in 1 2 3; do say "n$i: up2 is $(breaker_of "$i" up2)"; done
k=""
for c in "${keys[@]}" /a /b /c /d /e /f /g /h; do
  [[ "$(route_on 1 "$c")" == up2 ]] && { k=$c; break; }
done
if [[ -n "$k" ]]; then
  served=$(curl -sf --max-time 2 "127.0.0.1:$(listen_port 2)$k" || true)
  say "GET $k (a key of up2) through n2: ${served:-no answer}"
  [[ -n "$served" && "$served" != up2* ]] || status=1
fi
result $status

step "bring up2 back" \
  "After its ejection time (5 s here) the leader probes up2; two passing probes close" \
  "its breaker, on every instance at once, and its keys come back to it."
status=0
start_echo 2
until_ok "up2 readmitted on all three" all_breakers up2 closed || status=1
for i in 1 2 3; do say "n$i: up2 is $(breaker_of "$i" up2)"; done
if [[ -n "$k" ]]; then
  served=$(curl -sf --max-time 2 "127.0.0.1:$(listen_port 2)$k" || true)
  say "GET $k through n2: ${served:-no answer}"
  [[ "$served" == up2* ]] || status=1
fi
result $status

echo
if ((failed == 0)); then
  bold "All $passed steps passed."
else
  bold "$failed of $((passed + failed)) steps failed."
fi
if ((auto == 1)); then
  ((failed == 0)) && exit 0 || exit 1
fi
say "The cluster keeps running: the status page is at http://127.0.0.1:$(admin_port 1)/"
say "Ctrl-C stops everything."
while true; do sleep 3600 & pid[pause]=$!; wait "${pid[pause]}" || true; done
