#!/usr/bin/env bash
# `make test`: installs what is missing, starts the local stack, builds plain and sanitized
# (AddressSanitizer + UBSan), runs every test through CTest in both builds, checks the schemas,
# runs the fuzz targets for a bounded time, and stops the stack again if it started it, whether
# the tests pass or not. The format check and clang-tidy run after the build; either failing
# fails the run. Exit status: 0 when everything passed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

jobs=$(nproc 2>/dev/null || echo 2)
t0=$(date +%s)
say() { printf 'test: %s\n' "$*"; }

bash infra/local/deps.sh
t_deps=$(date +%s)

stack_was_up=0
if bash infra/local/stack.sh status >/dev/null 2>&1; then
    stack_was_up=1
fi
stop_stack() {
    local rc=$?
    if [ "$stack_was_up" = 0 ]; then
        bash infra/local/stack.sh down || rc=1
    fi
    exit "$rc"
}
trap stop_stack EXIT
bash infra/local/stack.sh up
t_stack=$(date +%s)
# The services' settings for the stack just started (ports may be overridden).
eval "$(bash infra/local/stack.sh env)"

make --no-print-directory build
make --no-print-directory build-asan
t_build=$(date +%s)

failed=0
say "format check (clang-format)"
make --no-print-directory format-check || failed=1
say "lint (clang-tidy)"
make --no-print-directory lint || failed=1
t_lint=$(date +%s)
say "plain build: ctest"
(cd build && ctest --output-on-failure -j "$jobs") || failed=1
say "sanitized build (ASan + UBSan): ctest"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j "$jobs") || failed=1

say "schema compatibility against git history"
build/constellation schemas check || failed=1

say "fuzz targets (clang, libFuzzer, ASan + UBSan), bounded time"
test -f build-fuzz/CMakeCache.txt || cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=Debug -DCSTL_FUZZ=ON -DCSTL_SANITIZE=ON >/dev/null
cmake --build build-fuzz -j "$jobs" --target all
(cd build-fuzz && ctest -L fuzz --output-on-failure) || failed=1
t_end=$(date +%s)
say "times: deps $((t_deps - t0)) s, stack $((t_stack - t_deps)) s, build $((t_build - t_stack)) s, lint $((t_lint - t_build)) s, tests $((t_end - t_lint)) s, total $((t_end - t0)) s"
if [ "$failed" != 0 ]; then
    say "FAILED"
    exit 1
fi
say "all tests passed"
