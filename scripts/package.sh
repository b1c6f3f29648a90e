#!/usr/bin/env bash
# Build the Debian package: target/debian/handoff_<version>_<arch>.deb, its path printed as
# the last line. The man pages and completions come from the release binary itself
# (`handoff man --dir`, `handoff completions`), so the package ships what users can generate.
# cargo-deb is installed from crates.io when missing, and dpkg-dev (cargo-deb computes the
# shared-library dependencies with it) with apt, which needs root; otherwise no root is needed.
#
#   scripts/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/cargo/bin:$PATH"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "package.sh: installing cargo-deb" >&2
    cargo install --locked --quiet cargo-deb
fi
if ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
    # cargo-deb computes the shared-library dependencies ($auto) with it.
    echo "package.sh: installing dpkg-dev" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev >/dev/null
fi

cargo build --release --quiet --bin handoff
assets=target/debian-assets
rm -rf "$assets"
mkdir -p "$assets/man8" "$assets/completions"
target/release/handoff man --dir "$assets/man8"
gzip -9n "$assets"/man8/*.8
target/release/handoff completions bash >"$assets/completions/handoff"
target/release/handoff completions zsh >"$assets/completions/_handoff"
target/release/handoff completions fish >"$assets/completions/handoff.fish"

deb=$(cargo deb --no-build --quiet)
if [[ ! -f $deb ]]; then
    echo "package.sh: cargo deb printed no package path ($deb)" >&2
    exit 1
fi
echo "$deb"
