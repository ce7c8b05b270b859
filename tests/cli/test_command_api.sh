#!/usr/bin/env bash
# The command API end to end against the real local stack: `constellation commands` (API, views
# and command handler in one process), tenants bootstrapped with `constellation tenants create`,
# jobs submitted, deduplicated, changed and cancelled, bad requests refused with precise problems
# and without producing anything, tenant isolation, JWT refusals, workers, heartbeats and GPU
# drain, and state restored after a restart.
set -euo pipefail
# shellcheck source=tests/cli/lib_commands.sh
source "$(dirname "$0")/lib_commands.sh"
# Admission would add JobAdmitted/JobRejected to every job and move its version under this test's
# If-Match checks; it has its own test (test_admission.sh).
export CONSTELLATION_ADMISSION=off

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
events_of "$job" JobSubmitted >"$work/events"
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
[ "$(events_of "$job" JobSubmitted | wc -l)" = 1 ] || fail "a repeated Idempotency-Key made a second event"
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
