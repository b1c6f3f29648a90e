#!/usr/bin/env bash
# The image Vagrant's docker provider boots as a Debian bookworm host with systemd as PID 1
# (vagrant/Vagrantfile): a debootstrap'd root filesystem, from the Debian mirror this host's
# apt already uses, imported with `docker import -c 'CMD ["/sbin/init"]'`. Its apt sources are
# the host's Debian ones, so `apt-get install ./handoff_*.deb` inside resolves dependencies
# from the same archive. nftables and Docker are deliberately *not* in it: the package's
# Depends and Recommends must bring them, as on a fresh host.
#
# Built once per recipe: the root filesystem is cached as a tar in /var/cache/handoff/ and the
# image tagged with the recipe's hash, so a later run (or a fresh dockerd) reuses it. Root only
# (debootstrap). Prints the image's name as its last line.
#
#   sudo scripts/machine-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "machine-image.sh: run as root (debootstrap)" >&2
    exit 1
fi
suite=bookworm
packages=systemd,systemd-sysv,dbus,iproute2,ca-certificates,procps
cache=/var/cache/handoff

# The host's Debian sources: deb822 (*.sources) or one-line (*.list), only the stanzas and
# lines for Debian's archive. The first `main` URI of $suite is debootstrap's mirror.
host_sources=$(mktemp)
trap 'rm -f "$host_sources"' EXIT
python3 - "$suite" >"$host_sources" <<'PY'
import glob, sys
suite = sys.argv[1]
stanzas = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for block in open(path).read().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
        suites = fields.get("Suites", "").split()
        if fields.get("Types") == "deb" and any(s.startswith(suite) for s in suites):
            stanzas.append(fields)
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = line.split()
        if len(words) >= 4 and words[0] == "deb" and not words[1].startswith("["):
            if words[2].startswith(suite):
                stanzas.append({"Types": "deb", "URIs": words[1], "Suites": words[2],
                                "Components": " ".join(words[3:])})
if not stanzas:
    stanzas = [{"Types": "deb", "URIs": "http://deb.debian.org/debian",
                "Suites": f"{suite} {suite}-updates", "Components": "main"}]
for fields in stanzas:
    fields.setdefault("Signed-By", "/usr/share/keyrings/debian-archive-keyring.gpg")
    print("\n".join(f"{k}: {fields[k]}" for k in
                    ["Types", "URIs", "Suites", "Components", "Signed-By"]))
    print()
PY
mirror=$(awk -v s="$suite" '/^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i==s) {print u; exit}}' "$host_sources")
mirror=${mirror:-http://deb.debian.org/debian}

recipe=$( (echo "$suite $packages $mirror"; cat "$host_sources"; cat "$0") | sha256sum | cut -c1-12)
image=handoff-machine:$suite-$recipe
tar=$cache/machine-$suite-$recipe.tar

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image"
    exit 0
fi
if [[ ! -f $tar ]]; then
    command -v debootstrap >/dev/null 2>&1 ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    root=$(mktemp -d /var/tmp/handoff-machine.XXXXXX)
    trap 'rm -f "$host_sources"; rm -rf "$root"' EXIT
    echo "machine-image.sh: debootstrap $suite from $mirror (about a minute)" >&2
    if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" \
        >"$root.log" 2>&1; then
        tail -20 "$root.log" >&2
        exit 1
    fi
    rm -f "$root.log" "$root/etc/apt/sources.list"
    cp "$host_sources" "$root/etc/apt/sources.list.d/debian.sources"
    # Every machine gets its own id at first boot.
    : >"$root/etc/machine-id"
    mkdir -p "$cache"
    tar -C "$root" -cf "$tar.part" . && mv "$tar.part" "$tar"
fi
docker import -c 'CMD ["/sbin/init"]' "$tar" "$image" >/dev/null
echo "$image"
