#!/usr/bin/env bash
# Runs every test file (uvu suites) in one process; the last line is "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
export LP_NUM_THREADS="${LP_NUM_THREADS:-$(nproc)}" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
files=$(ls test/*.test.ts | sort)
if [ $# -gt 0 ]; then files="$*"; fi
log=$(mktemp)
node --import tsx test/run.ts $files 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
rm -f "$log"
exit "$status"
