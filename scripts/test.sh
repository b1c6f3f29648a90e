#!/usr/bin/env bash
# The whole test suite: unit tests and the kernel tests, which build network namespaces and use
# real nftables and conntrack (root only).
#
# On a fresh machine it first installs what the tests need: nftables (the nft binary),
# iproute2 (ip netns), util-linux (flock), and a Rust toolchain check.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/test.sh: run as root (sudo scripts/test.sh): the tests build network namespaces" >&2
    exit 1
fi
export PATH="$HOME/.cargo/bin:/usr/local/cargo/bin:$PATH"

missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v flock >/dev/null 2>&1 || missing+=(util-linux)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ((${#missing[@]})); then
    echo "scripts/test.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi

cargo test --all-targets
