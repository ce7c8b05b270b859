#!/usr/bin/env bash
# `make run`: the whole system on this machine. Installs what is missing, starts Kafka and
# PostgreSQL on loopback, builds, creates the topics, migrates, then runs every service in the
# foreground until Ctrl-C, which stops them cleanly (SIGTERM, then waits). The stack keeps running
# afterwards for a fast next start; `make stack-down` stops it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
say() { printf 'run: %s\n' "$*"; }

bash infra/local/deps.sh
bash infra/local/stack.sh up
eval "$(bash infra/local/stack.sh env)"
make --no-print-directory build
bin="$repo/build/constellation"

"$bin" topics create
"$bin" migrate

services=(commands queries projector scheduler mcp worker)
pids=()
stop_all() { # [exit status]
    local status=${1:-0}
    trap - INT TERM
    say "stopping services"
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    say "services stopped; Kafka and PostgreSQL keep running (make stack-down stops them)"
    exit "$status"
}
trap stop_all INT TERM

for svc in "${services[@]}"; do
    "$bin" "$svc" &
    pids+=("$!")
done

addr() { "$bin" config show | sed -n "s/^CONSTELLATION_$1_ADDR=//p"; }

# A first tenant and its admin key, made once through the command API's handler and kept.
tenant_file="${CSTL_LOCAL_DIR:-$repo/.local}/tenant.json"
for _ in $(seq 1 600); do
    curl -sf "http://$(addr COMMANDS)/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
if [ ! -s "$tenant_file" ]; then
    if "$bin" tenants create default >"$tenant_file.tmp"; then
        mv "$tenant_file.tmp" "$tenant_file"
    else
        rm -f "$tenant_file.tmp"
        say "could not create the default tenant (see the log above)"
    fi
fi
api_key=$(sed -n 's/.*"api_key" *: *"\([^"]*\)".*/\1/p' "$tenant_file" 2>/dev/null || true)
cat <<EOT

Constellation is running. Logs are JSON lines on this terminal.
  command API   http://$(addr COMMANDS)
  query API     http://$(addr QUERIES)
  projector     http://$(addr PROJECTOR)/metrics
  scheduler     http://$(addr SCHEDULER)/metrics
  MCP server    http://$(addr MCP)
  worker agent  http://$(addr WORKER)/metrics
  Kafka         ${CONSTELLATION_KAFKA_BROKERS}
  PostgreSQL    ${CONSTELLATION_PG_DSN}
  admin API key ${api_key:-(none)}   (tenant of $tenant_file)
Try: curl -H "Authorization: Bearer \$KEY" http://$(addr QUERIES)/v1/jobs
Every service serves /healthz, /readyz and /metrics. Press Ctrl-C to stop.

EOT

# If any service dies, stop the others and report it.
while :; do
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            wait "${pids[$i]}" && rc=0 || rc=$?
            say "${services[$i]} exited with status $rc"
            unset 'pids[i]'
            stop_all 1
        fi
    done
    sleep 1
done
