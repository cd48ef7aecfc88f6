#!/usr/bin/env bash
# Builds the Debian package of ringway: the binary, its man pages and shell
# completions (generated from that binary into target/assets/), the example config
# and the systemd unit (see [package.metadata.deb] in Cargo.toml). Prints the path
# of the .deb on its last line (a release build also makes ringway-dbgsym, a .ddeb
# with the debug symbols, printed before it).
#
#   scripts/package-deb.sh                 release build, then the package
#   PROFILE=dev scripts/package-deb.sh     the debug build (what the tests package)
#   NO_BUILD=1 ...                         package the binary already built
#   OUT=DIR ...                            write the .deb into DIR (default target/debian)
#
# Needs cargo-deb (cargo install cargo-deb --locked) and dpkg.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-release}
case "$profile" in
    release) dir=release ;;
    dev | debug) profile=dev dir=debug ;;
    *) dir=$profile ;;
esac
target_dir=${CARGO_TARGET_DIR:-target}
out=${OUT:-$target_dir/debian}

if ! cargo deb --version >/dev/null 2>&1; then
    echo "package-deb: cargo-deb is missing; install it with: cargo install cargo-deb --locked" >&2
    exit 1
fi
if ! command -v dpkg-deb >/dev/null; then
    echo "package-deb: dpkg-deb is missing; install it with: apt-get install dpkg" >&2
    exit 1
fi

if [ -z "${NO_BUILD:-}" ]; then
    echo "package-deb: building ringway ($profile profile; a first release build takes several minutes)" >&2
    cargo build --locked --profile "$profile" --bin ringway
fi
bin=$target_dir/$dir/ringway
if [ ! -x "$bin" ]; then
    echo "package-deb: no binary at $bin; build it with: cargo build --profile $profile" >&2
    exit 1
fi

# cargo-deb reads asset paths relative to the package, so these always go under
# ./target/assets, wherever the build's target directory is.
assets=target/assets
rm -rf "$assets/man" "$assets/completions"
mkdir -p "$assets/man" "$assets/completions"
"$bin" man --out-dir "$assets/man"
gzip -9 -n -f "$assets"/man/*.1
"$bin" completions bash >"$assets/completions/ringway.bash"
"$bin" completions zsh >"$assets/completions/_ringway"
"$bin" completions fish >"$assets/completions/ringway.fish"

flags=(--no-build --output "$out")
deb_target=$target_dir
if [ "$profile" = release ]; then
    # The binary is stripped; its line tables go to a ringway-dbgsym .ddeb beside it.
    flags+=(--dbgsym)
else
    # cargo-deb packages release builds only: another profile's binary is staged where
    # it looks for the release one. A test package, so quick compression.
    deb_target=$target_dir/deb-staging
    mkdir -p "$deb_target/release"
    cp "$bin" "$deb_target/release/ringway"
    flags+=(--fast)
fi
mkdir -p "$out"
made=$(CARGO_TARGET_DIR=$deb_target cargo deb "${flags[@]}")
echo "$made" | grep -v '\.deb$' || true
echo "$made" | grep '\.deb$'

