#!/usr/bin/env bash
# Install handoff on this host: the system packages it and its tests need, the binary, the
# systemd units, and its directories. CI (through scripts/test.sh) and the Vagrant VM run this
# same script.
#
#   sudo scripts/install.sh              packages, binary, units, directories
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
    systemd-analyze:systemd vagrant:vagrant "$@"
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

export PATH="$HOME/.cargo/bin:/usr/local/cargo/bin:$PATH"
cargo build --release --quiet --bin handoff
install -m 0755 target/release/handoff /usr/local/sbin/handoff
install -d -m 0755 /etc/handoff /usr/local/share/doc/handoff
install -d -m 0700 /var/lib/handoff
install -m 0644 README.md /usr/local/share/doc/handoff/README.md
install -m 0644 systemd/handoff-restore.service systemd/handoff-update@.service \
    systemd/handoff-monitor@.service /etc/systemd/system/
if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    systemctl enable handoff-restore.service
fi
echo "installed /usr/local/sbin/handoff and its systemd units; put the config in /etc/handoff/handoff.json"
