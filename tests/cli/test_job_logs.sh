#!/usr/bin/env bash
# GET /v1/jobs/{id}/logs on the real stack: `constellation commands` (with its handler) +
# `constellation scheduler` + a fake-GPU `constellation worker` + `constellation projector` +
# `constellation queries`. A client following a job from before it starts (queued: the scheduler
# is started only once the client is connected) receives all 300 lines it prints over about a
# second, in order, then the end event; a client connecting after the job
# finished receives every line and the end at once (follow=false too); resuming with
# Last-Event-ID (or ?last_event_id=) gets exactly the lines after it; another tenant gets 404; a
# cancelled job's stream ends with its state; stopping the service ends a following stream.
set -euo pipefail
# shellcheck source=tests/cli/lib_commands.sh
source "$(dirname "$0")/lib_commands.sh"
: "${CONSTELLATION_PG_DSN:?CONSTELLATION_PG_DSN must be set (stack.sh env)}"
export CONSTELLATION_QUERY_PG_DSN=${CONSTELLATION_QUERY_PG_DSN:-${CONSTELLATION_PG_DSN/user=constellation/user=constellation_query}}
export CONSTELLATION_SCHEDULER_ADDR=127.0.0.1:0
export CONSTELLATION_WORKER_ADDR=127.0.0.1:0
export CONSTELLATION_PROJECTOR_ADDR=127.0.0.1:0
export CONSTELLATION_QUERIES_ADDR=127.0.0.1:0
export CONSTELLATION_WORKER_HEARTBEAT_S=1
# Other tests register workers and queue jobs on the same stack: this test's jobs ask for a model
# only its own worker has, with the top priority.
model="LOG-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

pids=()
lib_fail() {
    printf 'FAIL: %s\n' "$*" >&2
    for f in "$work"/*.log; do
        [ -e "$f" ] && { echo "--- $f" >&2; grep -v '"component":"\(kafka\|http\)"' "$f" | tail -8 >&2; }
    done
    exit 1
}
fail() { lib_fail "$@"; }
stop_all() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    cleanup
}
trap stop_all EXIT

start() { # start NAME ARGS...: runs `constellation ARGS` logging to $work/NAME.log
    local name=$1
    shift
    : >"$work/$name.log"
    "$bin" "$@" 2>>"$work/$name.log" &
    pids+=($!)
}

"$bin" migrate 2>/dev/null || fail "migrate"
start_service
"$bin" tenants create logs-test >"$work/t.json" 2>"$work/t.err" || fail "tenants create: $(cat "$work/t.err")"
key=$(jq -r .api_key "$work/t.json")
"$bin" tenants create logs-other >"$work/t2.json" 2>"$work/t.err" || fail "tenants create: $(cat "$work/t.err")"
other=$(jq -r .api_key "$work/t2.json")
wait_key "$key"
request POST /v1/api-keys "$key" '{"role":"worker"}'
expect 201 "worker key"
export CONSTELLATION_WORKER_TOKEN
CONSTELLATION_WORKER_TOKEN=$(jq -r .api_key "$work/body")
wait_key "$CONSTELLATION_WORKER_TOKEN"
export CONSTELLATION_WORKER_API_URL="http://$addr"

start projector projector
ready_addr "$work/projector.log" projector >/dev/null
start queries queries
qaddr=$(ready_addr "$work/queries.log" queries)
CONSTELLATION_WORKER_HOSTNAME="$model-a" start worker worker --fake-gpus "1x$model:81920"
waddr=$(ready_addr "$work/worker.log" worker)
for _ in $(seq 1 300); do
    curl -s "http://$waddr/metrics" | grep -q '^worker_registered 1' && break
    sleep 0.1
done
curl -s "http://$waddr/metrics" | grep -q '^worker_registered 1' || fail "the worker never registered"

qget() { # qget PATH KEY [curl args...]: body in $work/qbody, prints the status
    local path=$1 k=$2
    shift 2
    curl -s -m 20 -D "$work/qheaders" -o "$work/qbody" -w '%{http_code}' \
        -H "Authorization: Bearer $k" "$@" "http://$qaddr$path"
}
# the events of an SSE capture as JSON lines {"id","event","data"}
sse_events() {
    python3 - "$1" <<'PY'
import json, sys
ev = {}
for raw in open(sys.argv[1], encoding="utf-8").read().split("\n"):
    if raw == "":
        if "event" in ev or "data" in ev:
            print(json.dumps({"id": ev.get("id"), "event": ev.get("event", "message"),
                              "data": json.loads(ev["data"]) if "data" in ev else None}))
        ev = {}
    elif not raw.startswith(":"):
        k, _, v = raw.partition(":")
        ev[k] = v[1:] if v.startswith(" ") else v
PY
}
# check_lines CAPTURE FIRST LAST: the capture holds lines FIRST..LAST of the job, in order, with
# increasing ids, then exactly one end event (succeeded, complete) and nothing after it
check_lines() {
    sse_events "$1" >"$work/events.json"
    jq -se --argjson a "$2" --argjson b "$3" '
        (map(select(.event == "line")) | map(.data.seq)) == [range($a; $b + 1)] and
        (map(select(.event == "line")) | all(.data.line == (if .data.seq % 10 == 9
             then "err \(.data.seq)" else "line \(.data.seq)" end) and
             .data.stream == (if .data.seq % 10 == 9 then "stderr" else "stdout" end))) and
        (map(select(.event == "line") | .id | tonumber) as $ids | $ids == ($ids | sort | unique)) and
        (.[-1].event == "end" and .[-1].data.state == "succeeded" and .[-1].data.complete == true) and
        (map(select(.event == "end")) | length == 1)' "$work/events.json" >/dev/null ||
        fail "$1 does not hold lines $2..$3 then the end: $(jq -c '[.event, .id, .data.seq // .data]' "$work/events.json" | head -3; echo ...; jq -c '[.event, .id, .data.seq // .data]' "$work/events.json" | tail -3)"
}

# 1. follow a job from before it starts: 300 lines over about a second, then the end
request POST /v1/jobs "$key" "{\"gpu_count\":1,\"priority\":100,\"gpu_model\":\"$model\",\"parameters\":{\"command\":[\"sh\",\"-c\",\"i=0; while [ \$i -lt 300 ]; do if [ \$((i % 10)) = 9 ]; then echo err \$i >&2; else echo line \$i; fi; i=\$((i + 1)); sleep 0.003; done\"],\"environment\":{}}}"
expect 201 "submit"
job=$(jq -r .id "$work/body")
state=""
for _ in $(seq 1 100); do
    [ "$(qget "/v1/jobs/$job" "$key")" = 200 ] && state=$(jq -r .job.state "$work/qbody")
    [ "$state" = queued ] && break
    sleep 0.1
done
[ "$state" = queued ] || fail "the job is not queued in the query API (\"$state\")"
# the follower keeps the raw stream and, per line, how long after the worker read it it arrived
python3 - "$qaddr" "$job" "$key" "$work/follow.sse" "$work/lag.txt" <<'PY' &
import datetime, http.client, sys, time, json
addr, job, key, out, lag = sys.argv[1:6]
c = http.client.HTTPConnection(addr, timeout=90)
c.request("GET", f"/v1/jobs/{job}/logs", headers={"Authorization": f"Bearer {key}"})
r = c.getresponse()
lags = []
with open(out, "wb") as f:
    while True:
        raw = r.readline()
        if not raw:
            break
        f.write(raw)
        f.flush()
        if raw.startswith(b"data: {\"run_id\""):
            at = json.loads(raw[6:])["at"]
            t = datetime.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            lags.append((time.time() - t) * 1000)
lags.sort()
with open(lag, "w") as f:
    if lags:
        f.write("p50 %.0f ms, p99 %.0f ms, max %.0f ms" % (lags[len(lags) // 2],
                lags[min(len(lags) - 1, len(lags) * 99 // 100)], lags[-1]))
PY
follower=$!
for _ in $(seq 1 100); do
    grep -q '^: connected' "$work/follow.sse" 2>/dev/null && break
    sleep 0.1
done
grep -q '^: connected' "$work/follow.sse" || fail "the follower never connected"
t0=$(date +%s%N)
start scheduler scheduler
ready_addr "$work/scheduler.log" scheduler >/dev/null
wait "$follower" || fail "the follower's curl exited $?"
t_follow=$((($(date +%s%N) - t0) / 1000000))
check_lines "$work/follow.sse" 0 299
echo "job logs: a client following from before the job started ($state) got its 300 lines in order and the end, $t_follow ms after the scheduler started; from the worker reading a line to the client: $(cat "$work/lag.txt")"

# the read side has the run's line count and every line of it
counts=$(psql "$CONSTELLATION_PG_DSN" -qAt -c "SELECT r.log_lines, g.next_seq, g.lines FROM read.runs r
    JOIN read.job_log_runs g USING (job_id, run_id) WHERE r.job_id = '$job'")
[ "$counts" = "300|300|300" ] || fail "log_lines | received | stored of the run: $counts, want 300|300|300"

# 2. after the job finished: every line and the end at once, following or not
t0=$(date +%s%N)
[ "$(qget "/v1/jobs/$job/logs" "$key" -N)" = 200 ] || fail "logs after the end: $(head -c 300 "$work/qbody")"
t_after=$((($(date +%s%N) - t0) / 1000000))
grep -qi '^content-type: text/event-stream' "$work/qheaders" || fail "not text/event-stream"
check_lines "$work/qbody" 0 299
[ "$t_after" -lt 5000 ] || fail "the stream of a finished job took $t_after ms to end"
[ "$(qget "/v1/jobs/$job/logs?follow=false" "$key" -N)" = 200 ] || fail "follow=false"
check_lines "$work/qbody" 0 299
echo "job logs: a client connecting after the end got the 300 lines and the end in $t_after ms (follow=false too)"

# 3. resume: exactly the lines after the given id
id149=$(sse_events "$work/follow.sse" | jq -r 'select(.event == "line" and .data.seq == 149) | .id')
[ -n "$id149" ] || fail "no id for line 149"
[ "$(qget "/v1/jobs/$job/logs" "$key" -N -H "Last-Event-ID: $id149")" = 200 ] || fail "resume"
check_lines "$work/qbody" 150 299
[ "$(qget "/v1/jobs/$job/logs?last_event_id=$id149&follow=false" "$key" -N)" = 200 ] || fail "resume by parameter"
check_lines "$work/qbody" 150 299
id299=$(sse_events "$work/follow.sse" | jq -r 'select(.event == "line" and .data.seq == 299) | .id')
[ "$(qget "/v1/jobs/$job/logs" "$key" -N -H "Last-Event-ID: $id299")" = 200 ] || fail "resume at the end"
sse_events "$work/qbody" | jq -se 'length == 1 and .[0].event == "end"' >/dev/null ||
    fail "resuming after the last line should give the end alone: $(cat "$work/qbody")"
echo "job logs: resuming with Last-Event-ID or last_event_id gave exactly the lines after it"

# 4. another tenant's job is 404, like an unknown one; bad parameters are 400
[ "$(qget "/v1/jobs/$job/logs" "$other")" = 404 ] || fail "another tenant read the logs: $(head -c 200 "$work/qbody")"
grep -qi '^content-type: application/problem+json' "$work/qheaders" || fail "404 is not a problem"
[ "$(qget "/v1/jobs/01900000-0000-7000-8000-000000000000/logs" "$key")" = 404 ] || fail "unknown job"
[ "$(qget "/v1/jobs/$job/logs?follow=yes" "$key")" = 400 ] || fail "follow=yes"
jq -e '.parameter == "follow"' "$work/qbody" >/dev/null || fail "400 does not name follow"
[ "$(qget "/v1/jobs/$job/logs" "$key" -H 'Last-Event-ID: -3')" = 400 ] || fail "a bad Last-Event-ID"
jq -e '.parameter == "Last-Event-ID" and .value == "-3"' "$work/qbody" >/dev/null || fail "400 does not name Last-Event-ID"
[ "$(qget "/v1/jobs/$job/logs?tail=5" "$key")" = 400 ] || fail "an unknown parameter"
echo "job logs: another tenant's job and an unknown job answered 404, bad parameters 400"

# 5. a cancelled job: its stream ends once the worker reported the run (with its line count)
submit_sleeper() { # submit_sleeper FIRST_LINE -> the job id; the job prints a line and sleeps
    request POST /v1/jobs "$key" "{\"gpu_count\":1,\"priority\":100,\"gpu_model\":\"$model\",\"parameters\":{\"command\":[\"sh\",\"-c\",\"echo $1; exec sleep 300\"],\"environment\":{}}}"
    expect 201 "submit"
    jq -r .id "$work/body"
}
wait_line() { # wait_line CAPTURE TEXT
    for _ in $(seq 1 300); do
        grep -q "\"line\" : \"$2\"" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    fail "$1 never got the line \"$2\""
}
follow() { # follow JOB CAPTURE: a follower in the background, its pid in $follower
    for _ in $(seq 1 100); do
        [ "$(qget "/v1/jobs/$1" "$key")" = 200 ] && break
        sleep 0.1
    done
    curl -sN -m 60 -H "Authorization: Bearer $key" "http://$qaddr/v1/jobs/$1/logs" >"$2" 2>/dev/null &
    follower=$!
}
cancelled=$(submit_sleeper "started")
follow "$cancelled" "$work/cancel.sse"
wait_line "$work/cancel.sse" started
request POST "/v1/jobs/$cancelled/cancel" "$key" '{}'
[ "$code" = 200 ] || [ "$code" = 202 ] || fail "cancel answered $code"
t0=$(date +%s%N)
wait "$follower" || fail "the cancelled job's follower exited $?"
sse_events "$work/cancel.sse" | jq -se '[.[] | select(.event == "line") | .data.line] == ["started"] and
    .[-1].event == "end" and .[-1].data.state == "cancelled" and .[-1].data.complete == true' >/dev/null ||
    fail "the cancelled job's stream: $(cat "$work/cancel.sse")"
echo "job logs: a cancelled job's stream ended with its state $((($(date +%s%N) - t0) / 1000000)) ms after the cancel"

# 6. the query service stops while a client follows a running job: the stream ends
running=$(submit_sleeper "up")
follow "$running" "$work/running.sse"
wait_line "$work/running.sse" up

# every service stops cleanly (in the sanitized build: no leak, no error at exit)
names=(projector queries worker scheduler)
for i in "${!pids[@]}"; do
    kill -TERM "${pids[$i]}" || fail "${names[$i]} is no longer running"
    status=0
    wait "${pids[$i]}" || status=$?
    [ "$status" = 0 ] || fail "${names[$i]} exited $status after SIGTERM"
    if [ "${names[$i]}" = queries ]; then
        wait "$follower" || true
        if ! grep -q '"line" : "up"' "$work/running.sse" || grep -q '^event: end' "$work/running.sse"; then
            fail "the stream of a running job at shutdown: $(cat "$work/running.sse")"
        fi
        echo "job logs: stopping the query service ended a following stream (no end event)"
    fi
done
pids=()
stop_service
