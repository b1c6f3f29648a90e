#!/usr/bin/env bash
# Run inside a machine (as root): make it a Docker host and install handoff from its Debian
# package with apt, which resolves the package's dependencies (nftables) and recommendations
# (docker.io, iptables) from the machine's own sources. Both Vagrant providers use it: the VM
# providers as their provisioner, the docker provider through scripts/vagrant-test.sh (that
# provider's machines have no ssh, so Vagrant cannot provision them itself).
#
#   bash /handoff/vagrant/provision.sh [PATH/handoff_VERSION_ARCH.deb]
#
# Without an argument, the newest package in /handoff/target/debian (scripts/package.sh).
set -euo pipefail

deb=${1:-$(ls -t /handoff/target/debian/handoff_*.deb 2>/dev/null | head -1)}
if [[ -z $deb || ! -f $deb ]]; then
    echo "provision.sh: no package; run scripts/package.sh on the host first" >&2
    exit 1
fi

# The inner dockerd: its bridge on a subnet of its own (a machine under the docker provider
# sits on the outer docker0's 172.17.0.0/16), and inside a container the vfs storage driver
# (overlay on overlay is refused). Written before docker.io is installed, so its first start
# uses it.
install -d -m 0755 /etc/docker
if [[ ! -f /etc/docker/daemon.json ]]; then
    if systemd-detect-virt --quiet --container; then
        echo '{ "bip": "10.213.0.1/24", "storage-driver": "vfs" }' >/etc/docker/daemon.json
    else
        echo '{ "bip": "10.213.0.1/24" }' >/etc/docker/daemon.json
    fi
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The package from a path: apt installs it with its dependencies, as an operator would.
apt-get install -y -qq "$deb" >/tmp/handoff-provision-apt.log 2>&1 ||
    { tail -30 /tmp/handoff-provision-apt.log >&2; exit 1; }
systemctl is-active --quiet docker || systemctl start docker
echo "provision.sh: $(handoff --version) installed from $(basename "$deb"); $(dpkg-query -W -f '${Package} ${Version}' nftables docker.io | tr '\n' ' ')"
