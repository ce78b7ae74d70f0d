#!/usr/bin/env bash
# Runs every test file (uvu suites), each in a process of its own, and ends with the line "N passed, N failed".
# One process per file: the GPU driver's per-process resources (lavapipe maps memory for every bind group a
# pipeline ever had alive at once, up to vm.max_map_count) do not add up over the whole suite, and a file that
# crashes its process is reported as a failure of that file while the others still run.
set -u
cd "$(dirname "$0")/.."
export LP_NUM_THREADS="${LP_NUM_THREADS:-$(nproc)}" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
files=$(ls test/*.test.ts | sort)
if [ $# -gt 0 ]; then files="$*"; fi
passed=0
failed=0
skipped=0
started=$(date +%s)
log=$(mktemp)
for file in $files; do
  node --import tsx test/run.ts "$file" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -z "$summary" ]; then
    echo "$file: the test process ended (exit $status) before its summary: counted as one failure"
    failed=$((failed + 1))
    continue
  fi
  passed=$((passed + $(echo "$summary" | sed -E 's/^([0-9]+) passed.*/\1/')))
  failed=$((failed + $(echo "$summary" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')))
  skipped=$((skipped + $(echo "$summary" | sed -E 's/.*, ([0-9]+) skipped.*/\1/;t;s/.*/0/')))
  if [ "$status" != 0 ] && [ "$(echo "$summary" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')" = 0 ]; then
    echo "$file: the test process exited with status $status after its summary: counted as one failure"
    failed=$((failed + 1))
  fi
done
rm -f "$log"
echo
echo "all files: $(( $(date +%s) - started )) s"
echo "$passed passed, $failed failed$([ "$skipped" = 0 ] || echo ", $skipped skipped")"
[ "$failed" = 0 ]
