#!/usr/bin/env bash
# Checks that Cargo.toml's `rust-version` is the true minimum: at least the highest
# `rust-version` declared by any locked dependency (read from the manifests Cargo.lock
# pins, through `cargo metadata`). Exit 0 and one line when it holds; otherwise exit 1
# naming the packages that need a newer Rust.
#
#   scripts/msrv.sh            the check (scripts/test.sh runs it)
#   scripts/msrv.sh --build    also `cargo check`s the library and the binary with that
#                              very toolchain (installed with rustup when missing;
#                              target dir target/msrv): our own code can need a newer
#                              compiler than any dependency does.
#   scripts/msrv.sh --lint     instead runs that toolchain's clippy over every target
#                              (tests and benches too) with warnings as errors: one
#                              pass that both lints and proves the declared version
#                              builds everything. CI runs this.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'msrv: %s\n' "$*" >&2; exit 1; }
command -v jq >/dev/null || die "jq is required: apt-get install jq (scripts/install-test-deps.sh installs it)"

declared=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml)
[ -n "$declared" ] || die "Cargo.toml has no rust-version"

# Every package in the locked resolve (all targets and platforms, dev-dependencies
# included: the tests build them too), with the rust-version its manifest declares.
meta=$(cargo metadata --locked --format-version 1 --offline 2>/dev/null ||
  cargo metadata --locked --format-version 1) || die "cargo metadata failed (is Cargo.lock up to date?)"
needs=$(jq -r '
  (.workspace_members) as $own
  | (.resolve.nodes | map(.id)) as $locked
  | .packages[]
  | select(.rust_version != null)
  | select(.id as $id | ($locked | index($id)) and ($own | index($id) | not))
  | "\(.rust_version) \(.name) \(.version)"' <<<"$meta")

# Compare as versions: 1.9 < 1.10 < 1.91; "1.88" and "1.88.0" are the same.
norm() { awk -F. '{ printf "%d.%d.%d\n", $1, $2, ($3 == "" ? 0 : $3) }' <<<"$1"; }
highest=$(while read -r v _; do norm "$v"; done <<<"$needs" | sort -V | tail -n 1)
[ -n "$highest" ] || die "no locked dependency declares a rust-version (cargo metadata output changed?)"

if [ "$(printf '%s\n%s\n' "$(norm "$declared")" "$highest" | sort -V | tail -n 1)" != "$(norm "$declared")" ]; then
  printf 'msrv: Cargo.toml says rust-version = "%s", but these locked dependencies need newer:\n' "$declared" >&2
  while read -r v name version; do
    if [ "$(printf '%s\n%s\n' "$(norm "$v")" "$(norm "$declared")" | sort -V | tail -n 1)" != "$(norm "$declared")" ]; then
      printf '  %s %s: rust-version %s\n' "$name" "$version" "$v" >&2
    fi
  done <<<"$needs"
  die "set rust-version = \"${highest%.0}\" (or older locked versions: cargo update -p NAME --precise VERSION)"
fi
top=$(while read -r v name version; do
  [ "$(norm "$v")" = "$highest" ] && printf '%s %s' "$name" "$version" && break
done <<<"$needs" || true)
printf 'msrv: rust-version %s covers every locked dependency (the highest, %s, is %s)\n' \
  "$declared" "${highest%.0}" "$top"

toolchain="$declared"
case "${1:-}" in
--build)
  rustup run "$toolchain" rustc --version >/dev/null 2>&1 ||
    rustup toolchain install "$toolchain" --profile minimal
  CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}/msrv cargo "+$toolchain" check --locked --lib --bins
  printf 'msrv: the library and the binary build with Rust %s\n' "$toolchain"
  ;;
--lint)
  rustup run "$toolchain" cargo clippy --version >/dev/null 2>&1 ||
    rustup toolchain install "$toolchain" --profile minimal --component clippy
  CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}/msrv cargo "+$toolchain" clippy --locked --all-targets -- -D warnings
  printf 'msrv: every target builds with Rust %s, and its clippy finds nothing\n' "$toolchain"
  ;;
esac
