#!/usr/bin/env bash
# The command API end to end against the real local stack: `constellation commands` (API, views
# and command handler in one process), tenants bootstrapped with `constellation tenants create`,
# jobs submitted, deduplicated, changed and cancelled, bad requests refused with precise problems
# and without producing anything, tenant isolation, JWT refusals, workers, heartbeats and GPU
# drain, and state restored after a restart.
set -euo pipefail
bin=${CSTL_BIN:?CSTL_BIN must name the constellation executable}
brokers=${CONSTELLATION_KAFKA_BROKERS:-127.0.0.1:9092}
export CONSTELLATION_KAFKA_BROKERS=$brokers
work=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    [ -f "$work/body" ] && { echo "last body:" >&2; cat "$work/body" >&2; echo >&2; }
    [ -f "$work/service.log" ] && grep -v '"component":"kafka"' "$work/service.log" | tail -15 >&2
    exit 1
}
for tool in curl jq kcat python3; do command -v "$tool" >/dev/null || fail "$tool is missing"; done

secret="command-api-test-secret-0123456789abcdef"
export CONSTELLATION_JWT_HS256_SECRET=$secret
export CONSTELLATION_COMMANDS_ADDR=127.0.0.1:0
export CONSTELLATION_HTTP_MAX_BODY_BYTES=4096
export CONSTELLATION_SHUTDOWN_GRACE_MS=3000
export CONSTELLATION_COMMAND_WAIT_MS=10000
unset CONSTELLATION_OPERATOR_TENANT_ID CONSTELLATION_COMMAND_HANDLER

"$bin" topics create >/dev/null 2>&1 || fail "topics create"

addr=""
start_service() {
    : >"$work/service.log"
    "$bin" commands 2>>"$work/service.log" &
    pid=$!
    addr=""
    for _ in $(seq 1 150); do
        addr=$(jq -r 'select(.msg == "listening") | .addr' "$work/service.log" 2>/dev/null | head -1)
        [ -n "$addr" ] && break
        kill -0 "$pid" 2>/dev/null || fail "the service exited before listening"
        sleep 0.1
    done
    [ -n "$addr" ] || fail "the service did not log its address"
    local code=""
    for _ in $(seq 1 300); do
        code=$(curl -s -o "$work/body" -w '%{http_code}' "http://$addr/readyz")
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    [ "$code" = 200 ] || fail "/readyz answered $code"
    # /readyz needs one restored partition; this test needs the handler to own every one (it is
    # the only member of the group): tenants, jobs and fleet command partitions
    local want owned=0
    want=$(jq '[.topics[] | select(.name | test("^constellation\\.(tenants|jobs|fleet)\\.commands$"))
                | .partitions] | add' "${CSTL_SOURCE_DIR:?}/schemas/topics.json")
    for _ in $(seq 1 600); do
        owned=$(curl -s "http://$addr/metrics" |
            awk '/^partitions_owned[{ ]/ { n += $NF } END { print n + 0 }')
        [ "$owned" = "$want" ] && return 0
        sleep 0.1
    done
    fail "the handler owns $owned of $want partitions"
}
stop_service() {
    kill -TERM "$pid"
    local status=0
    wait "$pid" || status=$?
    pid=""
    [ "$status" = 0 ] || fail "the service exited $status after SIGTERM"
}

# request METHOD PATH TOKEN [BODY] [extra curl args...]: sets $code, body in $work/body
request() {
    local method=$1 path=$2 token=$3 body=${4:-}
    shift 4 || shift $#
    local auth=()
    [ -n "$token" ] && auth=(-H "Authorization: Bearer $token")
    code=$(curl -s -X "$method" -D "$work/headers" -o "$work/body" -w '%{http_code}' \
        "${auth[@]}" -H 'Content-Type: application/json' ${body:+--data-binary "$body"} "$@" \
        "http://$addr$path")
}
expect() { # expect STATUS what
    [ "$code" = "$1" ] || fail "$2: expected $1, got $code"
}
header() { grep -i "^$1:" "$work/headers" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
problem() { # problem STATUS [FIELD]: the body is a problem with that status (and field)
    grep -qi '^content-type: application/problem+json' "$work/headers" || fail "not a problem"
    jq -e --argjson s "$1" '.status == $s and (.detail | length > 0)' "$work/body" >/dev/null ||
        fail "problem body for $1"
    if [ -n "${2:-}" ]; then
        jq -e --arg f "$2" '.errors[0].field == $f and (.errors[0].code | length > 0)' \
            "$work/body" >/dev/null || fail "problem does not name the field $2"
    fi
}
# records on a topic (all partitions, aborted ones included)
count_records() {
    kcat -C -b "$brokers" -t "$1" -e -o beginning -q -f '%o\n' -X isolation.level=read_uncommitted \
        2>/dev/null | wc -l
}
# committed events on constellation.jobs.events whose ce_subject is $1
events_of() {
    kcat -C -b "$brokers" -t constellation.jobs.events -J -e -o beginning -q \
        -X isolation.level=read_committed 2>/dev/null |
        jq -c --arg s "$1" 'select(.headers != null) | .headers as $h |
            [range(0; $h | length; 2) as $i | {key: $h[$i], value: $h[$i + 1]}] | from_entries |
            select(.ce_subject == $s)'
}
jwt() { # jwt TENANT ROLE EXP_OFFSET_S [ALG]
    python3 - "$secret" "$@" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret, tenant, role, offset = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
alg = sys.argv[5] if len(sys.argv) > 5 else "HS256"
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
head = b(json.dumps({"alg": alg, "typ": "JWT"}).encode())
body = b(json.dumps({"sub": "tester", "tenant": tenant, "role": role,
                     "exp": int(time.time()) + offset}).encode())
sig = "" if alg == "none" else b(hmac.new(secret.encode(), (head + "." + body).encode(),
                                         hashlib.sha256).digest())
print(head + "." + body + "." + sig)
PY
}
wait_key() { # the views have the key once an authenticated lookup answers 404, not 401
    for _ in $(seq 1 100); do
        request GET /v1/commands/01900000-0000-7000-8000-000000000000 "$1"
        [ "$code" = 404 ] && return 0
        sleep 0.1
    done
    fail "api key never authenticated (last $code)"
}

start_service
"$bin" tenants create acme --email ops@acme.example >"$work/a.json" 2>"$work/a.err" ||
    fail "tenants create: $(cat "$work/a.err")"
jq -e '(.tenant_id | test("^[0-9a-f-]{36}$")) and .name == "acme" and (.api_key | startswith("cstl_"))
       and .role == "admin" and (.key_id | length == 36)' "$work/a.json" >/dev/null ||
    fail "tenants create output: $(cat "$work/a.json")"
"$bin" tenants create beta >"$work/b.json" 2>"$work/b.err" || fail "tenants create beta"
tenant_a=$(jq -r .tenant_id "$work/a.json")
key_a=$(jq -r .api_key "$work/a.json")
key_b=$(jq -r .api_key "$work/b.json")
wait_key "$key_a"
wait_key "$key_b"
echo "tenants: acme and beta bootstrapped, keys authenticate"

# ---- submit, deduplicate --------------------------------------------------------------------
job_body='{"name":"train","gpu_count":1,"parameters":{"command":["python","train.py"]}}'
request POST /v1/jobs "$key_a" "$job_body" -H 'Idempotency-Key: submit-1' \
    -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
expect 201 "submit"
job=$(jq -r .id "$work/body")
[ "$(header Location)" = "/v1/jobs/$job" ] || fail "Location $(header Location)"
[ "$(header ETag)" = '"1"' ] || fail "ETag $(header ETag)"
jq -e '.version == 1 and .status == "accepted"' "$work/body" >/dev/null || fail "submit body"
events_of "$job" >"$work/events"
[ "$(wc -l <"$work/events")" = 1 ] || fail "expected one event for $job, got $(wc -l <"$work/events")"
jq -e --arg t "$tenant_a" '.ce_specversion == "1.0" and .ce_type == "io.constellation.jobs.JobSubmitted.v1"
    and (.ce_id | length == 36) and (.ce_source | length > 0) and (.ce_time | endswith("Z"))
    and ."content-type" == "application/avro" and .cstl_tenant == $t and .cstl_version == "1"
    and (.cstl_causation | length == 36)
    and .traceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"' \
    "$work/events" >/dev/null || fail "event headers: $(cat "$work/events")"
request POST /v1/jobs "$key_a" "$job_body" -H 'Idempotency-Key: submit-1'
expect 201 "repeated submit"
jq -e --arg j "$job" '.id == $j and .version == 1' "$work/body" >/dev/null || fail "repeat body"
[ "$(events_of "$job" | wc -l)" = 1 ] || fail "a repeated Idempotency-Key made a second event"
command_id=$(jq -r .command_id "$work/body")
request GET "/v1/commands/$command_id" "$key_a"
expect 200 "command status"
jq -e --arg j "$job" '.id == $j and (.status == "accepted" or .status == "duplicate")' \
    "$work/body" >/dev/null || fail "command status body"
request GET "/v1/commands/$command_id" "$key_b"
expect 404 "another tenant's command"
echo "submit: 201 with Location and ETag, one event with CloudEvents headers, deduplicated"

# ---- change priority, cancel ----------------------------------------------------------------
request PATCH "/v1/jobs/$job" "$key_a" '{"priority":80}' -H 'If-Match: "1"'
expect 200 "priority change"
[ "$(header ETag)" = '"2"' ] || fail "ETag after the change $(header ETag)"
request POST "/v1/jobs/$job/cancel" "$key_a" '{"reason":"no longer needed"}'
expect 200 "cancel"
request POST "/v1/jobs/$job/cancel" "$key_a" ''
expect 409 "second cancel"
problem 409
jq -e '.code == "job_already_finished"' "$work/body" >/dev/null || fail "409 code"
echo "jobs: priority 200, cancel 200, cancel again 409"

# ---- refused at the edge: nothing produced --------------------------------------------------
commands_before=$(count_records constellation.jobs.commands)
events_before=$(count_records constellation.jobs.events)
big=$(python3 -c 'print("{\"gpu_count\":1,\"name\":\"" + "x" * 5000 + "\",\"parameters\":{\"command\":[]}}")')
expired=$(jwt "$tenant_a" member -60)
none=$(jwt "$tenant_a" member 600 none)
viewer=$(jwt "$tenant_a" viewer 600)
good='{"command":["x"]}'
# method path token body status field
while IFS='|' read -r method path token body status field what; do
    [ -z "$method" ] && continue
    case $token in A) tok=$key_a ;; EXPIRED) tok=$expired ;; NONE) tok=$none ;;
        VIEWER) tok=$viewer ;; *) tok="" ;; esac
    [ "$body" = BIG ] && body=$big
    request "$method" "$path" "$tok" "$body"
    expect "$status" "$what"
    problem "$status" "$field"
    if [ "$status" = 401 ]; then
        header WWW-Authenticate | grep -q '^Bearer' || fail "$what: no WWW-Authenticate"
    fi
    echo "  $what: $status"
done <<EOF
POST|/v1/jobs|A|{"gpu_count":1,|400||malformed json
POST|/v1/jobs|A|{"gpu_count":"one","parameters":$good}|422|gpu_count|wrong type
POST|/v1/jobs|A|{"gpu_count":1,"parameters":{"command":"x"}}|422|parameters.command|wrong nested type
POST|/v1/jobs|A|{"gpu_count":1,"colour":"red","parameters":$good}|422|colour|unknown field
POST|/v1/jobs|A|BIG|413||body over the limit
POST|/v1/jobs||{"gpu_count":1,"parameters":$good}|401||missing token
POST|/v1/jobs|EXPIRED|{"gpu_count":1,"parameters":$good}|401||expired jwt
POST|/v1/jobs|NONE|{"gpu_count":1,"parameters":$good}|401||alg none jwt
POST|/v1/jobs|VIEWER|{"gpu_count":1,"parameters":$good}|403||viewer submits
POST|/v1/jobs/not-a-uuid/cancel|A||400||invalid uuid in the path
POST|/v1/jobs|A|{"gpu_count":0,"parameters":$good}|422|gpu_count|gpu_count 0
POST|/v1/jobs|A|{"gpu_count":-1,"parameters":$good}|422|gpu_count|gpu_count -1
POST|/v1/jobs|A|{"gpu_count":1,"priority":101,"parameters":$good}|422|priority|priority 101
PATCH|/v1/jobs/$job|A|{"priority":-1}|422|priority|priority -1
EOF
request PATCH "/v1/jobs/$job" "$key_a" '{"priority":5}' -H 'If-Match: W/"1"'
expect 400 "malformed If-Match"
problem 400
request POST /v1/jobs "$key_a" "$job_body" -H "Idempotency-Key: $(printf 'k%.0s' $(seq 1 256))"
expect 400 "Idempotency-Key over 255 bytes"
[ "$(count_records constellation.jobs.commands)" = "$commands_before" ] ||
    fail "refused requests produced commands"
[ "$(count_records constellation.jobs.events)" = "$events_before" ] ||
    fail "refused requests produced events"
echo "edge refusals: precise problems, no record produced"

# ---- refused by the aggregate: the command is logged, no event ------------------------------
request POST "/v1/jobs/$job/cancel" "$key_b" ''
expect 404 "tenant B cancels tenant A's job"
problem 404
request PATCH "/v1/jobs/$job" "$key_b" '{"priority":1}'
expect 404 "tenant B changes tenant A's job"
request POST /v1/jobs/01900000-0000-7000-8000-0000000000aa/cancel "$key_a" ''
expect 404 "unknown job"
problem 404
request PATCH "/v1/jobs/$job" "$key_a" '{"priority":5}' -H 'If-Match: "1"'
expect 412 "wrong If-Match"
problem 412
[ "$(count_records constellation.jobs.events)" = "$events_before" ] ||
    fail "refused commands produced events"
echo "aggregate refusals: 404 for another tenant's or an unknown job, 412, no event"

# ---- workers, heartbeats, GPUs --------------------------------------------------------------
request POST /v1/api-keys "$key_a" '{"role":"worker"}'
expect 201 "issue a worker key"
key_w=$(jq -r .api_key "$work/body")
[ "$(header Location)" = "/v1/api-keys/$(jq -r .key_id "$work/body")" ] || fail "key Location"
wait_key "$key_w"
gpu="GPU-$(python3 -c 'import uuid; print(uuid.uuid4())')"
request POST /v1/workers "$key_w" "{\"hostname\":\"node-1\",\"gpus\":[{\"uuid\":\"$gpu\",\"model\":\"H100\",\"memory_mib\":81920,\"compute_capability\":\"9.0\"}]}"
expect 201 "register worker"
worker=$(jq -r .id "$work/body")
hb="{\"gpus\":[{\"uuid\":\"$gpu\",\"utilization_percent\":42,\"memory_used_mib\":1024,\"temperature_c\":61}]}"
heartbeats_before=$(count_records constellation.fleet.heartbeats)
for _ in $(seq 1 100); do
    request POST "/v1/workers/$worker/heartbeat" "$key_w" "$hb"
    [ "$code" = 202 ] && break
    sleep 0.1
done
expect 202 "heartbeat"
for _ in $(seq 1 50); do
    [ "$(count_records constellation.fleet.heartbeats)" -gt "$heartbeats_before" ] && break
    sleep 0.1
done
[ "$(count_records constellation.fleet.heartbeats)" -gt "$heartbeats_before" ] ||
    fail "no heartbeat record"
request POST "/v1/workers/$worker/heartbeat" "$key_w" '{"gpus":[{"uuid":"x","utilization_percent":101,"memory_used_mib":0,"temperature_c":1}]}'
expect 422 "heartbeat utilization 101"
problem 422 "gpus[0].utilization_percent"
request POST "/v1/gpus/$gpu/drain" "$key_w" '{"reason":"maintenance"}'
expect 403 "a worker drains"
request POST "/v1/gpus/$gpu/drain" "$key_a" '{"reason":"maintenance"}'
expect 200 "drain"
request POST "/v1/gpus/$gpu/resume" "$key_a" ''
expect 200 "resume"
request POST "/v1/gpus/$gpu/drain" "$key_b" '{"reason":"x"}'
expect 404 "another tenant drains"
request POST /v1/gpus/GPU-unknown/drain "$key_a" '{"reason":"x"}'
expect 404 "unknown gpu"
request POST /v1/tenants "$key_a" '{"name":"x","contact_email":"a@b.example"}'
expect 403 "create a tenant without being the operator"
echo "fleet: register 201, heartbeat 202 on the heartbeats topic, drain/resume 200, 404/403"

# ---- restart: state restored ----------------------------------------------------------------
stop_service
start_service
wait_key "$key_a"
request POST "/v1/jobs/$job/cancel" "$key_a" ''
expect 409 "cancel after a restart"
stop_service
echo "restart: the job is still cancelled (409)"
echo "command api: all checks passed"
