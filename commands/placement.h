/*
 * placement.h - the scheduler's placement decision, as a pure function: given the fleet (workers
 * and their GPUs, which are held or drained), the tenants (weights and recent GPU usage) and the
 * queued jobs, decide which jobs go where now, and for every job its place in the scheduling order
 * and the reason it waits.
 *
 * Order: priority (highest first); within a priority, weighted fair share between tenants (the
 * tenant whose recent GPU-seconds divided by its weight is lowest goes next; each job placed in
 * this round charges it gpu_count x charge_s, so tenants interleave in proportion to their
 * weights; a job that waits charges nothing, so its tenant's next jobs, if they fit elsewhere, go
 * before those of tenants above their share); within a tenant, age (submission time, then job
 * id). The order is made as the jobs are decided.
 *
 * Fit: a job runs on one worker, on gpu_count GPUs that are online, not drained and not held, each
 * with at least min_gpu_memory_mib and of gpu_model when one is asked for. Among the workers where
 * it fits, the best fit: the one left with the fewest matching free GPUs, then the fewest free GPUs
 * of any kind, then the lowest worker id; on it, the smallest GPUs that qualify (then uuid), so
 * large slots and large GPUs stay free for the jobs that need them.
 *
 * Reservation: a job that fits the fleet but not the free GPUs reserves, for the rest of the round,
 * the worker where it will fit first (most matching free GPUs, then lowest id): jobs after it in
 * the order do not take GPUs there, so smaller or younger jobs cannot starve it. A tenant reserves
 * at most one worker per priority: its later jobs that do not fit wait behind its first
 * (EARLIER_JOBS) and leave the other workers to the other tenants, whose jobs take the GPUs free
 * there. A job that finds its workers reserved waits for the first job that reserved one of them,
 * and its reason says why that job goes first (higher priority, tenant below its share, or an
 * earlier job of its own).
 *
 * No GPU is given to two jobs: GPUs held on input are never chosen, and a GPU chosen for one job is
 * held for the rest of the round.
 *
 * Thread: pure; safe from any thread on distinct inputs.
 */
#ifndef CSTL_COMMANDS_PLACEMENT_H
#define CSTL_COMMANDS_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most GPUs a job may ask for (and a worker may have). */
#define CSTL_PLACE_MAX_GPUS 64
/* Room for a decision's message, terminating NUL included. */
#define CSTL_PLACE_MESSAGE_MAX 240

typedef struct cstl_place_gpu {
    const char *uuid;
    const char *model;
    int64_t memory_mib;
    bool drained; /* by an operator: not placed on */
    bool held;    /* reserved or running a job */
} cstl_place_gpu;

typedef struct cstl_place_worker {
    const char *worker_id;
    const cstl_place_gpu *gpus; /* ngpus <= CSTL_PLACE_MAX_GPUS */
    size_t ngpus;
    bool online; /* registered and heartbeating; a lost worker is not placed on */
} cstl_place_worker;

typedef struct cstl_place_tenant {
    const char *tenant_id;
    double weight;      /* > 0; a tenant not listed has weight 1 and no usage */
    double usage_gpu_s; /* recent GPU-seconds, decayed (cstl_place_decay), running jobs included */
} cstl_place_tenant;

typedef struct cstl_place_job {
    const char *job_id;
    const char *tenant_id;
    int gpu_count;              /* 1..CSTL_PLACE_MAX_GPUS */
    int64_t min_gpu_memory_mib; /* 0: any */
    const char *gpu_model;      /* NULL or "": any */
    int priority;               /* higher first */
    int64_t submitted_at;       /* microseconds; older first */
} cstl_place_job;

typedef struct cstl_place_input {
    const cstl_place_worker *workers;
    size_t nworkers;
    const cstl_place_tenant *tenants;
    size_t ntenants;
    const cstl_place_job *jobs; /* the queued jobs, in any order */
    size_t njobs;
    double charge_s; /* GPU-seconds one placed GPU charges its tenant for the order; > 0 */
} cstl_place_input;

typedef enum cstl_place_reason {
    CSTL_PLACE_ASSIGNED = 0,
    CSTL_PLACE_NO_WORKERS,         /* no worker is online */
    CSTL_PLACE_GPU_MODEL_ABSENT,   /* no online worker has a GPU of the requested model */
    CSTL_PLACE_NO_GPU_WITH_MEMORY, /* no GPU (of that model) has the memory asked for */
    CSTL_PLACE_NOT_ENOUGH_GPUS,    /* no single worker has gpu_count qualifying GPUs */
    CSTL_PLACE_GPUS_DRAINED,       /* it would fit, but enough of the GPUs are drained */
    CSTL_PLACE_WAITING_FOR_GPUS,   /* next in line: the qualifying GPUs are busy */
    CSTL_PLACE_HIGHER_PRIORITY,    /* a higher-priority job goes first on those GPUs */
    CSTL_PLACE_TENANT_AT_SHARE, /* an equal-priority job of a tenant below its share goes first */
    CSTL_PLACE_EARLIER_JOBS,    /* an earlier job of the same tenant goes first */
    CSTL_PLACE_NREASONS
} cstl_place_reason;

typedef struct cstl_place_decision {
    size_t job;                       /* index into input jobs */
    size_t position;                  /* 1-based place in the scheduling order, over all tenants */
    size_t tenant_position;           /* 1-based place among its tenant's jobs */
    cstl_place_reason reason;         /* CSTL_PLACE_ASSIGNED: worker and gpus are set */
    size_t worker;                    /* index into input workers */
    size_t gpus[CSTL_PLACE_MAX_GPUS]; /* indices into that worker's gpus, gpu_count of them */
    size_t blocked_by; /* for HIGHER_PRIORITY, TENANT_AT_SHARE, EARLIER_JOBS: a job index */
    char message[CSTL_PLACE_MESSAGE_MAX];
} cstl_place_decision;

/*
 * Decides every job of in: out (room for in->njobs) receives one decision per job, in scheduling
 * order. Returns 0, or CSTL_EINVAL (nothing decided) when an input breaks the limits above: a
 * gpu_count outside 1..CSTL_PLACE_MAX_GPUS, a worker with more GPUs than that, a weight <= 0, a
 * charge_s <= 0, or a missing id.
 */
int cstl_place(const cstl_place_input *in, cstl_place_decision *out);

/* The reason's stable machine-readable name ("WAITING_FOR_GPUS"); "UNKNOWN" outside the enum. */
const char *cstl_place_reason_name(cstl_place_reason reason);

/* The reason called name (as cstl_place_reason_name writes it), or CSTL_PLACE_NREASONS. */
cstl_place_reason cstl_place_reason_parse(const char *name);

/* Usage decayed over elapsed_s with the given half-life (> 0): usage * 2^(-elapsed_s/half_life_s).
 * A negative elapsed_s counts as 0. */
double cstl_place_decay(double usage_gpu_s, double elapsed_s, double half_life_s);

#endif
