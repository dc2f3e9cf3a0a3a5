#!/usr/bin/env bash
# Sets up and builds dseek (scripts/setup.sh), then runs the test suite.
# Extra arguments go to ctest, e.g. `scripts/test.sh -L unit` for the quick run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The tests' scratch files go to build/test-tmp, emptied before each run: a test killed before
# it cleans up (a timeout, a crash) then cannot fill the machine's /tmp run after run.
export TMPDIR="$PWD/build/test-tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
echo "scripts/test.sh: $(df -h --output=avail "$TMPDIR" | tail -1 | tr -d ' ') free for the tests' scratch files"
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 900 "$@"
