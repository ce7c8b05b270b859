#!/usr/bin/env bash
# `make bench`: runs every benchmark and prints its figures next to its anchor. Benchmarks report,
# they never fail on a slow machine; a non-zero exit means one could not run at all.
#   bench_codec   Avro encode/decode of JobSubmitted vs jansson JSON (no stack needed)
#   bench_placement  the scheduler's placement decision, 10,000 jobs onto 1,000 GPUs (no stack)
#   bench_submit  POST /v1/jobs at increasing rates vs the raw produce rate of the same broker
#   bench_projector  the jobs projector's catch-up rate and end-to-end lag vs COPY of the same rows
#                 into the same PostgreSQL (its own scratch database and topics)
#   bench_queries GET /v1/jobs/{id} and /v1/jobs?limit=50 on 1,000,000 jobs vs FastAPI and pgbench
# The service benchmarks start the local stack (and stop it again if they started it) and run
# `constellation commands` on a free loopback port.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
cd "$repo"
status=0

printf '\n== bench_codec ==\n'
"$build/bench/bench_codec" || status=1

printf '\n== bench_placement ==\n'
"$build/bench/bench_placement" || status=1

stack_was_up=0
bash infra/local/stack.sh status >/dev/null 2>&1 && stack_was_up=1
work=$(mktemp -d)
svc_pid=""
cleanup() {
    [ -n "$svc_pid" ] && kill -TERM "$svc_pid" 2>/dev/null && wait "$svc_pid" 2>/dev/null
    [ "$stack_was_up" = 0 ] && bash infra/local/stack.sh down >/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
bash infra/local/stack.sh up >/dev/null
eval "$(bash infra/local/stack.sh env)"
bin="$build/constellation"
"$bin" topics create 2>/dev/null

printf '\n== bench_projector ==\n'
CONSTELLATION_LOG_LEVEL=warn "$build/bench/bench_projector" || status=1
# One benchmark failing to run does not keep the others from running.
run_submit() {
    # A free loopback port chosen here: at log level warn the service does not log its address.
    local port addr
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    addr=127.0.0.1:$port
    CONSTELLATION_COMMANDS_ADDR=$addr CONSTELLATION_LOG_LEVEL=warn \
        CONSTELLATION_HTTP_THREADS="${CSTL_BENCH_HTTP_THREADS:-8}" "$bin" commands 2>"$work/commands.log" &
    svc_pid=$!
    local ready=0
    for _ in $(seq 1 300); do
        curl -sf "http://$addr/readyz" >/dev/null && ready=1 && break
        sleep 0.1
    done
    if [ "$ready" = 0 ]; then
        echo "bench_submit: the command service did not start" >&2
        tail -5 "$work/commands.log" >&2
        return 1
    fi
    key=$("$bin" tenants create bench-tenant | sed -n 's/.*"api_key" *: *"\([^"]*\)".*/\1/p')
    if [ -z "$key" ]; then
        echo "bench_submit: could not bootstrap a tenant" >&2
        return 1
    fi
    # Ready means one partition is served; wait until a job is accepted (every jobs partition
    # restored, the new key known) so the first step does not count start-up errors.
    local code=""
    for _ in $(seq 1 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$addr/v1/jobs" \
            -H "Authorization: Bearer $key" -d '{"gpu_count":1,"parameters":{"command":["true"]}}')
        [ "$code" = 201 ] && break
        sleep 0.1
    done
    CSTL_BENCH_ADDR=$addr CSTL_BENCH_TOKEN=$key "$build/bench/bench_submit"
}

printf '\n== bench_submit ==\n'
run_submit || status=1
{ [ -n "$svc_pid" ] && kill -TERM "$svc_pid" 2>/dev/null && wait "$svc_pid" 2>/dev/null; } || true
svc_pid=""

printf '\n== bench_queries ==\n'
bash bench/bench_queries.sh "$build" || status=1
exit "$status"
