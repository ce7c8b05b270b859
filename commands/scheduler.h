/*
 * scheduler.h - the scheduler process manager's state and decisions, without I/O.
 *
 * The state is the GPU job state as the log tells it: jobs (queued, assigned, running), workers
 * and their GPUs (who holds which), the last heartbeat of every worker, and each tenant's recent
 * GPU usage (decaying, running jobs included). cstl_scheduler_plan turns it into the commands that
 * move the fleet forward, in the order they are to be sent:
 *   1. MarkWorkerLost for an active worker whose heartbeats stopped (heartbeat_timeout_s);
 *   2. RequeueJob (reason WORKER_LOST) for a job assigned to or running on a lost worker;
 *   3. TimeOutJob for a running job past its runtime limit (plus timeout_grace_s);
 *   4. ReleaseGpus for GPUs held by a job that no longer runs there (finished, cancelled, requeued,
 *      or reserved by a scheduler that stopped before assigning);
 *   5. for each placement (commands/placement.h): ReserveGpus on the worker, then AssignJob.
 * Every command id is derived from what it decides (cstl_cmd_id_from_key), so a plan made twice
 * (after a restart, or by two schedulers) sends commands the handlers deduplicate.
 *
 * A placed job is "in flight" from its plan until its JobAssigned is applied, or for
 * inflight_s: it is not placed again meanwhile and its fresh reservation is not released.
 *
 * The plan also lists every queued job with its place in the scheduling order and the reason it
 * waits, for the read models.
 *
 * Thread: one thread owns a cstl_scheduler.
 */
#ifndef CSTL_COMMANDS_SCHEDULER_H
#define CSTL_COMMANDS_SCHEDULER_H

#include "commands/placement.h"

#include <jansson.h>

#include <stddef.h>
#include <stdint.h>

typedef struct cstl_scheduler cstl_scheduler;

typedef struct cstl_scheduler_options {
    double half_life_s;         /* usage decay (default 600) */
    double charge_s;            /* placement's per-GPU charge in the order (default 60) */
    double heartbeat_timeout_s; /* a worker silent this long is lost (default 30) */
    double timeout_grace_s;     /* after the runtime limit, before TimeOutJob (default 30) */
    double inflight_s;          /* how long a placement waits for its JobAssigned (default 30) */
} cstl_scheduler_options;

/* A new, empty state; NULL options or zero fields take the defaults. Free with
 * cstl_scheduler_free (NULL is a no-op). */
cstl_scheduler *cstl_scheduler_new(const cstl_scheduler_options *opts);
void cstl_scheduler_free(cstl_scheduler *s);

/* Sets a tenant's fair-share weight (> 0; tenants default to 1). 0 or CSTL_EINVAL. */
int cstl_scheduler_set_weight(cstl_scheduler *s, const char *tenant_id, double weight);

/*
 * Applies one event of the jobs or fleet context (type: short name, "JobSubmitted"; tenant: its
 * cstl_tenant header; data borrowed). Other events, and events that do not fit the state (a
 * RunStarted of an unknown job), are ignored: the aggregates have already checked them.
 */
void cstl_scheduler_apply(cstl_scheduler *s,
                          const char *context,
                          const char *type,
                          const char *tenant_id,
                          const json_t *data);

/* Records a heartbeat of worker_id at at_us (UTC microseconds). The heartbeat of a worker whose
 * registration has not been applied yet counts from when it is (the two are read side by side). */
void cstl_scheduler_heartbeat(cstl_scheduler *s, const char *worker_id, int64_t at_us);

typedef struct cstl_sched_command {
    const char *context; /* "jobs" or "fleet" (static) */
    const char *type;    /* "AssignJob" (static) */
    char command_id[37];
    char tenant_id[37];
    char aggregate_id[65];
    json_t *payload; /* owned by the plan */
} cstl_sched_command;

typedef struct cstl_sched_pending {
    char job_id[65];
    char tenant_id[37];
    size_t position;
    size_t tenant_position;
    cstl_place_reason reason; /* CSTL_PLACE_ASSIGNED for a job placed by this plan */
    char message[CSTL_PLACE_MESSAGE_MAX];
} cstl_sched_pending;

typedef struct cstl_sched_plan {
    cstl_sched_command *commands;
    size_t ncommands;
    cstl_sched_pending *queue; /* the queued jobs in scheduling order */
    size_t nqueue;
} cstl_sched_plan;

/* Plans at now_us (UTC microseconds) into out (cleared first). Returns 0. */
int cstl_scheduler_plan(cstl_scheduler *s, int64_t now_us, cstl_sched_plan *out);

/* Frees what a plan holds; the plan can be reused. */
void cstl_sched_plan_clear(cstl_sched_plan *p);

/* Tells the state that a placement's commands failed (ReserveGpus or AssignJob rejected): the job
 * is no longer in flight and is placed again by the next plan. */
void cstl_scheduler_placement_failed(cstl_scheduler *s, const char *job_id);

/* A tenant's current usage in GPU-seconds (decayed to now_us, running jobs included); 0 for an
 * unknown tenant. */
double cstl_scheduler_usage(const cstl_scheduler *s, const char *tenant_id, int64_t now_us);

/* ---- the running process manager (scheduler_run.c) ----------------------------------------- */

#include "commands/client.h"
#include "platform/error.h"
#include "platform/metrics.h"

typedef struct cstl_scheduler_runner cstl_scheduler_runner;

typedef struct cstl_scheduler_runner_options {
    const char *brokers;
    const char *instance_id;
    cstl_cmd_client *client; /* borrowed: sends the plan's commands */
    cstl_scheduler_options policy;
    int tick_ms;           /* how often it plans when nothing happens (default 500) */
    int timeout_ms;        /* broker and reply timeouts (default 10000) */
    cstl_metrics *metrics; /* may be NULL */
} cstl_scheduler_runner_options;

/* A runner reading the jobs and fleet events and the heartbeats. NULL + err when they cannot be
 * read. */
cstl_scheduler_runner *cstl_scheduler_runner_new(const cstl_scheduler_runner_options *opts,
                                                 cstl_error *err);

/*
 * Runs until cstl_scheduler_runner_stop: reads the log to its end, then plans after every batch of
 * events and at least every tick, and sends the plan's commands. A placement sends ReserveGpus
 * and waits for its reply, then AssignJob; an AssignJob refused (the job was cancelled meanwhile)
 * releases the GPUs again. Commands are not sent again within a few seconds of being sent; after
 * that a plan that still asks for one sends it again (same id: deduplicated). Returns 0 when
 * stopped, or a negative code when the events cannot be read.
 */
int cstl_scheduler_runner_run(cstl_scheduler_runner *r, cstl_error *err);

/* Sets a tenant's fair-share weight (see cstl_scheduler_set_weight). Before run(). */
int cstl_scheduler_runner_set_weight(cstl_scheduler_runner *r,
                                     const char *tenant_id,
                                     double weight);

/* Any thread. */
void cstl_scheduler_runner_stop(cstl_scheduler_runner *r);
bool cstl_scheduler_runner_ready(const cstl_scheduler_runner *r);

/* The latest queue as JSON, [{job_id, tenant_id, position, tenant_position, reason, message}],
 * a new reference (caller decrefs); [] before the first plan. Any thread. */
json_t *cstl_scheduler_runner_queue(cstl_scheduler_runner *r);

/* NULL is a no-op. Not while run() is running. */
void cstl_scheduler_runner_free(cstl_scheduler_runner *r);

#endif
