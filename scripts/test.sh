#!/usr/bin/env bash
# The whole test suite: unit tests, the kernel tests (network namespaces, real nftables and
# conntrack), the Docker tests (a real dockerd, images built locally with `docker import`) and
# the real-host tests (scripts/vagrant-test.sh: a Debian machine booted by Vagrant, handoff
# installed from its package, its units run under systemd; scripts/fleet-test.sh: three such
# machines as a fleet on etcd). Root only.
#
# On a fresh machine it first installs what the tests need through scripts/install.sh
# --deps-only (nftables, iproute2, util-linux, iptables, docker.io, busybox-static, tar,
# python3, openssl, systemd-analyze, man-db, vagrant, debootstrap, dpkg-dev, protobuf-compiler
# for the etcd client's build, etcd-server for the fleet tests), and starts dockerd when no
# daemon answers (stopping it again at the end).
#
# The tests that need root, Docker or those tools are #[ignore]d for a plain `cargo test`
# (which then reports them as not run); here they run, and fail if they cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
require_root_and_packages
if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
ensure_dockerd
trap stop_dockerd EXIT

# --no-fail-fast: a failing suite does not hide the results of the others; the real-host
# test runs even when one failed. test-hooks: the crash points that the crash tests aim at
# (src/crash.rs); the packaged binary is built without them (scripts/package.sh), and
# scripts/vagrant-test.sh checks that it ignores them.
status=0
cargo test --all-targets --features test-hooks --no-fail-fast -- --include-ignored || status=$?
bash scripts/vagrant-test.sh || status=$?
bash scripts/fleet-test.sh || status=$?
exit "$status"
