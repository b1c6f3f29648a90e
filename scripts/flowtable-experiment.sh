#!/usr/bin/env bash
# Would an nftables flowtable speed up the component's forwarded flows (host -> container,
# host -> address backend) enough to keep, without blinding the drain watcher? This host's
# kernel has no flowtables (CONFIG_NF_FLOW_TABLE is not set), so the experiment runs in a
# virtual machine that boots Debian bookworm's own kernel (nf_flow_table, nf_flow_table_inet
# and nft_flow_offload are modules there), 2 vCPUs:
#
#   * a root filesystem from debootstrap (bookworm, minbase, the host's Debian mirror) with
#     the kernel, nftables, conntrack, nginx-light and wrk, packed whole as the initramfs and
#     cached in /var/cache/handoff-flowtable/ (built once, about 6 minutes; later runs reuse it);
#   * scripts/lib/flowtable-guest.sh as its PID 1 (rdinit=): in namespaces of its own, the
#     bench's topology (client 10.0.2.2 -- 10.0.2.1 gw br0 10.0.1.1 -- backend 10.0.1.12,
#     nginx on :8080), then wrk through three paths: no NAT (straight to 10.0.1.12:8080),
#     hand-written DNAT (10.0.2.1:80 -> 10.0.1.12:8080), and that DNAT plus a flowtable on the
#     gateway's devices (vc, br0). Fresh namespaces for every measurement, the paths' order
#     alternating between rounds. Before that, a check that flows really are offloaded
#     ([OFFLOAD] in conntrack, few packets left on the forward chain); after it the drain
#     checks: one long keep-alive connection (a request every 100 ms for 5 s) with and without
#     the flowtable, watched by `conntrack -E` and by dumps filtered by the backend
#     (`conntrack -L --reply-src`, as handoff counts a backend's flows) every 50 ms, closed by
#     the client, by the backend, or expired (timeout 0) while live as handoff's retire does;
#     and the offload check again with br_netfilter loaded, as Docker has it;
#   * the guest's records come back on a second serial port and are printed here as Markdown.
#
# The VM runs under KVM (-cpu host) where KVM can boot a stock kernel. Where /dev/kvm is PVM
# (kvm_pvm: pagetable-based virtualization for hosts without VT-x/AMD-V, which boots only
# PVM-enlightened guest kernels), where there is no /dev/kvm, or where the guest does not come
# up under KVM within a minute, it runs under TCG (qemu's emulation, 2 threads): the offload
# and drain findings hold as they are, the throughput figures become a proxy (paths compared
# with each other in the same emulated machine).
#
#   sudo scripts/flowtable-experiment.sh                  5 rounds of 5 s, bridged gateway
#                                                         (about 9 minutes with a cached image)
#   sudo scripts/flowtable-experiment.sh --quick          1 round of 2 s (about 2 minutes)
#   sudo scripts/flowtable-experiment.sh --rounds 0       the offload and drain checks only
#   sudo scripts/flowtable-experiment.sh --topology routed|bridged|both
#                     routed: the backend's veth is routed by the gateway, not bridged
#   sudo scripts/flowtable-experiment.sh --rounds N --seconds S --no-drain --rebuild
#   sudo scripts/flowtable-experiment.sh --accel kvm|tcg  force the accelerator (default: auto)
#   sudo scripts/flowtable-experiment.sh --keep DIR       keep the console log and raw records
#
# Installs qemu-system-x86, debootstrap and cpio from Debian's archive when missing (qemu from
# bookworm-backports when the host's qemu-utils already comes from there, as the plain one
# would conflict with it). Leaves nothing running; only the cached image stays.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 seconds=5 topologies=bridged drain=1 dockerlike=1 rebuild='' keep='' accel=auto
while (($#)); do
    case $1 in
        --quick) rounds=1 seconds=2 ;;
        --rounds) rounds=${2:?} && shift ;;
        --seconds) seconds=${2:?} && shift ;;
        --topology)
            case ${2:?} in
                bridged | routed) topologies=$2 ;;
                both) topologies="bridged routed" ;;
                *) echo "flowtable-experiment.sh: --topology bridged|routed|both" >&2 && exit 2 ;;
            esac
            shift
            ;;
        --no-drain) drain=0 dockerlike=0 ;;
        --rebuild) rebuild=1 ;;
        --accel)
            case ${2:?} in
                kvm | tcg | auto) accel=$2 ;;
                *) echo "flowtable-experiment.sh: --accel kvm|tcg|auto" >&2 && exit 2 ;;
            esac
            shift
            ;;
        --keep) keep=${2:?} && shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' && exit 0 ;;
        *) echo "flowtable-experiment.sh: unknown option $1 (see --help)" >&2 && exit 2 ;;
    esac
    shift
done
[[ $rounds =~ ^[0-9]+$ && $seconds =~ ^[1-9][0-9]*$ ]] || {
    echo "flowtable-experiment.sh: --rounds takes a count (0: only the offload and drain checks), --seconds a positive integer" >&2
    exit 2
}
if [[ $(id -u) -ne 0 ]]; then
    echo "flowtable-experiment.sh: run as root (sudo $0): it installs packages and runs debootstrap" >&2
    exit 1
fi

say() { echo "flowtable-experiment: $*" >&2; }
started=$SECONDS
suite=bookworm
# What the guest needs. linux-image-amd64 is the point: Debian's kernel, with flowtables.
packages=linux-image-amd64,nftables,iproute2,conntrack,nginx-light,wrk,procps,kmod
# Bump when the image's recipe (build_image) changes: the cache is keyed on it.
recipe=3
cache=/var/cache/handoff-flowtable
guest=scripts/lib/flowtable-guest.sh

work=$(mktemp -d /tmp/flowtable-vm.XXXXXX)
build='' qemu_pid='' backports_list=''
cleanup() {
    if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    [[ -n $backports_list ]] && rm -f "$backports_list"
    if [[ -n $keep && -s $work/console.log && ! -e $keep/console.log ]]; then
        mkdir -p "$keep" && cp "$work/console.log" "$work/records.txt" "$keep/" 2>/dev/null
    fi
    if [[ -n $build ]]; then
        umount -R "$build/root/proc" "$build/root/sys" 2>/dev/null || true
        rm -rf --one-file-system "$build"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'say "interrupted (SIGINT)"; exit 130' INT
trap 'say "terminated (SIGTERM)"; exit 143' TERM

# The first URI of a Debian archive (not its security suites) in this host's apt sources,
# deb822 (*.sources) or one-line (*.list); deb.debian.org when there is none.
debian_mirror() {
    local found
    found=$(awk '
        function flush() {
            if (!found && types ~ /(^| )deb( |$)/ && (" " comps " ") ~ / main / && suites !~ /-security/ && uris != "") {
                split(uris, u, " "); print u[1]; found = 1
            }
            types = suites = comps = uris = ""
        }
        FNR == 1 { flush() }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]*#/ { next }
        tolower($1) == "types:" { $1 = ""; types = $0 }
        tolower($1) == "uris:" { $1 = ""; uris = $0 }
        tolower($1) == "suites:" { $1 = ""; suites = $0 }
        tolower($1) == "components:" { $1 = ""; comps = $0 }
        END { flush() }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [[ -z $found ]]; then
        found=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            sed -E 's/\[[^]]*\]//' |
            awk '$1 == "deb" && $3 !~ /-security/ && / main( |$)/ { print $2; exit }' || true)
    fi
    echo "${found:-http://deb.debian.org/debian}"
}

apt_updated=''
apt_install() {
    if [[ -z $apt_updated ]]; then
        timeout 600 apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "$@"
}

# qemu-system-x86 from the host's suite; when that one conflicts with a qemu-utils already
# installed from <codename>-backports, from backports too (its list fetched into the apt
# lists for this install only, without touching the host's sources).
install_qemu() {
    command -v qemu-system-x86_64 >/dev/null && return 0
    if apt_install qemu-system-x86; then
        return 0
    fi
    local codename
    codename=$(sed -n "s/^VERSION_CODENAME=//p" /etc/os-release 2>/dev/null | tr -d "\"")
    if [[ -z $codename ]] || ! dpkg-query -W -f '${Version}' qemu-utils 2>/dev/null | grep -q '~bpo'; then
        say "could not install qemu-system-x86"
        return 1
    fi
    say "qemu-utils comes from $codename-backports: installing qemu-system-x86 from there"
    backports_list=/etc/apt/sources.list.d/handoff-flowtable-backports.sources
    cat >"$backports_list" <<EOF
Types: deb
URIs: $(debian_mirror)
Suites: $codename-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    timeout 600 apt-get update -qq -o Dir::Etc::sourcelist="$backports_list" \
        -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
        -t "$codename-backports" qemu-system-x86
    rm -f "$backports_list"
    backports_list=''
}

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v cpio >/dev/null || missing+=(cpio)
[[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
((${#missing[@]} == 0)) || apt_install "${missing[@]}" >&2
install_qemu >&2

# ---------------------------------------------------------------------------------------------
# The image: kernel and a gzipped cpio of the whole root filesystem, cached by recipe.

key=$(printf '%s\n' "$suite" "$packages" "$recipe" | sha256sum | cut -c1-12)
image=$cache/$suite-$key

build_image() {
    local mirror root version
    mirror=$(debian_mirror)
    mkdir -p "$cache"
    build=$(mktemp -d "$cache/build.XXXXXX")
    root=$build/root
    say "building the VM image with debootstrap ($suite from $mirror; a few minutes)"
    if ! timeout 1800 debootstrap --variant=minbase --include="$packages" "$suite" "$root" \
        "$mirror" >"$build/debootstrap.log" 2>&1; then
        tail -20 "$build/debootstrap.log" >&2
        say "debootstrap failed"
        return 1
    fi
    version=$(basename "$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -1)")
    [[ -f $root/boot/vmlinuz-$version ]] || {
        say "no kernel in the image"
        return 1
    }
    cp "$root/boot/vmlinuz-$version" "$build/vmlinuz"
    # Trim what a RAM-backed root does not need: docs, apt's caches, Debian's own initrd, and
    # every module outside net/, lib/, crypto/ and arch/ but veth.
    rm -rf "$root"/usr/share/{doc,man,info,locale}/* "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/lib/apt/lists/* "$root"/boot/initrd.img* "$root"/boot/System.map*
    local mods=$root/lib/modules/$version/kernel
    find "$mods" -mindepth 1 -maxdepth 1 ! -name net ! -name lib ! -name crypto ! -name arch \
        ! -name drivers -exec rm -rf {} +
    find "$mods/drivers" -type f ! -name 'veth.ko*' -delete
    find "$mods/drivers" -type d -empty -delete
    depmod -b "$root" "$version"
    (cd "$root" && find . -xdev -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$build/rootfs.cpio.gz"
    echo "$version" >"$build/kernel-version"
    rm -rf "$image"
    mkdir -p "$image"
    mv "$build/vmlinuz" "$build/rootfs.cpio.gz" "$build/kernel-version" "$image/"
    rm -rf --one-file-system "$build"
    build=''
    say "image cached in $image ($(du -sh "$image" | cut -f1))"
}

if [[ -n $rebuild || ! -s $image/rootfs.cpio.gz || ! -s $image/vmlinuz ]]; then
    build_image
else
    say "using the cached image $image"
fi
built_at=$SECONDS

# ---------------------------------------------------------------------------------------------
# Boot it: the cached archive plus a small one with the experiment (the kernel unpacks both).

mkdir -p "$work/overlay"
install -m 0755 "$guest" "$work/overlay/experiment.sh"
cat >"$work/overlay/experiment.conf" <<EOF
ROUNDS=$rounds
SECS=$seconds
TOPOLOGIES="$topologies"
DRAIN=$drain
DOCKERLIKE=$dockerlike
EOF
(cd "$work/overlay" && find . -print0 | cpio --null -o -H newc --quiet) | gzip >"$work/overlay.cpio.gz"
cat "$image/rootfs.cpio.gz" "$work/overlay.cpio.gz" >"$work/initrd"
cp "$image/vmlinuz" "$work/vmlinuz"

ntopo=$(wc -w <<<"$topologies")
# 12 measurements a round and topology (each SECONDS plus its set-up), 4 drain cases a topology
# (about 12 s each), the offload checks, the boot, and a margin; set-up is slower under TCG.
budget_for() { # SETUP_SECONDS_PER_MEASUREMENT
    echo $((120 + ntopo * rounds * 12 * (seconds + $1) + drain * ntopo * 4 * 25 + 90 + 120))
}

# The host's busy CPU time (all processes, in clock ticks) and this shell's children's (qemu's
# once waited for, in seconds): their difference over a boot is what everything else on the
# host used meanwhile, the noise that the throughput figures carry.
cpu_busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
children_seconds() {
    times | awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }'
}

# One boot; ACCEL_ARGS... are qemu's accelerator and CPU. Sets $vm_status; $first_sign is 0
# when the guest never printed its first line within $2 seconds (a kernel that cannot boot).
boot_vm() { # BUDGET FIRST_SIGN_SECONDS ACCEL_ARGS...
    local budget=$1 first=$2 watchdog busy0 kids0 t0
    shift 2
    busy0=$(cpu_busy_ticks) kids0=$(children_seconds) t0=$EPOCHREALTIME
    : >"$work/records.txt"
    : >"$work/console.log"
    timeout --kill-after=15 "$budget" qemu-system-x86_64 "$@" -smp 2 -m 2G \
        -nographic -no-reboot -nic none \
        -kernel "$work/vmlinuz" -initrd "$work/initrd" \
        -append "console=ttyS0 rdinit=/experiment.sh panic=1 quiet loglevel=3" \
        -serial mon:stdio -serial "file:$work/records.txt" \
        </dev/null >"$work/console.log" 2>&1 &
    qemu_pid=$!
    # A kernel that cannot run under this hypervisor hangs silently: give it FIRST seconds to
    # print the guest's first line.
    (
        for ((i = 0; i < first; i++)); do
            grep -q '^\[guest' "$work/console.log" 2>/dev/null && exit 0
            kill -0 "$qemu_pid" 2>/dev/null || exit 0
            sleep 1
        done
        echo "flowtable-experiment: no sign of the guest after $first s: stopping it" >&2
        kill "$qemu_pid" 2>/dev/null
    ) &
    watchdog=$!
    # Progress: the guest's log lines, as they come.
    tail -n +1 --pid="$qemu_pid" -f "$work/console.log" 2>/dev/null | tr -d '\r' |
        grep --line-buffered '^\[guest' >&2 || true
    vm_status=0
    wait "$qemu_pid" || vm_status=$?
    qemu_pid=''
    wait "$watchdog" 2>/dev/null || true
    first_sign=0
    grep -q '^\[guest' "$work/console.log" && first_sign=1
    others=$(awk -v b0="$busy0" -v b1="$(cpu_busy_ticks)" -v k0="$kids0" -v k1="$(children_seconds)" \
        -v t0="$t0" -v t1="$EPOCHREALTIME" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { o = ((b1 - b0) / hz - (k1 - k0)) / (t1 - t0); printf "%.2f", (o < 0 ? 0 : o) }')
    return 0
}

# KVM when it can run Debian's kernel. /dev/kvm backed by kvm_pvm (pagetable-based
# virtualization, for hosts without VT-x/AMD-V) only runs PVM-enlightened guest kernels, so
# there, and wherever KVM cannot boot the guest, the VM runs under TCG (emulated: slower, and
# its throughput figures are only a proxy; the drain checks are functional and hold as well).
accel=${accel:-auto}
if [[ $accel == auto ]]; then
    if [[ ! -w /dev/kvm ]]; then
        say "no usable /dev/kvm: the VM runs under TCG (emulation)"
        accel=tcg
    elif [[ -d /sys/module/kvm_pvm ]]; then
        say "/dev/kvm is PVM (kvm_pvm), which boots only PVM guest kernels, not Debian's: the VM runs under TCG (emulation)"
        accel=tcg
    else
        accel=kvm
    fi
fi
if [[ $accel == kvm ]]; then
    cpu=host
    say "booting the VM under KVM (-cpu $cpu, 2 vCPUs): rounds=$rounds seconds=$seconds topologies='$topologies'"
    boot_vm "$(budget_for 4)" 60 -enable-kvm -cpu "$cpu"
    if grep -q 'failed to set MSR' "$work/console.log" && ((!first_sign)); then
        # A nested hypervisor may refuse IA32_ARCH_CAPABILITIES (MSR 0x10a).
        cpu=host,-arch-capabilities
        say "qemu -cpu host failed on an MSR (nested KVM): booting with -cpu $cpu"
        boot_vm "$(budget_for 4)" 60 -enable-kvm -cpu "$cpu"
    fi
    if ((!first_sign)); then
        say "the guest did not boot under KVM: falling back to TCG (emulation)"
        accel=tcg
    fi
fi
if [[ $accel == tcg ]]; then
    cpu=max
    say "booting the VM under TCG (-accel tcg,thread=multi -cpu max, 2 vCPUs): rounds=$rounds seconds=$seconds topologies='$topologies'"
    boot_vm "$(budget_for 12)" 300 -accel tcg,thread=multi -cpu max
fi
tr -d '\r' <"$work/records.txt" >"$work/records.clean"
if [[ -n $keep ]]; then
    mkdir -p "$keep"
    cp "$work/console.log" "$work/records.clean" "$keep/"
    say "console log and raw records kept in $keep"
fi
if ! grep -q '^done' "$work/records.clean"; then
    say "the VM did not finish (qemu exit $vm_status); the end of its console:"
    tr -d '\r' <"$work/console.log" | tail -40 >&2
    exit 1
fi

# ---------------------------------------------------------------------------------------------
# The report.

awk -v rounds="$rounds" -v seconds="$seconds" -v build_s="$((built_at - started))" \
    -v vm_s="$((SECONDS - built_at))" -v accel="$accel" -v cpu="$cpu" -v others="$others" \
    -v host_cpus="$(nproc)" '
function sortn(a, n,    i, j, v) {
    for (i = 2; i <= n; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
}
function median(list,    a, n, i) {
    n = split(list, a, " ")
    if (n == 0) return "NA"
    for (i = 1; i <= n; i++) a[i] += 0
    sortn(a, n)
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function fmt(v) { return (v == "NA" || v == "") ? "n/a" : sprintf("%.0f", v) }
function fms(v) { return (v == "NA" || v == "") ? "n/a" : sprintf("%.2f", v) }
$1 == "meta" { meta[$2] = $0; sub(/^meta [^ ]+ /, "", meta[$2]) }
$1 == "offload" { off[++noff] = $0 }
$1 == "offload-line" { line = $0; sub(/^offload-line [^ ]+ /, "", line); offline[$2] = line }
$1 == "offload-other" { line = $0; sub(/^offload-other [^ ]+ /, "", line); offother[$2] = line }
$1 == "meas" {
    # meas ROUND TOPO PATH LOAD RPS P99 ERRORS NON2XX REQUESTS
    k = $3 SUBSEP $5; topo[$3] = 1; load[$5] = 1
    rps[$2, k, $4] = $6; p99[$2, k, $4] = $7
    if ($8 + $9 > 0) errs[k, $4] += $8 + $9
    if ($6 != "NA") { rl[k, $4] = rl[k, $4] " " $6; pl[k, $4] = pl[k, $4] " " $7 }
}
$1 == "drain-raw" { lbl = $2; gsub(/_/, " ", lbl); rest = $0; sub(/^[^ ]+ [^ ]+ /, "", rest); raw[lbl] = raw[lbl] "    " rest "\n"; next }
$1 == "drain" || $1 == "drain-dump" || $1 == "drain-events" || $1 == "drain-snapshot" || $1 == "drain-expire" || $1 == "drain-failed" {
    lbl = $2 " " $3 " " $4
    if (!(lbl in seen)) { seen[lbl] = 1; order[++nd] = lbl }
    rest = $0; sub(/^[^ ]+ [^ ]+ [^ ]+ [^ ]+ ?/, "", rest)
    d[lbl, $1] = rest
}
END {
    split(meta["kernel"], kv, " "); kver = kv[2]; gsub(/_/, " ", kver)
    printf "## Flowtable experiment (VM: Debian kernel %s, %s, %s -cpu %s)\n\n", kv[1] " (" kver ")", meta["cpus"], toupper(accel), cpu
    if (accel == "tcg") print "**Under TCG (emulated CPU): req/s and latencies are far below native and only a proxy; compare the paths with each other, not with the host. The offload and drain findings are functional and hold as they are.**\n"
    printf "Tools in the VM: %s. Rounds: %d of %d s per measurement, fresh namespaces each, paths in order no NAT, DNAT, DNAT+flowtable in odd rounds and reversed in even ones. Image: %d s, VM run: %d s. Other processes on the host used %s of its %d cores on average during the VM run (the VM needs 2 to itself).\n\n", meta["versions"], rounds, seconds, build_s, vm_s, others, host_cpus
    print "### Are the flows offloaded? (wrk -t2 -c8 for 3 s through DNAT+flowtable, forward-chain counter on)\n"
    print "| gateway | conntrack entries during the load | marked [OFFLOAD] | packets through the forward chain (slow path) | requests served |"
    print "|---|---|---|---|---|"
    for (i = 1; i <= noff; i++) {
        split(off[i], f, " ")
        for (j = 3; j <= 6; j++) { split(f[j], kvp, "="); v[kvp[1]] = kvp[2] }
        if (f[3] == "setup-failed") { printf "| %s | setup failed | | | |\n", f[2]; continue }
        printf "| %s | %s | %s | %s | %s |\n", f[2], v["entries"], v["offloaded"], v["slowpath_packets"], v["requests"]
    }
    print ""
    for (t in offline) {
        printf "- `conntrack -L` in gw during the load (%s): `%s`\n", t, offline[t]
        if (t in offother) printf "  - the entry not offloaded: `%s`\n", offother[t]
    }
    print ""
    nl = split("ka1 ka8 ka64 close64", L, " ")
    name["ka1"] = "keep-alive -t1 -c1"; name["ka8"] = "keep-alive -t2 -c8"
    name["ka64"] = "keep-alive -t2 -c64"; name["close64"] = "new connection -t2 -c64"
    for (t in topo) {
        printf "### Per round, %s gateway (req/s; p99 in ms)\n\n", t
        print "| load | round | no NAT req/s | DNAT req/s | DNAT+FT req/s | FT / DNAT | no NAT p99 | DNAT p99 | DNAT+FT p99 |"
        print "|---|---|---|---|---|---|---|---|---|"
        for (li = 1; li <= nl; li++) {
            l = L[li]; k = t SUBSEP l
            if (!(l in load)) continue
            ratios = ""
            for (r = 1; r <= rounds; r++) {
                a = rps[r, k, "dnat"]; b = rps[r, k, "ft"]
                ratio = (a != "" && a != "NA" && b != "" && b != "NA" && a > 0) ? b / a : "NA"
                if (ratio != "NA") ratios = ratios " " ratio
                printf "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", name[l], r, fmt(rps[r, k, "nonat"]),
                    fmt(a), fmt(b), (ratio == "NA" ? "n/a" : sprintf("%.3f", ratio)),
                    fms(p99[r, k, "nonat"]), fms(p99[r, k, "dnat"]), fms(p99[r, k, "ft"])
            }
            mratio[k] = (ratios == "" ? "NA" : median(ratios))
        }
        printf "\n### Medians over %d rounds, %s gateway\n\n", rounds, t
        print "| load | no NAT req/s | DNAT req/s | DNAT+FT req/s | median of per-round FT / DNAT | no NAT p99 ms | DNAT p99 ms | DNAT+FT p99 ms | errors (no NAT/DNAT/FT) |"
        print "|---|---|---|---|---|---|---|---|---|"
        for (li = 1; li <= nl; li++) {
            l = L[li]; k = t SUBSEP l
            if (!(l in load)) continue
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %d/%d/%d |\n", name[l],
                fmt(median(rl[k, "nonat"])), fmt(median(rl[k, "dnat"])), fmt(median(rl[k, "ft"])),
                (mratio[k] == "NA" ? "n/a" : sprintf("%.3f (%+.1f %%)", mratio[k], (mratio[k] - 1) * 100)),
                fms(median(pl[k, "nonat"])), fms(median(pl[k, "dnat"])), fms(median(pl[k, "ft"])),
                errs[k, "nonat"], errs[k, "dnat"], errs[k, "ft"]
        }
        gain = 1
        for (li = 1; li <= 3; li++) { k = t SUBSEP L[li]; if (mratio[k] == "NA" || mratio[k] < 1.10) gain = 0 }
        printf "\nKeep-alive gain of the flowtable over hand-written DNAT >= 10 %% at every keep-alive load (%s gateway): **%s**\n\n", t, (gain ? "yes" : "no")
    }
    if (nd) {
        print "### Drain exactness (one keep-alive connection, a request every 100 ms for 5 s)\n"
        print "Dump: `conntrack -L -p tcp --reply-src 10.0.1.12` in gw every ~50 ms. Events: `conntrack -E -o timestamp`. Times are after the end of the connection (the client closing it, or the backend closing it after a `Connection: close` request).\n"
        print "| gateway | path | who closes | dump polls while open: listed live / [OFFLOAD] / polls | timeout shown while open (s) | end seen in events after (ms) | first dump without it live after (ms), state | live in a dump after the end | requests answered |"
        print "|---|---|---|---|---|---|---|---|---|"
        for (i = 1; i <= nd; i++) {
            lb = order[i]; split(lb, p, " ")
            if (p[3] == "expire") continue
            delete v
            n = split(d[lb, "drain-dump"] " " d[lb, "drain-events"], f, " ")
            for (j = 1; j <= n; j++) if (split(f[j], kvp, "=") == 2) v[kvp[1]] = kvp[2]
            if ((lb, "drain") in d) { printf "| %s | %s | %s | failed: %s | | | | | |\n", p[1], p[2], p[3], d[lb, "drain"]; continue }
            printf "| %s | %s | %s | %s / %s / %s | %s | %s (%s) | %s (%s) | %s | %s/50 |\n", p[1],
                (p[2] == "ft" ? "DNAT+flowtable" : "DNAT"), p[3], v["listed_live"], v["offloaded"], v["polls_open"],
                v["timeout_shown"], v["end_seen_ms"], v["end_event"], v["first_not_live_ms"], v["not_live_state"],
                (v["live_after"] == 0 ? "no" : v["live_after"] " polls, last at " v["last_live_after_ms"] " ms"), v["requests_ok"]
        }
        print "\n### Expiring a live flow (`conntrack -U --reply-src 10.0.1.12 --timeout 0` 2.5 s into the connection: what handoff does to the live flows of a backend retired without draining)\n"
        print "| gateway | path | conntrack -U said | dump polls after the expiry that still list the flow / [OFFLOAD] / polls | requests answered (of 50) | end seen in events after (ms) |"
        print "|---|---|---|---|---|---|"
        for (i = 1; i <= nd; i++) {
            lb = order[i]; split(lb, p, " ")
            if (p[3] != "expire") continue
            delete v
            n = split(d[lb, "drain-dump"] " " d[lb, "drain-events"], f, " ")
            for (j = 1; j <= n; j++) if (split(f[j], kvp, "=") == 2) v[kvp[1]] = kvp[2]
            if ((lb, "drain") in d) { printf "| %s | %s | failed: %s | | | |\n", p[1], p[2], d[lb, "drain"]; continue }
            printf "| %s | %s | %s | %s / %s / %s | %s/50%s | %s (%s) |\n", p[1], (p[2] == "ft" ? "DNAT+flowtable" : "DNAT"),
                d[lb, "drain-expire"], v["listed_after_expire"], v["offloaded_after_expire"], v["polls_after_expire"],
                v["requests_ok"], (d[lb, "drain-failed"] == "" ? "" : " (" d[lb, "drain-failed"] ")"), v["end_seen_ms"], v["end_event"]
        }
        print "\nConntrack events of each drain flow (type:state @ time from the end):\n"
        for (i = 1; i <= nd; i++) {
            lb = order[i]; n = split(d[lb, "drain-events"], f, " "); ev = ""
            for (j = 1; j <= n; j++) if (f[j] ~ /^events=/) ev = substr(f[j], 8)
            printf "- %s: %s\n", lb, ev
            if (d[lb, "drain-snapshot"] != "") printf "  - dump while open: `%s`\n", d[lb, "drain-snapshot"]
            if (lb in raw) printf "  - its events as `conntrack -E -o timestamp` printed them:\n\n```\n%s```\n\n", raw[lb]
        }
    }
}' "$work/records.clean"
say "done in $((SECONDS - started)) s"
