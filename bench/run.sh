#!/usr/bin/env bash
# Runs every benchmark executable of a build directory: bench/run.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
for b in "$build"/bench/bench_*; do
  [ -x "$b" ] || continue
  echo "== $(basename "$b")"
  "$b"
done
