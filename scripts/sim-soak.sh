#!/usr/bin/env bash
# Soaks the Raft simulator: SEEDS seeds across every core, on the release test binary.
#
#   scripts/sim-soak.sh SEEDS [FIRST]      # seeds FIRST..FIRST+SEEDS-1 (FIRST defaults to 0)
#   SOAK_JOBS=1 scripts/sim-soak.sh 1000   # fewer processes than cores
#
# Builds `tests/raft_sim.rs` in release (niced), splits the seed range into one
# contiguous range per job, and runs each range in its own niced process with one
# simulator thread, through every seed even after a failure. Prints seeds per second
# and every failing seed with what broke and the command that replays it with a full
# trace. Exits 1 if any seed failed, 2 on usage or build errors.
set -euo pipefail

usage() {
    echo "usage: scripts/sim-soak.sh SEEDS [FIRST]" >&2
    exit 2
}
[[ $# -ge 1 && $# -le 2 ]] || usage
SEEDS="$1"
FIRST="${2:-0}"
[[ "$SEEDS" =~ ^[0-9]+$ && "$SEEDS" -gt 0 && "$FIRST" =~ ^[0-9]+$ ]] || usage
JOBS="${SOAK_JOBS:-$(nproc)}"
[[ "$JOBS" =~ ^[0-9]+$ && "$JOBS" -gt 0 ]] || usage
# Soaks share the machine with builds and other work: stay out of their way.
NICE=10

cd "$(dirname "$0")/.."

echo "building the release simulator test binary"
BIN=$(nice -n "$NICE" cargo test --release --test raft_sim --no-run --message-format=json \
    | grep '"name":"raft_sim"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [[ -z "$BIN" || ! -x "$BIN" ]]; then
    echo "sim-soak: could not find the raft_sim test binary" >&2
    exit 2
fi

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/sim-soak.XXXXXX")
trap 'rm -rf "$LOGS"' EXIT

echo "running seeds $FIRST..$((FIRST + SEEDS - 1)) in $JOBS processes (logs in $LOGS while running)"
START=$(date +%s.%N)
PIDS=()
per=$(((SEEDS + JOBS - 1) / JOBS))
for ((j = 0; j < JOBS; j++)); do
    lo=$((FIRST + j * per))
    count=$((SEEDS - j * per))
    ((count > per)) && count=$per
    ((count <= 0)) && break
    RINGWAY_SIM_FIRST_SEED=$lo RINGWAY_SIM_SEEDS=$count RINGWAY_SIM_THREADS=1 RINGWAY_SIM_KEEP_GOING=1 \
        nice -n "$NICE" "$BIN" seeds --exact --nocapture >"$LOGS/job$j.log" 2>&1 &
    PIDS+=("$!")
done

failed=0
for j in "${!PIDS[@]}"; do
    if ! wait "${PIDS[$j]}"; then
        failed=1
    fi
done
END=$(date +%s.%N)

for log in "$LOGS"/job*.log; do
    if grep -q '^seed=' "$log"; then
        grep -E '^(seed=|replay:)' "$log"
        nfail=$((${nfail:-0} + $(grep -c '^seed=' "$log")))
    elif ! grep -q 'seeds from .* passed' "$log"; then
        echo "sim-soak: a job ended without a result:" >&2
        tail -n 20 "$log" >&2
        failed=1
    fi
done

awk -v n="$SEEDS" -v s="$START" -v e="$END" \
    'BEGIN { t = e - s; printf "%d seeds in %.1f s: %.0f seeds/s\n", n, t, n / t }'
if ((failed)); then
    echo "sim-soak: FAILED (${nfail:-0} failing seeds of $SEEDS)"
    exit 1
fi
echo "sim-soak: all $SEEDS seeds passed"
