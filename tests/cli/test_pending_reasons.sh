#!/usr/bin/env bash
# The scheduler's pending reasons reach the query API on the real stack: commands (with admission),
# scheduler, projector and queries run as services. Jobs asking for a GPU model whose only worker
# went silent show reason gpu_model_absent in GET /v1/jobs/{id}; once a worker with that model
# registers, the highest-priority job is assigned (its reason is no longer a pending one) and the
# next one shows waiting_for_gpus with the scheduler's message; the others show
# earlier_jobs_ahead, higher_priority_ahead, no_gpu_with_memory and
# not_enough_gpus_on_any_worker, and their queue_position in the query API is the scheduler's
# position within the tenant. The topic carries a tombstone for an assigned job, and a restarted
# scheduler publishes no unchanged reason again.
set -euo pipefail
# shellcheck source=tests/cli/lib_commands.sh
source "$(dirname "$0")/lib_commands.sh"
: "${CONSTELLATION_PG_DSN:?CONSTELLATION_PG_DSN must be set (stack.sh env)}"
export CONSTELLATION_QUERY_PG_DSN=${CONSTELLATION_QUERY_PG_DSN:-${CONSTELLATION_PG_DSN/user=constellation/user=constellation_query}}
export CONSTELLATION_SCHEDULER_HEARTBEAT_TIMEOUT_S=4
# Other tests register workers and queue jobs on the same stack: this test's jobs ask for a model
# only its own workers have, and belong to a tenant of their own.
model="PEND-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
waiting_topic=constellation.jobs.waiting

sched_pid="" proj_pid="" q_pid="" beat_pid=""
sched_addr="" qaddr=""
stop_all() {
    [ -n "$beat_pid" ] && kill "$beat_pid" 2>/dev/null || true
    for p in "$sched_pid" "$q_pid" "$proj_pid"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    cleanup
}
trap stop_all EXIT
"$bin" migrate 2>/dev/null || fail "migrate"

# start_bg NAME LOG ENV_VAR: runs `constellation NAME` with ENV_VAR=127.0.0.1:0 and waits for
# /readyz; sets $started_pid and $started_addr
start_bg() {
    local name=$1 log=$2 var=$3
    : >"$log"
    env "$var=127.0.0.1:0" "$bin" "$name" 2>>"$log" &
    started_pid=$!
    started_addr=""
    for _ in $(seq 1 150); do
        started_addr=$(jq -r 'select(.msg == "listening") | .addr' "$log" 2>/dev/null | head -1)
        [ -n "$started_addr" ] && break
        kill -0 "$started_pid" 2>/dev/null || fail "$name exited before listening: $(tail -3 "$log")"
        sleep 0.1
    done
    [ -n "$started_addr" ] || fail "$name did not log its address"
    for _ in $(seq 1 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$started_addr/readyz")" = 200 ] && return 0
        sleep 0.1
    done
    fail "$name never became ready: $(grep -v '"component":"kafka"' "$log" | tail -3)"
}
start_scheduler() {
    start_bg scheduler "$work/scheduler.log" CONSTELLATION_SCHEDULER_ADDR
    sched_pid=$started_pid sched_addr=$started_addr
}

start_service
start_bg projector "$work/projector.log" CONSTELLATION_PROJECTOR_ADDR
proj_pid=$started_pid
start_bg queries "$work/queries.log" CONSTELLATION_QUERIES_ADDR
q_pid=$started_pid qaddr=$started_addr

"$bin" tenants create pending-reasons-test >"$work/t.json" 2>"$work/t.err" ||
    fail "tenants create: $(cat "$work/t.err")"
key=$(jq -r .api_key "$work/t.json")
tenant=$(jq -r .tenant_id "$work/t.json")
wait_key "$key"
request POST /v1/api-keys "$key" '{"role":"worker"}'
expect 201 "worker key"
key_w=$(jq -r .api_key "$work/body")
wait_key "$key_w"

register() { # register HOSTNAME MODEL N MEMORY_MIB -> prints the worker id
    local gpus
    gpus=$(python3 -c 'import json,sys,uuid; print(json.dumps([{"uuid":"GPU-"+str(uuid.uuid4()),"model":sys.argv[1],"memory_mib":int(sys.argv[3]),"compute_capability":"9.0"} for _ in range(int(sys.argv[2]))]))' "$2" "$3" "$4")
    request POST /v1/workers "$key_w" "{\"hostname\":\"$1\",\"gpus\":$gpus}"
    expect 201 "register worker $1"
    jq -r .id "$work/body"
}
beat() {
    curl -s -o /dev/null -X POST -H "Authorization: Bearer $key_w" -H 'Content-Type: application/json' \
        --data-binary '{"gpus":[]}' "http://$addr/v1/workers/$1/heartbeat"
}
# heartbeats of the workers with a file beat-<id>, twice a second
(while :; do for f in "$work"/beat-*; do [ -e "$f" ] && beat "${f##*/beat-}"; done; sleep 0.5; done) &
beat_pid=$!
submit() { # submit GPU_COUNT PRIORITY MIN_MEMORY_MIB -> prints the job id
    request POST /v1/jobs "$key" "{\"gpu_count\":$1,\"priority\":$2,\"min_gpu_memory_mib\":$3,\"gpu_model\":\"$model\",\"runtime_limit_seconds\":3600,\"parameters\":{\"command\":[\"true\"]}}"
    expect 201 "submit"
    jq -r .id "$work/body"
}
job() { # job ID: the job as GET /v1/jobs/{id} of the query service shows it
    curl -s -H "Authorization: Bearer $key" "http://$qaddr/v1/jobs/$1" | jq -c .job
}
wait_job() { # wait_job ID JQ_CONDITION WHAT: until the query API's job satisfies the condition
    local j=""
    for _ in $(seq 1 300); do
        j=$(job "$1")
        jq -e "$2" <<<"$j" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "job $1 $3; the query API shows $j; the scheduler: $(curl -s "http://$sched_addr/v1/scheduler/queue" |
        jq -c --arg j "$1" '.jobs[] | select(.job_id == $j)')"
}

# 1. The only worker with the model (two GPUs of 200000 MiB) registers and goes silent; a worker
# with another model stays online. Admission accepts jobs the silent worker could run.
silent=$(register pending-silent "$model" 2 200000)
other=$(register pending-other "$model-other" 1 81920)
touch "$work/beat-$other"
h=$(submit 1 100 0)     # the highest priority
a=$(submit 1 90 0)
e=$(submit 1 90 200000) # more memory than the worker that comes later has
f=$(submit 2 90 0)      # more GPUs than it has
for j in $h $a $e $f; do
    wait_job "$j" '.state == "queued"' "was not admitted"
done
sleep $((CONSTELLATION_SCHEDULER_HEARTBEAT_TIMEOUT_S + 1)) # the silent worker is offline now
start_scheduler
for j in $h $a $e $f; do
    wait_job "$j" '.state == "queued" and .reason == "gpu_model_absent" and
        (.reason_message | contains("'"$model"'"))' "does not wait for its model"
done
echo "pending reasons: jobs asking for a model no online worker has show gpu_model_absent"

# 2. A worker with one GPU of the model registers: h is assigned and no longer pending, a is next
# in line; the others wait for what that worker lacks; later jobs wait behind a.
w1=$(register pending-1 "$model" 1 81920)
touch "$work/beat-$w1"
wait_job "$h" '.state == "assigned" and .reason == "waiting_for_run_start" and
    .queue_position == null' "was not assigned once a worker had its model"
echo "pending reasons: once assigned, the job's reason is waiting_for_run_start"
wait_job "$a" '.reason == "waiting_for_gpus" and (.reason_message | startswith("next in line"))' \
    "does not wait for h's GPU"
wait_job "$e" '.reason == "no_gpu_with_memory" and (.reason_message | contains("81920"))' \
    "does not wait for a GPU with its memory"
wait_job "$f" '.reason == "not_enough_gpus_on_any_worker"' "does not wait for a worker with 2 GPUs"
c=$(submit 1 90 0) # behind a, same priority
d=$(submit 1 40 0) # behind a, lower priority
wait_job "$c" '.reason == "earlier_jobs_ahead" and (.reason_message | contains("'"$a"'"))' \
    "does not wait behind a"
wait_job "$d" '.reason == "higher_priority_ahead" and (.reason_message | contains("'"$a"'"))' \
    "does not wait behind higher priorities"
echo "pending reasons: waiting_for_gpus, no_gpu_with_memory, not_enough_gpus_on_any_worker, earlier_jobs_ahead, higher_priority_ahead"

# 3. The query API's queue_position is the scheduler's position within the tenant (priority,
# then age), for every queued job of the tenant, and GET /v1/queue lists them in that order.
queued="[\"$a\",\"$e\",\"$f\",\"$c\",\"$d\"]" # priority first (d last), then submission
sched_positions() {
    curl -s "http://$sched_addr/v1/scheduler/queue" | jq -c --arg t "$tenant" \
        '[.jobs[] | select(.tenant_id == $t) | {id: .job_id, p: .tenant_position}] | sort_by(.p)'
}
query_positions() {
    for j in $a $c $d $e $f; do job "$j"; done |
        jq -sc '[.[] | {id: .id, p: .queue_position}] | sort_by(.p)'
}
for _ in $(seq 1 100); do
    s=$(sched_positions) q=$(query_positions)
    [ "$s" = "$q" ] && break
    sleep 0.1
done
[ "$s" = "$q" ] || fail "queue positions differ: scheduler $s, query API $q"
jq -e --argjson o "$queued" 'map(.id) == $o and map(.p) == [1, 2, 3, 4, 5]' <<<"$s" >/dev/null ||
    fail "the scheduler's tenant queue is not priority, then age, of this test's five jobs: $s"
got=$(curl -s -H "Authorization: Bearer $key" "http://$qaddr/v1/queue" | jq -c '[.items[] | {id, p: .position}]')
[ "$got" = "$s" ] || fail "GET /v1/queue: $got, the scheduler: $s"
echo "pending reasons: queue_position in the query API equals the scheduler's tenant position"

# 4. The assigned job's record was ended with a tombstone on the compacted topic.
tombstone_of() {
    kcat -C -b "$brokers" -t "$waiting_topic" -J -e -o beginning -q 2>/dev/null |
        jq -c --arg k "$1" 'select(.key == $k and .payload == null)'
}
for _ in $(seq 1 50); do
    [ -n "$(tombstone_of "$h")" ] && break
    sleep 0.1
done
[ -n "$(tombstone_of "$h")" ] || fail "no tombstone for the assigned job $h on $waiting_topic"
echo "pending reasons: the assigned job's record has its tombstone"

# 5. h is cancelled: a takes the GPU (no longer pending), c is next in line, d behind it.
request POST "/v1/jobs/$h/cancel" "$key" '{}'
[ "$code" = 200 ] || [ "$code" = 202 ] || fail "cancel answered $code"
wait_job "$a" '.state == "assigned" and .reason == "waiting_for_run_start"' "did not take h's GPU"
wait_job "$c" '.reason == "waiting_for_gpus" and (.reason_message | startswith("next in line"))' \
    "is not next in line after a"
wait_job "$d" '.reason == "higher_priority_ahead" and (.reason_message | contains("'"$c"'"))' \
    "does not wait behind c"
echo "pending reasons: a freed GPU moves the next job to waiting_for_gpus"

# 6. A restarted scheduler reads back what was published (records and tombstones): no unchanged
# reason and no tombstone goes out again.
ours="[\"$h\",\"$a\",\"$c\",\"$d\",\"$e\",\"$f\"]"
records_of_ours() {
    kcat -C -b "$brokers" -t "$waiting_topic" -J -e -o beginning -q 2>/dev/null |
        jq -c --argjson ours "$ours" 'select(.key as $k | $ours | index($k))' | wc -l
}
sleep 1 # the last plan's records delivered
before=$(records_of_ours)
kill -TERM "$sched_pid"
wait "$sched_pid" || fail "the scheduler exited $? after SIGTERM"
sched_pid=""
start_scheduler
sleep 3 # a few plans
after=$(records_of_ours)
[ "$after" = "$before" ] || fail "a restarted scheduler produced $((after - before)) records again"
wait_job "$c" '.reason == "waiting_for_gpus"' "lost its reason after the restart"
echo "pending reasons: a restarted scheduler publishes nothing unchanged ($before records of 6 jobs)"

for p in "$sched_pid" "$q_pid" "$proj_pid"; do
    kill -TERM "$p"
    wait "$p" || fail "a service exited $? after SIGTERM"
done
sched_pid="" q_pid="" proj_pid=""
stop_service
