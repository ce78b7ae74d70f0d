#!/usr/bin/env bash
# Runs a subset of the test files under Deno (navigator.gpu instead of Dawn) to prove the same sources run
# there. Ends with "N passed, N failed" like the Node run.
set -u
cd "$(dirname "$0")/.."
export LP_NUM_THREADS="${LP_NUM_THREADS:-$(nproc)}" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
files="${*:-test/conformance-ops.test.ts test/gradcheck-elementwise.test.ts test/f16-ops.test.ts}"
exec node_modules/.bin/deno run --allow-all --no-lock test/run.ts $files
