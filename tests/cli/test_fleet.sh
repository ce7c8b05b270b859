#!/usr/bin/env bash
# The GPU fleet end to end on the real stack: `constellation commands`, `constellation scheduler`
# and three `constellation worker`s with four fake GPUs each (4 x 80 GiB; 2 x 40 and 2 x 80 GiB;
# 4 x 40 GiB). Three tenants with fair-share weights 1, 2 and 3
# (CONSTELLATION_SCHEDULER_TENANT_WEIGHTS) submit 200 jobs, 33, 67 and 100, with the same mix of
# GPU counts (1 to 4), memory minimums (some only the 80 GiB GPUs satisfy) and priorities; each job
# runs a short real command (it prints its GPUs and sleeps 0.3 to 1 s). Every job is admitted
# before the scheduler starts.
#
# Checked from the event log alone by tests/python/check_fleet.py, a client independent of the
# services: kcat reads the events (read_committed) and fastavro decodes them.
#   - All 200 jobs succeed, each in one run.
#   - No GPU is ever held by two jobs: GpusReserved / GpusReleased replayed in log order never
#     take a GPU another job holds; the reservation intervals of a GPU, and the run intervals
#     (RunStarted.started_at to RunFinished.finished_at) of the jobs assigned to it, are disjoint
#     in time; every run lies within its GPUs' reservation; every reservation of the tenants' jobs
#     is released at the end; and every job printed (constellation.jobs.logs) the GPUs it was
#     assigned.
#   - Fair share. A job is queued from its JobAdmitted to its JobAssigned. The window opens at the
#     first instant at which every tenant has a job queued (before the scheduler starts, as every
#     job is admitted by then) and closes at the first JobAssigned that leaves a tenant with none.
#     A tenant's GPU-seconds in the window are the sum over its runs of gpu_count x the part of
#     [started_at, finished_at] inside it; its share of the three tenants' total must be within
#     10 % (relative) of its weight's share (weight / 6). Each tenant's work is in proportion to
#     its weight, so under fair share the three drain together and the window covers nearly the
#     whole run; a tenant served faster than its share drains first and closes the window while
#     its share is too large, one served slower leaves the others to drain first.
#
# Priorities are strict (docs/scheduler.md): a tenant whose queued jobs are all of lower priority
# than another's waits whatever its share, so a window spent much like that would not measure fair
# share. The mix keeps the higher levels small (one job in nine at 90, two at 70) and ends on the
# lowest level for everyone: a small low-priority tail would hold the window open while its tenant
# waited and the others ran. The checker also fails when for more than 20 % of the window's
# running part a tenant's queued jobs were all below another's priority.
#
# CSTL_FLEET_KEEP=DIR keeps the dumps, the services' logs and the arguments of the checker there.
set -euo pipefail
# shellcheck source=tests/cli/lib_commands.sh
source "$(dirname "$0")/lib_commands.sh"
t_start=$SECONDS
export CONSTELLATION_SCHEDULER_ADDR=127.0.0.1:0
export CONSTELLATION_WORKER_ADDR=127.0.0.1:0
export CONSTELLATION_WORKER_HEARTBEAT_S=1
python=${CSTL_SOURCE_DIR:?}/.venv/bin/python
[ -x "$python" ] || fail "missing $python: run make deps to create the virtualenv with fastavro"
checker=$CSTL_SOURCE_DIR/tests/python/check_fleet.py
njobs=200
# Other tests register workers and leave jobs queued on the same stack: this test's jobs ask for a
# model only its own workers have.
model="FLEET-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

sched_pid=""
declare -A wpid=()
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    for f in "$work"/worker-*.log "$work/scheduler.log" "$work/service.log"; do
        [ -e "$f" ] && { echo "--- $f" >&2; grep -v '"component":"\(kafka\|http\)"' "$f" | tail -8 >&2; }
    done
    exit 1
}
stop_all() {
    for n in "${!wpid[@]}"; do kill -KILL "${wpid[$n]}" 2>/dev/null || true; done
    if [ -n "$sched_pid" ]; then kill -KILL "$sched_pid" 2>/dev/null || true; fi
    cleanup
}
trap stop_all EXIT

start_service
tenant() { # tenant NAME: creates it; prints "TENANT_ID API_KEY"
    "$bin" tenants create "$1" >"$work/t.json" 2>"$work/t.err" ||
        fail "tenants create: $(cat "$work/t.err")"
    jq -r '"\(.tenant_id) \(.api_key)"' "$work/t.json"
}
read -r _ fleet_key <<<"$(tenant fleet-test-fleet)"
wait_key "$fleet_key"
request POST /v1/api-keys "$fleet_key" '{"role":"worker"}'
expect 201 "worker key"
export CONSTELLATION_WORKER_TOKEN
CONSTELLATION_WORKER_TOKEN=$(jq -r .api_key "$work/body")
wait_key "$CONSTELLATION_WORKER_TOKEN"
export CONSTELLATION_WORKER_API_URL="http://$addr"
tid=() key=() weight=(1 2 3)
for i in 0 1 2; do
    read -r "tid[$i]" "key[$i]" <<<"$(tenant "fleet-test-$((i + 1))")"
    wait_key "${key[$i]}"
done

start_worker() { # start_worker NAME FAKE_GPU_SPEC
    : >"$work/worker-$1.log"
    CONSTELLATION_WORKER_HOSTNAME="$model-$1" "$bin" worker --fake-gpus "$2" \
        2>>"$work/worker-$1.log" &
    wpid[$1]=$!
}
start_worker a "4x$model:81920"
start_worker b "2x$model:40960,2x$model:81920"
start_worker c "4x$model:40960"
for n in a b c; do
    a=$(ready_addr "$work/worker-$n.log" "worker $n")
    for _ in $(seq 1 300); do # jobs are admitted only once a worker that fits them is registered
        curl -s "http://$a/metrics" | grep -q '^worker_registered 1' && continue 2
        sleep 0.1
    done
    fail "worker $n never registered"
done
sleep 2 # admission reads the registrations from the fleet events

# The mix, the same for every tenant, in submission order: blocks of nine jobs, "GPUS
# MIN_MEMORY_MIB PRIORITY SLEEP_S". Memory 81920 fits only the 80 GiB GPUs (4 of them only on
# worker a). Each tenant submits in proportion to its weight, the three at once: tenant 1's jobs
# are the oldest on average, so age alone would favour it.
kinds=("1 0 90 0.3" "1 81920 70 0.4" "2 40960 70 0.3" "4 0 50 0.8" "1 0 50 1.0"
    "2 81920 50 0.6" "3 40960 50 0.5" "2 0 50 0.9" "4 81920 50 0.7")
submit_all() { # submit_all I N: tenant I's N jobs in order (job ids to $work/jobs-I)
    local k g mem prio nap cmd body code
    for k in $(seq 0 $(($2 - 1))); do
        read -r g mem prio nap <<<"${kinds[$((k % ${#kinds[@]}))]}"
        cmd="[\"sh\",\"-c\",\"echo fleet \$CONSTELLATION_JOB_ID \$CUDA_VISIBLE_DEVICES; sleep $nap\"]"
        body="{\"gpu_count\":$g,\"min_gpu_memory_mib\":$mem,\"gpu_model\":\"$model\","
        body+="\"priority\":$prio,\"runtime_limit_seconds\":120,\"parameters\":{\"command\":$cmd}}"
        code=$(curl -s -o "$work/body-$1" -w '%{http_code}' -X POST -H "Authorization: Bearer ${key[$1]}" \
            -H 'Content-Type: application/json' --data-binary "$body" "http://$addr/v1/jobs")
        if [ "$code" != 201 ]; then
            echo "job $k of tenant $(($1 + 1)) answered $code: $(cat "$work/body-$1")" >"$work/submit-$1.err"
            return 1
        fi
        jq -r .id "$work/body-$1" >>"$work/jobs-$1"
    done
}
count=() spid=()
t_submit=$SECONDS
for i in 0 1 2; do
    count[i]=$(((njobs * weight[i] + 3) / 6))
    submit_all "$i" "${count[i]}" &
    spid[i]=$!
done
for i in 0 1 2; do wait "${spid[i]}" || fail "submit: $(cat "$work/submit-$i.err")"; done
cat "$work/jobs-0" "$work/jobs-1" "$work/jobs-2" >"$work/jobs"
tenant_args=()
for i in 0 1 2; do tenant_args+=(--tenant "${tid[$i]}=${weight[$i]}"); done

dump() { # dump TOPIC FILE: the committed records, for check_fleet.py
    kcat -C -b "$brokers" -t "$1" -e -o beginning -q -X isolation.level=read_committed \
        -f '%t %p %o %h\n%R%s' >"$2" 2>/dev/null || fail "cannot read $1"
}
admitted() {
    kcat -C -b "$brokers" -t constellation.jobs.events -e -o beginning -q \
        -X isolation.level=read_committed -f '%h\n' 2>/dev/null |
        grep -F 'ce_type=io.constellation.jobs.JobAdmitted.v1' |
        grep -oE 'ce_subject=[^,]+' | cut -d= -f2 | grep -cFx -f "$work/jobs" || true
}
for _ in $(seq 1 300); do
    [ "$(admitted)" = "$njobs" ] && break
    sleep 0.2
done
[ "$(admitted)" = "$njobs" ] || fail "only $(admitted) of $njobs jobs were admitted"
echo "fleet: ${count[*]} jobs of tenants 1 2 3 submitted and admitted in $((SECONDS - t_submit)) s"

CONSTELLATION_SCHEDULER_TENANT_WEIGHTS="${tid[0]}=${weight[0]},${tid[1]}=${weight[1]}"
export CONSTELLATION_SCHEDULER_TENANT_WEIGHTS+=",${tid[2]}=${weight[2]}"
: >"$work/scheduler.log"
t_sched=$SECONDS
"$bin" scheduler 2>>"$work/scheduler.log" &
sched_pid=$!
sched_addr=$(ready_addr "$work/scheduler.log" scheduler)

# until every job has ended (each job sleeps at most 1 s: a minute of no progress is a failure)
done_jobs=0 last_progress=$SECONDS
while :; do
    dump constellation.jobs.events "$work/jobs.dump"
    read -r ok other <<<"$("$python" "$checker" status "$CSTL_SOURCE_DIR/schemas" \
        "$work/jobs.dump" "${tenant_args[@]}")"
    [ "$other" = 0 ] || fail "$other jobs ended without succeeding"
    [ "$ok" = "$njobs" ] && break
    [ "$ok" != "$done_jobs" ] && { done_jobs=$ok; last_progress=$SECONDS; }
    [ $((SECONDS - last_progress)) -lt 60 ] ||
        fail "no job finished for 60 s ($ok of $njobs succeeded); the queue begins" \
            "$(curl -s "http://$sched_addr/v1/scheduler/queue" | jq -c '.jobs[:5]')"
    sleep 1
done
echo "fleet: all $njobs jobs succeeded $((SECONDS - t_sched)) s after the scheduler started"

# the scheduler releases the GPUs of finished jobs: wait for the last releases, then check
status=1
for _ in $(seq 1 20); do
    dump constellation.jobs.events "$work/jobs.dump"
    dump constellation.fleet.events "$work/fleet.dump"
    dump constellation.jobs.logs "$work/logs.dump"
    if "$python" "$checker" check "$CSTL_SOURCE_DIR/schemas" "$work/jobs.dump" "$work/fleet.dump" \
        "$work/logs.dump" --model "$model" --jobs "$njobs" "${tenant_args[@]}" \
        >"$work/check.out" 2>"$work/check.err"; then
        status=0
        break
    fi
    grep -q 'is still held by job' "$work/check.err" || break
    sleep 0.5
done
cat "$work/check.out"
if [ -n "${CSTL_FLEET_KEEP:-}" ]; then
    mkdir -p "$CSTL_FLEET_KEEP"
    cp "$work"/*.dump "$work"/*.log "$CSTL_FLEET_KEEP/"
    echo "check --model $model --jobs $njobs ${tenant_args[*]}" >"$CSTL_FLEET_KEEP/args"
fi
if [ "$status" != 0 ]; then
    cat "$work/check.err" >&2
    fail "the event log breaks the fleet's promises"
fi

stop_fleet
stop_service
echo "fleet: passed in $((SECONDS - t_start)) s"
