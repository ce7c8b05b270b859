#!/usr/bin/env bash
# The query API's speed on a read model of CSTL_BENCH_JOBS (1,000,000) jobs, next to its anchors:
#   constellation queries        GET /v1/jobs/{id} (random ids) and GET /v1/jobs?limit=50, by wrk
#   FastAPI + asyncpg (uvicorn)  the same two endpoints over the same SQL (bench/anchors/)
#   pgbench                      the same SQL straight to PostgreSQL (the database's own limit)
# Prints req/s and p99 for each and the ratios; targets: point lookup >= 5x FastAPI and >= 60 %
# of pgbench. The three run in interleaved rounds (CSTL_BENCH_ROUNDS of CSTL_BENCH_SECONDS each,
# after one warm-up), and each figure is the median of its rounds: on a shared machine the load of
# other work drifts over minutes, and interleaving makes the drift hit all three alike. Needs the
# local stack up and its environment (bench/run.sh does both). Reports, never fails on a slow
# machine.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
bin="$build/constellation"
jobs=${CSTL_BENCH_JOBS:-1000000}
dur=${CSTL_BENCH_SECONDS:-5}
rounds=${CSTL_BENCH_ROUNDS:-3}
conns=${CSTL_BENCH_CONNECTIONS:-32}
threads=${CSTL_BENCH_HTTP_THREADS:-8}
pyworkers=${CSTL_BENCH_PY_WORKERS:-2}
db=cstl_bench_queries
: "${CONSTELLATION_PG_DSN:?CONSTELLATION_PG_DSN must be set (stack.sh env)}"
admin_dsn=$CONSTELLATION_PG_DSN
owner_dsn="$admin_dsn dbname=$db"
query_dsn="$admin_dsn dbname=$db user=constellation_query"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "bench_queries: wrk is missing" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "bench_queries: pgbench is missing" >&2; exit 1; }
if ! "$repo/.venv/bin/python" -c 'import fastapi, uvicorn, asyncpg' 2>/dev/null; then
    "$repo/.venv/bin/pip" install -q -r "$repo/bench/requirements.txt" >/dev/null
fi

# --- a scratch database with the read models and the jobs ---------------------------------------
tenant=0190a5d2-8c1e-7b3a-9f00-00000000beef
loaded=$(psql "$owner_dsn" -qAt -c "SELECT count(*) FROM read.jobs" 2>/dev/null || echo 0)
if [ "$loaded" != "$jobs" ]; then
    echo "loading $jobs jobs into database $db ..."
    psql "$admin_dsn" -qAt -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
    CONSTELLATION_PG_DSN=$owner_dsn "$bin" migrate 2>/dev/null
    start=$SECONDS
    awk -v n="$jobs" -v t="$tenant" 'BEGIN {
        split("queued running succeeded failed", st, " ");
        split("waiting_for_gpus running completed nonzero_exit", rs, " ");
        for (i = 1; i <= n; i++) {
            s = 1 + i % 4;
            ts = 1767225600 + i;  # 2026-01-01 + i seconds
            printf "bench-%07d,%s,job-%d,%s,%s,%d,%d,0,3600,0,\"{\"\"team\"\":\"\"t%d\"\"}\",\"{\"\"command\"\":[\"\"true\"\"]}\",user:1,%d,%d,1\n",
                i, t, i, st[s], rs[s], i % 100, 1 + i % 8, i % 7, ts, ts
        }
    }' | psql "$owner_dsn" -qAt -v ON_ERROR_STOP=1 -c "
        CREATE TEMP TABLE j (job_id text, tenant_id text, name text, state text, reason text,
            priority int, gpu_count int, min_gpu_memory_mib bigint, runtime_limit_seconds bigint,
            retry_limit int, labels jsonb, parameters jsonb, submitted_by text, s bigint, u bigint,
            version bigint);
        COPY j FROM STDIN WITH (FORMAT csv);
        INSERT INTO read.jobs (job_id, tenant_id, name, state, reason, priority, gpu_count,
            min_gpu_memory_mib, runtime_limit_seconds, retry_limit, labels, parameters,
            submitted_by, submitted_at, updated_at, version)
        SELECT job_id, tenant_id, name, state, reason, priority, gpu_count, min_gpu_memory_mib,
               runtime_limit_seconds, retry_limit, labels, parameters, submitted_by,
               to_timestamp(s), to_timestamp(u), version FROM j;
        ANALYZE;" >/dev/null
    echo "loaded in $((SECONDS - start)) s"
fi
secret=$(openssl rand -hex 32)
key_hex=$(openssl rand -hex 16)
key_id="${key_hex:0:8}-${key_hex:8:4}-7${key_hex:13:3}-8${key_hex:17:3}-${key_hex:20:12}"
hash=$(printf '%s' "$secret" | sha256sum | cut -d' ' -f1)
psql "$owner_dsn" -qAt -c "INSERT INTO read.api_keys (key_id, tenant_id, key_hash, role, issued_at)
    VALUES ('$key_id', '$tenant', '$hash', 'viewer', now())" >/dev/null
key="cstl_${key_id//-/}_$secret"

cat >"$work/point.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $key"
math.randomseed(os.time())
request = function()
    return wrk.format("GET", string.format("/v1/jobs/bench-%07d", math.random(1, $jobs)))
end
LUA
cat >"$work/list.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $key"
LUA

# wrk_run name url script -> "req/s p99_ms non-2xx"
wrk_run() {
    wrk -t2 -c"$conns" -d"${dur}s" --latency -s "$3" "$2" >"$work/$1.wrk" 2>&1 || true
    awk '/Requests\/sec/ {rps = $2}
         $1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
                       ms = (u == "us") ? v / 1000 : (u == "s") ? v * 1000 : v }
         /Non-2xx/ {bad = $NF}
         END { printf "%.0f %.2f %s\n", rps, ms, (bad == "" ? 0 : bad) }' "$work/$1.wrk"
}
wait_http() { # url
    for _ in $(seq 1 300); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$1")" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

# --- the two servers, started side by side (an idle server costs nothing) -----------------------
qport=$((20000 + RANDOM % 20000))
addr=127.0.0.1:$qport
CONSTELLATION_QUERY_PG_DSN=$query_dsn CONSTELLATION_QUERIES_ADDR=$addr \
    CONSTELLATION_LOG_LEVEL=warn CONSTELLATION_HTTP_THREADS=$threads "$bin" queries 2>"$work/q.log" &
pids+=($!)
wait_http "http://$addr/v1/jobs/bench-0000001" ||
    { echo "bench_queries: the query service did not start" >&2; tail -5 "$work/q.log" >&2; exit 1; }
pyport=$((qport + 1))
pydsn="postgresql://constellation_query@127.0.0.1:$(sed 's/.*port=\([0-9]*\).*/\1/' <<<"$admin_dsn")/$db"
BENCH_DSN=$pydsn BENCH_TENANT=$tenant BENCH_TOKEN=$key \
    "$repo/.venv/bin/uvicorn" fastapi_app:app --app-dir "$repo/bench/anchors" --host 127.0.0.1 \
    --port "$pyport" --workers "$pyworkers" --log-level warning --no-access-log 2>"$work/py.log" &
pids+=($!)
wait_http "http://127.0.0.1:$pyport/v1/jobs/bench-0000001" ||
    { echo "bench_queries: the FastAPI anchor did not start" >&2; tail -5 "$work/py.log" >&2; exit 1; }

# --- pgbench, the same SQL ----------------------------------------------------------------------
printf '\\set n random(1, %d)\nSELECT query.job_get('"'"'%s'"'"', '"'"'bench-'"'"' || lpad(:n::text, 7, '"'"'0'"'"'));\n' \
    "$jobs" "$tenant" >"$work/point.sql"
printf 'SELECT items, next_us, next_id FROM query.jobs_page('"'"'%s'"'"', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL, 50);\n' \
    "$tenant" >"$work/list.sql"
pgb() { # name script -> "tps p99_ms"
    (cd "$work" && pgbench -n -M prepared -c "$conns" -j 2 -T "$dur" -f "$2" --log \
        --log-prefix="$1" "$query_dsn" >"$work/$1.pgb" 2>&1) || true
    local tps p99
    tps=$(awk '/^tps/ {printf "%.0f", $3}' "$work/$1.pgb")
    p99=$(cat "$work/$1".[0-9]* 2>/dev/null | awk '{print $3}' | sort -n |
        awk '{a[NR] = $1} END {i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", a[i] / 1000}')
    echo "$tps $p99"
}

# --- interleaved rounds -------------------------------------------------------------------------
# measure round endpoint: one run of each contender on one endpoint, appended to $work/<who>_<ep>
measure() {
    local r=$1 ep=$2 path="/v1/jobs?limit=50"
    [ "$ep" = point ] && path=""
    wrk_run "c_${ep}_$r" "http://$addr$path" "$work/$ep.lua" >>"$work/c_$ep"
    wrk_run "f_${ep}_$r" "http://127.0.0.1:$pyport$path" "$work/$ep.lua" >>"$work/f_$ep"
    pgb "p_${ep}_$r" "$ep.sql" >>"$work/p_$ep"
}
saved_dur=$dur
dur=3 # warm-up: caches, connections, plans
for ep in point list; do measure 0 "$ep"; done
rm -f "$work"/[cfp]_point "$work"/[cfp]_list
dur=$saved_dur
for r in $(seq 1 "$rounds"); do
    for ep in point list; do measure "$r" "$ep"; done
done
# median file column -> the median of that column over the rounds; bad answers are summed
median() { awk -v c="$2" '{print $c}' "$1" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
summed() { awk -v c="$2" '{s += $c} END {print s + 0}' "$1"; }
c_point=$(median "$work/c_point" 1) c_point_p99=$(median "$work/c_point" 2)
f_point=$(median "$work/f_point" 1) f_point_p99=$(median "$work/f_point" 2)
p_point=$(median "$work/p_point" 1) p_point_p99=$(median "$work/p_point" 2)
c_list=$(median "$work/c_list" 1) c_list_p99=$(median "$work/c_list" 2)
f_list=$(median "$work/f_list" 1) f_list_p99=$(median "$work/f_list" 2)
p_list=$(median "$work/p_list" 1) p_list_p99=$(median "$work/p_list" 2)
c_point_bad=$(summed "$work/c_point" 3)
c_list_bad=$(summed "$work/c_list" 3)
f_point_bad=$(summed "$work/f_point" 3)
f_list_bad=$(summed "$work/f_list" 3)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
printf '\n%-34s %12s %10s\n' "GET /v1/jobs/{id} ($jobs jobs)" "req/s" "p99 ms"
printf '%-34s %12s %10s\n' "constellation queries" "$c_point" "$c_point_p99"
printf '%-34s %12s %10s\n' "FastAPI + asyncpg (uvicorn x$pyworkers)" "$f_point" "$f_point_p99"
printf '%-34s %12s %10s\n' "pgbench (same SQL)" "$p_point" "$p_point_p99"
printf '%-34s %12s %10s\n' "GET /v1/jobs?limit=50" "req/s" "p99 ms"
printf '%-34s %12s %10s\n' "constellation queries" "$c_list" "$c_list_p99"
printf '%-34s %12s %10s\n' "FastAPI + asyncpg (uvicorn x$pyworkers)" "$f_list" "$f_list_p99"
printf '%-34s %12s %10s\n' "pgbench (same SQL)" "$p_list" "$p_list_p99"
printf '\npoint lookup: %sx FastAPI (target >= 5), %s of pgbench (target >= 0.60)\n' \
    "$(ratio "$c_point" "$f_point")" "$(ratio "$c_point" "$p_point")"
printf 'list of 50:   %sx FastAPI, %s of pgbench\n' "$(ratio "$c_list" "$f_list")" \
    "$(ratio "$c_list" "$p_list")"
printf 'non-2xx answers: queries %s/%s, fastapi %s/%s (must be 0)\n' "$c_point_bad" "$c_list_bad" \
    "$f_point_bad" "$f_list_bad"
echo "($conns connections; medians of $rounds interleaved rounds of ${dur}s; $(nproc) CPUs shared by the load generator, the server and PostgreSQL)"
for who in c f p; do # every round, for the record
    printf '%s rounds, req/s/p99:' "$who"
    for ep in point list; do
        printf ' %s %s' "$ep" "$(awk '{printf "%s%s/%s", (NR > 1 ? "," : ""), $1, $2}' "$work/${who}_$ep")"
    done
    echo
done
