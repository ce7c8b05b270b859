/*
 * job_stream.h - a deterministic stream of job lifecycle events for the projector's fault tests and
 * its benchmark: a window of live jobs, each advanced by one event at random (seeded), 10 events
 * per job: submitted, admitted, assigned, started, failed run, requeued, assigned, started,
 * finished, succeeded. Events go to pe_emit (proj_env.h). Header-only.
 */
#ifndef CSTL_TESTS_JOB_STREAM_H
#define CSTL_TESTS_JOB_STREAM_H

#include "proj_env.h"

#include <stdbool.h>

#define JS_WINDOW 1000
#define JS_STEPS  10

typedef struct js_job {
    char id[CSTL_UUID_STRLEN + 1];
    char run[CSTL_UUID_STRLEN + 1];
    int tenant, step;
} js_job;

static char js_tenants[8][CSTL_UUID_STRLEN + 1];
static char js_worker[CSTL_UUID_STRLEN + 1];
static unsigned js_seed = 20261122;

static inline int js_rnd(int n)
{
    js_seed = js_seed * 1103515245u + 12345u;
    return (int)((js_seed >> 8) % (unsigned)n);
}

static inline int64_t js_real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline json_t *js_at(void)
{
    pe.clock_us += 1;
    return json_integer(pe.clock_us);
}

/* Emits the next lifecycle event of j; returns false when j is finished. */
static inline bool js_emit_next(js_job *j)
{
    const char *t = js_tenants[j->tenant];
    int64_t v = j->step + 1;
    char gpu[64];
    snprintf(gpu, sizeof(gpu), "GPU-%.36s-%d", js_worker, js_rnd(4));
    switch (j->step) {
    case 0:
        cstl_uuid_v7_string(j->id);
        pe_emit("jobs", "JobSubmitted", j->id, t, v,
                json_pack("{s:s,s:s,s:s,s:i,s:i,s:n,s:i,s:i,s:i,s:{s:s},s:{s:[s,s],s:{}},s:s,s:o}",
                          "job_id", j->id, "tenant_id", t, "name", "train", "gpu_count", 1,
                          "min_gpu_memory_mib", 0, "gpu_model", "priority", js_rnd(3),
                          "runtime_limit_seconds", 3600, "retry_limit", 1, "labels", "team",
                          "vision", "parameters", "command", "python", "train.py", "environment",
                          "submitted_by", "u", "at", js_at()));
        break;
    case 1:
        pe_emit("jobs", "JobAdmitted", j->id, t, v,
                json_pack("{s:s,s:s,s:o}", "job_id", j->id, "reservation_id", "r", "at", js_at()));
        break;
    case 2:
    case 6:
        cstl_uuid_v7_string(j->run);
        pe_emit("jobs", "JobAssigned", j->id, t, v,
                json_pack("{s:s,s:s,s:s,s:[s],s:o}", "job_id", j->id, "worker_id", js_worker,
                          "run_id", j->run, "gpu_uuids", gpu, "at", js_at()));
        break;
    case 3:
    case 7:
        pe_emit("jobs", "RunStarted", j->id, t, v,
                json_pack("{s:s,s:s,s:s,s:o}", "job_id", j->id, "run_id", j->run, "worker_id",
                          js_worker, "started_at", js_at()));
        break;
    case 4:
    case 8: {
        int ok = j->step == 8;
        pe_emit("jobs", "RunFinished", j->id, t, v,
                json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:o,s:i,s:i}", "job_id", j->id, "run_id",
                          j->run, "worker_id", js_worker, "outcome", ok ? "SUCCEEDED" : "FAILED",
                          "exit_code", ok ? 0 : 1, "failure_reason", "NONZERO_EXIT", "finished_at",
                          js_at(), "gpu_seconds", js_rnd(1000), "log_lines", ok ? 120 : 3));
        break;
    }
    case 5:
        pe_emit("jobs", "JobRequeued", j->id, t, v,
                json_pack("{s:s,s:s,s:s,s:i,s:o}", "job_id", j->id, "run_id", j->run, "reason",
                          "nonzero_exit", "retries_left", 0, "at", js_at()));
        break;
    default:
        pe_emit("jobs", "JobSucceeded", j->id, t, v,
                json_pack("{s:s,s:s,s:o}", "job_id", j->id, "run_id", j->run, "at", js_at()));
        break;
    }
    return ++j->step < JS_STEPS;
}

/* A stream generator: a window of live jobs, each advanced by one event at random. */
typedef struct js_gen {
    js_job live[JS_WINDOW];
    int nlive;
    long started, limit;
} js_gen;

static inline void js_gen_one(js_gen *g)
{
    if (g->nlive < JS_WINDOW && g->started < g->limit &&
        (g->nlive < JS_WINDOW / 2 || js_rnd(10) == 0)) {
        js_job *j = &g->live[g->nlive++];
        *j = (js_job){.tenant = js_rnd(8)};
        g->started++;
    }
    int k = js_rnd(g->nlive);
    if (!js_emit_next(&g->live[k]))
        g->live[k] = g->live[--g->nlive];
}

/* New tenant and worker ids for the stream; the seed stays. */
static inline void js_init(unsigned seed)
{
    js_seed = seed;
    for (int t = 0; t < 8; t++)
        cstl_uuid_v7_string(js_tenants[t]);
    cstl_uuid_v7_string(js_worker);
}

#endif
