#!/usr/bin/env bash
# handoff's benchmarks, side by side on this machine, printed as Markdown tables with the
# targets (see scripts/bench.py for what each section measures and how).
#
#   sudo scripts/bench.sh            the full run (about 25 minutes: curves 9, sustained 4,
#                                    datapath and ipv6 3.5 each, switch latency 2.5)
#   sudo scripts/bench.sh --quick    a fast look, under 2 minutes (91 to 102 s on 2026-11-27,
#                                    built already, with other work running). It shortens
#                                    every section, skips some, and prints so first:
#                                    curves at 1 and 256 connections only, 1 round of 1 s;
#                                    sustained skipped; datapath and ipv6 1 round of 2 s;
#                                    switches 0.1 s apart; switch latency at 1 and 100
#                                    components only (no 1,000: its layout takes minutes),
#                                    10 switches each; rollback 10 rounds, 3-s canary loads;
#                                    drain 3 rounds and a 2-s CPU watch; memory unchanged
#   sudo scripts/bench.sh --only curves,datapath
#                                    some sections only (curves, sustained, datapath, ipv6,
#                                    switches, latency, rollback, drain, memory); the target
#                                    table then has the rows of those sections only
#   sudo scripts/bench.sh --json FILE
#                                    also write every figure of the run to FILE
#   sudo scripts/bench.sh --plot [PNG]
#                                    measure the curves (only them, unless --only says more)
#                                    and draw them with gnuplot (default docs/bench-curves.png)
#   sudo scripts/bench.sh --plot [PNG] --from FILE
#                                    redraw from an earlier run's --json FILE, measuring nothing
#   sudo scripts/bench.sh --fleet [--quick]
#                                    the fleet's figures on three Vagrant machines
#                                    (scripts/fleet-bench.sh: about 6 minutes, 4 with --quick)
#
# Not part of scripts/test.sh. Installs wrk, haproxy, nginx, GNU time and Docker when missing
# (gnuplot too with --plot); the memory figure needs dockerd (started when none answers and
# the memory section runs, stopped again at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --fleet ]]; then
    shift
    exec bash scripts/fleet-bench.sh "$@"
fi

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh

plot='' from='' only=''
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
        --plot | --plot=*) plot=1 ;;
        --from) from=${args[i + 1]:-} ;;
        --from=*) from=${args[i]#--from=} ;;
        --only) only=${args[i + 1]:-} ;;
        --only=*) only=${args[i]#--only=} ;;
    esac
done

if [[ -n $from ]]; then
    # A redraw: gnuplot is all it needs (no build, no namespaces, no root once it is there).
    command -v gnuplot >/dev/null 2>&1 || require_root_and_packages gnuplot:gnuplot-nox
    exec python3 scripts/bench.py "$@"
fi

extra=(wrk:wrk haproxy:haproxy /usr/bin/time:time)
[[ -n $plot ]] && extra+=(gnuplot:gnuplot-nox)
had_nginx=''
[[ -x /usr/sbin/nginx ]] && had_nginx=1
require_root_and_packages "${extra[@]}" /usr/sbin/nginx:nginx
# On a host with systemd the nginx package starts its stock site on port 80; the bench only
# runs its own nginx inside a namespace, so stop the service that installing it just started.
if [[ -z $had_nginx ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
fi
cargo build --release --quiet --bins
# dockerd only for the memory section: it runs without --only (unless --plot, which means
# curves alone), or when --only names it.
if [[ ,$only, == *,memory,* ]] || [[ -z $only && -z $plot ]]; then
    ensure_dockerd || true
    trap stop_dockerd EXIT
fi
python3 scripts/bench.py "$@"
