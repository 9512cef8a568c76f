#!/usr/bin/env bash
# Builds the sandbox helper (cgroup join, rlimits, privilege drop), its seccomp-bpf program and the
# zygote's fork library (each zygote child's set-up, in C).
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
lib_src=src/sandbox/native/mcpworks-zygote-child.c
lib=.build/mcpworks-zygote-child.so
if [ ! -s "$lib" ] || [ "$lib_src" -nt "$lib" ]; then
  echo "setup: zygote library: compiling $lib"
  gcc -O2 -Wall -Wextra -shared -fPIC -o "$lib.tmp" "$lib_src"
  mv "$lib.tmp" "$lib"
else
  echo "setup: zygote library: skipped, $lib is newer than its source"
fi
if [ ! -s "$bpf" ] || [ "$out" -nt "$bpf" ]; then
  "$out" seccomp "$bpf.tmp"
  mv "$bpf.tmp" "$bpf"
fi
