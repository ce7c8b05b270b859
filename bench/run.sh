#!/usr/bin/env bash
# `make bench`: runs every benchmark built from bench/bench_*.c and prints its figures. Benchmarks
# report, they never fail on a slow machine; an exit status other than 0 means one could not run.
set -euo pipefail
build=${1:-build}
status=0
shopt -s nullglob
for b in "$build"/bench/bench_*; do
    [ -x "$b" ] || continue
    printf '\n== %s ==\n' "$(basename "$b")"
    "$b" || status=1
done
exit "$status"
