#!/usr/bin/env bash
# The proof behind README "Known limits / the update stall": arms A-D of the rare request
# stall during updates under steady new-connection load (see scripts/update_stall_proof.py).
#
#   sudo scripts/update-stall-proof.sh        arms A-D, 30 updates each; the reopen race, 1,000
#                                             reopens per arm (about 10 minutes in all)
#   sudo scripts/update-stall-proof.sh --updates 60 --arms B,C --port-range 40000-43999 \
#        --reopens 0 --out /tmp/proof
#
# Not part of scripts/test.sh (it takes several minutes); tests/docker.rs holds the regression
# guard. Installs conntrack (its `-S` counters, for the reopen race) when missing; starts
# dockerd when none answers.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
require_root_and_packages conntrack:conntrack
# test-hooks: the control arms skip the conntrack clean-up (HANDOFF_UNSAFE_SKIP_CONNTRACK_CLEANUP).
cargo build --release --quiet --bins --features test-hooks
ensure_dockerd
trap stop_dockerd EXIT
python3 scripts/update_stall_proof.py "$@"
