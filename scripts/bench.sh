#!/usr/bin/env bash
# handoff's benchmarks, side by side on this machine, printed as Markdown tables with the
# targets (see scripts/bench.py for what each section measures and how).
#
#   sudo scripts/bench.sh            the full run (about 10 minutes; the IPv6 section is 4 of them)
#   sudo scripts/bench.sh --quick    a fast look (about 4 minutes here: 222 s on 2026-11-27)
#   sudo scripts/bench.sh --fleet [--quick]
#                                    the fleet's figures on three Vagrant machines
#                                    (scripts/fleet-bench.sh: about 6 minutes, 4 with --quick)
#
# Not part of scripts/test.sh. Installs wrk, haproxy, GNU time and Docker when missing; the
# memory figure needs dockerd (started when none answers, stopped again at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --fleet ]]; then
    shift
    exec bash scripts/fleet-bench.sh "$@"
fi

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
require_root_and_packages wrk:wrk haproxy:haproxy /usr/bin/time:time
cargo build --release --quiet --bins
bin=$PWD/target/release
ensure_dockerd || true
trap stop_dockerd EXIT
python3 scripts/bench.py "$@"
