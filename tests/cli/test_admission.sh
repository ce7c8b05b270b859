#!/usr/bin/env bash
# The admission process manager end to end: jobs submitted over HTTP are admitted when a registered
# worker fits them and the tenant is under its quota, rejected with the precise reason otherwise,
# and every job is decided exactly once, also across a restart of the service.
set -euo pipefail
# shellcheck source=tests/cli/lib_commands.sh
source "$(dirname "$0")/lib_commands.sh"
export CONSTELLATION_MAX_QUEUED_JOBS_PER_TENANT=2
# Other tests register workers on the same stack: this test's jobs ask for a model only its own
# worker has.
model="TEST-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

# The decision events (JobAdmitted / JobRejected) of job $1, one JSON line each: {type, reason}.
decisions_of() {
    kcat -C -b "$brokers" -t constellation.jobs.events -J -e -o beginning -q \
        -X isolation.level=read_committed 2>/dev/null |
        jq -c --arg s "$1" 'select(.headers != null) | .headers as $h |
            ([range(0; $h | length; 2) as $i | {key: $h[$i], value: $h[$i + 1]}] | from_entries) as $m |
            select($m.ce_subject == $s and ($m.ce_type | test("Job(Admitted|Rejected)"))) |
            {type: ($m.ce_type | capture("jobs\\.(?<t>[A-Za-z]+)\\.v1").t)}'
}
# Waits until job $1 has a decision; prints its type.
wait_decision() {
    local out=""
    for _ in $(seq 1 200); do
        out=$(decisions_of "$1")
        [ -n "$out" ] && { jq -r .type <<<"$out" | head -1; return 0; }
        sleep 0.1
    done
    fail "job $1 was never decided"
}
submit() { # submit KEY GPU_COUNT -> prints the job id
    request POST /v1/jobs "$1" "{\"gpu_count\":$2,\"min_gpu_memory_mib\":40960,\"gpu_model\":\"$model\",\"parameters\":{\"command\":[\"true\"]}}"
    expect 201 "submit"
    jq -r .id "$work/body"
}

start_service
"$bin" tenants create admission-test >"$work/t.json" 2>"$work/t.err" || fail "tenants create: $(cat "$work/t.err")"
key=$(jq -r .api_key "$work/t.json")
wait_key "$key"

# No worker of that model yet: nothing fits.
early=$(submit "$key" 1)
[ "$(wait_decision "$early")" = JobRejected ] || fail "a job with no worker registered was admitted"

# A worker with 4 GPUs of 80 GiB.
request POST /v1/api-keys "$key" '{"role":"worker"}'
expect 201 "worker key"
key_w=$(jq -r .api_key "$work/body")
wait_key "$key_w"
gpus=$(python3 -c 'import json,sys,uuid; print(json.dumps([{"uuid":"GPU-"+str(uuid.uuid4()),"model":sys.argv[1],"memory_mib":81920,"compute_capability":"9.0"} for _ in range(4)]))' "$model")
request POST /v1/workers "$key_w" "{\"hostname\":\"node-a\",\"gpus\":$gpus}"
expect 201 "register worker"
sleep 1 # admission reads the registration from the fleet events

fits=$(submit "$key" 4)
[ "$(wait_decision "$fits")" = JobAdmitted ] || fail "a job that fits was not admitted"
too_big=$(submit "$key" 8)
[ "$(wait_decision "$too_big")" = JobRejected ] || fail "a job asking for 8 GPUs was admitted"
second=$(submit "$key" 1)
[ "$(wait_decision "$second")" = JobAdmitted ] || fail "the second waiting job was not admitted"
third=$(submit "$key" 1)
[ "$(wait_decision "$third")" = JobRejected ] || fail "the quota of 2 waiting jobs was not enforced"
echo "admission: no worker -> rejected, fits -> admitted, too big -> rejected, quota -> rejected"


# Restart: the log is replayed and nothing is decided twice.
stop_service
start_service
sleep 2
for job in "$early" "$fits" "$too_big" "$second" "$third"; do
    n=$(decisions_of "$job" | wc -l)
    [ "$n" = 1 ] || fail "job $job has $n decisions after a restart"
done
stop_service
echo "admission: every job decided exactly once across a restart"
