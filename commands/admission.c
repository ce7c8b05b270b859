/*
 * admission.c - the admission process manager's state and decisions (see admission.h).
 *
 * The state is kept in jansson objects used as hash maps (string keys, O(1) lookups):
 *   tenants:  tenant id -> {"suspended": bool}
 *   workers:  worker id -> [ {model, memory_mib}, ... ] for active workers only
 *   jobs:     job id    -> {"tenant": id, "state": "pending"|"queued", "seq": n} for jobs that wait
 *   waiting:  tenant id -> number of its jobs in jobs
 * A job leaves `jobs` as soon as it is assigned, rejected, cancelled or finished.
 */
#include "commands/admission.h"

#include "commands/client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cstl_admission {
    int max_queued;
    json_t *tenants;
    json_t *workers;
    json_t *jobs;
    json_t *waiting;
    json_int_t seq;
};

cstl_admission *cstl_admission_new(int max_queued)
{
    cstl_admission *a = cstl_xcalloc(1, sizeof(*a));
    a->max_queued = max_queued < 1 ? 1 : max_queued;
    a->tenants = json_object();
    a->workers = json_object();
    a->jobs = json_object();
    a->waiting = json_object();
    return a;
}

void cstl_admission_free(cstl_admission *a)
{
    if (a == NULL)
        return;
    json_decref(a->tenants);
    json_decref(a->workers);
    json_decref(a->jobs);
    json_decref(a->waiting);
    free(a);
}

static const char *str(const json_t *data, const char *key)
{
    return json_string_value(json_object_get(data, key));
}

static void waiting_add(cstl_admission *a, const char *tenant, int delta)
{
    json_int_t n = json_integer_value(json_object_get(a->waiting, tenant)) + delta;
    if (n <= 0)
        json_object_del(a->waiting, tenant);
    else
        json_object_set_new(a->waiting, tenant, json_integer(n));
}

/* The job stops waiting (assigned, rejected, cancelled, finished). */
static void job_done(cstl_admission *a, const char *job_id)
{
    json_t *job = job_id ? json_object_get(a->jobs, job_id) : NULL;
    if (job == NULL)
        return;
    waiting_add(a, str(job, "tenant"), -1);
    json_object_del(a->jobs, job_id);
}

static void apply_tenants(cstl_admission *a, const char *type, const json_t *data)
{
    const char *tenant = str(data, "tenant_id");
    if (tenant == NULL)
        return;
    if (strcmp(type, "TenantCreated") == 0)
        json_object_set_new(a->tenants, tenant, json_pack("{s:b}", "suspended", 0));
    else if (strcmp(type, "TenantSuspended") == 0)
        json_object_set_new(a->tenants, tenant, json_pack("{s:b}", "suspended", 1));
}

static void apply_fleet(cstl_admission *a, const char *type, const json_t *data)
{
    const char *worker = str(data, "worker_id");
    if (worker == NULL)
        return;
    if (strcmp(type, "WorkerRegistered") == 0) {
        json_t *gpus = json_array();
        size_t i;
        json_t *g;
        json_array_foreach(json_object_get(data, "gpus"), i, g)
        {
            json_array_append_new(gpus,
                                  json_pack("{s:O?,s:O?}", "model", json_object_get(g, "model"),
                                            "memory_mib", json_object_get(g, "memory_mib")));
        }
        json_object_set_new(a->workers, worker, gpus);
    } else if (strcmp(type, "WorkerLost") == 0 || strcmp(type, "WorkerDeregistered") == 0) {
        json_object_del(a->workers, worker);
    }
}

static void apply_jobs(cstl_admission *a, const char *type, const json_t *data)
{
    const char *job_id = str(data, "job_id");
    if (job_id == NULL)
        return;
    if (strcmp(type, "JobSubmitted") == 0) {
        const char *tenant = str(data, "tenant_id");
        if (tenant == NULL || json_object_get(a->jobs, job_id) != NULL)
            return;
        json_t *model = json_object_get(data, "gpu_model");
        json_object_set_new(a->jobs, job_id,
                            json_pack("{s:s,s:s,s:I,s:O,s:O,s:O}", "tenant", tenant, "state",
                                      "pending", "seq", ++a->seq, "gpu_count",
                                      json_object_get(data, "gpu_count"), "min_gpu_memory_mib",
                                      json_object_get(data, "min_gpu_memory_mib"), "gpu_model",
                                      model ? model : json_null()));
        waiting_add(a, tenant, +1);
    } else if (strcmp(type, "JobAdmitted") == 0) {
        json_t *job = json_object_get(a->jobs, job_id);
        if (job != NULL)
            json_object_set_new(job, "state", json_string("queued"));
    } else if (strcmp(type, "JobRequeued") == 0) {
        /* back in the queue: it waits again, but it was admitted once and is not re-decided */
        (void)0;
    } else if (strcmp(type, "JobAssigned") == 0 || strcmp(type, "JobRejected") == 0 ||
               strcmp(type, "JobCancelled") == 0 || strcmp(type, "JobSucceeded") == 0 ||
               strcmp(type, "JobFailed") == 0 || strcmp(type, "JobTimedOut") == 0) {
        job_done(a, job_id);
    }
}

void cstl_admission_apply(cstl_admission *a,
                          const char *context,
                          const char *type,
                          const json_t *data)
{
    if (context == NULL || type == NULL || !json_is_object(data))
        return;
    if (strcmp(context, "tenants") == 0)
        apply_tenants(a, type, data);
    else if (strcmp(context, "fleet") == 0)
        apply_fleet(a, type, data);
    else if (strcmp(context, "jobs") == 0)
        apply_jobs(a, type, data);
}

/* True when some active worker has count GPUs with at least memory MiB (and the model, if set). */
static int
fleet_fits(const cstl_admission *a, json_int_t count, json_int_t memory, const char *model)
{
    const char *worker;
    json_t *gpus;
    json_object_foreach(a->workers, worker, gpus)
    {
        json_int_t fit = 0;
        size_t i;
        json_t *g;
        json_array_foreach(gpus, i, g)
        {
            const char *m = str(g, "model");
            if (json_integer_value(json_object_get(g, "memory_mib")) >= memory &&
                (model == NULL || (m != NULL && strcmp(m, model) == 0)))
                fit++;
        }
        if (fit >= count)
            return 1;
    }
    return 0;
}

static void reject(cstl_admission_decision *out, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reject(cstl_admission_decision *out, const char *reason, const char *fmt, ...)
{
    char message[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    out->command_type = "RejectJob";
    out->payload =
        json_pack("{s:s,s:s,s:s}", "job_id", out->job_id, "reason", reason, "message", message);
}

int cstl_admission_decide(cstl_admission *a, const char *job_id, cstl_admission_decision *out)
{
    json_t *job = json_object_get(a->jobs, job_id);
    if (job == NULL || strcmp(str(job, "state"), "pending") != 0)
        return CSTL_ENOTFOUND;
    memset(out, 0, sizeof(*out));
    snprintf(out->job_id, sizeof(out->job_id), "%s", job_id);
    const char *tenant = str(job, "tenant");
    snprintf(out->tenant_id, sizeof(out->tenant_id), "%s", tenant);

    json_t *t = json_object_get(a->tenants, tenant);
    if (t == NULL || json_is_true(json_object_get(t, "suspended"))) {
        reject(out, "TENANT_SUSPENDED", "tenant %s is %s", tenant,
               t == NULL ? "unknown" : "suspended");
        return 0;
    }
    json_int_t count = json_integer_value(json_object_get(job, "gpu_count"));
    json_int_t memory = json_integer_value(json_object_get(job, "min_gpu_memory_mib"));
    const char *model = str(job, "gpu_model");
    if (!fleet_fits(a, count, memory, model)) {
        reject(out, "NO_MATCHING_GPU",
               "no registered worker has %lld GPUs with at least %lld MiB%s%s", (long long)count,
               (long long)memory, model ? " of model " : "", model ? model : "");
        return 0;
    }
    /* Jobs submitted before this one and still waiting, this one excluded. */
    json_int_t ahead = json_integer_value(json_object_get(a->waiting, tenant)) - 1;
    if (ahead >= a->max_queued) {
        reject(out, "QUOTA_EXCEEDED", "tenant %s already has %lld jobs waiting, the limit is %d",
               tenant, (long long)ahead, a->max_queued);
        return 0;
    }
    char key[64], reservation[37];
    snprintf(key, sizeof(key), "reservation:%s", job_id);
    cstl_cmd_id_from_key(tenant, key, reservation);
    out->command_type = "AdmitJob";
    out->payload = json_pack("{s:s,s:s}", "job_id", job_id, "reservation_id", reservation);
    return 0;
}

static int by_seq(const void *x, const void *y)
{
    json_int_t a = json_integer_value(json_object_get(*(json_t *const *)x, "seq"));
    json_int_t b = json_integer_value(json_object_get(*(json_t *const *)y, "seq"));
    return (a > b) - (a < b);
}

json_t *cstl_admission_pending(const cstl_admission *a)
{
    size_t n = 0, cap = json_object_size(a->jobs);
    json_t **list = cstl_xcalloc(cap ? cap : 1, sizeof(json_t *));
    const char *id;
    json_t *job;
    json_object_foreach(a->jobs, id, job)
    {
        if (strcmp(str(job, "state"), "pending") == 0) {
            json_object_set_new(job, "id", json_string(id));
            list[n++] = job;
        }
    }
    qsort(list, n, sizeof(json_t *), by_seq);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(out, json_object_get(list[i], "id"));
    free(list);
    return out;
}
