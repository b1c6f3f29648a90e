#!/usr/bin/env bash
# The proof behind README "Known limits / the update stall": arms A-D of the rare request
# stall during updates under steady new-connection load (see scripts/update_stall_proof.py).
#
#   sudo scripts/update-stall-proof.sh                     30 updates per arm, arms A-D
#   sudo scripts/update-stall-proof.sh --updates 60 --arms B,C --out /tmp/proof
#
# Not part of scripts/test.sh (it takes several minutes); tests/docker.rs holds the regression
# guard. Starts dockerd when none answers.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
require_root_and_packages
cargo build --release --quiet --bins
ensure_dockerd
trap stop_dockerd EXIT
python3 scripts/update_stall_proof.py "$@"
