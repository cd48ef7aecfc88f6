#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after another.
#
#   scripts/fuzz.sh [SECONDS]
#   FUZZ_TARGETS="config storage" scripts/fuzz.sh 1200     # only some targets
#
# Needs the nightly toolchain; installs cargo-fuzz if it is missing. Each target starts
# from its committed seeds (fuzz/corpus/<target>/, fuzz/regressions/<target>/) and keeps
# what it discovers in fuzz/work/<target>/ (not committed). A crash, leak, timeout or
# out-of-memory input is written to fuzz/artifacts/<target>/; copy it into
# fuzz/regressions/<target>/ so `cargo test --test units fuzz_corpus::` replays it from then on.
# Prints executions, coverage and the outcome per target; exits 1 if any target failed.
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
# Memory a target may use before libFuzzer calls it a failure: far above what any
# parser needs for inputs of a few KB, below what would hurt a shared machine.
RSS_LIMIT_MB=2048
# One input taking longer than this is reported as a hang (a parse that stalls).
INPUT_TIMEOUT_S=10
ALL_TARGETS="config hash_key raft_codec transport storage admin_json"
TARGETS="${FUZZ_TARGETS:-$ALL_TARGETS}"

cd "$(dirname "$0")/../fuzz"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz
fi
# The storage target writes a small data dir per input: keep that in memory if we can.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi

nice -n 19 cargo +nightly fuzz build -O

failed=0
for target in $TARGETS; do
    mkdir -p "work/$target" "corpus/$target" "regressions/$target" "artifacts/$target"
    log="work/$target.log"
    set +e
    nice -n 19 cargo +nightly fuzz run -O "$target" "work/$target" "corpus/$target" \
        "regressions/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb="$RSS_LIMIT_MB" \
        -timeout="$INPUT_TIMEOUT_S" -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
    if [ "$status" -eq 0 ]; then
        outcome="nothing found"
    else
        failed=1
        artifact=$(grep -o 'Test unit written to .*' "$log" | tail -1 | sed 's/Test unit written to //' || true)
        outcome="FAILED (exit $status): ${artifact:-see fuzz/$log}"
    fi
    printf '%-12s %12s execs  cov %6s  %s\n' "$target" "${execs:-?}" "${cov:-?}" "$outcome"
done
exit "$failed"
