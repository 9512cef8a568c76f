#!/usr/bin/env bash
# The whole suite: unit and integration tests (node:test through tsx), then the conformance run.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(find src -name '*.test.ts' | sort)
node --import tsx --test --test-concurrency=2 --test-reporter=spec $files
for extra in scripts/test.d/*.sh; do
  [ -e "$extra" ] && bash "$extra"
done
exit 0
