#!/usr/bin/env bash
# `make bench`: runs every benchmark and prints its figures next to its anchor. Benchmarks report,
# they never fail on a slow machine; a non-zero exit means one could not run at all.
#   bench_codec   Avro encode/decode of JobSubmitted vs jansson JSON (no stack needed)
#   bench_placement  the scheduler's placement decision, 10,000 jobs onto 1,000 GPUs (no stack)
#   bench_submit  POST /v1/jobs at increasing rates vs the raw produce rate of the same broker
#   bench_scheduler  submit -> admitted -> placed -> run on 1,000 fake GPUs of 16 worker agents:
#                 placements/s and submit -> assigned p50/p99, next to Slurm's 500 jobs/s
#   bench_projector  the jobs projector's catch-up rate and end-to-end lag vs COPY of the same rows
#                 into the same PostgreSQL (its own scratch database and topics)
#   bench_queries GET /v1/jobs/{id} and /v1/jobs?limit=50 on 1,000,000 jobs vs FastAPI and pgbench
# The service benchmarks start the local stack (and stop it again if they started it) and run
# `constellation commands` on a free loopback port.
# CSTL_BENCH_ONLY=NAME (e.g. bench_scheduler) runs that one alone.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
cd "$repo"
status=0
want() { [ -z "${CSTL_BENCH_ONLY:-}" ] || [ "$CSTL_BENCH_ONLY" = "$1" ]; }

if want bench_codec; then
    printf '\n== bench_codec ==\n'
    "$build/bench/bench_codec" || status=1
fi
if want bench_placement; then
    printf '\n== bench_placement ==\n'
    "$build/bench/bench_placement" || status=1
fi

stack_was_up=0
bash infra/local/stack.sh status >/dev/null 2>&1 && stack_was_up=1
work=$(mktemp -d)
svc_pid=""
cleanup() {
    for p in $worker_pids; do kill -KILL "$p" 2>/dev/null || true; done
    [ -n "$svc_pid" ] && kill -TERM "$svc_pid" 2>/dev/null && wait "$svc_pid" 2>/dev/null
    [ "$stack_was_up" = 0 ] && bash infra/local/stack.sh down >/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
bash infra/local/stack.sh up >/dev/null
eval "$(bash infra/local/stack.sh env)"
bin="$build/constellation"
"$bin" topics create 2>/dev/null

if want bench_projector; then
    printf '\n== bench_projector ==\n'
    CONSTELLATION_LOG_LEVEL=warn "$build/bench/bench_projector" || status=1
fi
# One benchmark failing to run does not keep the others from running.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# start_commands [VAR=VALUE...]: `constellation commands` on a free loopback port (at log level
# warn the service does not log its address), in $svc_pid and $addr; returns once it is ready.
start_commands() {
    addr=127.0.0.1:$(free_port)
    env "$@" CONSTELLATION_COMMANDS_ADDR="$addr" CONSTELLATION_LOG_LEVEL=warn \
        CONSTELLATION_HTTP_THREADS="${CSTL_BENCH_HTTP_THREADS:-8}" "$bin" commands 2>"$work/commands.log" &
    svc_pid=$!
    # Ready means one command partition is restored; the benchmarks need all of them (on a stack
    # whose logs grew, restoring the jobs partitions takes seconds, and a tenant's creation would
    # time out meanwhile).
    local want owned
    want=$(python3 -c 'import json, sys; print(sum(t["partitions"] for t in json.load(open(sys.argv[1]))["topics"] if t["name"] in ("constellation.tenants.commands", "constellation.jobs.commands", "constellation.fleet.commands")))' schemas/topics.json)
    for _ in $(seq 1 1200); do
        owned=$(curl -s "http://$addr/metrics" 2>/dev/null | awk '/^partitions_owned/ {s += $2} END {print s + 0}')
        [ "$owned" -ge "$want" ] && return 0
        sleep 0.1
    done
    echo "the command service did not restore its $want partitions within 120 s (owns ${owned:-0})" >&2
    tail -5 "$work/commands.log" >&2
    return 1
}
stop_commands() {
    { [ -n "$svc_pid" ] && kill -TERM "$svc_pid" 2>/dev/null && wait "$svc_pid" 2>/dev/null; } || true
    svc_pid=""
}
# new_tenant NAME: creates a tenant; its admin key in $key, its id in $tenant
new_tenant() {
    local out
    out=$("$bin" tenants create "$1")
    key=$(sed -n 's/.*"api_key" *: *"\([^"]*\)".*/\1/p' <<<"$out")
    tenant=$(sed -n 's/.*"tenant_id" *: *"\([^"]*\)".*/\1/p' <<<"$out")
    [ -n "$key" ] || { echo "could not bootstrap a tenant: $out" >&2; return 1; }
}
# wait_accepting BODY: until a job is accepted (every jobs partition restored, the new key known),
# so a benchmark does not count start-up errors
wait_accepting() {
    local code=""
    for _ in $(seq 1 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$addr/v1/jobs" \
            -H "Authorization: Bearer $key" -d "$1")
        [ "$code" = 201 ] && return 0
        sleep 0.1
    done
    echo "no job was accepted (last answer $code)" >&2
    return 1
}
run_submit() {
    start_commands || return 1
    new_tenant bench-tenant || return 1
    wait_accepting '{"gpu_count":1,"parameters":{"command":["true"]}}' || return 1
    CSTL_BENCH_ADDR=$addr CSTL_BENCH_TOKEN=$key "$build/bench/bench_submit"
}
# The scheduler end to end: 16 worker agents with 1,000 fake GPUs in all (15 x 64 + 40) of a model
# no other job asks for; bench_scheduler starts the scheduler itself, once its flood is queued.
worker_pids=""
run_scheduler() {
    start_commands CONSTELLATION_MAX_QUEUED_JOBS_PER_TENANT=20000 || return 1
    new_tenant bench-fleet || return 1
    local model wkey a n i gpus
    model="BENCH-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
    wkey=$(curl -s -X POST "http://$addr/v1/api-keys" -H "Authorization: Bearer $key" \
        -d '{"role":"worker"}' | sed -n 's/.*"api_key" *: *"\([^"]*\)".*/\1/p')
    [ -n "$wkey" ] || { echo "no worker key" >&2; return 1; }
    local addrs=()
    for i in $(seq 1 16); do
        gpus=64
        [ "$i" = 16 ] && gpus=40
        a=127.0.0.1:$(free_port)
        addrs+=("$a")
        CONSTELLATION_WORKER_ADDR=$a CONSTELLATION_WORKER_HOSTNAME="$model-$i" \
            CONSTELLATION_WORKER_TOKEN=$wkey CONSTELLATION_WORKER_API_URL="http://$addr" \
            CONSTELLATION_WORKER_HEARTBEAT_S=1 CONSTELLATION_LOG_LEVEL=warn \
            "$bin" worker --fake-gpus "${gpus}x$model:81920" 2>>"$work/workers.log" &
        worker_pids="$worker_pids $!"
        disown "$!" # bench_scheduler stops them: no job notice from this shell
    done
    for a in "${addrs[@]}"; do
        n=0
        until curl -s "http://$a/metrics" 2>/dev/null | grep -q '^worker_registered 1'; do
            n=$((n + 1))
            [ "$n" -lt 600 ] || { echo "worker $a never registered" >&2; tail -5 "$work/workers.log" >&2; return 1; }
            sleep 0.1
        done
    done
    wait_accepting "{\"gpu_count\":1,\"gpu_model\":\"$model\",\"parameters\":{\"command\":[\"true\"]}}" || return 1
    CSTL_BENCH_ADDR=$addr CSTL_BENCH_TOKEN=$key CSTL_BENCH_TENANT=$tenant CSTL_BENCH_MODEL=$model \
        CSTL_BENCH_BIN=$bin CSTL_BENCH_WORK=$work CSTL_BENCH_WORKER_PIDS="$worker_pids" \
        CONSTELLATION_LOG_LEVEL=warn "$build/bench/bench_scheduler"
}

if want bench_submit; then
    printf '\n== bench_submit ==\n'
    run_submit || status=1
    stop_commands
fi
if want bench_scheduler; then
    printf '\n== bench_scheduler ==\n'
    run_scheduler || status=1
    for p in $worker_pids; do kill -KILL "$p" 2>/dev/null || true; done
    worker_pids=""
    stop_commands
fi

if want bench_queries; then
    printf '\n== bench_queries ==\n'
    bash bench/bench_queries.sh "$build" || status=1
fi
exit "$status"
