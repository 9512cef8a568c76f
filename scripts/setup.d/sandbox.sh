#!/usr/bin/env bash
# Builds the sandbox helper (cgroup join, rlimits, privilege drop) and its seccomp-bpf program.
# Idempotent: rebuilds only when the C source is newer than the outputs.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=src/sandbox/native/mcpworks-sandbox-helper.c
out=.build/mcpworks-sandbox-helper
bpf=.build/seccomp.bpf
mkdir -p .build
if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
  echo "setup: sandbox helper: compiling $out"
  gcc -O2 -Wall -Wextra -o "$out.tmp" "$src" -lseccomp
  mv "$out.tmp" "$out"
else
  echo "setup: sandbox helper: skipped, $out is newer than its source"
fi
if [ ! -s "$bpf" ] || [ "$out" -nt "$bpf" ]; then
  "$out" seccomp "$bpf.tmp"
  mv "$bpf.tmp" "$bpf"
fi
