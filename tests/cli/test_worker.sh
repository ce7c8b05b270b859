#!/usr/bin/env bash
# The worker agent on the real stack: `constellation commands` + `constellation scheduler` + two
# `constellation worker --fake-gpus ...`. Jobs run their real command and succeed; a failing
# command is requeued, then fails; a cancelled running job's process group is gone within 2 s; a
# job over its runtime limit is killed and timed out; output lines reach constellation.jobs.logs;
# a worker killed with SIGKILL has its job requeued and finished by the other worker; the workers
# survive a restart of the command API.
set -euo pipefail
# shellcheck source=tests/cli/lib_commands.sh
source "$(dirname "$0")/lib_commands.sh"
export CONSTELLATION_SCHEDULER_HEARTBEAT_TIMEOUT_S=6
export CONSTELLATION_SCHEDULER_ADDR=127.0.0.1:0
export CONSTELLATION_WORKER_ADDR=127.0.0.1:0
export CONSTELLATION_WORKER_HEARTBEAT_S=1
# The command API keeps its port across the restart below: the workers are configured with it.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CONSTELLATION_COMMANDS_ADDR=127.0.0.1:$port
# Other tests register workers and queue jobs on the same stack: this test's jobs ask for a model
# only its own workers have, with the top priority.
model="WRK-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

sched_pid=""
declare -A wpid=()
lib_fail() {
    printf 'FAIL: %s\n' "$*" >&2
    for f in "$work"/worker-*.log; do
        [ -e "$f" ] && { echo "--- $f" >&2; grep -v '"component":"\(kafka\|http\)"' "$f" | tail -12 >&2; }
    done
    [ -f "$work/service.log" ] && { echo "--- command API" >&2; grep -v '"component":"\(kafka\|http\)"' "$work/service.log" | tail -8 >&2; }
    exit 1
}
fail() { lib_fail "$@"; }
stop_all() {
    for n in "${!wpid[@]}"; do kill -KILL "${wpid[$n]}" 2>/dev/null || true; done
    [ -n "$sched_pid" ] && kill -KILL "$sched_pid" 2>/dev/null || true
    # job processes the test started are in groups of their own
    for f in "$work"/pid-*; do [ -e "$f" ] && kill -KILL -- "-$(cat "$f")" 2>/dev/null || true; done
    cleanup
}
trap stop_all EXIT

start_service
"$bin" tenants create worker-test >"$work/t.json" 2>"$work/t.err" || fail "tenants create: $(cat "$work/t.err")"
key=$(jq -r .api_key "$work/t.json")
wait_key "$key"
request POST /v1/api-keys "$key" '{"role":"worker"}'
expect 201 "worker key"
export CONSTELLATION_WORKER_TOKEN
CONSTELLATION_WORKER_TOKEN=$(jq -r .api_key "$work/body")
wait_key "$CONSTELLATION_WORKER_TOKEN"
export CONSTELLATION_WORKER_API_URL="http://$addr"

start_worker() { # start_worker NAME: 2 fake GPUs of the test's model
    : >"$work/worker-$1.log"
    CONSTELLATION_WORKER_HOSTNAME="$model-$1" "$bin" worker --fake-gpus "2x$model:81920" \
        2>>"$work/worker-$1.log" &
    wpid[$1]=$!
    local a
    a=$(ready_addr "$work/worker-$1.log" "worker $1")
    # jobs for the model are admitted only once a worker with it is registered
    for _ in $(seq 1 300); do
        curl -s "http://$a/metrics" | grep -q '^worker_registered 1' && return 0
        sleep 0.1
    done
    fail "worker $1 never registered"
}

: >"$work/scheduler.log"
"$bin" scheduler 2>>"$work/scheduler.log" &
sched_pid=$!
ready_addr "$work/scheduler.log" scheduler >/dev/null
start_worker a

submit() { # submit COMMAND_JSON [EXTRA_FIELDS] -> prints the job id
    request POST /v1/jobs "$key" "{\"gpu_count\":1,\"priority\":100,\"gpu_model\":\"$model\",\"parameters\":{\"command\":$1,\"environment\":{\"GREETING\":\"hi\"}}${2:+,$2}}"
    expect 201 "submit"
    jq -r .id "$work/body"
}
all_events() {
    kcat -C -b "$brokers" -t constellation.jobs.events -J -e -o beginning -q \
        -X isolation.level=read_committed 2>/dev/null >"$work/events.json"
}
has_event() { # has_event JOB TYPE (reads $work/events.json)
    jq -en --arg s "$1" --arg t "io.constellation.jobs.$2.v1" '[inputs |
        select(.headers != null) | .headers as $h |
        [range(0; $h | length; 2) as $i | {key: $h[$i], value: $h[$i + 1]}] | from_entries |
        select(.ce_subject == $s and .ce_type == $t)] | length > 0' "$work/events.json" \
        >/dev/null 2>&1
}
wait_event() { # wait_event JOB TYPE SECONDS
    local until=$((SECONDS + $3))
    while [ $SECONDS -lt $until ]; do
        all_events
        has_event "$1" "$2" && return 0
        sleep 0.3
    done
    for n in "${!wpid[@]}"; do grep -v '"component":"kafka"' "$work/worker-$n.log" | tail -8 >&2; done
    fail "job $1 has no $2 after $3 s"
}
wait_file() { # wait_file PATH SECONDS
    for _ in $(seq 1 $(($2 * 10))); do [ -s "$1" ] && return 0; sleep 0.1; done
    fail "$1 was never written"
}

# 1. a job runs its command with its GPUs and environment, and succeeds; its lines are logged
ok=$(submit '["sh","-c","echo \"hello $GREETING on $CUDA_VISIBLE_DEVICES\"; echo oops >&2"]')
wait_event "$ok" JobSucceeded 60
has_event "$ok" RunStarted || fail "job $ok succeeded without RunStarted"
logs=$(kcat -C -b "$brokers" -t constellation.jobs.logs -e -o beginning -q -f '%k %s\n' 2>/dev/null |
    tr -d '\000' | grep -a "^$ok " || true)
grep -aq "hello hi on GPU-" <<<"$logs" || fail "the job's stdout line is not on constellation.jobs.logs: $logs"
grep -aq "oops" <<<"$logs" || fail "the job's stderr line is not on constellation.jobs.logs"
echo "worker: a job ran its command with CUDA_VISIBLE_DEVICES and its environment, succeeded, and its lines were logged"

# 2. a failing command: requeued once (retry_limit 1), then failed
bad=$(submit '["sh","-c","exit 3"]' '"retry_limit":1')
wait_event "$bad" JobFailed 60
has_event "$bad" JobRequeued || fail "job $bad failed without being requeued first"
echo "worker: a failing command was requeued within its retry limit, then failed"

# 3. a running job is cancelled: its whole process group (a grandchild included) is gone in 2 s
cancel_me=$(submit "[\"sh\",\"-c\",\"sleep 300 & echo \$\$ > $work/pid-cancel; wait\"]")
wait_file "$work/pid-cancel" 30
wait_event "$cancel_me" RunStarted 30
pgid=$(cat "$work/pid-cancel")
kill -0 -- "-$pgid" 2>/dev/null || fail "the job's process group $pgid is not running"
request POST "/v1/jobs/$cancel_me/cancel" "$key" '{}'
[ "$code" = 200 ] || [ "$code" = 202 ] || fail "cancel answered $code"
t0=$(date +%s%N)
while kill -0 -- "-$pgid" 2>/dev/null; do
    [ $(($(date +%s%N) - t0)) -lt 2000000000 ] || fail "the cancelled job's process group $pgid is still there after 2 s"
    sleep 0.05
done
echo "worker: a cancelled job's process group was gone in $((($(date +%s%N) - t0) / 1000000)) ms"
wait_event "$cancel_me" RunFinished 30

# 4. a job over its runtime limit is killed and timed out
slow=$(submit "[\"sh\",\"-c\",\"echo \$\$ > $work/pid-slow; exec sleep 300\"]" '"runtime_limit_seconds":2')
wait_file "$work/pid-slow" 30
wait_event "$slow" JobTimedOut 30
wait_event "$slow" RunFinished 10
kill -0 -- "-$(cat "$work/pid-slow")" 2>/dev/null && fail "the timed-out job's processes still run"
echo "worker: a job over its runtime limit was killed and timed out"

# 5. the command API restarts: the worker carries on (heartbeats, reports) with the new one
stop_service
sleep 2
start_service
after=$(submit '["sh","-c","echo after restart"]')
wait_event "$after" JobSucceeded 60
echo "worker: survived a restart of the command API"

# 6. a worker killed with SIGKILL: its job is requeued and finished by another worker
lost=$(submit "[\"sh\",\"-c\",\"if [ -e $work/marker ]; then echo second run; exit 0; fi; touch $work/marker; echo \$\$ > $work/pid-lost; exec sleep 300\"]")
wait_file "$work/pid-lost" 30
wait_event "$lost" RunStarted 30
start_worker b
kill -KILL "${wpid[a]}"
wait "${wpid[a]}" 2>/dev/null || true
unset 'wpid[a]'
wait_event "$lost" JobRequeued 60
wait_event "$lost" JobSucceeded 60
# the job's main process dies with its worker (PR_SET_PDEATHSIG)
kill -0 -- "-$(cat "$work/pid-lost")" 2>/dev/null && fail "the killed worker's job process still runs"
grep -q '"job started"' "$work/worker-b.log" || fail "worker b did not run the requeued job"
echo "worker: a killed worker's job was requeued and finished by the other worker"

stop_fleet
stop_service
