# Test data of the query API, sourced by tests/cli/test_query_*.sh: two tenants with API keys, jobs,
# runs, history, workers and GPUs written straight into the active read models (as their owner,
# with no tenant bound, like the projector). Needs psql and CONSTELLATION_PG_DSN.
#
# Sets: TENANT_A TENANT_B KEY_A KEY_B KEY_WORKER JOB_B (a job of tenant B) and inserts
# ${QF_JOBS:-120} jobs for tenant A (ids "a-000".., submitted one second apart from 2026-01-01).

qf_uuid7() { # a UUIDv7-shaped random id
    local h
    h=$(openssl rand -hex 16)
    printf '%s-%s-7%s-8%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" "${h:17:3}" "${h:20:12}"
}

qf_key() { # tenant role -> prints the api key text and inserts its record
    local tenant=$1 role=$2 id secret hash
    id=$(qf_uuid7)
    secret=$(openssl rand -hex 32)
    hash=$(printf '%s' "$secret" | sha256sum | cut -d' ' -f1)
    psql "$CONSTELLATION_PG_DSN" -qAt -v ON_ERROR_STOP=1 -c \
        "INSERT INTO read.api_keys (key_id, tenant_id, key_hash, role, issued_at)
         VALUES ('$id', '$tenant', '$hash', '$role', now())" >/dev/null
    printf 'cstl_%s_%s\n' "${id//-/}" "$secret"
}

qf_setup() {
    TENANT_A=$(qf_uuid7)
    TENANT_B=$(qf_uuid7)
    local n=${QF_JOBS:-120}
    psql "$CONSTELLATION_PG_DSN" -qAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO read.tenants (tenant_id, name, contact_email, state, created_at, updated_at, version)
VALUES ('$TENANT_A', 'a', 'a@example.com', 'active', now(), now(), 1),
       ('$TENANT_B', 'b', 'b@example.com', 'active', now(), now(), 1);
INSERT INTO read.jobs (job_id, tenant_id, name, state, reason, priority, gpu_count,
    min_gpu_memory_mib, gpu_model, runtime_limit_seconds, retry_limit, labels, parameters,
    submitted_by, submitted_at, updated_at, version)
SELECT '$TENANT_A-' || lpad(i::text, 4, '0'), '$TENANT_A',
       CASE WHEN i % 2 = 0 THEN 'train-' ELSE 'eval-' END || i,
       (ARRAY['queued','running','succeeded','failed'])[1 + i % 4],
       (ARRAY['waiting_for_gpus','running','completed','nonzero_exit'])[1 + i % 4],
       i % 3, 1, 0, NULL, 3600, 0,
       jsonb_build_object('team', CASE WHEN i % 5 = 0 THEN 'x' ELSE 'y' END), '{}'::jsonb,
       'user:1', timestamptz '2026-01-01 00:00:00Z' + i * interval '1 second',
       timestamptz '2026-01-01 00:00:00Z' + i * interval '1 second', 1
  FROM generate_series(1, $n) i;
INSERT INTO read.jobs (job_id, tenant_id, name, state, reason, priority, gpu_count,
    min_gpu_memory_mib, runtime_limit_seconds, retry_limit, labels, parameters, submitted_by,
    submitted_at, updated_at, version, current_run_id)
VALUES ('$TENANT_B-0001', '$TENANT_B', 'b-job', 'running', 'running', 0, 1, 0, 60, 0, '{}', '{}',
        'user:2', '2026-01-01Z', '2026-01-01Z', 3, '$TENANT_B-run');
INSERT INTO read.runs (run_id, job_id, tenant_id, worker_id, gpu_uuids, assigned_at, started_at)
VALUES ('$TENANT_A-run', '$TENANT_A-0002', '$TENANT_A', 'w-$TENANT_A', ARRAY['gpu-$TENANT_A-0'],
        '2026-01-02Z', '2026-01-02Z'),
       ('$TENANT_B-run', '$TENANT_B-0001', '$TENANT_B', 'w-$TENANT_A', ARRAY['gpu-$TENANT_A-1'],
        '2026-01-02Z', '2026-01-02Z');
INSERT INTO read.job_history (tenant_id, job_id, version, event_id, event_type, at, data)
VALUES ('$TENANT_A', '$TENANT_A-0002', 1, '$(qf_uuid7)', 'JobSubmitted', '2026-01-01Z', '{"n":1}'),
       ('$TENANT_A', '$TENANT_A-0002', 2, '$(qf_uuid7)', 'JobAdmitted', '2026-01-01Z', '{"n":2}');
INSERT INTO read.workers (worker_id, hostname, state, labels, registered_at, last_event_at, version)
VALUES ('w-$TENANT_A', 'host-1', 'registered', '{}', '2026-01-01Z', '2026-01-01Z', 1);
INSERT INTO read.gpus (gpu_uuid, worker_id, model, memory_mib, compute_capability)
VALUES ('gpu-$TENANT_A-0', 'w-$TENANT_A', 'H100', 81920, '9.0'),
       ('gpu-$TENANT_A-1', 'w-$TENANT_A', 'H100', 81920, '9.0');
SQL
    # gpu_assignments is not in schema read (no grant): the owner writes the active version
    psql "$CONSTELLATION_PG_DSN" -qAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
DO \$\$ DECLARE v int; BEGIN
  SELECT active_version INTO v FROM projection_versions WHERE projection = 'fleet';
  EXECUTE format('INSERT INTO fleet_v%s.gpu_assignments VALUES (%L, %L, %L, %L, %L),
                  (%L, %L, %L, %L, %L)', v,
      'gpu-$TENANT_A-0', 'w-$TENANT_A', '$TENANT_A-0002', '$TENANT_A', '2026-01-02Z',
      'gpu-$TENANT_A-1', 'w-$TENANT_A', '$TENANT_B-0001', '$TENANT_B', '2026-01-02Z');
END \$\$;
SQL
    KEY_A=$(qf_key "$TENANT_A" member)
    KEY_B=$(qf_key "$TENANT_B" viewer)
    KEY_WORKER=$(qf_key "$TENANT_A" worker)
    JOB_B="$TENANT_B-0001"
}

qf_cleanup() { # removes what qf_setup inserted
    [ -n "${TENANT_A:-}" ] || return 0
    psql "$CONSTELLATION_PG_DSN" -qAt >/dev/null 2>&1 <<SQL || true
DELETE FROM read.jobs WHERE tenant_id IN ('$TENANT_A', '$TENANT_B');
DELETE FROM read.runs WHERE tenant_id IN ('$TENANT_A', '$TENANT_B');
DELETE FROM read.job_history WHERE tenant_id IN ('$TENANT_A', '$TENANT_B');
DELETE FROM read.api_keys WHERE tenant_id IN ('$TENANT_A', '$TENANT_B');
DELETE FROM read.tenants WHERE tenant_id IN ('$TENANT_A', '$TENANT_B');
DELETE FROM read.gpus WHERE worker_id = 'w-$TENANT_A';
DELETE FROM read.workers WHERE worker_id = 'w-$TENANT_A';
DO \$\$ DECLARE v int; BEGIN
  SELECT active_version INTO v FROM projection_versions WHERE projection = 'fleet';
  EXECUTE format('DELETE FROM fleet_v%s.gpu_assignments WHERE worker_id = %L', v, 'w-$TENANT_A');
END \$\$;
SQL
}

# Starts `constellation queries` on an ephemeral port; sets QPID and QADDR. $1: log file.
qf_start_queries() {
    local log=$1
    CONSTELLATION_QUERIES_ADDR=127.0.0.1:0 "$CSTL_BIN" queries 2>"$log" &
    QPID=$!
    QADDR=""
    for _ in $(seq 1 150); do
        QADDR=$(jq -r 'select(.msg == "listening") | .addr' "$log" 2>/dev/null | head -1)
        [ -n "$QADDR" ] && return 0
        kill -0 "$QPID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
