#!/usr/bin/env bash
# Every service starts against the real local stack, serves /healthz, /readyz and /metrics (valid
# Prometheus text per promtool), answers problem+json for an unknown path, logs JSON lines, and
# exits 0 promptly on SIGTERM.
set -euo pipefail
bin=${CSTL_BIN:?CSTL_BIN must name the constellation executable}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() { printf 'FAIL: %s\n' "$*" >&2; [ -n "${log:-}" ] && tail -20 "$log" >&2; exit 1; }
command -v promtool >/dev/null || fail "promtool is missing (Debian package prometheus; make deps)"
# The services need the topics and the read models' tables.
"$bin" topics create 2>/dev/null || fail "topics create"
"$bin" migrate 2>/dev/null || fail "migrate"

for svc in commands projector queries scheduler mcp worker; do
    var="CONSTELLATION_$(echo "$svc" | tr a-z A-Z)_ADDR"
    log="$work/$svc.log"
    extra=()
    # the worker needs GPUs and a token; it is ready once it follows the jobs log, registered or
    # not (no command API runs here: it keeps retrying the registration)
    [ "$svc" = worker ] && extra=(CONSTELLATION_WORKER_TOKEN=cstl_services_test
        CONSTELLATION_WORKER_FAKE_GPUS=1xT4:16384 CONSTELLATION_WORKER_API_URL=http://127.0.0.1:9)
    env "$var=127.0.0.1:0" CONSTELLATION_SHUTDOWN_GRACE_MS=3000 "${extra[@]}" "$bin" "$svc" 2>"$log" &
    pid=$!
    pids+=("$pid")
    addr=""
    for _ in $(seq 1 150); do
        addr=$(jq -r 'select(.msg == "listening") | .addr' "$log" 2>/dev/null | head -1)
        [ -n "$addr" ] && break
        kill -0 "$pid" 2>/dev/null || fail "$svc exited before listening"
        sleep 0.1
    done
    [ -n "$addr" ] || fail "$svc did not log a listening address"
    # every line on stderr is one JSON object
    jq -e . "$log" >/dev/null || fail "$svc wrote a log line that is not JSON"

    [ "$(curl -s -o "$work/body" -w '%{http_code}' "http://$addr/healthz")" = 200 ] ||
        fail "$svc /healthz"
    ready=""
    for _ in $(seq 1 300); do
        ready=$(curl -s -o "$work/body" -w '%{http_code}' "http://$addr/readyz")
        [ "$ready" = 200 ] && break
        sleep 0.1
    done
    [ "$ready" = 200 ] || fail "$svc /readyz answered $ready: $(cat "$work/body")"
    curl -s -D "$work/headers" -o "$work/metrics" "http://$addr/metrics"
    grep -qi '^content-type: text/plain; version=0.0.4' "$work/headers" || fail "$svc metrics type"
    promtool check metrics <"$work/metrics" || fail "$svc /metrics rejected by promtool"
    grep -q '^http_requests_total' "$work/metrics" || fail "$svc has no request counter"

    code=$(curl -s -D "$work/headers" -o "$work/body" -w '%{http_code}' "http://$addr/no/such/path")
    [ "$code" = 404 ] || fail "$svc unknown path answered $code"
    grep -qi '^content-type: application/problem+json' "$work/headers" || fail "$svc 404 type"
    jq -e '.status == 404 and (.title | length > 0)' "$work/body" >/dev/null || fail "$svc 404 body"

    kill -TERM "$pid"
    status=0
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && fail "$svc still running 10 s after SIGTERM"
    wait "$pid" || status=$?
    [ "$status" = 0 ] || fail "$svc exited $status after SIGTERM"
    jq -e 'select(.msg == "stopped")' "$log" >/dev/null || fail "$svc did not log its stop"
    echo "$svc: healthy, ready, metrics valid, stopped cleanly"
done
echo "services: all checks passed"
