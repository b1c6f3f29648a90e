#!/usr/bin/env bash
# The whole test suite: unit tests, the kernel tests (network namespaces, real nftables and
# conntrack) and the Docker tests (a real dockerd, images built locally with `docker import`).
# Root only.
#
# On a fresh machine it first installs what the tests need through scripts/install.sh
# --deps-only (nftables, iproute2, util-linux, iptables, docker.io, busybox-static, tar,
# python3), and starts dockerd when no daemon answers (stopping it again at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "scripts/test.sh: run as root (sudo scripts/test.sh): the tests build network namespaces" >&2
    exit 1
fi
export PATH="$HOME/.cargo/bin:/usr/local/cargo/bin:$PATH"

bash scripts/install.sh --deps-only
if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi

started_dockerd=
if ! docker info >/dev/null 2>&1; then
    echo "scripts/test.sh: starting dockerd" >&2
    log=$(mktemp /tmp/handoff-test-dockerd.XXXXXX.log)
    dockerd >"$log" 2>&1 &
    started_dockerd=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    if ! docker info >/dev/null 2>&1; then
        echo "scripts/test.sh: dockerd did not come up; its log:" >&2
        tail -30 "$log" >&2
        exit 1
    fi
fi
stop_dockerd() {
    if [[ -n $started_dockerd ]]; then
        kill "$started_dockerd" 2>/dev/null || true
        wait "$started_dockerd" 2>/dev/null || true
    fi
}
trap stop_dockerd EXIT

cargo test --all-targets
