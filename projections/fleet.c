/*
 * fleet.c - the fleet projection: workers, gpus and the GPU job state (gpu_assignments, the view
 * gpu_state), from constellation.fleet.events, plus JobSubmitted from constellation.jobs.events
 * to learn the tenant of the job holding a GPU.
 *
 * Invariants: worker events apply only when newer than the worker row's version. The two topics
 * are not ordered with respect to each other, so an assignment may be seen before its job's
 * JobSubmitted: its tenant_id stays NULL until then, and JobSubmitted fills it in. Either order
 * ends in the same rows. Called from the projector's thread in its batch transaction.
 */
#include "projections/projection.h"

#include <string.h>

/* $1 worker_id, $2 version, $3 time (us); specific from $4 */
#define GUARD                                                                                      \
    "WITH u AS (UPDATE workers SET version = $2, last_event_at = cstl_ts($3) "                     \
    "WHERE worker_id = $1 AND version < $2 RETURNING worker_id)"
#define COUNT " SELECT count(*) FROM u"

static const char registered_sql[] =
    "WITH u AS (INSERT INTO workers (worker_id, hostname, state, labels, registered_at, "
    "last_event_at, version) VALUES ($1, $4, 'registered', $5::jsonb, cstl_ts($3), cstl_ts($3), "
    "$2) ON CONFLICT (worker_id) DO UPDATE SET hostname = excluded.hostname, state = "
    "'registered', labels = excluded.labels, registered_at = excluded.registered_at, "
    "last_event_at = excluded.last_event_at, version = excluded.version "
    "WHERE workers.version < excluded.version RETURNING worker_id), "
    "g AS (INSERT INTO gpus (gpu_uuid, worker_id, model, memory_mib, compute_capability) "
    "SELECT x.uuid, $1, x.model, x.memory_mib, x.compute_capability FROM "
    "jsonb_to_recordset($6::jsonb) AS x(uuid text, model text, memory_mib bigint, "
    "compute_capability text) WHERE EXISTS (SELECT FROM u) ON CONFLICT (gpu_uuid) DO UPDATE SET "
    "worker_id = excluded.worker_id, model = excluded.model, memory_mib = excluded.memory_mib, "
    "compute_capability = excluded.compute_capability)" COUNT;
static const char reserved_sql[] =
    GUARD ", a AS (INSERT INTO gpu_assignments (gpu_uuid, worker_id, job_id, tenant_id, since) "
          "SELECT x, $1, $4, (SELECT tenant_id FROM job_tenants WHERE job_id = $4), cstl_ts($3) "
          "FROM jsonb_array_elements_text($5::jsonb) AS x WHERE EXISTS (SELECT FROM u) "
          "ON CONFLICT (gpu_uuid) DO UPDATE SET worker_id = excluded.worker_id, job_id = "
          "excluded.job_id, tenant_id = excluded.tenant_id, since = excluded.since)" COUNT;
static const char released_sql[] =
    GUARD ", a AS (DELETE FROM gpu_assignments WHERE job_id = $4 AND gpu_uuid IN "
          "(SELECT jsonb_array_elements_text($5::jsonb)) AND EXISTS (SELECT FROM u))" COUNT;
static const char drained_sql[] =
    GUARD ", g AS (UPDATE gpus SET drained = true, drain_reason = $5 WHERE gpu_uuid = $4 "
          "AND worker_id = $1 AND EXISTS (SELECT FROM u))" COUNT;
static const char resumed_sql[] =
    GUARD ", g AS (UPDATE gpus SET drained = false, drain_reason = NULL WHERE gpu_uuid = $4 "
          "AND worker_id = $1 AND EXISTS (SELECT FROM u))" COUNT;
static const char lost_sql[] =
    "WITH u AS (UPDATE workers SET version = $2, last_event_at = cstl_ts($3), state = 'lost' "
    "WHERE worker_id = $1 AND version < $2 RETURNING worker_id), "
    "a AS (DELETE FROM gpu_assignments WHERE worker_id = $1 AND EXISTS (SELECT FROM u))" COUNT;
static const char deregistered_sql[] =
    "WITH u AS (UPDATE workers SET version = $2, last_event_at = cstl_ts($3), state = "
    "'deregistered' WHERE worker_id = $1 AND version < $2 RETURNING worker_id), "
    "a AS (DELETE FROM gpu_assignments WHERE worker_id = $1 AND EXISTS (SELECT FROM u))" COUNT;
static const char exists_sql[] = "SELECT 1 FROM workers WHERE worker_id = $1";

static const char job_submitted_sql[] =
    "WITH t AS (INSERT INTO job_tenants (job_id, tenant_id) VALUES ($1, $2) "
    "ON CONFLICT (job_id) DO NOTHING) UPDATE gpu_assignments SET tenant_id = $2 "
    "WHERE job_id = $1 AND tenant_id IS NULL";

static int apply_job_submitted(cstl_pg_conn *conn, const json_t *data, cstl_error *err)
{
    cstl_proj_params p = {0};
    cstl_proj_str(&p, data, "job_id", false);
    cstl_proj_str(&p, data, "tenant_id", false);
    int rc = cstl_proj_params_check(&p, "JobSubmitted", err);
    if (rc == 0)
        rc = cstl_proj_guarded(conn, "fleet_job_submitted", job_submitted_sql, &p, NULL, NULL,
                               "job", err);
    cstl_proj_params_free(&p);
    return rc;
}

int cstl_projection_fleet_apply(cstl_pg_conn *conn,
                                const cstl_event_headers *h,
                                const char *type,
                                const json_t *data,
                                cstl_error *err)
{
    if (strcmp(type, "JobSubmitted") == 0)
        return apply_job_submitted(conn, data, err);
    const char *name, *sql;
    cstl_proj_params p = {0};
    cstl_proj_str(&p, data, "worker_id", false);
    cstl_proj_i64(&p, h->version);
    cstl_proj_int(&p, data, "at", false);
    if (strcmp(type, "WorkerRegistered") == 0) {
        name = "fleet_registered", sql = registered_sql;
        cstl_proj_str(&p, data, "hostname", false);
        cstl_proj_json(&p, data, "labels");
        cstl_proj_json(&p, data, "gpus");
    } else if (strcmp(type, "GpusReserved") == 0 || strcmp(type, "GpusReleased") == 0) {
        int reserved = strcmp(type, "GpusReserved") == 0;
        name = reserved ? "fleet_reserved" : "fleet_released";
        sql = reserved ? reserved_sql : released_sql;
        cstl_proj_str(&p, data, "job_id", false);
        cstl_proj_json(&p, data, "gpu_uuids");
    } else if (strcmp(type, "GpuDrained") == 0) {
        name = "fleet_drained", sql = drained_sql;
        cstl_proj_str(&p, data, "gpu_uuid", false);
        cstl_proj_str(&p, data, "reason", false);
    } else if (strcmp(type, "GpuResumed") == 0) {
        name = "fleet_resumed", sql = resumed_sql;
        cstl_proj_str(&p, data, "gpu_uuid", false);
    } else if (strcmp(type, "WorkerLost") == 0) {
        name = "fleet_lost", sql = lost_sql;
    } else if (strcmp(type, "WorkerDeregistered") == 0) {
        name = "fleet_deregistered", sql = deregistered_sql;
    } else {
        cstl_proj_params_free(&p);
        return 0;
    }
    int rc = cstl_proj_params_check(&p, type, err);
    if (rc == 0)
        rc = cstl_proj_guarded(conn, name, sql, &p, "fleet_exists",
                               sql == registered_sql ? NULL : exists_sql, "worker", err);
    cstl_proj_params_free(&p);
    return rc;
}
