#!/usr/bin/env bash
# The scheduler on the real stack, driven over the command API: queued jobs are placed on the
# registered worker's free GPUs (ReserveGpus, then AssignJob); the job that
# does not fit waits with a named reason and a queue position; a cancelled job's GPUs are released
# and the waiting job takes them; a worker whose heartbeats stop is marked lost and its jobs are
# requeued onto a worker that is alive.
set -euo pipefail
# shellcheck source=tests/cli/lib_commands.sh
source "$(dirname "$0")/lib_commands.sh"
export CONSTELLATION_SCHEDULER_HEARTBEAT_TIMEOUT_S=6
export CONSTELLATION_SCHEDULER_ADDR=127.0.0.1:0
# Other tests register workers and queue jobs on the same stack: this test's jobs ask for a model
# only its own workers have.
model="SCHED-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

sched_pid=""
sched_addr=""
beat_pid=""
stop_all() {
    [ -n "$beat_pid" ] && kill "$beat_pid" 2>/dev/null || true
    [ -n "$sched_pid" ] && kill -TERM "$sched_pid" 2>/dev/null && wait "$sched_pid" 2>/dev/null || true
    cleanup
}
trap stop_all EXIT

start_service
"$bin" tenants create scheduler-test >"$work/t.json" 2>"$work/t.err" || fail "tenants create: $(cat "$work/t.err")"
key=$(jq -r .api_key "$work/t.json")
wait_key "$key"
request POST /v1/api-keys "$key" '{"role":"worker"}'
expect 201 "worker key"
key_w=$(jq -r .api_key "$work/body")
wait_key "$key_w"

register() { # register HOSTNAME N -> prints the worker id
    local gpus
    gpus=$(python3 -c 'import json,sys,uuid; print(json.dumps([{"uuid":"GPU-"+str(uuid.uuid4()),"model":sys.argv[1],"memory_mib":81920,"compute_capability":"9.0"} for _ in range(int(sys.argv[2]))]))' "$model" "$2")
    request POST /v1/workers "$key_w" "{\"hostname\":\"$1\",\"gpus\":$gpus}"
    expect 201 "register worker $1"
    jq -r .id "$work/body"
}
beat() { # beat WORKER_ID: one heartbeat
    curl -s -o /dev/null -X POST -H "Authorization: Bearer $key_w" -H 'Content-Type: application/json' \
        --data-binary '{"gpus":[]}' "http://$addr/v1/workers/$1/heartbeat"
}
w1=$(register node-1 4)
beat "$w1"

# heartbeats of w1 (and later w2) in the background, every second, while the file exists
touch "$work/beat-$w1"
(while :; do for f in "$work"/beat-*; do [ -e "$f" ] && beat "${f##*/beat-}"; done; sleep 1; done) &
beat_pid=$!

# The test's jobs have the top priority, so that jobs other tests left queued on the same stack
# (which may fit any GPU) are placed after them.
submit() { # submit GPU_COUNT -> prints the job id
    request POST /v1/jobs "$key" "{\"gpu_count\":$1,\"priority\":100,\"min_gpu_memory_mib\":40960,\"gpu_model\":\"$model\",\"runtime_limit_seconds\":3600,\"parameters\":{\"command\":[\"true\"]}}"
    expect 201 "submit"
    jq -r .id "$work/body"
}
# times job $1 was assigned, as the scheduler logged it (its events are checked at the end)
assignments() { jq -c --arg j "$1" 'select(.msg == "job assigned" and .job_id == $j)' "$work/scheduler.log" | wc -l; }
wait_assigned() { # wait_assigned JOB [N]: until the scheduler has assigned it N times (1)
    for _ in $(seq 1 300); do
        [ "$(assignments "$1")" -ge "${2:-1}" ] && return 0
        sleep 0.1
    done
    grep -v '"component":"kafka"' "$work/scheduler.log" | tail -20 >&2
    fail "job $1 was never assigned; queue: $(curl -s "http://$sched_addr/v1/scheduler/queue")"
}
queue_entry() { curl -s "http://$sched_addr/v1/scheduler/queue" | jq -c --arg j "$1" '.jobs[] | select(.job_id == $j)'; }

a=$(submit 2)
b=$(submit 2)
for j in "$a" "$b"; do # admitted before the scheduler starts: it places them first
    for _ in $(seq 1 100); do
        [ -n "$(events_of "$j" JobAdmitted)" ] && break
        sleep 0.2
    done
    [ -n "$(events_of "$j" JobAdmitted)" ] || fail "job $j was not admitted"
done
: >"$work/scheduler.log"
"$bin" scheduler 2>>"$work/scheduler.log" &
sched_pid=$!
for _ in $(seq 1 150); do
    sched_addr=$(jq -r 'select(.msg == "listening") | .addr' "$work/scheduler.log" 2>/dev/null | head -1)
    [ -n "$sched_addr" ] && break
    sleep 0.1
done
[ -n "$sched_addr" ] || fail "the scheduler did not log its address"
for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$sched_addr/readyz")" = 200 ] && break
    sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$sched_addr/readyz")" = 200 ] ||
    fail "the scheduler never became ready: $(tail -3 "$work/scheduler.log")"

wait_assigned "$a"
wait_assigned "$b"
c=$(submit 1) # the worker's 4 GPUs are held by a and b
for _ in $(seq 1 100); do
    entry=$(queue_entry "$c")
    [ -n "$entry" ] && [ "$(jq -r .reason <<<"$entry")" = WAITING_FOR_GPUS ] && break
    sleep 0.1
done
jq -e '.reason == "WAITING_FOR_GPUS" and .position >= 1 and (.message | length > 0)' <<<"$entry" \
    >/dev/null || fail "the waiting job's queue entry: $entry"
[ "$(assignments "$c")" = 0 ] || fail "job $c was assigned with every GPU held"
echo "scheduler: two jobs placed on one worker's 4 GPUs; the third waits (WAITING_FOR_GPUS)"

# Cancel a: its GPUs are released and c takes one of them.
request POST "/v1/jobs/$a/cancel" "$key" '{}'
[ "$code" = 200 ] || [ "$code" = 202 ] || fail "cancel answered $code"
wait_assigned "$c"
echo "scheduler: a cancelled job's GPUs are released and the waiting job placed"

# w1 stops beating: it is marked lost and its jobs are requeued (back in the queue, waiting for a
# worker); a second worker registers and they are placed on it.
rm -f "$work/beat-$w1"
for j in "$b" "$c"; do
    for _ in $(seq 1 300); do
        [ -n "$(queue_entry "$j")" ] && break
        sleep 0.1
    done
    [ -n "$(queue_entry "$j")" ] || fail "job $j of the silent worker was not requeued"
done
w2=$(register node-2 4)
beat "$w2"
touch "$work/beat-$w2"
for j in "$b" "$c"; do
    wait_assigned "$j" 2
    on=$(jq -r --arg j "$j" 'select(.msg == "job assigned" and .job_id == $j) |
        .placement.worker_id' "$work/scheduler.log" | tail -1)
    [ "$on" = "$w2" ] || fail "job $j was placed again on $on, not on the live worker $w2"
done
# the log agrees: every job the scheduler assigned has its JobAssigned events
for j in "$b" "$c"; do
    [ "$(events_of "$j" JobAssigned | wc -l)" = 2 ] || fail "job $j: JobAssigned events differ"
done
echo "scheduler: a silent worker is marked lost, its jobs requeued and placed again"
kill -TERM "$sched_pid"
wait "$sched_pid" || fail "the scheduler exited $? after SIGTERM"
sched_pid=""
stop_service
