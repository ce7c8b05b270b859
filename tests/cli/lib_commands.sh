# Shared by the tests that drive `constellation commands` over HTTP (source it): a scratch
# directory, start/stop of the service with its address read from its log, request helpers, and
# kcat readers of the topics. Needs CSTL_BIN, CSTL_SOURCE_DIR and CONSTELLATION_KAFKA_BROKERS.
bin=${CSTL_BIN:?CSTL_BIN must name the constellation executable}
brokers=${CONSTELLATION_KAFKA_BROKERS:-127.0.0.1:9092}
export CONSTELLATION_KAFKA_BROKERS=$brokers
work=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    [ -f "$work/body" ] && { echo "last body:" >&2; cat "$work/body" >&2; echo >&2; }
    [ -f "$work/service.log" ] && grep -v '"component":"kafka"' "$work/service.log" | tail -15 >&2
    exit 1
}
for tool in curl jq kcat python3; do command -v "$tool" >/dev/null || fail "$tool is missing"; done

secret="command-api-test-secret-0123456789abcdef"
export CONSTELLATION_JWT_HS256_SECRET=$secret
export CONSTELLATION_COMMANDS_ADDR=127.0.0.1:0
export CONSTELLATION_HTTP_MAX_BODY_BYTES=4096
export CONSTELLATION_SHUTDOWN_GRACE_MS=3000
export CONSTELLATION_COMMAND_WAIT_MS=10000
unset CONSTELLATION_OPERATOR_TENANT_ID CONSTELLATION_COMMAND_HANDLER

"$bin" topics create >/dev/null 2>&1 || fail "topics create"

addr=""
start_service() {
    : >"$work/service.log"
    "$bin" commands 2>>"$work/service.log" &
    pid=$!
    addr=""
    for _ in $(seq 1 150); do
        addr=$(jq -r 'select(.msg == "listening") | .addr' "$work/service.log" 2>/dev/null | head -1)
        [ -n "$addr" ] && break
        kill -0 "$pid" 2>/dev/null || fail "the service exited before listening"
        sleep 0.1
    done
    [ -n "$addr" ] || fail "the service did not log its address"
    local code=""
    for _ in $(seq 1 300); do
        code=$(curl -s -o "$work/body" -w '%{http_code}' "http://$addr/readyz")
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    [ "$code" = 200 ] || fail "/readyz answered $code"
    # /readyz needs one restored partition; this test needs the handler to own every one (it is
    # the only member of the group): tenants, jobs and fleet command partitions
    local want owned=0
    want=$(jq '[.topics[] | select(.name | test("^constellation\\.(tenants|jobs|fleet)\\.commands$"))
                | .partitions] | add' "${CSTL_SOURCE_DIR:?}/schemas/topics.json")
    for _ in $(seq 1 600); do
        owned=$(curl -s "http://$addr/metrics" |
            awk '/^partitions_owned[{ ]/ { n += $NF } END { print n + 0 }')
        [ "$owned" = "$want" ] && return 0
        sleep 0.1
    done
    fail "the handler owns $owned of $want partitions"
}
stop_service() {
    kill -TERM "$pid"
    local status=0
    wait "$pid" || status=$?
    pid=""
    [ "$status" = 0 ] || fail "the service exited $status after SIGTERM"
}

# request METHOD PATH TOKEN [BODY] [extra curl args...]: sets $code, body in $work/body
request() {
    local method=$1 path=$2 token=$3 body=${4:-}
    shift 4 || shift $#
    local auth=()
    [ -n "$token" ] && auth=(-H "Authorization: Bearer $token")
    code=$(curl -s -X "$method" -D "$work/headers" -o "$work/body" -w '%{http_code}' \
        "${auth[@]}" -H 'Content-Type: application/json' ${body:+--data-binary "$body"} "$@" \
        "http://$addr$path")
}
expect() { # expect STATUS what
    [ "$code" = "$1" ] || fail "$2: expected $1, got $code"
}
header() { grep -i "^$1:" "$work/headers" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
problem() { # problem STATUS [FIELD]: the body is a problem with that status (and field)
    grep -qi '^content-type: application/problem+json' "$work/headers" || fail "not a problem"
    jq -e --argjson s "$1" '.status == $s and (.detail | length > 0)' "$work/body" >/dev/null ||
        fail "problem body for $1"
    if [ -n "${2:-}" ]; then
        jq -e --arg f "$2" '.errors[0].field == $f and (.errors[0].code | length > 0)' \
            "$work/body" >/dev/null || fail "problem does not name the field $2"
    fi
}
# records on a topic (all partitions, aborted ones included)
count_records() {
    kcat -C -b "$brokers" -t "$1" -e -o beginning -q -f '%o\n' -X isolation.level=read_uncommitted \
        2>/dev/null | wc -l
}
# committed events on constellation.jobs.events whose ce_subject is $1
# (events_of SUBJECT [TYPE]: only the events of that short type, e.g. JobSubmitted)
events_of() {
    kcat -C -b "$brokers" -t constellation.jobs.events -J -e -o beginning -q \
        -X isolation.level=read_committed 2>/dev/null |
        jq -c --arg s "$1" --arg t "${2:-}" 'select(.headers != null) | .headers as $h |
            [range(0; $h | length; 2) as $i | {key: $h[$i], value: $h[$i + 1]}] | from_entries |
            select(.ce_subject == $s) |
            select($t == "" or .ce_type == "io.constellation.jobs.\($t).v1")'
}
jwt() { # jwt TENANT ROLE EXP_OFFSET_S [ALG]
    python3 - "$secret" "$@" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret, tenant, role, offset = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
alg = sys.argv[5] if len(sys.argv) > 5 else "HS256"
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
head = b(json.dumps({"alg": alg, "typ": "JWT"}).encode())
body = b(json.dumps({"sub": "tester", "tenant": tenant, "role": role,
                     "exp": int(time.time()) + offset}).encode())
sig = "" if alg == "none" else b(hmac.new(secret.encode(), (head + "." + body).encode(),
                                         hashlib.sha256).digest())
print(head + "." + body + "." + sig)
PY
}
wait_key() { # the views have the key once an authenticated lookup answers 404, not 401
    for _ in $(seq 1 100); do
        request GET /v1/commands/01900000-0000-7000-8000-000000000000 "$1"
        [ "$code" = 404 ] && return 0
        sleep 0.1
    done
    fail "api key never authenticated (last $code)"
}
# ready_addr LOG WHAT: a service's address from its log ("listening"), printed once its /readyz
# answers 200 (up to a minute: the sanitized build starts slowly)
ready_addr() {
    local a=""
    for _ in $(seq 1 150); do
        a=$(jq -r 'select(.msg == "listening") | .addr' "$1" 2>/dev/null | head -1)
        [ -n "$a" ] && break
        sleep 0.1
    done
    [ -n "$a" ] || fail "$2 did not log its address: $(tail -3 "$1")"
    for _ in $(seq 1 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$a/readyz")" = 200 ] && { echo "$a"; return 0; }
        sleep 0.1
    done
    fail "$2 never became ready: $(grep -v '"component":"kafka"' "$1" | tail -5)"
}
# stop_fleet: SIGTERM to each worker of the associative array wpid (name -> pid) and then to the
# scheduler ($sched_pid); each must exit 0
stop_fleet() {
    local n
    for n in "${!wpid[@]}"; do
        kill -TERM "${wpid[$n]}"
        wait "${wpid[$n]}" || fail "worker $n exited $? after SIGTERM"
        unset "wpid[$n]"
    done
    kill -TERM "$sched_pid"
    wait "$sched_pid" || fail "the scheduler exited $? after SIGTERM"
    sched_pid=""
}
