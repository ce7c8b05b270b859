#!/usr/bin/env bash
# The query API against the real local stack: authentication and roles, every REST endpoint,
# filters and parameter validation, cursor pagination while jobs are inserted concurrently,
# another tenant's ids answering 404, ETag/If-None-Match 304, CORS preflight and headers,
# problem+json errors, /openapi.json and /docs.
set -euo pipefail
bin=${CSTL_BIN:?CSTL_BIN must name the constellation executable}
: "${CONSTELLATION_PG_DSN:?CONSTELLATION_PG_DSN must be set (stack.sh env)}"
export CONSTELLATION_QUERY_PG_DSN=${CONSTELLATION_QUERY_PG_DSN:-${CONSTELLATION_PG_DSN/user=constellation/user=constellation_query}}
export CONSTELLATION_CORS_ORIGINS="https://ui.example.com,http://localhost:5173"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/cli/lib/query_fixture.sh
source "$here/lib/query_fixture.sh"
work=$(mktemp -d)
QPID=""
inserter=""
cleanup() {
    [ -n "$inserter" ] && kill "$inserter" 2>/dev/null || true
    [ -n "$QPID" ] && { kill -TERM "$QPID" && wait "$QPID"; } 2>/dev/null || true
    qf_cleanup
    rm -rf "$work"
}
trap cleanup EXIT
fail() { printf 'FAIL: %s\n' "$*" >&2; tail -5 "$work/q.log" >&2 || true; exit 1; }
"$bin" migrate 2>/dev/null || fail "migrate"
qf_setup
qf_start_queries "$work/q.log" || fail "queries did not start"
base="http://$QADDR"

# get PATH [curl args...]: body in $work/body, headers in $work/h, prints the status
get() {
    local path=$1
    shift
    rm -f "$work/body"
    : >"$work/body"
    curl -s -m 10 -D "$work/h" -o "$work/body" -w '%{http_code}' "$@" "$base$path"
}
getA() { get "$1" -H "Authorization: Bearer $KEY_A" "${@:2}"; }
expect() { # status path [args]
    local want=$1 got
    shift
    got=$(getA "$@")
    [ "$got" = "$want" ] || fail "$1 answered $got, want $want: $(head -c 300 "$work/body")"
}
is_problem() {
    grep -qi '^content-type: application/problem+json' "$work/h" || fail "not problem+json"
    jq -e '.type and .title and .status and .request_id' "$work/body" >/dev/null || fail "problem body"
}

# authentication
[ "$(get /v1/jobs)" = 401 ] || fail "no credentials"
is_problem
grep -qi '^www-authenticate: bearer' "$work/h" || fail "401 without WWW-Authenticate"
[ "$(get /v1/jobs -H 'Authorization: Bearer cstl_0123456789abcdef0123456789abcdef_00')" = 401 ] ||
    fail "malformed key"
# the key with its last hex digit changed (to 1 if it was 0, else to 0)
wrong_key=${KEY_A%?}$([ "${KEY_A: -1}" = 0 ] && echo 1 || echo 0)
[ "$(get /v1/jobs -H "Authorization: Bearer $wrong_key")" = 401 ] || fail "wrong secret"
[ "$(get /v1/jobs -H "Authorization: Bearer $KEY_WORKER")" = 403 ] || fail "worker may not read"
echo "auth: ok"

# list: default page, cursor walk
expect 200 /v1/jobs
jq -e '.items | length == 50' "$work/body" >/dev/null || fail "default limit"
jq -e '.items[0].submitted_at > .items[1].submitted_at' "$work/body" >/dev/null || fail "order"
jq -e '[.items[].id | startswith("'"$TENANT_A"'")] | all' "$work/body" >/dev/null || fail "tenant"
# walk every page with limit=7 while new jobs arrive (newer and older than the walk's position)
psql "$CONSTELLATION_PG_DSN" -qAt -c "SELECT count(*) FROM read.jobs WHERE tenant_id = '$TENANT_A'" >"$work/before_count"
(
    for i in $(seq 1 40); do
        psql "$CONSTELLATION_PG_DSN" -qAt -c "INSERT INTO read.jobs (job_id, tenant_id, name, state,
            reason, priority, gpu_count, min_gpu_memory_mib, runtime_limit_seconds, retry_limit,
            labels, parameters, submitted_by, submitted_at, updated_at, version)
            VALUES ('$TENANT_A-new-$i', '$TENANT_A', 'new', 'submitted', 'awaiting_admission', 0, 1,
            0, 1, 0, '{}', '{}', 'u', now(), now(), 1)" >/dev/null 2>&1
        sleep 0.02
    done
) &
inserter=$!
cursor=""
: >"$work/ids"
for _ in $(seq 1 100); do
    q="/v1/jobs?limit=7"
    [ -n "$cursor" ] && q="$q&cursor=$cursor"
    expect 200 "$q"
    jq -r '.items[].id' "$work/body" >>"$work/ids"
    cursor=$(jq -r '.next_cursor // empty' "$work/body")
    [ -z "$cursor" ] && break
done
wait "$inserter" || true
inserter=""
[ -z "$(sort "$work/ids" | uniq -d)" ] || fail "a job was listed twice"
for i in $(seq -w 1 120); do
    grep -qx "$TENANT_A-0$i" "$work/ids" || fail "job $i was skipped"
done
echo "pagination under inserts: ok ($(wc -l <"$work/ids") jobs, no duplicates, none skipped)"
# ascending
expect 200 "/v1/jobs?sort=submitted_at&limit=3"
[ "$(jq -r '.items[0].id' "$work/body")" = "$TENANT_A-0001" ] || fail "ascending sort"
c=$(jq -r .next_cursor "$work/body")
expect 200 "/v1/jobs?sort=submitted_at&limit=3&cursor=$c"
[ "$(jq -r '.items[0].id' "$work/body")" = "$TENANT_A-0004" ] || fail "ascending second page"
expect 400 "/v1/jobs?limit=3&cursor=$c"
jq -e '.parameter == "cursor"' "$work/body" >/dev/null || fail "cursor from another sort"

# filters
expect 200 "/v1/jobs?state=queued&limit=200"
jq -e '(.items | length == 30) and ([.items[].state == "queued"] | all)' "$work/body" >/dev/null ||
    fail "state filter"
expect 200 "/v1/jobs?state=running,failed&limit=200"
jq -e '.items | length == 60' "$work/body" >/dev/null || fail "two states"
expect 200 "/v1/jobs?label=team:x&limit=200"
jq -e '(.items | length == 24) and ([.items[].labels.team == "x"] | all)' "$work/body" >/dev/null ||
    fail "label filter"
expect 200 "/v1/jobs?priority=2&state=queued&limit=200"
jq -e '[.items[].priority == 2] | all' "$work/body" >/dev/null || fail "priority filter"
expect 200 "/v1/jobs?min_priority=1&max_priority=1&limit=200"
jq -e '(.items | length == 40)' "$work/body" >/dev/null || fail "priority range"
expect 200 "/v1/jobs?name_prefix=eval-11&limit=200"
jq -e '[.items[].name] | sort == ["eval-11","eval-111","eval-113","eval-115","eval-117","eval-119"]' \
    "$work/body" >/dev/null || fail "name prefix"
expect 200 "/v1/jobs?submitted_after=2026-01-01T00:00:10Z&submitted_before=2026-01-01T00:00:15%2B00:00"
jq -e '.items | length == 4' "$work/body" >/dev/null || fail "time window"
for bad in "limit=0" "limit=201" "limit=x" "state=done" "label=nocolon" "priority=1.5" \
    "submitted_after=yesterday" "sort=name" "cursor=abc" "name_prefix=" "unknown=1" "limit=1&limit=2"; do
    expect 400 "/v1/jobs?$bad"
    is_problem
    name=${bad%%=*}
    jq -e --arg p "$name" '.parameter == $p' "$work/body" >/dev/null || fail "$bad: parameter not named"
done
echo "filters and validation: ok"

# one job, history, other tenant
expect 200 "/v1/jobs/$TENANT_A-0002"
jq -e '.job.state == "succeeded" and (.runs | length == 1) and .job.reason == "completed" and
       .job.queue_position == null' "$work/body" >/dev/null || fail "job with runs"
expect 200 "/v1/jobs/$TENANT_A-0004"
jq -e '.job.queue_position >= 1 and .job.reason == "waiting_for_gpus"' "$work/body" >/dev/null ||
    fail "queue position"
expect 200 "/v1/jobs/$TENANT_A-0002/history"
jq -e '[.items[].version] == [1,2] and .items[0].type == "JobSubmitted"' "$work/body" >/dev/null ||
    fail "history"
expect 404 "/v1/jobs/$JOB_B"
is_problem
expect 404 "/v1/jobs/$JOB_B/history"
expect 404 "/v1/jobs/no-such-job"
[ "$(get "/v1/jobs/$JOB_B" -H "Authorization: Bearer $KEY_B")" = 200 ] || fail "tenant b reads its job"
[ "$(get "/v1/jobs/$TENANT_A-0002" -H "Authorization: Bearer $KEY_B")" = 404 ] || fail "b reads a's job"
[ "$(get "/v1/jobs?limit=200" -H "Authorization: Bearer $KEY_B")" = 200 ] || fail "b lists"
jq -e '[.items[].id] == ["'"$JOB_B"'"]' "$work/body" >/dev/null || fail "b sees only its job"
[ "$(get "/v1/jobs?limit=1" -H "Authorization: Bearer $KEY_B")" = 200 ] || fail "b lists one"
jq -e '(.items | length) == 1 and .next_cursor == null and .limit == 1' "$work/body" >/dev/null ||
    fail "a page holding the last job has no next cursor"
echo "jobs, history, tenant isolation: ok"

# regression: query.ts (IMMUTABLE over the STABLE to_char) and query.bind_tenant (void over text)
# were not inlined, so every read parsed and ran them as separate SQL functions
plan=$(psql "$CONSTELLATION_QUERY_PG_DSN" -qAt -c \
    "EXPLAIN VERBOSE SELECT query.ts(now()), query.bind_tenant('$TENANT_A')")
case $plan in *query.ts* | *query.bind_tenant*) fail "query functions not inlined: $plan" ;; esac
echo "query functions inlined: ok"

# queue, workers, gpus
expect 200 "/v1/queue"
jq -e '[.items[].position] == [range(1; (.items | length) + 1)] and (.items | length == 30)' \
    "$work/body" >/dev/null || fail "queue order"
jq -e '.items[0].priority == 2' "$work/body" >/dev/null || fail "queue priority first"
# a job's own position (counted when read) is its place in the queue
pos=$(jq -r --arg id "$TENANT_A-0004" '.items[] | select(.id == $id) | .position' "$work/body")
expect 200 "/v1/jobs/$TENANT_A-0004"
jq -e --argjson p "${pos:-0}" '.job.queue_position == $p' "$work/body" >/dev/null ||
    fail "job position ($pos in the queue)"
expect 400 "/v1/queue?limit=0"
expect 200 "/v1/workers"
jq -e --arg w "w-$TENANT_A" '[.items[] | select(.id == $w)] | .[0].gpu_count == 2' "$work/body" \
    >/dev/null || fail "workers"
expect 200 "/v1/gpus"
jq -e --arg g "gpu-$TENANT_A-0" --arg j "$TENANT_A-0002" \
    '[.items[] | select(.uuid == $g)][0] | .job_id == $j and .state == "held"' "$work/body" \
    >/dev/null || fail "gpu held by the caller"
jq -e --arg g "gpu-$TENANT_A-1" '[.items[] | select(.uuid == $g)][0] | .job_id == null and
    .state == "held" and .held_by_tenant == false' "$work/body" >/dev/null ||
    fail "another tenant's job id leaked through /v1/gpus"
echo "queue, workers, gpus: ok"

# ETag and 304
expect 200 "/v1/jobs/$TENANT_A-0002"
etag=$(grep -i '^etag:' "$work/h" | cut -d' ' -f2 | tr -d '\r')
[ -n "$etag" ] || fail "no etag"
expect 304 "/v1/jobs/$TENANT_A-0002" -H "If-None-Match: $etag"
[ ! -s "$work/body" ] || fail "304 with a body"
expect 304 "/v1/jobs/$TENANT_A-0002" -H "If-None-Match: \"other\", W/$etag"
expect 200 "/v1/jobs/$TENANT_A-0002" -H 'If-None-Match: "other"'
psql "$CONSTELLATION_PG_DSN" -qAt -c "UPDATE read.jobs SET version = 2 WHERE job_id = '$TENANT_A-0002'" >/dev/null
expect 200 "/v1/jobs/$TENANT_A-0002" -H "If-None-Match: $etag"
echo "etag: ok"

# CORS
code=$(get /v1/jobs -X OPTIONS -H 'Origin: https://ui.example.com' \
    -H 'Access-Control-Request-Method: GET' -H 'Access-Control-Request-Headers: authorization')
[ "$code" = 204 ] || fail "preflight answered $code"
grep -qi '^access-control-allow-origin: https://ui.example.com' "$work/h" || fail "preflight origin"
grep -qi '^access-control-allow-headers:.*authorization' "$work/h" || fail "preflight headers"
grep -qi '^access-control-max-age:' "$work/h" || fail "preflight max-age"
code=$(get /v1/jobs -X OPTIONS -H 'Origin: https://evil.example.com' -H 'Access-Control-Request-Method: GET')
[ "$code" = 403 ] || fail "preflight of another origin answered $code"
grep -qi '^access-control-allow-origin' "$work/h" && fail "CORS headers for another origin"
expect 200 /v1/workers -H 'Origin: http://localhost:5173'
grep -qi '^access-control-allow-origin: http://localhost:5173' "$work/h" || fail "CORS on GET"
grep -qi '^access-control-expose-headers:.*etag' "$work/h" || fail "ETag not exposed"
expect 200 /v1/workers -H 'Origin: https://evil.example.com'
grep -qi '^access-control-allow-origin' "$work/h" && fail "CORS on GET for another origin"
echo "cors: ok"

# the contract and its page
[ "$(get /openapi.json)" = 200 ] || fail "openapi.json"
jq -e '.openapi == "3.1.0"' "$work/body" >/dev/null || fail "openapi document"
[ "$(get /docs)" = 200 ] || fail "docs"
grep -qi '^content-type: text/html' "$work/h" || fail "docs type"
echo "openapi: ok"

kill -TERM "$QPID"
wait "$QPID" || fail "queries exited non-zero"
QPID=""
echo "query api: all checks passed"
