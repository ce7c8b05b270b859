/*
 * api_routes.c - the endpoints of the command API (docs/command-api.md): their bodies, roles and
 * what each adds to the mapped body before the command is sent (ids, tenant, lookups in the
 * views). The common path is api.c.
 *
 * Threads: HTTP server threads; the endpoint table is read-only once registered.
 */
#include "commands/api_internal.h"
#include "platform/codec.h"
#include "platform/events.h"
#include "platform/id.h"
#include "platform/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static int64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static bool is_operator(const api_call *c)
{
    return c->api->operator_tenant_id[0] != '\0' &&
           strcmp(c->api->operator_tenant_id, c->who.tenant_id) == 0;
}

/* ---- jobs -------------------------------------------------------------------------------- */

static int prepare_submit_job(api_call *c)
{
    char job_id[37];
    api_derived_id(c, "job", job_id);
    snprintf(c->aggregate_id, sizeof(c->aggregate_id), "%s", job_id);
    snprintf(c->location, sizeof(c->location), "/v1/jobs/%s", job_id);
    json_object_set_new(c->payload, "job_id", json_string(job_id));
    json_object_set_new(c->payload, "tenant_id", json_string(c->who.tenant_id));
    return 0;
}

static int prepare_job(api_call *c)
{
    const char *id = cstl_http_request_param(c->req, "id");
    char job_id[37];
    cstl_uuid u;
    cstl_uuid_parse(id, &u);
    cstl_uuid_format(&u, job_id); /* canonical lower case: the aggregate's key */
    snprintf(c->aggregate_id, sizeof(c->aggregate_id), "%s", job_id);
    json_object_set_new(c->payload, "job_id", json_string(job_id));
    return 0;
}

/*
 * A worker's report on a run (StartRun, FinishRun). The job belongs to a tenant other than the
 * worker's, so the command runs in the job's tenant, and only for the run's own worker: the run
 * in the path must be the job's current run, assigned to the body's worker_id, and that worker
 * must be registered by the caller's tenant. Anything else is 404, so a worker learns nothing about
 * runs that are not its own.
 */
static int prepare_run_report(api_call *c)
{
    const char *run_param = cstl_http_request_param(c->req, "run_id");
    const char *worker_given = json_string_value(json_object_get(c->payload, "worker_id"));
    cstl_uuid u;
    char job_id[37], run_id[37], worker_id[37], run_worker[37], job_tenant[37], worker_tenant[37];
    if (run_param == NULL || cstl_uuid_parse(run_param, &u) != 0)
        return api_problem(c->req, 400, "malformed-request", "malformed request",
                           "the path parameter \"run_id\" must be a UUID, got \"%.64s\"",
                           run_param ? run_param : ""),
               -1;
    cstl_uuid_format(&u, run_id);
    if (worker_given == NULL || cstl_uuid_parse(worker_given, &u) != 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "worker_id must be a UUID, got \"%.64s\"",
                 worker_given ? worker_given : "");
        return api_invalid(c->req, "worker_id", "invalid_format", msg), -1;
    }
    cstl_uuid_format(&u, worker_id);
    cstl_uuid_parse(cstl_http_request_param(c->req, "id"), &u);
    cstl_uuid_format(&u, job_id);
    if (cstl_views_run(c->api->views, job_id, run_id, run_worker, job_tenant) != 0 ||
        strcmp(run_worker, worker_id) != 0 ||
        cstl_views_worker(c->api->views, worker_id, worker_tenant) != 0 ||
        strcmp(worker_tenant, c->who.tenant_id) != 0 || job_tenant[0] == '\0')
        return api_problem(c->req, 404, "not-found", "not found",
                           "no run \"%s\" of job \"%s\" is assigned to worker \"%s\"", run_id,
                           job_id, worker_id),
               -1;
    snprintf(c->tenant_id, sizeof(c->tenant_id), "%s", job_tenant);
    snprintf(c->aggregate_id, sizeof(c->aggregate_id), "%s", job_id);
    json_object_del(c->payload, "worker_id");
    json_object_set_new(c->payload, "job_id", json_string(job_id));
    json_object_set_new(c->payload, "run_id", json_string(run_id));
    return 0;
}

/* ---- fleet ------------------------------------------------------------------------------- */

static int prepare_register_worker(api_call *c)
{
    const char *given = json_string_value(json_object_get(c->payload, "worker_id"));
    char worker_id[37];
    if (given != NULL) {
        cstl_uuid u;
        if (cstl_uuid_parse(given, &u) != 0) {
            char msg[200];
            snprintf(msg, sizeof(msg), "worker_id must be a UUID, got \"%.64s\"", given);
            return api_invalid(c->req, "worker_id", "invalid_format", msg), -1;
        }
        cstl_uuid_format(&u, worker_id);
    } else {
        api_derived_id(c, "worker", worker_id);
    }
    char tenant[37];
    if (cstl_views_worker(c->api->views, worker_id, tenant) == 0 && tenant[0] != '\0' &&
        strcmp(tenant, c->who.tenant_id) != 0)
        return api_problem(c->req, 409, "conflict", "conflict",
                           "worker \"%s\" is registered by another tenant", worker_id),
               -1;
    json_object_set_new(c->payload, "worker_id", json_string(worker_id));
    snprintf(c->aggregate_id, sizeof(c->aggregate_id), "%s", worker_id);
    snprintf(c->location, sizeof(c->location), "/v1/workers/%s", worker_id);
    return 0;
}

/* The worker of the GPU in the path; 404 when unknown or another tenant's (unless operator). */
static int prepare_gpu(api_call *c)
{
    const char *gpu = cstl_http_request_param(c->req, "uuid");
    char worker[37], tenant[37];
    if (cstl_views_gpu_worker(c->api->views, gpu, worker, tenant) != 0 ||
        (strcmp(tenant, c->who.tenant_id) != 0 && !is_operator(c)))
        return api_problem(c->req, 404, "not-found", "not found",
                           "no registered worker has the gpu \"%s\"", gpu),
               -1;
    if (tenant[0] != '\0')
        snprintf(c->tenant_id, sizeof(c->tenant_id), "%s", tenant);
    snprintf(c->aggregate_id, sizeof(c->aggregate_id), "%s", worker);
    json_object_set_new(c->payload, "worker_id", json_string(worker));
    json_object_set_new(c->payload, "gpu_uuid", json_string(gpu));
    return 0;
}

static int prepare_heartbeat(api_call *c)
{
    const char *id = cstl_http_request_param(c->req, "id");
    cstl_uuid u;
    char worker[37], tenant[37];
    cstl_uuid_parse(id, &u);
    cstl_uuid_format(&u, worker);
    if (cstl_views_worker(c->api->views, worker, tenant) != 0 ||
        (tenant[0] != '\0' && strcmp(tenant, c->who.tenant_id) != 0 && !is_operator(c)))
        return api_problem(c->req, 404, "not-found", "not found", "worker \"%s\" is not registered",
                           worker),
               -1;
    snprintf(c->aggregate_id, sizeof(c->aggregate_id), "%s", worker);
    json_object_set_new(c->payload, "worker_id", json_string(worker));
    json_object_set_new(c->payload, "at", json_integer(now_us()));
    return 0;
}

/* Heartbeats are telemetry, not commands: produced to constellation.fleet.heartbeats. */
static int finish_heartbeat(api_call *c)
{
    cstl_cmd_api *api = c->api;
    const cstl_schema_entry *entry =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), "fleet.WorkerHeartbeat");
    cstl_codec_buf buf = {0};
    cstl_error err;
    if (entry == NULL || cstl_codec_encode_json(entry, c->payload, &buf, &err) != 0) {
        cstl_log(CSTL_LOG_ERROR, "commands", "cannot encode a heartbeat: %s",
                 entry ? err.message : "no schema fleet.WorkerHeartbeat");
        cstl_codec_buf_free(&buf);
        return cstl_http_respond_problem(c->req, 500, "internal", "internal error", NULL, NULL);
    }
    if (api->producer == NULL) {
        cstl_codec_buf_free(&buf);
        return api_problem(c->req, 503, "unavailable", "service unavailable",
                           "heartbeats are not accepted by this instance");
    }
    char topic[256];
    snprintf(topic, sizeof(topic), "%sconstellation.fleet.heartbeats", api->topic_prefix);
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(3);
    rd_kafka_header_add(hdrs, "content-type", -1, CSTL_EVENT_CONTENT_TYPE, -1);
    rd_kafka_header_add(hdrs, "ce_type", -1, entry->ce_type, -1);
    rd_kafka_header_add(hdrs, "cstl_tenant", -1, c->who.tenant_id, -1);
    const char *tp = cstl_http_request_traceparent(c->req);
    if (tp != NULL)
        rd_kafka_header_add(hdrs, "traceparent", -1, tp, -1);
    pthread_mutex_lock(&api->producer_mu);
    int rc = cstl_kafka_producer_send(api->producer, topic, CSTL_KAFKA_PARTITION_UA,
                                      c->aggregate_id, strlen(c->aggregate_id), buf.data, buf.len,
                                      hdrs, NULL, NULL, &err);
    cstl_kafka_producer_poll(api->producer, 0); /* serve earlier delivery reports */
    pthread_mutex_unlock(&api->producer_mu);
    cstl_codec_buf_free(&buf);
    if (rc != 0) {
        rd_kafka_headers_destroy(hdrs);
        cstl_log(CSTL_LOG_WARN, "commands", "cannot queue a heartbeat: %s", err.message);
        cstl_http_set_header(c->req, "Retry-After", "1");
        return api_problem(c->req, 503, "unavailable", "service unavailable",
                           "the heartbeat could not be queued, retry later");
    }
    return cstl_http_respond_json(c->req, 202,
                                  json_pack("{s:s,s:s,s:I}", "worker_id", c->aggregate_id, "status",
                                            "accepted", "at",
                                            json_integer_value(json_object_get(c->payload, "at"))));
}

/* ---- tenants ----------------------------------------------------------------------------- */

static int prepare_create_tenant(api_call *c)
{
    if (!is_operator(c))
        return api_problem(c->req, 403, "forbidden", "forbidden",
                           "only an admin of the operator tenant may create tenants"),
               -1;
    char tenant[37];
    api_derived_id(c, "tenant", tenant);
    snprintf(c->tenant_id, sizeof(c->tenant_id), "%s", tenant);
    snprintf(c->aggregate_id, sizeof(c->aggregate_id), "%s", tenant);
    snprintf(c->location, sizeof(c->location), "/v1/tenants/%s", tenant);
    json_object_set_new(c->payload, "tenant_id", json_string(tenant));
    return 0;
}

static int prepare_issue_key(api_call *c)
{
    char key[CSTL_API_KEY_LEN + 1], key_id[37], hash[65];
    if (cstl_api_key_generate(key, sizeof(key), key_id, hash) != 0)
        return cstl_http_respond_problem(c->req, 500, "internal", "internal error", NULL, NULL), -1;
    if (c->idempotency_key != NULL) {
        /* the retried request must address the same key id; the secret stays new */
        api_derived_id(c, "api-key", key_id);
        size_t o = 5;
        for (const char *p = key_id; *p; p++)
            if (*p != '-')
                key[o++] = *p;
    }
    snprintf(c->aggregate_id, sizeof(c->aggregate_id), "%s", c->who.tenant_id);
    snprintf(c->resource_id, sizeof(c->resource_id), "%s", key_id);
    snprintf(c->location, sizeof(c->location), "/v1/api-keys/%s", key_id);
    json_object_set_new(c->payload, "tenant_id", json_string(c->who.tenant_id));
    json_object_set_new(c->payload, "key_id", json_string(key_id));
    json_object_set_new(c->payload, "key_hash", json_string(hash));
    c->extra = json_pack("{s:s,s:s,s:s,s:O}", "api_key", key, "key_id", key_id, "tenant_id",
                         c->who.tenant_id, "role", json_object_get(c->payload, "role"));
    return 0;
}

/* ---- the table --------------------------------------------------------------------------- */

#define PERMS(...)                                                                                 \
    {                                                                                              \
        __VA_ARGS__, API_PERM_NONE                                                                 \
    }

static const api_endpoint endpoints[] = {
    {.method = "POST",
     .pattern = "/v1/jobs",
     .action = "submit jobs",
     .perms = PERMS(CSTL_PERM_SUBMIT_JOB),
     .context = "jobs",
     .command_type = "SubmitJob",
     .fields = cstl_api_submit_job_fields,
     .creates = true,
     .prepare = prepare_submit_job},
    {.method = "POST",
     .pattern = "/v1/jobs/{id}/cancel",
     .action = "cancel jobs",
     .perms = PERMS(CSTL_PERM_CANCEL_JOB),
     .context = "jobs",
     .command_type = "CancelJob",
     .fields = cstl_api_cancel_job_fields,
     .if_match = true,
     .prepare = prepare_job},
    {.method = "PATCH",
     .pattern = "/v1/jobs/{id}",
     .action = "change job priorities",
     .perms = PERMS(CSTL_PERM_SUBMIT_JOB),
     .context = "jobs",
     .command_type = "ChangeJobPriority",
     .fields = cstl_api_change_priority_fields,
     .if_match = true,
     .prepare = prepare_job},
    {.method = "POST",
     .pattern = "/v1/jobs/{id}/runs/{run_id}/start",
     .action = "report runs",
     .perms = PERMS(CSTL_PERM_WORKER_REPORT),
     .context = "jobs",
     .command_type = "StartRun",
     .fields = cstl_api_start_run_fields,
     .prepare = prepare_run_report},
    {.method = "POST",
     .pattern = "/v1/jobs/{id}/runs/{run_id}/finish",
     .action = "report runs",
     .perms = PERMS(CSTL_PERM_WORKER_REPORT),
     .context = "jobs",
     .command_type = "FinishRun",
     .fields = cstl_api_finish_run_fields,
     .prepare = prepare_run_report},
    {.method = "POST",
     .pattern = "/v1/workers",
     .action = "register workers",
     .perms = PERMS(CSTL_PERM_WORKER_REPORT, CSTL_PERM_MANAGE_FLEET),
     .context = "fleet",
     .command_type = "RegisterWorker",
     .fields = cstl_api_register_worker_fields,
     .creates = true,
     .prepare = prepare_register_worker},
    {.method = "POST",
     .pattern = "/v1/workers/{id}/heartbeat",
     .action = "send heartbeats",
     .perms = PERMS(CSTL_PERM_WORKER_REPORT, CSTL_PERM_MANAGE_FLEET),
     .context = "fleet",
     .fields = cstl_api_heartbeat_fields,
     .prepare = prepare_heartbeat,
     .finish = finish_heartbeat},
    {.method = "POST",
     .pattern = "/v1/gpus/{uuid}/drain",
     .action = "drain gpus",
     .perms = PERMS(CSTL_PERM_MANAGE_FLEET),
     .context = "fleet",
     .command_type = "DrainGpu",
     .fields = cstl_api_drain_gpu_fields,
     .prepare = prepare_gpu},
    {.method = "POST",
     .pattern = "/v1/gpus/{uuid}/resume",
     .action = "resume gpus",
     .perms = PERMS(CSTL_PERM_MANAGE_FLEET),
     .context = "fleet",
     .command_type = "ResumeGpu",
     .fields = cstl_api_resume_gpu_fields,
     .prepare = prepare_gpu},
    {.method = "POST",
     .pattern = "/v1/tenants",
     .action = "create tenants",
     .perms = PERMS(CSTL_PERM_ADMIN),
     .context = "tenants",
     .command_type = "CreateTenant",
     .fields = cstl_api_create_tenant_fields,
     .creates = true,
     .prepare = prepare_create_tenant},
    {.method = "POST",
     .pattern = "/v1/api-keys",
     .action = "issue api keys",
     .perms = PERMS(CSTL_PERM_ADMIN),
     .context = "tenants",
     .command_type = "IssueApiKey",
     .fields = cstl_api_issue_key_fields,
     .creates = true,
     .prepare = prepare_issue_key},
    {.method = "GET",
     .pattern = "/v1/commands/{id}",
     .action = "read command outcomes",
     .perms = PERMS(CSTL_PERM_READ, CSTL_PERM_WORKER_REPORT),
     .handler = api_get_command},
};

int cstl_cmd_api_register(cstl_cmd_api *api, cstl_http_server *server, cstl_error *err)
{
    CSTL_ASSERT(api->endpoints == NULL);
    api->endpoints = cstl_xcalloc(CSTL_ARRAY_LEN(endpoints), sizeof(api_endpoint));
    for (size_t i = 0; i < CSTL_ARRAY_LEN(endpoints); i++) {
        api_endpoint *ep = &api->endpoints[i];
        *ep = endpoints[i];
        ep->api = api;
        int rc = cstl_http_route(server, ep->method, ep->pattern,
                                 ep->handler ? ep->handler : api_handle, ep, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}
