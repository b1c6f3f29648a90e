#!/usr/bin/env bash
# Planted faults: each breaks one promise of the README behind the tests' back; the tests that
# guard it must fail (see scripts/mutants.py). Prints a table; exits 0 only when every fault
# was caught.
#
#   sudo scripts/mutants.sh                              every fault (about 15 minutes)
#   sudo scripts/mutants.sh --only drain-returns-at-once
#
# Not part of scripts/test.sh. Builds in target/mutants; starts dockerd when none answers.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
require_root_and_packages
ensure_dockerd
trap stop_dockerd EXIT
python3 scripts/mutants.py "$@"
