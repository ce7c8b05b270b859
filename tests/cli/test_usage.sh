#!/usr/bin/env bash
# The executable's front door: --help, --version, exit statuses, and configuration errors that name
# the variable (a service refuses to start and says why).
set -euo pipefail
bin=${CSTL_BIN:?CSTL_BIN must name the constellation executable}
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
expect_status() { # expected, command...
    local want=$1; shift
    set +e; "$@" >/tmp/cstl-usage.$$.out 2>/tmp/cstl-usage.$$.err; local got=$?; set -e
    [ "$got" = "$want" ] || fail "$* exited $got, expected $want: $(cat /tmp/cstl-usage.$$.err)"
}
trap 'rm -f /tmp/cstl-usage.$$.*' EXIT

expect_status 0 "$bin" --help
grep -q 'usage: constellation' /tmp/cstl-usage.$$.out || fail "--help shows no usage"
for sub in commands projector queries scheduler mcp worker topics migrate schemas config; do
    grep -q "^  $sub " /tmp/cstl-usage.$$.out || fail "--help does not list $sub"
done
expect_status 0 "$bin" --version
grep -Eq '^constellation [0-9]+\.[0-9]+\.[0-9]+' /tmp/cstl-usage.$$.out || fail "--version"
expect_status 2 "$bin"
expect_status 2 "$bin" no-such-command
grep -q 'unknown command "no-such-command"' /tmp/cstl-usage.$$.err || fail "unknown command message"
for sub in commands projector queries scheduler mcp worker topics migrate schemas config; do
    expect_status 0 "$bin" "$sub" --help
    grep -q 'usage: constellation' /tmp/cstl-usage.$$.out || fail "$sub --help shows no usage"
done

# A set-but-empty broker list is refused before anything starts, naming the variable.
expect_status 2 env CONSTELLATION_KAFKA_BROKERS= "$bin" commands
grep -q 'CONSTELLATION_KAFKA_BROKERS is set but empty' /tmp/cstl-usage.$$.err ||
    fail "empty CONSTELLATION_KAFKA_BROKERS not named: $(cat /tmp/cstl-usage.$$.err)"

# Every problem is reported at once.
expect_status 2 env CONSTELLATION_HTTP_THREADS=0 CONSTELLATION_LOG_LEVEL=loud \
    CONSTELLATION_COMMANDS_ADDR=nowhere CONSTELLATION_TYPO=1 "$bin" commands
for v in CONSTELLATION_HTTP_THREADS CONSTELLATION_LOG_LEVEL CONSTELLATION_COMMANDS_ADDR \
    CONSTELLATION_TYPO; do
    grep -q "$v" /tmp/cstl-usage.$$.err || fail "$v not named: $(cat /tmp/cstl-usage.$$.err)"
done
grep -q '4 problems' /tmp/cstl-usage.$$.err || fail "problem count not reported"

# config show redacts a password; config check validates.
expect_status 0 env CONSTELLATION_PG_DSN='host=x user=u password=s3cret' "$bin" config show
grep -q 's3cret' /tmp/cstl-usage.$$.out && fail "config show printed the password"
grep -q 'password=\*\*\*' /tmp/cstl-usage.$$.out || fail "config show lost the password field"
expect_status 2 env CONSTELLATION_SHUTDOWN_GRACE_MS=-5 "$bin" config check

# The configuration reference in docs/ is the one the binary prints.
if [ -n "${CSTL_SOURCE_DIR:-}" ]; then
    "$bin" config reference | diff -u "$CSTL_SOURCE_DIR/docs/configuration.md" - ||
        fail "docs/configuration.md is stale: regenerate with constellation config reference"
fi
echo "usage: all checks passed"
