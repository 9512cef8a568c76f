#!/usr/bin/env bash
# The tests, their harness, the benches and the scripts type-checked with the product's strict
# settings (tsconfig.check.json). The build checks src/ without its tests, and the suite runs the
# tests compiled by esbuild, which checks no types: without this job a test's types are checked nowhere.
# Run by scripts/test.sh (a job in its pool, beside the test files), or alone:  bash scripts/test.d/typecheck.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
if node node_modules/typescript/bin/tsc -p tsconfig.check.json; then
  echo "typecheck: 1 passed, 0 failed"
else
  echo "typecheck: 0 passed, 1 failed (the errors above)"
  exit 1
fi
