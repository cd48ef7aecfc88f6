#!/usr/bin/env bash
# The nemesis against real processes (tests/cluster/nemesis.rs): five `ringway run` instances
# behind relays, clients recording every change's outcome, kills, partitions, slow
# links and paused processes chosen by the seed; then the checker. Release build.
#
#   scripts/nemesis.sh [--seconds N] [--seed S] [--dev]   (defaults: 600 s, seed 1)
#
# --dev uses the test build `cargo test` made instead of building a release one.
#
# Prints a summary line (operations by outcome, faults injected, proxied requests);
# on a violation, the seed, the violations and the whole history, and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=600
seed=1
profile=(--release)
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --dev) profile=(); shift ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $seconds$seed in *[!0-9]*) echo "--seconds and --seed take whole numbers" >&2; exit 2 ;; esac
[ ${#profile[@]} -eq 0 ] || echo "building the release test binary (the first build takes several minutes)..." >&2
NEMESIS_SECONDS=$seconds NEMESIS_SEED=$seed \
  cargo test "${profile[@]}" --test cluster -- --ignored --exact nemesis::nemesis --nocapture
