#!/usr/bin/env bash
# The OpenAPI document (queries/openapi.json) is the contract of both HTTP services: Schemathesis
# generates requests from it (a bounded number of examples per operation) and checks every answer
# against it (no 5xx, documented status codes, content types and response schemas). The query API
# runs over fixture data of two tenants; the command API runs with its command handler. The
# endless /v1/stream is left out here (tests/integration/test_query_stream.c covers it).
set -euo pipefail
bin=${CSTL_BIN:?CSTL_BIN must name the constellation executable}
src=${CSTL_SOURCE_DIR:?CSTL_SOURCE_DIR must name the source tree}
: "${CONSTELLATION_PG_DSN:?CONSTELLATION_PG_DSN must be set (stack.sh env)}"
export CONSTELLATION_QUERY_PG_DSN=${CONSTELLATION_QUERY_PG_DSN:-${CONSTELLATION_PG_DSN/user=constellation/user=constellation_query}}
st="$src/.venv/bin/schemathesis"
[ -x "$st" ] || { echo "FAIL: $st is missing: run make deps" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cli/lib/query_fixture.sh
source "$here/lib/query_fixture.sh"
work=$(mktemp -d)
QPID=""
CPID=""
cleanup() {
    [ -n "$QPID" ] && { kill -TERM "$QPID" && wait "$QPID"; } 2>/dev/null || true
    [ -n "$CPID" ] && { kill -TERM "$CPID" && wait "$CPID"; } 2>/dev/null || true
    qf_cleanup
    rm -rf "$work"
}
trap cleanup EXIT
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
"$bin" topics create 2>/dev/null || fail "topics create"
"$bin" migrate 2>/dev/null || fail "migrate"
QF_JOBS=30 qf_setup
qf_start_queries "$work/q.log" || fail "queries did not start"

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
run_st() { # name base-url key [filters...]
    local name=$1 url=$2 key=$3
    shift 3
    echo "== schemathesis: $name at $url"
    timeout 240 "$st" run "$src/queries/openapi.json" --url "$url" -c "$checks" -n 30 \
        --request-timeout 10 --generation-deterministic --no-color --warnings off \
        -H "Authorization: Bearer $key" "$@" >"$work/$name.out" 2>&1 || {
        tail -60 "$work/$name.out" >&2
        for log in "$work/q.log" "$work/c.log"; do
            [ -f "$log" ] && { echo "--- end of $log" >&2; grep -v '"component":"kafka"' "$log" | tail -15 >&2; }
        done
        [ -n "$QPID" ] && ! kill -0 "$QPID" 2>/dev/null && { wait "$QPID"; echo "queries exited with $?" >&2; }
        fail "schemathesis found problems in the $name service (or ran out of time)"
    }
    tail -8 "$work/$name.out"
}
run_st queries "http://$QADDR" "$KEY_A" --include-tag queries --exclude-path /v1/stream

# The command API with its handler in-process.
CONSTELLATION_COMMANDS_ADDR=127.0.0.1:0 "$bin" commands 2>"$work/c.log" &
CPID=$!
caddr=""
for _ in $(seq 1 150); do
    caddr=$(jq -r 'select(.msg == "listening") | .addr' "$work/c.log" 2>/dev/null | head -1)
    [ -n "$caddr" ] && break
    kill -0 "$CPID" 2>/dev/null || fail "commands exited before listening"
    sleep 0.1
done
[ -n "$caddr" ] || fail "commands did not start"
for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$caddr/readyz")" = 200 ] && break
    sleep 0.1
done
# The command API authenticates keys from the tenants events: bootstrap a tenant through the
# handler when this build can (`constellation tenants create`), else use the fixture's key.
ckey=$KEY_A
if "$bin" tenants --help >/dev/null 2>&1; then
    # the handler's first command after a cold start may outlast the CLI's wait: try again
    ckey=""
    for _ in 1 2 3 4 5; do
        ckey=$("$bin" tenants create "conformance-$RANDOM" 2>/dev/null | jq -r '.api_key // empty') || true
        [ -n "$ckey" ] && break
        sleep 1
    done
    [ -n "$ckey" ] || fail "tenants create gave no api key"
    sleep 1 # the command API learns the key from the tenants events
fi
# A build without the command routes (POST /v1/jobs answers "no route") serves only the common
# operations; once they are in, every operation of the command API is checked.
code=$(curl -s -o "$work/probe" -w '%{http_code}' -X POST "http://$caddr/v1/jobs" \
    -H "Authorization: Bearer $ckey" -d '{}')
if [ "$code" = 404 ] && grep -q 'no route' "$work/probe"; then
    echo "note: this build's command service has no command routes; checking its common operations"
    run_st commands "http://$caddr" "$ckey" --include-path-regex '^/(openapi\.json|docs|healthz|readyz|metrics)$'
else
    run_st commands "http://$caddr" "$ckey" --include-tag commands
fi
echo "openapi conformance: both services pass"
