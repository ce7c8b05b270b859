/*
 * fleet.c - the Worker aggregate (id = worker id): a machine, its GPUs and who holds them.
 *
 * Invariants: a GPU is held by at most one job (ReserveGpus refuses a held GPU, whoever asks);
 * a drained GPU takes no new reservation but keeps the one it has; a worker that is lost or
 * deregistered holds nothing. Workers belong to the platform, not to a tenant, so fleet commands
 * carry no tenant check. Called by the partition's owner thread.
 */
#include "commands/aggregate.h"
#include "commands/aggregate_internal.h"
#include "commands/rules.h"

#include <stdlib.h>
#include <string.h>

typedef enum worker_status {
    WORKER_NONE = 0,
    WORKER_ACTIVE,
    WORKER_LOST,
    WORKER_DEREGISTERED,
} worker_status;

static const char *const STATUS_NAMES[] = {"none", "active", "lost", "deregistered"};

typedef struct gpu {
    char uuid[CSTL_GPU_UUID_MAX + 1];
    char model[65];
    int64_t memory_mib;
    char compute_capability[8];
    int drained;
    char held_by[37]; /* job id, "" when free */
} gpu;

typedef struct worker_state {
    worker_status status;
    char worker_id[37];
    char *hostname;
    json_t *labels; /* object of strings; NULL before registration */
    int64_t registered_at;
    size_t n_gpus;
    gpu gpus[CSTL_WORKER_MAX_GPUS];
} worker_state;

static void *worker_create(void)
{
    return cstl_xcalloc(1, sizeof(worker_state));
}

static void worker_destroy(void *state)
{
    worker_state *w = state;
    if (w == NULL)
        return;
    free(w->hostname);
    json_decref(w->labels);
    free(w);
}

static gpu *find_gpu(const worker_state *w, const char *uuid)
{
    for (size_t i = 0; i < w->n_gpus; i++)
        if (strcmp(w->gpus[i].uuid, uuid) == 0)
            return (gpu *)&w->gpus[i];
    return NULL;
}

static int any_held(const worker_state *w)
{
    for (size_t i = 0; i < w->n_gpus; i++)
        if (w->gpus[i].held_by[0] != '\0')
            return 1;
    return 0;
}

static int copy_str(char *out, size_t cap, const json_t *v, const char *what, cstl_error *err)
{
    if (!json_is_string(v) || json_string_length(v) >= cap)
        return cstl_error_set(err, CSTL_EDECODE, "%s is missing, not a string or too long", what);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

/* ---- evolve ------------------------------------------------------------------------------ */

static int evolve_registered(worker_state *w, const cstl_event *ev, cstl_error *err)
{
    const json_t *gpus = json_object_get(ev->data, "gpus");
    const json_t *labels = json_object_get(ev->data, "labels");
    char *hostname;
    int64_t at;
    int rc;
    if (!json_is_array(gpus) || json_array_size(gpus) > CSTL_WORKER_MAX_GPUS)
        return cstl_error_set(err, CSTL_EDECODE,
                              "WorkerRegistered.gpus is not an array of at "
                              "most %d GPUs",
                              CSTL_WORKER_MAX_GPUS);
    if (!json_is_object(labels))
        return cstl_error_set(err, CSTL_EDECODE, "WorkerRegistered.labels is not an object");
    if ((rc = cstl_agg_event_int(ev, "at", &at, NULL, err)))
        return rc;
    gpu next[CSTL_WORKER_MAX_GPUS];
    memset(next, 0, sizeof(next));
    size_t i;
    json_t *g;
    json_array_foreach(gpus, i, g)
    {
        const json_t *mem = json_object_get(g, "memory_mib");
        if ((rc = copy_str(next[i].uuid, sizeof(next[i].uuid), json_object_get(g, "uuid"),
                           "WorkerRegistered.gpus[].uuid", err)) ||
            (rc = copy_str(next[i].model, sizeof(next[i].model), json_object_get(g, "model"),
                           "WorkerRegistered.gpus[].model", err)) ||
            (rc = copy_str(next[i].compute_capability, sizeof(next[i].compute_capability),
                           json_object_get(g, "compute_capability"),
                           "WorkerRegistered.gpus[].compute_capability", err)))
            return rc;
        if (!json_is_integer(mem))
            return cstl_error_set(err, CSTL_EDECODE,
                                  "WorkerRegistered.gpus[].memory_mib is not an integer");
        next[i].memory_mib = json_integer_value(mem);
        /* a GPU seen before keeps its drain and its holder across a registration */
        const gpu *old = find_gpu(w, next[i].uuid);
        if (old != NULL) {
            next[i].drained = old->drained;
            memcpy(next[i].held_by, old->held_by, sizeof(old->held_by));
        }
    }
    if ((rc = cstl_agg_event_strdup(ev, "hostname", 0, &hostname, err)))
        return rc;
    free(w->hostname);
    w->hostname = hostname;
    json_decref(w->labels);
    w->labels = json_deep_copy(labels);
    memcpy(w->gpus, next, sizeof(next));
    w->n_gpus = json_array_size(gpus);
    w->registered_at = at;
    w->status = WORKER_ACTIVE;
    return 0;
}

static int evolve_holds(worker_state *w, const cstl_event *ev, int reserve, cstl_error *err)
{
    char job_id[37];
    const json_t *uuids = json_object_get(ev->data, "gpu_uuids");
    int rc = cstl_agg_event_str(ev, "job_id", job_id, sizeof(job_id), err);
    if (rc != 0)
        return rc;
    if (!json_is_array(uuids))
        return cstl_error_set(err, CSTL_EDECODE, "%s.gpu_uuids is not an array", ev->type);
    size_t i;
    json_t *u;
    json_array_foreach(uuids, i, u)
    {
        gpu *g = find_gpu(w, json_string_value(u) ? json_string_value(u) : "");
        if (g == NULL)
            return cstl_error_set(err, CSTL_EDECODE, "%s names a GPU the worker does not have",
                                  ev->type);
        if (reserve)
            memcpy(g->held_by, job_id, sizeof(job_id));
        else
            g->held_by[0] = '\0';
    }
    return 0;
}

static int evolve_drain(worker_state *w, const cstl_event *ev, int drained, cstl_error *err)
{
    char uuid[CSTL_GPU_UUID_MAX + 1];
    int rc = cstl_agg_event_str(ev, "gpu_uuid", uuid, sizeof(uuid), err);
    if (rc != 0)
        return rc;
    gpu *g = find_gpu(w, uuid);
    if (g == NULL)
        return cstl_error_set(err, CSTL_EDECODE, "%s names GPU \"%s\" the worker does not have",
                              ev->type, uuid);
    g->drained = drained;
    return 0;
}

static int worker_evolve(void *state, const cstl_event *ev, cstl_error *err)
{
    worker_state *w = state;
    char worker_id[37];
    int rc = cstl_agg_event_str(ev, "worker_id", worker_id, sizeof(worker_id), err);
    if (rc != 0)
        return rc;
    int registered = strcmp(ev->type, "WorkerRegistered") == 0;
    if (w->status == WORKER_NONE && !registered)
        return cstl_error_set(err, CSTL_EDECODE, "%s precedes the registration of worker \"%s\"",
                              ev->type, worker_id);
    if (w->status != WORKER_NONE && strcmp(worker_id, w->worker_id) != 0)
        return cstl_error_set(err, CSTL_EDECODE, "%s.worker_id \"%s\" is not worker \"%s\"",
                              ev->type, worker_id, w->worker_id);
    if (registered) {
        if ((rc = evolve_registered(w, ev, err)))
            return rc;
        memcpy(w->worker_id, worker_id, sizeof(worker_id));
        return 0;
    }
    if (strcmp(ev->type, "GpusReserved") == 0)
        return evolve_holds(w, ev, 1, err);
    if (strcmp(ev->type, "GpusReleased") == 0)
        return evolve_holds(w, ev, 0, err);
    if (strcmp(ev->type, "GpuDrained") == 0)
        return evolve_drain(w, ev, 1, err);
    if (strcmp(ev->type, "GpuResumed") == 0)
        return evolve_drain(w, ev, 0, err);
    if (strcmp(ev->type, "WorkerLost") == 0 || strcmp(ev->type, "WorkerDeregistered") == 0) {
        for (size_t i = 0; i < w->n_gpus; i++)
            w->gpus[i].held_by[0] = '\0';
        w->status = ev->type[6] == 'L' ? WORKER_LOST : WORKER_DEREGISTERED;
        return 0;
    }
    return cstl_error_set(err, CSTL_EDECODE, "fleet has no event \"%s\"", ev->type);
}

/* ---- decide ------------------------------------------------------------------------------ */

static void emit(cstl_decision *d, const char *type, json_t *e, const cstl_command *cmd)
{
    json_object_set_new(e, "at", json_integer(cmd->now_us));
    cstl_decision_emit(d, type, e);
}

static int not_active(const worker_state *w, cstl_decision *d)
{
    return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "worker_not_active", "",
                                "worker \"%s\" is %s, not active", w->worker_id,
                                STATUS_NAMES[w->status]);
}

static int no_such_gpu(const worker_state *w, const char *uuid, cstl_decision *d)
{
    return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "gpu_not_on_worker", "",
                                "worker \"%s\" has no GPU \"%s\"", w->worker_id, uuid);
}

/* The registration in the command describes exactly the GPUs the worker has. */
static int same_gpus(const worker_state *w, const json_t *gpus)
{
    if (json_array_size(gpus) != w->n_gpus)
        return 0;
    size_t i;
    json_t *g;
    json_array_foreach(gpus, i, g)
    {
        const gpu *have = find_gpu(w, json_string_value(json_object_get(g, "uuid")));
        if (have == NULL || strcmp(have->model, cstl_agg_str(g, "model")) != 0 ||
            have->memory_mib != cstl_agg_int(g, "memory_mib") ||
            strcmp(have->compute_capability, cstl_agg_str(g, "compute_capability")) != 0)
            return 0;
    }
    return 1;
}

static int decide_register(const worker_state *w, const cstl_command *cmd, cstl_decision *d)
{
    const json_t *p = cmd->payload;
    const json_t *gpus = json_object_get(p, "gpus");
    if (w->status == WORKER_ACTIVE) {
        int same = same_gpus(w, gpus);
        if (same && strcmp(w->hostname, cstl_agg_str(p, "hostname")) == 0 &&
            json_equal(w->labels, json_object_get(p, "labels")))
            return 0; /* the same registration again: nothing changes */
        if (!same && any_held(w))
            return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "worker_gpus_held", "",
                                        "worker \"%s\" cannot change its GPUs while a job holds "
                                        "one",
                                        w->worker_id);
    }
    json_t *list = json_array();
    size_t i;
    json_t *g;
    json_array_foreach(gpus, i, g)
    {
        json_array_append_new(list,
                              json_pack("{s:O, s:O, s:O, s:O}", "uuid", json_object_get(g, "uuid"),
                                        "model", json_object_get(g, "model"), "memory_mib",
                                        json_object_get(g, "memory_mib"), "compute_capability",
                                        json_object_get(g, "compute_capability")));
    }
    json_t *e = json_pack("{s:O, s:O, s:o, s:O}", "worker_id", json_object_get(p, "worker_id"),
                          "hostname", json_object_get(p, "hostname"), "gpus", list, "labels",
                          json_object_get(p, "labels"));
    emit(d, "WorkerRegistered", e, cmd);
    return 0;
}

static json_t *holds_event(const cstl_command *cmd)
{
    const json_t *p = cmd->payload;
    return json_pack("{s:O, s:O, s:O}", "worker_id", json_object_get(p, "worker_id"), "job_id",
                     json_object_get(p, "job_id"), "gpu_uuids", json_object_get(p, "gpu_uuids"));
}

static int decide_reserve(const worker_state *w, const cstl_command *cmd, cstl_decision *d)
{
    const json_t *uuids = json_object_get(cmd->payload, "gpu_uuids");
    const char *job_id = cstl_agg_str(cmd->payload, "job_id");
    if (w->status != WORKER_ACTIVE)
        return not_active(w, d);
    size_t i, mine = 0;
    json_t *u;
    json_array_foreach(uuids, i, u)
    {
        const gpu *g = find_gpu(w, json_string_value(u));
        if (g == NULL)
            return no_such_gpu(w, json_string_value(u), d);
        mine += strcmp(g->held_by, job_id) == 0;
    }
    if (mine == json_array_size(uuids))
        return 0; /* the job holds them already: a repeated reservation */
    json_array_foreach(uuids, i, u)
    {
        const gpu *g = find_gpu(w, json_string_value(u));
        if (g->held_by[0] != '\0')
            return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "gpu_held", "",
                                        "GPU \"%s\" is held by job \"%s\"", g->uuid, g->held_by);
        if (g->drained)
            return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "gpu_drained", "",
                                        "GPU \"%s\" is drained", g->uuid);
    }
    emit(d, "GpusReserved", holds_event(cmd), cmd);
    return 0;
}

static int decide_release(const worker_state *w, const cstl_command *cmd, cstl_decision *d)
{
    const json_t *uuids = json_object_get(cmd->payload, "gpu_uuids");
    const char *job_id = cstl_agg_str(cmd->payload, "job_id");
    size_t i;
    json_t *u;
    json_array_foreach(uuids, i, u)
    {
        const gpu *g = find_gpu(w, json_string_value(u));
        if (g == NULL)
            return no_such_gpu(w, json_string_value(u), d);
        if (strcmp(g->held_by, job_id) != 0)
            return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "gpu_not_held", "",
                                        "GPU \"%s\" is not held by job \"%s\"", g->uuid, job_id);
    }
    emit(d, "GpusReleased", holds_event(cmd), cmd);
    return 0;
}

static int decide_drain(const worker_state *w, const cstl_command *cmd, cstl_decision *d)
{
    const json_t *p = cmd->payload;
    const char *uuid = cstl_agg_str(p, "gpu_uuid");
    int drain = strcmp(cmd->type, "DrainGpu") == 0;
    if (w->status == WORKER_DEREGISTERED)
        return not_active(w, d);
    const gpu *g = find_gpu(w, uuid);
    if (g == NULL)
        return no_such_gpu(w, uuid, d);
    if (drain && g->drained)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "gpu_already_drained", "",
                                    "GPU \"%s\" is already drained", uuid);
    if (!drain && !g->drained)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "gpu_not_drained", "",
                                    "GPU \"%s\" is not drained", uuid);
    json_t *e =
        json_pack("{s:O, s:s}", "worker_id", json_object_get(p, "worker_id"), "gpu_uuid", uuid);
    if (drain)
        json_object_set(e, "reason", json_object_get(p, "reason"));
    emit(d, drain ? "GpuDrained" : "GpuResumed", e, cmd);
    return 0;
}

static int decide_lost(const worker_state *w, const cstl_command *cmd, cstl_decision *d)
{
    const json_t *p = cmd->payload;
    if (w->status != WORKER_ACTIVE)
        return not_active(w, d);
    json_t *jobs = json_array();
    for (size_t i = 0; i < w->n_gpus; i++) {
        const char *job = w->gpus[i].held_by;
        int seen = job[0] == '\0';
        for (size_t k = 0; k < i && !seen; k++)
            seen = strcmp(w->gpus[k].held_by, job) == 0;
        if (!seen)
            json_array_append_new(jobs, json_string(job));
    }
    json_t *e =
        json_pack("{s:O, s:O, s:o}", "worker_id", json_object_get(p, "worker_id"),
                  "last_heartbeat_at", json_object_get(p, "last_heartbeat_at"), "job_ids", jobs);
    emit(d, "WorkerLost", e, cmd);
    return 0;
}

static int decide_deregister(const worker_state *w, const cstl_command *cmd, cstl_decision *d)
{
    if (w->status == WORKER_DEREGISTERED)
        return not_active(w, d);
    if (any_held(w))
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "worker_gpus_held", "",
                                    "worker \"%s\" cannot leave while a job holds one of its GPUs",
                                    w->worker_id);
    emit(d, "WorkerDeregistered", json_pack("{s:s}", "worker_id", w->worker_id), cmd);
    return 0;
}

static int
worker_decide(const void *state, int64_t version, const cstl_command *cmd, cstl_decision *d)
{
    static const struct {
        const char *type;
        int (*fn)(const worker_state *, const cstl_command *, cstl_decision *);
    } table[] = {
        {"RegisterWorker", decide_register},
        {"ReserveGpus", decide_reserve},
        {"ReleaseGpus", decide_release},
        {"DrainGpu", decide_drain},
        {"ResumeGpu", decide_drain},
        {"MarkWorkerLost", decide_lost},
        {"DeregisterWorker", decide_deregister},
    };
    const worker_state *w = state;
    (void)version;
    size_t i = 0;
    while (i < CSTL_ARRAY_LEN(table) && strcmp(table[i].type, cmd->type ? cmd->type : "") != 0)
        i++;
    if (i == CSTL_ARRAY_LEN(table))
        return CSTL_EINVAL;
    if (cstl_command_validate("fleet", cmd->type, cmd->payload, d) < 0 ||
        cstl_agg_check_target(cmd, "worker_id", d) < 0)
        return 0;
    if (table[i].fn != decide_register && w->status == WORKER_NONE) {
        cstl_decision_reject(d, CSTL_REJECT_NOT_FOUND, "worker_not_found", "",
                             "worker \"%s\" does not exist",
                             cstl_agg_str(cmd->payload, "worker_id"));
        return 0;
    }
    table[i].fn(w, cmd, d);
    return 0;
}

/* ---- snapshot ---------------------------------------------------------------------------- */

static json_t *worker_snapshot(const void *state)
{
    const worker_state *w = state;
    json_t *gpus = json_array();
    for (size_t i = 0; i < w->n_gpus; i++) {
        const gpu *g = &w->gpus[i];
        json_array_append_new(
            gpus, json_pack("{s:s, s:s, s:I, s:s, s:b, s:o}", "uuid", g->uuid, "model", g->model,
                            "memory_mib", (json_int_t)g->memory_mib, "compute_capability",
                            g->compute_capability, "drained", g->drained, "held_by",
                            cstl_agg_json_str_or_null(g->held_by[0] ? g->held_by : NULL)));
    }
    return json_pack("{s:s, s:s, s:o, s:o, s:I, s:o}", "status", STATUS_NAMES[w->status],
                     "worker_id", w->worker_id, "hostname", cstl_agg_json_str_or_null(w->hostname),
                     "labels", w->labels ? json_deep_copy(w->labels) : json_null(), "registered_at",
                     (json_int_t)w->registered_at, "gpus", gpus);
}

static void *worker_restore(const json_t *snap, cstl_error *err)
{
    const char *status, *worker_id;
    json_t *hostname, *labels, *gpus;
    json_int_t registered_at;
    if (cstl_agg_unpack(snap, "worker", err, "{s:s, s:s, s:o, s:o, s:I, s:o}", "status", &status,
                        "worker_id", &worker_id, "hostname", &hostname, "labels", &labels,
                        "registered_at", &registered_at, "gpus", &gpus) != 0)
        return NULL;
    worker_state *w = worker_create();
    size_t s = 0;
    while (s < CSTL_ARRAY_LEN(STATUS_NAMES) && strcmp(STATUS_NAMES[s], status) != 0)
        s++;
    if (s == CSTL_ARRAY_LEN(STATUS_NAMES) || strlen(worker_id) > 36 ||
        !(json_is_object(labels) || json_is_null(labels)) || !json_is_array(gpus) ||
        json_array_size(gpus) > CSTL_WORKER_MAX_GPUS) {
        cstl_error_set(err, CSTL_EDECODE, "worker snapshot does not fit");
        goto fail;
    }
    w->status = (worker_status)s;
    memcpy(w->worker_id, worker_id, strlen(worker_id) + 1);
    w->hostname = cstl_agg_strdup_or_null(json_string_value(hostname));
    w->labels = json_is_object(labels) ? json_deep_copy(labels) : NULL;
    w->registered_at = registered_at;
    size_t i;
    json_t *gj;
    json_array_foreach(gpus, i, gj)
    {
        json_t *uuid, *model, *cc, *held;
        json_int_t mem;
        int drained;
        gpu *g = &w->gpus[i];
        if (cstl_agg_unpack(gj, "worker", err, "{s:o, s:o, s:I, s:o, s:b, s:o}", "uuid", &uuid,
                            "model", &model, "memory_mib", &mem, "compute_capability", &cc,
                            "drained", &drained, "held_by", &held) != 0 ||
            copy_str(g->uuid, sizeof(g->uuid), uuid, "worker snapshot uuid", err) ||
            copy_str(g->model, sizeof(g->model), model, "worker snapshot model", err) ||
            copy_str(g->compute_capability, sizeof(g->compute_capability), cc,
                     "worker snapshot compute_capability", err) ||
            (!json_is_null(held) &&
             copy_str(g->held_by, sizeof(g->held_by), held, "worker snapshot held_by", err)))
            goto fail;
        g->memory_mib = mem;
        g->drained = drained;
        w->n_gpus++;
    }
    return w;
fail:
    worker_destroy(w);
    return NULL;
}

static const char *worker_aggregate_id(const char *command_type, const json_t *payload)
{
    if (!cstl_command_known("fleet", command_type))
        return NULL;
    return cstl_agg_str(payload, "worker_id");
}

const cstl_aggregate_type cstl_worker_aggregate = {
    .context = "fleet",
    .name = "Worker",
    .create = worker_create,
    .destroy = worker_destroy,
    .evolve = worker_evolve,
    .decide = worker_decide,
    .snapshot = worker_snapshot,
    .restore = worker_restore,
    .aggregate_id = worker_aggregate_id,
};
