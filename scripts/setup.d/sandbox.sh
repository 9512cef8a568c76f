#!/usr/bin/env bash
# Builds the sandbox helper (cgroup join, rlimits, privilege drop), its seccomp-bpf program and the
# zygote's fork library (each zygote child's set-up, in C) and the program each child's P1 becomes.
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
init_src=src/sandbox/native/mcpworks-zygote-init.c
init=.build/mcpworks-zygote-init
if [ ! -s "$init" ] || [ "$init_src" -nt "$init" ]; then
  echo "setup: zygote init: compiling $init"
  # No C library (raw system calls): its exec costs each run far less than glibc's start-up.
  gcc -O2 -Wall -Wextra -static -nostdlib -fno-stack-protector -fno-asynchronous-unwind-tables -fno-builtin \
    -o "$init.tmp" "$init_src"
  mv "$init.tmp" "$init"
else
  echo "setup: zygote init: skipped, $init is newer than its source"
fi
if [ ! -s "$bpf" ] || [ "$out" -nt "$bpf" ]; then
  "$out" seccomp "$bpf.tmp"
  mv "$bpf.tmp" "$bpf"
fi
