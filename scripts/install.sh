#!/usr/bin/env bash
# Install handoff on this host from a source tree: build its Debian package (scripts/package.sh)
# and install that with apt, as from a release. With --deps-only, only the system packages
# that handoff, its tests, demo and bench use (scripts/test.sh calls that).
#
#   sudo scripts/install.sh              the package (binary, units, man pages, completions)
#   sudo scripts/install.sh --deps-only [TOOL:PACKAGE ...]
#                                        only the system packages (what test.sh, demo.sh and
#                                        bench.sh use), plus the extra ones named
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: run as root (sudo scripts/install.sh)" >&2
    exit 1
fi

# command-or-path:package, for everything handoff, its tests, demo and units use; callers add
# their own (demo.sh, bench.sh) after --deps-only.
deps_only=
if [[ ${1:-} == --deps-only ]]; then
    deps_only=1
    shift
fi
packages=(
    nft:nftables ip:iproute2 flock:util-linux iptables:iptables dockerd:docker.io
    /bin/busybox:busybox-static tar:tar python3:python3 openssl:openssl
    systemd-analyze:systemd man:man-db vagrant:vagrant debootstrap:debootstrap
    dpkg-shlibdeps:dpkg-dev protoc:protobuf-compiler etcd:etcd-server
    ssh-keygen:openssh-client ssh-agent:openssh-client etcdctl:etcd-client "$@"
)
missing=()
for entry in "${packages[@]}"; do
    tool=${entry%%:*}
    if [[ $tool == /* ]]; then
        [[ -e $tool ]] || missing+=("${entry#*:}")
    else
        command -v "$tool" >/dev/null 2>&1 || missing+=("${entry#*:}")
    fi
done
if ((${#missing[@]})); then
    echo "install.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[[ -n $deps_only ]] && exit 0

deb=$(bash scripts/package.sh | tail -1)
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >/dev/null
echo "installed $deb; put the config in /etc/handoff/handoff.json (example: /usr/share/doc/handoff/examples/handoff.json)"
