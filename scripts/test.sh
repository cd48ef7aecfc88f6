#!/usr/bin/env bash
# The test command (README "Tests"; `.ci/run` runs exactly this after fmt and clippy):
# installs the outside tools the tests run (scripts/install-test-deps.sh), checks that
# Cargo.toml's rust-version covers every locked dependency (scripts/msrv.sh), then runs
# `cargo test` with any arguments given:
#
#   scripts/test.sh                      everything
#   scripts/test.sh --test http metrics  one test binary, filtered
#
# A test whose tool is missing fails, naming the command that installs it: nothing is
# skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
scripts/msrv.sh
exec cargo test "$@"
