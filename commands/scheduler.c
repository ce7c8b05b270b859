/*
 * scheduler.c - the scheduler's state from the jobs and fleet events and heartbeats, and its plan
 * (see scheduler.h). Terminal jobs are dropped from the state; a GPU still held by one is released
 * by the next plan. Owned by one thread.
 */
#include "commands/scheduler.h"

#include "commands/client.h"
#include "commands/strmap.h"
#include "commands/waiting.h"
#include "platform/error.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_MAX 64
/* Most workers whose heartbeats are kept before their registration is read. */
#define MAX_EARLY_BEATS 65536

typedef enum sjob_state { SJ_SUBMITTED, SJ_QUEUED, SJ_ASSIGNED, SJ_RUNNING } sjob_state;

typedef struct sjob {
    char job_id[ID_MAX + 1];
    char tenant_id[37];
    int gpu_count;
    int64_t min_gpu_memory_mib;
    char gpu_model[ID_MAX + 1];
    int priority;
    int64_t submitted_at;
    int64_t runtime_limit_s;
    sjob_state state;
    int64_t version; /* of the job's last event applied */
    char run_id[ID_MAX + 1];
    char worker_id[ID_MAX + 1];
    int64_t started_at; /* 0 unless a run is running */
    int attempts;       /* JobAssigned seen */
    /* in flight: placed by a plan, JobAssigned not seen yet */
    int64_t inflight_until;
    char inflight_worker[ID_MAX + 1];
    char inflight_gpus[CSTL_PLACE_MAX_GPUS][ID_MAX + 1];
    int inflight_ngpus;
} sjob;

typedef struct sgpu {
    char uuid[ID_MAX + 1];
    char model[ID_MAX + 1];
    int64_t memory_mib;
    bool drained;
    char held_by[ID_MAX + 1];
} sgpu;

typedef struct sworker {
    char worker_id[ID_MAX + 1];
    char tenant_id[37];
    sgpu gpus[CSTL_PLACE_MAX_GPUS];
    size_t ngpus;
    bool active;
    int64_t last_seen;
} sworker;

typedef struct stenant {
    double weight;
    double usage; /* finished GPU-seconds, decayed to at_us */
    int64_t at_us;
} stenant;

struct cstl_scheduler {
    cstl_scheduler_options o;
    cstl_strmap *jobs;     /* job id -> sjob */
    cstl_strmap *workers;  /* worker id -> sworker */
    cstl_strmap *tenants;  /* tenant id -> stenant */
    cstl_strmap *beats;    /* worker id -> int64_t: last heartbeat of a worker not registered yet */
    cstl_waiting *waiting; /* the pending reasons published */
};

cstl_scheduler *cstl_scheduler_new(const cstl_scheduler_options *opts)
{
    cstl_scheduler *s = cstl_xcalloc(1, sizeof(*s));
    if (opts != NULL)
        s->o = *opts;
    if (!(s->o.half_life_s > 0))
        s->o.half_life_s = 600;
    if (!(s->o.charge_s > 0))
        s->o.charge_s = 60;
    if (!(s->o.heartbeat_timeout_s > 0))
        s->o.heartbeat_timeout_s = 30;
    if (!(s->o.timeout_grace_s > 0))
        s->o.timeout_grace_s = 30;
    if (!(s->o.inflight_s > 0))
        s->o.inflight_s = 30;
    s->jobs = cstl_strmap_new(free);
    s->workers = cstl_strmap_new(free);
    s->tenants = cstl_strmap_new(free);
    s->waiting = cstl_waiting_new(s->o.message_interval_s);
    s->beats = cstl_strmap_new(free);
    return s;
}

void cstl_scheduler_free(cstl_scheduler *s)
{
    if (s == NULL)
        return;
    cstl_strmap_free(s->jobs);
    cstl_strmap_free(s->workers);
    cstl_strmap_free(s->tenants);
    cstl_waiting_free(s->waiting);
    cstl_strmap_free(s->beats);
    free(s);
}

static stenant *tenant_get(cstl_scheduler *s, const char *tenant_id)
{
    stenant *t = cstl_strmap_get(s->tenants, tenant_id);
    if (t == NULL) {
        t = cstl_xcalloc(1, sizeof(*t));
        t->weight = 1;
        cstl_strmap_put(s->tenants, tenant_id, t);
    }
    return t;
}

int cstl_scheduler_set_weight(cstl_scheduler *s, const char *tenant_id, double weight)
{
    if (s == NULL || tenant_id == NULL || !(weight > 0))
        return CSTL_EINVAL;
    tenant_get(s, tenant_id)->weight = weight;
    return 0;
}

/* ---- applying events ----------------------------------------------------------------------- */

static const char *str(const json_t *data, const char *key)
{
    const char *v = json_string_value(json_object_get(data, key));
    return v != NULL ? v : "";
}

static int64_t num(const json_t *data, const char *key)
{
    return json_integer_value(json_object_get(data, key));
}

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src);
}

static void
job_submitted(cstl_scheduler *s, const char *tenant_id, int64_t version, const json_t *d)
{
    const char *id = str(d, "job_id");
    if (*id == '\0' || strlen(id) > ID_MAX || cstl_strmap_has(s->jobs, id))
        return;
    sjob *j = cstl_xcalloc(1, sizeof(*j));
    copy(j->job_id, sizeof(j->job_id), id);
    copy(j->tenant_id, sizeof(j->tenant_id),
         *str(d, "tenant_id") ? str(d, "tenant_id") : tenant_id);
    j->gpu_count = (int)num(d, "gpu_count");
    j->min_gpu_memory_mib = num(d, "min_gpu_memory_mib");
    copy(j->gpu_model, sizeof(j->gpu_model), str(d, "gpu_model"));
    j->priority = (int)num(d, "priority");
    j->submitted_at = num(d, "at");
    j->runtime_limit_s = num(d, "runtime_limit_seconds");
    j->state = SJ_SUBMITTED;
    j->version = version;
    cstl_strmap_put(s->jobs, id, j);
}

/* Adds gpu_s to a tenant's usage at at_us, decaying what it had. */
static void charge(cstl_scheduler *s, const char *tenant_id, double gpu_s, int64_t at_us)
{
    stenant *t = tenant_get(s, tenant_id);
    if (at_us > t->at_us) {
        t->usage = cstl_place_decay(t->usage, (double)(at_us - t->at_us) / 1e6, s->o.half_life_s);
        t->at_us = at_us;
    }
    t->usage += gpu_s;
}

/*
 * The usage a finished run adds: its GPUs x the time from its RunStarted to its RunFinished, the
 * measure its running time was counted in until then. The billed gpu_seconds are rounded up to
 * whole seconds (a 0.2 s single-GPU run bills 1), which would charge tenants of short runs several
 * times their use; they count only for a run whose start the state does not have (current: the
 * RunFinished is of the job's current run).
 */
static double run_gpu_s(const sjob *j, bool current, const json_t *d)
{
    int64_t finished = num(d, "finished_at");
    if (current && j->started_at > 0 && finished >= j->started_at)
        return (double)(finished - j->started_at) / 1e6 * j->gpu_count;
    return (double)num(d, "gpu_seconds");
}

static void apply_job(
    cstl_scheduler *s, const char *type, const char *tenant_id, int64_t version, const json_t *d)
{
    if (strcmp(type, "JobSubmitted") == 0) {
        job_submitted(s, tenant_id, version, d);
        return;
    }
    const char *id = str(d, "job_id");
    sjob *j = cstl_strmap_get(s->jobs, id);
    if (j == NULL) {
        /* a cancelled or timed-out job's run reports after its job ended (and left the state):
         * it still used the GPUs until then */
        if (strcmp(type, "RunFinished") == 0 && *tenant_id != '\0')
            charge(s, tenant_id, (double)num(d, "gpu_seconds"), num(d, "finished_at"));
        return;
    }
    if (version > j->version)
        j->version = version;
    if (strcmp(type, "JobAdmitted") == 0) {
        j->state = SJ_QUEUED;
    } else if (strcmp(type, "JobPriorityChanged") == 0) {
        j->priority = (int)num(d, "priority");
    } else if (strcmp(type, "JobAssigned") == 0) {
        j->state = SJ_ASSIGNED;
        copy(j->run_id, sizeof(j->run_id), str(d, "run_id"));
        copy(j->worker_id, sizeof(j->worker_id), str(d, "worker_id"));
        j->attempts++;
        j->inflight_until = 0;
        j->started_at = 0;
    } else if (strcmp(type, "RunStarted") == 0) {
        if (strcmp(j->run_id, str(d, "run_id")) == 0) {
            j->state = SJ_RUNNING;
            j->started_at = num(d, "started_at");
        }
    } else if (strcmp(type, "RunFinished") == 0) {
        bool current = strcmp(j->run_id, str(d, "run_id")) == 0;
        charge(s, j->tenant_id, run_gpu_s(j, current, d), num(d, "finished_at"));
        if (current)
            j->started_at = 0; /* its time is in the usage now */
    } else if (strcmp(type, "JobRequeued") == 0) {
        j->state = SJ_QUEUED;
        j->run_id[0] = j->worker_id[0] = '\0';
        j->started_at = 0;
    } else if (strcmp(type, "JobRejected") == 0 || strcmp(type, "JobSucceeded") == 0 ||
               strcmp(type, "JobFailed") == 0 || strcmp(type, "JobCancelled") == 0 ||
               strcmp(type, "JobTimedOut") == 0) {
        cstl_strmap_remove(s->jobs, id);
    }
}

static sgpu *gpu_find(sworker *w, const char *uuid)
{
    for (size_t i = 0; i < w->ngpus; i++)
        if (strcmp(w->gpus[i].uuid, uuid) == 0)
            return &w->gpus[i];
    return NULL;
}

static void worker_registered(cstl_scheduler *s, const char *tenant_id, const json_t *d)
{
    const char *id = str(d, "worker_id");
    if (*id == '\0' || strlen(id) > ID_MAX)
        return;
    sworker *w = cstl_strmap_get(s->workers, id);
    if (w == NULL) {
        w = cstl_xcalloc(1, sizeof(*w));
        copy(w->worker_id, sizeof(w->worker_id), id);
        cstl_strmap_put(s->workers, id, w);
    }
    copy(w->tenant_id, sizeof(w->tenant_id), tenant_id != NULL ? tenant_id : "");
    sworker old = *w;
    w->ngpus = 0;
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(d, "gpus"), i, g)
    {
        if (w->ngpus == CSTL_PLACE_MAX_GPUS)
            break;
        sgpu *n = &w->gpus[w->ngpus++];
        memset(n, 0, sizeof(*n));
        copy(n->uuid, sizeof(n->uuid), str(g, "uuid"));
        copy(n->model, sizeof(n->model), str(g, "model"));
        n->memory_mib = num(g, "memory_mib");
        /* re-registering keeps what the aggregate keeps: drains and holds of the same GPUs */
        sgpu *was = gpu_find(&old, n->uuid);
        if (was != NULL && old.active) {
            n->drained = was->drained;
            copy(n->held_by, sizeof(n->held_by), was->held_by);
        }
    }
    w->active = true;
    int64_t at = num(d, "at");
    if (at > w->last_seen)
        w->last_seen = at;
    int64_t *beat = cstl_strmap_take(s->beats, id);
    if (beat != NULL && *beat > w->last_seen)
        w->last_seen = *beat;
    free(beat);
}

static void apply_fleet(cstl_scheduler *s, const char *type, const char *tenant_id, const json_t *d)
{
    if (strcmp(type, "WorkerRegistered") == 0) {
        worker_registered(s, tenant_id, d);
        return;
    }
    sworker *w = cstl_strmap_get(s->workers, str(d, "worker_id"));
    if (w == NULL)
        return;
    if (strcmp(type, "GpusReserved") == 0 || strcmp(type, "GpusReleased") == 0) {
        bool hold = strcmp(type, "GpusReserved") == 0;
        size_t i;
        json_t *u;
        json_array_foreach(json_object_get(d, "gpu_uuids"), i, u)
        {
            sgpu *g = gpu_find(w, json_string_value(u) ? json_string_value(u) : "");
            if (g != NULL)
                copy(g->held_by, sizeof(g->held_by), hold ? str(d, "job_id") : "");
        }
    } else if (strcmp(type, "GpuDrained") == 0 || strcmp(type, "GpuResumed") == 0) {
        sgpu *g = gpu_find(w, str(d, "gpu_uuid"));
        if (g != NULL)
            g->drained = strcmp(type, "GpuDrained") == 0;
    } else if (strcmp(type, "WorkerLost") == 0) {
        w->active = false;
        for (size_t i = 0; i < w->ngpus; i++)
            w->gpus[i].held_by[0] = '\0';
    } else if (strcmp(type, "WorkerDeregistered") == 0) {
        cstl_strmap_remove(s->workers, w->worker_id);
    }
}

void cstl_scheduler_apply(cstl_scheduler *s,
                          const char *context,
                          const char *type,
                          const char *tenant_id,
                          int64_t version,
                          const json_t *data)
{
    if (s == NULL || context == NULL || type == NULL || !json_is_object(data))
        return;
    if (tenant_id == NULL)
        tenant_id = "";
    if (strcmp(context, "jobs") == 0)
        apply_job(s, type, tenant_id, version, data);
    else if (strcmp(context, "fleet") == 0)
        apply_fleet(s, type, tenant_id, data);
}

void cstl_scheduler_heartbeat(cstl_scheduler *s, const char *worker_id, int64_t at_us)
{
    if (s == NULL || worker_id == NULL || *worker_id == '\0' || strlen(worker_id) > ID_MAX)
        return;
    sworker *w = cstl_strmap_get(s->workers, worker_id);
    if (w != NULL) {
        if (at_us > w->last_seen)
            w->last_seen = at_us;
        return;
    }
    /* The heartbeats and the fleet events are read side by side, in no set order between them: a
     * heartbeat may come before the registration it follows (at start, the whole heartbeats
     * topic may be read before the fleet events). It is kept until then. */
    int64_t *beat = cstl_strmap_get(s->beats, worker_id);
    if (beat == NULL) {
        if (cstl_strmap_len(s->beats) >= MAX_EARLY_BEATS)
            return;
        beat = cstl_xcalloc(1, sizeof(*beat));
        cstl_strmap_put(s->beats, worker_id, beat);
    }
    if (at_us > *beat)
        *beat = at_us;
}

void cstl_scheduler_waiting_seen(cstl_scheduler *s, const json_t *record)
{
    if (s == NULL || !json_is_object(record))
        return;
    cstl_waiting_seen(s->waiting, str(record, "job_id"), str(record, "tenant_id"),
                      (int)num(record, "attempts"), cstl_place_reason_parse(str(record, "reason")),
                      str(record, "message"), num(record, "at"));
}

void cstl_scheduler_waiting_cleared(cstl_scheduler *s, const char *job_id)
{
    if (s != NULL && job_id != NULL)
        cstl_waiting_clear(s->waiting, job_id);
}

void cstl_scheduler_waiting_failed(cstl_scheduler *s, const cstl_waiting_record *r)
{
    if (s != NULL && r != NULL)
        cstl_waiting_failed(s->waiting, r);
}

void cstl_scheduler_placement_failed(cstl_scheduler *s, const char *job_id)
{
    sjob *j = job_id != NULL ? cstl_strmap_get(s->jobs, job_id) : NULL;
    if (j != NULL)
        j->inflight_until = 0;
}

/* ---- planning ------------------------------------------------------------------------------ */

/* The values of a map in insertion order, as a new array of n pointers. */
typedef struct collect {
    void **items;
    size_t n;
} collect;

static void collect_one(void *ud, const char *key, void *value)
{
    (void)key;
    collect *c = ud;
    c->items[c->n++] = value;
}

static collect values(const cstl_strmap *m)
{
    collect c = {cstl_xcalloc(cstl_strmap_len(m) + 1, sizeof(void *)), 0};
    cstl_strmap_each(m, collect_one, &c);
    return c;
}

static double running_gpu_s(const cstl_scheduler *s, const char *tenant_id, int64_t now_us)
{
    collect jobs = values(s->jobs);
    double total = 0;
    for (size_t i = 0; i < jobs.n; i++) {
        const sjob *j = jobs.items[i];
        if (j->state == SJ_RUNNING && j->started_at > 0 && now_us > j->started_at &&
            strcmp(j->tenant_id, tenant_id) == 0)
            total += (double)(now_us - j->started_at) / 1e6 * j->gpu_count;
    }
    free(jobs.items);
    return total;
}

double cstl_scheduler_usage(const cstl_scheduler *s, const char *tenant_id, int64_t now_us)
{
    const stenant *t = tenant_id != NULL ? cstl_strmap_get(s->tenants, tenant_id) : NULL;
    double finished = 0;
    if (t != NULL)
        finished = now_us > t->at_us ? cstl_place_decay(t->usage, (double)(now_us - t->at_us) / 1e6,
                                                        s->o.half_life_s)
                                     : t->usage;
    return finished + (tenant_id != NULL ? running_gpu_s(s, tenant_id, now_us) : 0);
}

static cstl_sched_command *add_command(cstl_sched_plan *p,
                                       const char *context,
                                       const char *type,
                                       const char *tenant_id,
                                       const char *aggregate_id,
                                       const char *key,
                                       json_t *payload)
{
    p->commands = cstl_xrealloc(p->commands, (p->ncommands + 1) * sizeof(*p->commands));
    cstl_sched_command *c = &p->commands[p->ncommands++];
    memset(c, 0, sizeof(*c));
    c->context = context;
    c->type = type;
    copy(c->tenant_id, sizeof(c->tenant_id), tenant_id);
    copy(c->aggregate_id, sizeof(c->aggregate_id), aggregate_id);
    cstl_cmd_id_from_key(tenant_id, key, c->command_id);
    c->payload = payload;
    return c;
}

static bool inflight(const sjob *j, int64_t now_us)
{
    return j->inflight_until > now_us;
}

/* 1-3: lost workers, their jobs, overdue runs. */
static void plan_liveness(
    cstl_scheduler *s, int64_t now_us, collect *workers, collect *jobs, cstl_sched_plan *p)
{
    char key[256];
    int64_t silent = (int64_t)(s->o.heartbeat_timeout_s * 1e6);
    for (size_t i = 0; i < workers->n; i++) {
        sworker *w = workers->items[i];
        if (!w->active || now_us - w->last_seen <= silent)
            continue;
        snprintf(key, sizeof(key), "lost:%s:%lld", w->worker_id, (long long)w->last_seen);
        add_command(p, "fleet", "MarkWorkerLost", w->tenant_id, w->worker_id, key,
                    json_pack("{s:s,s:I}", "worker_id", w->worker_id, "last_heartbeat_at",
                              (json_int_t)w->last_seen));
    }
    int64_t grace = (int64_t)(s->o.timeout_grace_s * 1e6);
    for (size_t i = 0; i < jobs->n; i++) {
        sjob *j = jobs->items[i];
        if (j->state != SJ_ASSIGNED && j->state != SJ_RUNNING)
            continue;
        sworker *w = cstl_strmap_get(s->workers, j->worker_id);
        if (w == NULL || !w->active) {
            snprintf(key, sizeof(key), "requeue:%s", j->run_id);
            add_command(p, "jobs", "RequeueJob", j->tenant_id, j->job_id, key,
                        json_pack("{s:s,s:s,s:s}", "job_id", j->job_id, "run_id", j->run_id,
                                  "reason", "WORKER_LOST"));
        } else if (j->state == SJ_RUNNING && j->started_at > 0 && j->runtime_limit_s > 0 &&
                   now_us > j->started_at + j->runtime_limit_s * 1000000 + grace) {
            snprintf(key, sizeof(key), "timeout:%s", j->run_id);
            add_command(p, "jobs", "TimeOutJob", j->tenant_id, j->job_id, key,
                        json_pack("{s:s,s:s}", "job_id", j->job_id, "run_id", j->run_id));
        }
    }
}

/* 4: GPUs held by a job that does not run there (and is not being placed there). */
static void plan_releases(cstl_scheduler *s, int64_t now_us, collect *workers, cstl_sched_plan *p)
{
    char key[512];
    for (size_t i = 0; i < workers->n; i++) {
        sworker *w = workers->items[i];
        if (!w->active)
            continue;
        bool done[CSTL_PLACE_MAX_GPUS] = {false};
        for (size_t g = 0; g < w->ngpus; g++) {
            const char *holder = w->gpus[g].held_by;
            if (holder[0] == '\0' || done[g])
                continue;
            const sjob *j = cstl_strmap_get(s->jobs, holder);
            if (j != NULL &&
                (inflight(j, now_us) || ((j->state == SJ_ASSIGNED || j->state == SJ_RUNNING) &&
                                         strcmp(j->worker_id, w->worker_id) == 0)))
                continue;
            json_t *uuids = json_array();
            for (size_t k = g; k < w->ngpus; k++) {
                if (strcmp(w->gpus[k].held_by, holder) == 0) {
                    json_array_append_new(uuids, json_string(w->gpus[k].uuid));
                    done[k] = true;
                }
            }
            snprintf(key, sizeof(key), "release:%s:%s:%d", w->worker_id, holder,
                     j != NULL ? j->attempts : -1);
            add_command(p, "fleet", "ReleaseGpus", w->tenant_id, w->worker_id, key,
                        json_pack("{s:s,s:s,s:o}", "worker_id", w->worker_id, "job_id", holder,
                                  "gpu_uuids", uuids));
        }
    }
}

/* The placement input's GPUs of one worker: held by the log or by an in-flight placement. */
static void fill_gpus(const sworker *w, collect *jobs, int64_t now_us, cstl_place_gpu *out)
{
    for (size_t g = 0; g < w->ngpus; g++) {
        const sgpu *src = &w->gpus[g];
        out[g] = (cstl_place_gpu){.uuid = src->uuid,
                                  .model = src->model,
                                  .memory_mib = src->memory_mib,
                                  .drained = src->drained,
                                  .held = src->held_by[0] != '\0'};
    }
    for (size_t i = 0; i < jobs->n; i++) {
        const sjob *j = jobs->items[i];
        if (!inflight(j, now_us) || strcmp(j->inflight_worker, w->worker_id) != 0)
            continue;
        for (int k = 0; k < j->inflight_ngpus; k++)
            for (size_t g = 0; g < w->ngpus; g++)
                if (strcmp(w->gpus[g].uuid, j->inflight_gpus[k]) == 0)
                    out[g].held = true;
    }
}

/* Turns one placement into ReserveGpus + AssignJob and marks the job in flight. */
static void plan_assignment(cstl_scheduler *s,
                            int64_t now_us,
                            sjob *j,
                            const sworker *w,
                            const cstl_place_decision *d,
                            cstl_sched_plan *p)
{
    char key[256], run_id[37];
    snprintf(key, sizeof(key), "run:%s:%d", j->job_id, j->attempts + 1);
    cstl_cmd_id_from_key(j->tenant_id, key, run_id);
    json_t *uuids = json_array();
    j->inflight_ngpus = 0;
    for (int k = 0; k < j->gpu_count; k++) {
        const char *u = w->gpus[d->gpus[k]].uuid;
        json_array_append_new(uuids, json_string(u));
        copy(j->inflight_gpus[j->inflight_ngpus++], ID_MAX + 1, u);
    }
    copy(j->inflight_worker, sizeof(j->inflight_worker), w->worker_id);
    j->inflight_until = now_us + (int64_t)(s->o.inflight_s * 1e6);
    snprintf(key, sizeof(key), "reserve:%s", run_id);
    add_command(p, "fleet", "ReserveGpus", j->tenant_id, w->worker_id, key,
                json_pack("{s:s,s:s,s:O}", "worker_id", w->worker_id, "job_id", j->job_id,
                          "gpu_uuids", uuids));
    snprintf(key, sizeof(key), "assign:%s", run_id);
    add_command(p, "jobs", "AssignJob", j->tenant_id, j->job_id, key,
                json_pack("{s:s,s:s,s:s,s:o}", "job_id", j->job_id, "worker_id", w->worker_id,
                          "run_id", run_id, "gpu_uuids", uuids));
}

/* The pending reasons to publish (commands/waiting.h): every job queued in the log, with the
 * reason decided for it (reason_of, per index into jobs; CSTL_PLACE_ASSIGNED when it is being
 * placed or was not decided). */
static void plan_waiting(cstl_scheduler *s,
                         int64_t now_us,
                         const collect *jobs,
                         const cstl_place_reason *reason_of,
                         const char *const *message_of,
                         cstl_sched_plan *p)
{
    cstl_waiting_job *wj = cstl_xcalloc(jobs->n + 1, sizeof(*wj));
    size_t n = 0;
    for (size_t i = 0; i < jobs->n; i++) {
        const sjob *j = jobs->items[i];
        if (j->state != SJ_QUEUED)
            continue;
        wj[n++] = (cstl_waiting_job){.job_id = j->job_id,
                                     .tenant_id = j->tenant_id,
                                     .attempts = j->attempts,
                                     .version = j->version,
                                     .reason = reason_of[i],
                                     .message = message_of[i]};
    }
    cstl_waiting_diff(s->waiting, wj, n, now_us, &p->waiting, &p->nwaiting);
    free(wj);
}

/* 5: placement of the queued jobs that are not in flight. */
static void plan_placement(
    cstl_scheduler *s, int64_t now_us, collect *workers, collect *jobs, cstl_sched_plan *p)
{
    int64_t silent = (int64_t)(s->o.heartbeat_timeout_s * 1e6);
    cstl_place_worker *pw = cstl_xcalloc(workers->n + 1, sizeof(*pw));
    cstl_place_gpu *pg = cstl_xcalloc(workers->n * CSTL_PLACE_MAX_GPUS + 1, sizeof(*pg));
    for (size_t i = 0; i < workers->n; i++) {
        const sworker *w = workers->items[i];
        fill_gpus(w, jobs, now_us, &pg[i * CSTL_PLACE_MAX_GPUS]);
        pw[i] = (cstl_place_worker){.worker_id = w->worker_id,
                                    .gpus = &pg[i * CSTL_PLACE_MAX_GPUS],
                                    .ngpus = w->ngpus,
                                    .online = w->active && now_us - w->last_seen <= silent};
    }
    sjob **queued = cstl_xcalloc(jobs->n + 1, sizeof(sjob *));
    size_t *index = cstl_xcalloc(jobs->n + 1, sizeof(size_t)); /* queued -> jobs */
    cstl_place_job *pj = cstl_xcalloc(jobs->n + 1, sizeof(*pj));
    size_t nq = 0;
    for (size_t i = 0; i < jobs->n; i++) {
        sjob *j = jobs->items[i];
        if (j->state != SJ_QUEUED || inflight(j, now_us) || j->gpu_count < 1 ||
            j->gpu_count > CSTL_PLACE_MAX_GPUS)
            continue;
        index[nq] = i;
        queued[nq] = j;
        pj[nq++] = (cstl_place_job){.job_id = j->job_id,
                                    .tenant_id = j->tenant_id,
                                    .gpu_count = j->gpu_count,
                                    .min_gpu_memory_mib = j->min_gpu_memory_mib,
                                    .gpu_model = j->gpu_model,
                                    .priority = j->priority,
                                    .submitted_at = j->submitted_at};
    }
    cstl_place_tenant *pt = cstl_xcalloc(nq + 1, sizeof(*pt));
    size_t nt = 0;
    for (size_t i = 0; i < nq; i++) {
        bool have = false;
        for (size_t k = 0; k < nt && !have; k++)
            have = strcmp(pt[k].tenant_id, queued[i]->tenant_id) == 0;
        if (have)
            continue;
        const stenant *t = cstl_strmap_get(s->tenants, queued[i]->tenant_id);
        pt[nt++] = (cstl_place_tenant){.tenant_id = queued[i]->tenant_id,
                                       .weight = t != NULL ? t->weight : 1,
                                       .usage_gpu_s =
                                           cstl_scheduler_usage(s, queued[i]->tenant_id, now_us)};
    }
    cstl_place_input in = {.workers = pw,
                           .nworkers = workers->n,
                           .tenants = pt,
                           .ntenants = nt,
                           .jobs = pj,
                           .njobs = nq,
                           .charge_s = s->o.charge_s};
    cstl_place_decision *out = cstl_xcalloc(nq + 1, sizeof(*out));
    cstl_place_reason *reason_of = cstl_xcalloc(jobs->n + 1, sizeof(*reason_of));
    const char **message_of = cstl_xcalloc(jobs->n + 1, sizeof(char *));
    if (cstl_place(&in, out) == 0) {
        p->queue = cstl_xcalloc(nq + 1, sizeof(*p->queue));
        for (size_t k = 0; k < nq; k++) {
            sjob *j = queued[out[k].job];
            cstl_sched_pending *q = &p->queue[p->nqueue++];
            copy(q->job_id, sizeof(q->job_id), j->job_id);
            copy(q->tenant_id, sizeof(q->tenant_id), j->tenant_id);
            q->position = out[k].position;
            q->tenant_position = out[k].tenant_position;
            q->reason = out[k].reason;
            copy(q->message, sizeof(q->message), out[k].message);
            reason_of[index[out[k].job]] = out[k].reason;
            message_of[index[out[k].job]] = out[k].message;
            if (out[k].reason == CSTL_PLACE_ASSIGNED)
                plan_assignment(s, now_us, j, workers->items[out[k].worker], &out[k], p);
        }
    }
    plan_waiting(s, now_us, jobs, reason_of, message_of, p);
    free(message_of);
    free(reason_of);
    free(out);
    free(pt);
    free(pj);
    free(index);
    free(queued);
    free(pg);
    free(pw);
}

int cstl_scheduler_plan(cstl_scheduler *s, int64_t now_us, cstl_sched_plan *out)
{
    cstl_sched_plan_clear(out);
    collect workers = values(s->workers);
    collect jobs = values(s->jobs);
    plan_liveness(s, now_us, &workers, &jobs, out);
    plan_releases(s, now_us, &workers, out);
    plan_placement(s, now_us, &workers, &jobs, out);
    free(jobs.items);
    free(workers.items);
    return 0;
}

void cstl_sched_plan_clear(cstl_sched_plan *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->ncommands; i++)
        json_decref(p->commands[i].payload);
    free(p->commands);
    free(p->queue);
    free(p->waiting);
    memset(p, 0, sizeof(*p));
}
