/*
 * test_scheduler.c - the scheduler's state and plan: a job's way from admission to placement
 * (ReserveGpus then AssignJob, deterministic ids, in flight until assigned), release of GPUs a job
 * no longer uses, lost workers and the requeue of their jobs, runtime-limit timeouts, the usage
 * that orders tenants, the queue it publishes with reasons, and the pending reasons it produces
 * for the read models.
 */
#include "commands/scheduler.h"
#include "platform/error.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define S (1000000LL) /* one second in microseconds */

static const char *const T1 = "01890a5d-ac96-774b-bcce-b302099a8001";
static const char *const T2 = "01890a5d-ac96-774b-bcce-b302099a8002";
static const char *const FLEET = "01890a5d-ac96-774b-bcce-b302099a8050";

static void
ev(cstl_scheduler *s, const char *context, const char *type, const char *tenant, json_t *data)
{
    cstl_scheduler_apply(s, context, type, tenant, 0, data);
    json_decref(data);
}

/* A worker with n GPUs "<id>-g<i>" of model and 81920 MiB, registered at at. */
static void worker_of(cstl_scheduler *s, const char *id, int n, const char *model, int64_t at)
{
    json_t *gpus = json_array();
    for (int i = 0; i < n; i++) {
        char uuid[64];
        snprintf(uuid, sizeof(uuid), "%s-g%d", id, i);
        json_array_append_new(gpus, json_pack("{s:s,s:s,s:I,s:s}", "uuid", uuid, "model", model,
                                              "memory_mib", (json_int_t)81920, "compute_capability",
                                              "9.0"));
    }
    ev(s, "fleet", "WorkerRegistered", FLEET,
       json_pack("{s:s,s:s,s:o,s:{},s:I}", "worker_id", id, "hostname", id, "gpus", gpus, "labels",
                 "at", (json_int_t)at));
}

static void worker(cstl_scheduler *s, const char *id, int n, int64_t at)
{
    worker_of(s, id, n, "H100", at);
}

static void
job(cstl_scheduler *s, const char *id, const char *tenant, int gpus, int priority, int64_t at)
{
    ev(s, "jobs", "JobSubmitted", tenant,
       json_pack("{s:s,s:s,s:i,s:I,s:n,s:i,s:I,s:I}", "job_id", id, "tenant_id", tenant,
                 "gpu_count", gpus, "min_gpu_memory_mib", (json_int_t)0, "gpu_model", "priority",
                 priority, "runtime_limit_seconds", (json_int_t)60, "at", (json_int_t)at));
    ev(s, "jobs", "JobAdmitted", tenant, json_pack("{s:s}", "job_id", id));
}

/* Applies the events the handlers would emit for the plan's ReserveGpus + AssignJob of job_id. */
static void accept_placement(cstl_scheduler *s, const cstl_sched_plan *p, const char *job_id)
{
    for (size_t i = 0; i + 1 < p->ncommands; i++) {
        const cstl_sched_command *r = &p->commands[i], *a = &p->commands[i + 1];
        if (strcmp(r->type, "ReserveGpus") != 0 || strcmp(a->type, "AssignJob") != 0 ||
            strcmp(a->aggregate_id, job_id) != 0)
            continue;
        ev(s, "fleet", "GpusReserved", FLEET, json_deep_copy(r->payload));
        ev(s, "jobs", "JobAssigned", a->tenant_id, json_deep_copy(a->payload));
        return;
    }
    fail_msg("no placement of %s in the plan", job_id);
}

static const cstl_sched_command *find(const cstl_sched_plan *p, const char *type, const char *agg)
{
    for (size_t i = 0; i < p->ncommands; i++)
        if (strcmp(p->commands[i].type, type) == 0 && strcmp(p->commands[i].aggregate_id, agg) == 0)
            return &p->commands[i];
    return NULL;
}

static void test_placement_and_in_flight(void **state)
{
    (void)state;
    cstl_scheduler *s = cstl_scheduler_new(NULL);
    worker(s, "w1", 4, 1 * S);
    job(s, "j1", T1, 2, 0, 2 * S);
    cstl_sched_plan p = {0};
    assert_int_equal(cstl_scheduler_plan(s, 3 * S, &p), 0);
    assert_int_equal(p.ncommands, 2);
    assert_string_equal(p.commands[0].type, "ReserveGpus");
    assert_string_equal(p.commands[0].context, "fleet");
    assert_string_equal(p.commands[0].aggregate_id, "w1");
    assert_string_equal(p.commands[1].type, "AssignJob");
    assert_string_equal(p.commands[1].aggregate_id, "j1");
    assert_string_equal(p.commands[1].tenant_id, T1);
    assert_int_equal(json_array_size(json_object_get(p.commands[1].payload, "gpu_uuids")), 2);
    assert_int_equal(p.nqueue, 1);
    assert_int_equal(p.queue[0].reason, CSTL_PLACE_ASSIGNED);
    char reserve_id[37], assign_id[37], run_id[64];
    memcpy(reserve_id, p.commands[0].command_id, 37);
    memcpy(assign_id, p.commands[1].command_id, 37);
    snprintf(run_id, sizeof(run_id), "%s",
             json_string_value(json_object_get(p.commands[1].payload, "run_id")));
    /* in flight: not placed again */
    assert_int_equal(cstl_scheduler_plan(s, 4 * S, &p), 0);
    assert_int_equal(p.ncommands, 0);
    /* a failed placement is redone with the same ids (the handlers deduplicate) */
    cstl_scheduler_placement_failed(s, "j1");
    assert_int_equal(cstl_scheduler_plan(s, 5 * S, &p), 0);
    assert_int_equal(p.ncommands, 2);
    assert_string_equal(p.commands[0].command_id, reserve_id);
    assert_string_equal(p.commands[1].command_id, assign_id);
    assert_string_equal(json_string_value(json_object_get(p.commands[1].payload, "run_id")),
                        run_id);
    /* so is a plan of a fresh scheduler that replays the same log */
    cstl_scheduler *again = cstl_scheduler_new(NULL);
    worker(again, "w1", 4, 1 * S);
    job(again, "j1", T1, 2, 0, 2 * S);
    cstl_sched_plan q = {0};
    assert_int_equal(cstl_scheduler_plan(again, 9 * S, &q), 0);
    assert_int_equal(q.ncommands, 2);
    assert_string_equal(q.commands[1].command_id, assign_id);
    cstl_sched_plan_clear(&q);
    cstl_scheduler_free(again);
    /* once assigned and running, nothing more to do */
    accept_placement(s, &p, "j1");
    ev(s, "jobs", "RunStarted", T1,
       json_pack("{s:s,s:s,s:s,s:I}", "job_id", "j1", "run_id", run_id, "worker_id", "w1",
                 "started_at", (json_int_t)(6 * S)));
    cstl_scheduler_heartbeat(s, "w1", 10 * S);
    assert_int_equal(cstl_scheduler_plan(s, 11 * S, &p), 0);
    assert_int_equal(p.ncommands, 0);
    assert_int_equal(p.nqueue, 0);
    /* it finishes: its GPUs are released */
    ev(s, "jobs", "RunFinished", T1,
       json_pack("{s:s,s:s,s:s,s:s,s:i,s:n,s:I,s:I}", "job_id", "j1", "run_id", run_id, "worker_id",
                 "w1", "outcome", "SUCCEEDED", "exit_code", 0, "failure_reason", "finished_at",
                 (json_int_t)(12 * S), "gpu_seconds", (json_int_t)12));
    ev(s, "jobs", "JobSucceeded", T1, json_pack("{s:s}", "job_id", "j1"));
    assert_int_equal(cstl_scheduler_plan(s, 13 * S, &p), 0);
    const cstl_sched_command *rel = find(&p, "ReleaseGpus", "w1");
    assert_non_null(rel);
    assert_int_equal(json_array_size(json_object_get(rel->payload, "gpu_uuids")), 2);
    assert_string_equal(json_string_value(json_object_get(rel->payload, "job_id")), "j1");
    ev(s, "fleet", "GpusReleased", FLEET, json_deep_copy(rel->payload));
    assert_int_equal(cstl_scheduler_plan(s, 14 * S, &p), 0);
    assert_int_equal(p.ncommands, 0);
    assert_true(cstl_scheduler_usage(s, T1, 14 * S) > 11.9);
    cstl_sched_plan_clear(&p);
    cstl_scheduler_free(s);
}

static void test_lost_worker_requeues(void **state)
{
    (void)state;
    cstl_scheduler *s = cstl_scheduler_new(&(cstl_scheduler_options){.heartbeat_timeout_s = 10});
    worker(s, "w1", 2, 1 * S);
    worker(s, "w2", 2, 1 * S);
    job(s, "j1", T1, 2, 0, 2 * S);
    cstl_sched_plan p = {0};
    cstl_scheduler_plan(s, 3 * S, &p);
    const cstl_sched_command *a = find(&p, "AssignJob", "j1");
    assert_non_null(a);
    char on[64];
    snprintf(on, sizeof(on), "%s", json_string_value(json_object_get(a->payload, "worker_id")));
    const char *other = strcmp(on, "w1") == 0 ? "w2" : "w1";
    accept_placement(s, &p, "j1");
    /* the other worker keeps beating, the job's worker goes silent */
    cstl_scheduler_heartbeat(s, other, 20 * S);
    cstl_scheduler_plan(s, 21 * S, &p);
    const cstl_sched_command *lost = find(&p, "MarkWorkerLost", on);
    assert_non_null(lost);
    assert_null(find(&p, "MarkWorkerLost", other));
    assert_int_equal(json_integer_value(json_object_get(lost->payload, "last_heartbeat_at")),
                     1 * S);
    ev(s, "fleet", "WorkerLost", FLEET,
       json_pack("{s:s,s:I,s:[s],s:I}", "worker_id", on, "last_heartbeat_at", (json_int_t)S,
                 "job_ids", "j1", "at", (json_int_t)(21 * S)));
    cstl_scheduler_plan(s, 22 * S, &p);
    const cstl_sched_command *rq = find(&p, "RequeueJob", "j1");
    assert_non_null(rq);
    assert_string_equal(json_string_value(json_object_get(rq->payload, "reason")), "WORKER_LOST");
    assert_null(find(&p, "MarkWorkerLost", on)); /* lost once */
    ev(s, "jobs", "JobRequeued", T1,
       json_pack("{s:s,s:s,s:s,s:i,s:I}", "job_id", "j1", "run_id",
                 json_string_value(json_object_get(rq->payload, "run_id")), "reason", "WORKER_LOST",
                 "retries_left", 2, "at", (json_int_t)(22 * S)));
    /* placed again, on the worker that is alive, with a new run id */
    cstl_scheduler_plan(s, 23 * S, &p);
    a = find(&p, "AssignJob", "j1");
    assert_non_null(a);
    assert_string_equal(json_string_value(json_object_get(a->payload, "worker_id")), other);
    cstl_sched_plan_clear(&p);
    cstl_scheduler_free(s);
}

static void test_timeout_and_stale_reservation(void **state)
{
    (void)state;
    cstl_scheduler *s = cstl_scheduler_new(&(cstl_scheduler_options){.timeout_grace_s = 5});
    worker(s, "w1", 4, 1 * S);
    job(s, "j1", T1, 1, 0, 2 * S);
    cstl_sched_plan p = {0};
    cstl_scheduler_plan(s, 3 * S, &p);
    const char *run =
        json_string_value(json_object_get(find(&p, "AssignJob", "j1")->payload, "run_id"));
    char run_id[64];
    snprintf(run_id, sizeof(run_id), "%s", run);
    accept_placement(s, &p, "j1");
    ev(s, "jobs", "RunStarted", T1,
       json_pack("{s:s,s:s,s:s,s:I}", "job_id", "j1", "run_id", run_id, "worker_id", "w1",
                 "started_at", (json_int_t)(4 * S)));
    cstl_scheduler_heartbeat(s, "w1", 68 * S);
    cstl_scheduler_plan(s, 68 * S, &p); /* 64 s in: within limit + grace */
    assert_null(find(&p, "TimeOutJob", "j1"));
    cstl_scheduler_heartbeat(s, "w1", 70 * S);
    cstl_scheduler_plan(s, 70 * S, &p);
    const cstl_sched_command *t = find(&p, "TimeOutJob", "j1");
    assert_non_null(t);
    assert_string_equal(json_string_value(json_object_get(t->payload, "run_id")), run_id);
    cstl_sched_plan_clear(&p);
    cstl_scheduler_free(s);

    /* GPUs reserved by a scheduler that stopped before AssignJob: released after a restart */
    s = cstl_scheduler_new(NULL);
    worker(s, "w1", 2, 1 * S);
    job(s, "j2", T1, 2, 0, 2 * S);
    ev(s, "fleet", "GpusReserved", FLEET,
       json_pack("{s:s,s:s,s:[s,s],s:I}", "worker_id", "w1", "job_id", "j2", "gpu_uuids", "w1-g0",
                 "w1-g1", "at", (json_int_t)(3 * S)));
    cstl_scheduler_plan(s, 4 * S, &p);
    assert_non_null(find(&p, "ReleaseGpus", "w1"));
    assert_null(find(&p, "AssignJob", "j2")); /* the GPUs are held until released */
    assert_int_equal(p.nqueue, 1);
    assert_int_equal(p.queue[0].reason, CSTL_PLACE_WAITING_FOR_GPUS);
    cstl_sched_plan_clear(&p);
    cstl_scheduler_free(s);
}

static void test_fair_share_and_queue(void **state)
{
    (void)state;
    cstl_scheduler *s = cstl_scheduler_new(&(cstl_scheduler_options){.half_life_s = 100});
    assert_int_equal(cstl_scheduler_set_weight(s, T1, 0), CSTL_EINVAL);
    assert_int_equal(cstl_scheduler_set_weight(s, T2, 1), 0);
    worker(s, "w1", 1, 1 * S);
    /* T1 used 1000 GPU-seconds recently; T2 nothing */
    job(s, "old", T1, 1, 0, 1 * S);
    ev(s, "jobs", "RunFinished", T1,
       json_pack("{s:s,s:s,s:s,s:s,s:i,s:n,s:I,s:I}", "job_id", "old", "run_id", "r", "worker_id",
                 "w1", "outcome", "SUCCEEDED", "exit_code", 0, "failure_reason", "finished_at",
                 (json_int_t)(2 * S), "gpu_seconds", (json_int_t)1000));
    ev(s, "jobs", "JobSucceeded", T1, json_pack("{s:s}", "job_id", "old"));
    double u = cstl_scheduler_usage(s, T1, 102 * S);
    assert_true(u > 499 && u < 501); /* one half-life later */
    job(s, "t1-a", T1, 1, 0, 10 * S);
    job(s, "t1-b", T1, 1, 0, 11 * S);
    job(s, "t2-a", T2, 1, 0, 20 * S);
    job(s, "t1-hi", T1, 1, 9, 30 * S);
    cstl_scheduler_heartbeat(s, "w1", 100 * S);
    cstl_sched_plan p = {0};
    cstl_scheduler_plan(s, 102 * S, &p);
    assert_int_equal(p.nqueue, 4);
    /* priority first, then the tenant below its share, then the rest by age */
    assert_string_equal(p.queue[0].job_id, "t1-hi");
    assert_int_equal(p.queue[0].reason, CSTL_PLACE_ASSIGNED);
    assert_string_equal(p.queue[1].job_id, "t2-a");
    assert_int_equal(p.queue[1].reason, CSTL_PLACE_WAITING_FOR_GPUS);
    assert_string_equal(p.queue[2].job_id, "t1-a");
    assert_int_equal(p.queue[2].reason, CSTL_PLACE_TENANT_AT_SHARE);
    assert_string_equal(p.queue[3].job_id, "t1-b");
    assert_int_equal(p.queue[3].position, 4);
    assert_int_equal(p.queue[3].tenant_position, 3);
    assert_true(strlen(p.queue[2].message) > 0);
    cstl_sched_plan_clear(&p);
    cstl_scheduler_free(s);
}

/* Regression: at a start the scheduler reads the heartbeats and the fleet events in no fixed
 * order; heartbeats read before the worker's registration were ignored, and a live worker was
 * marked lost by the first plan. */
static void test_heartbeats_read_before_registration_count(void **state)
{
    (void)state;
    cstl_scheduler *s = cstl_scheduler_new(NULL);
    cstl_scheduler_heartbeat(s, "w1", 50 * S);
    cstl_scheduler_heartbeat(s, "w1", 70 * S);
    cstl_scheduler_heartbeat(s, "w1", 60 * S);
    cstl_scheduler_heartbeat(s, "w2", 20 * S);
    cstl_scheduler_heartbeat(s, NULL, 20 * S);
    worker(s, "w1", 1, 1 * S);
    worker(s, "w2", 1, 1 * S);
    cstl_sched_plan p = {0};
    cstl_scheduler_plan(s, 80 * S, &p); /* 30 s timeout: w1 seen 10 s ago, w2 60 s ago */
    assert_null(find(&p, "MarkWorkerLost", "w1"));
    const cstl_sched_command *lost = find(&p, "MarkWorkerLost", "w2");
    assert_non_null(lost);
    assert_int_equal(json_integer_value(json_object_get(lost->payload, "last_heartbeat_at")),
                     20 * S);
    cstl_sched_plan_clear(&p);
    cstl_scheduler_free(s);
}

/* A job asking for one GPU of model (NULL: any), submitted (version 1) and admitted (2). */
static void versioned_job(cstl_scheduler *s, const char *id, const char *model, int64_t at)
{
    json_t *d =
        json_pack("{s:s,s:s,s:i,s:I,s:s?,s:i,s:I,s:I}", "job_id", id, "tenant_id", T1, "gpu_count",
                  1, "min_gpu_memory_mib", (json_int_t)0, "gpu_model", model, "priority", 0,
                  "runtime_limit_seconds", (json_int_t)60, "at", (json_int_t)at);
    cstl_scheduler_apply(s, "jobs", "JobSubmitted", T1, 1, d);
    json_decref(d);
    d = json_pack("{s:s}", "job_id", id);
    cstl_scheduler_apply(s, "jobs", "JobAdmitted", T1, 2, d);
    json_decref(d);
}

static void test_pending_reasons_published(void **state)
{
    (void)state;
    cstl_scheduler *s = cstl_scheduler_new(NULL);
    worker(s, "w1", 1, 1 * S);
    versioned_job(s, "a", NULL, 1 * S);
    versioned_job(s, "b200", "B200", 2 * S);
    cstl_sched_plan p = {0};
    /* a is placed (nothing to publish), b200 waits for a model the fleet lacks */
    cstl_scheduler_plan(s, 3 * S, &p);
    assert_non_null(find(&p, "AssignJob", "a"));
    assert_int_equal(p.nwaiting, 1);
    assert_string_equal(p.waiting[0].job_id, "b200");
    assert_false(p.waiting[0].tombstone);
    assert_int_equal(p.waiting[0].reason, CSTL_PLACE_GPU_MODEL_ABSENT);
    assert_non_null(strstr(p.waiting[0].message, "B200"));
    assert_string_equal(p.waiting[0].tenant_id, T1);
    assert_int_equal(p.waiting[0].attempts, 0);
    assert_int_equal(p.waiting[0].version, 2);
    assert_int_equal(p.waiting[0].at, 3 * S);
    accept_placement(s, &p, "a");
    cstl_sched_plan_clear(&p);
    /* unchanged: nothing; c waits for a's GPU */
    versioned_job(s, "c", NULL, 4 * S);
    cstl_scheduler_heartbeat(s, "w1", 4 * S);
    cstl_scheduler_plan(s, 5 * S, &p);
    assert_int_equal(p.nwaiting, 1);
    assert_string_equal(p.waiting[0].job_id, "c");
    assert_int_equal(p.waiting[0].reason, CSTL_PLACE_WAITING_FOR_GPUS);
    cstl_sched_plan_clear(&p);
    /* a worker with the model: b200 is placed, and once its JobAssigned is read its record gets a
     * tombstone */
    worker_of(s, "w2", 1, "B200", 6 * S);
    cstl_scheduler_plan(s, 6 * S, &p);
    assert_non_null(find(&p, "AssignJob", "b200"));
    assert_int_equal(p.nwaiting, 0);
    accept_placement(s, &p, "b200");
    cstl_sched_plan_clear(&p);
    cstl_scheduler_plan(s, 7 * S, &p);
    assert_int_equal(p.nwaiting, 1);
    assert_string_equal(p.waiting[0].job_id, "b200");
    assert_true(p.waiting[0].tombstone);
    cstl_sched_plan_clear(&p);
    /* a record that was not delivered goes out again */
    cstl_scheduler_plan(s, 8 * S, &p);
    assert_int_equal(p.nwaiting, 0);
    cstl_sched_plan_clear(&p);
    cstl_waiting_record lost = {.attempts = 0, .reason = CSTL_PLACE_WAITING_FOR_GPUS, .at = 5 * S};
    snprintf(lost.job_id, sizeof(lost.job_id), "c");
    cstl_scheduler_waiting_failed(s, &lost);
    cstl_scheduler_plan(s, 9 * S, &p);
    assert_int_equal(p.nwaiting, 1);
    assert_string_equal(p.waiting[0].job_id, "c");
    cstl_sched_plan_clear(&p);
    cstl_scheduler_free(s);

    /* a restarted scheduler reads back what it published: an unchanged reason is not published
     * again, a job that left the queue meanwhile gets its tombstone */
    s = cstl_scheduler_new(NULL);
    worker(s, "w1", 1, 1 * S);
    versioned_job(s, "b200", "B200", 2 * S);
    json_t *rec = json_pack("{s:s,s:s,s:i,s:s,s:s,s:I}", "job_id", "b200", "tenant_id", T1,
                            "attempts", 0, "reason", "GPU_MODEL_ABSENT", "message",
                            "no online worker has a GPU of model \"B200\"", "at", (json_int_t)S);
    cstl_scheduler_waiting_seen(s, rec);
    json_object_set_new(rec, "job_id", json_string("finished-meanwhile"));
    cstl_scheduler_waiting_seen(s, rec);
    json_decref(rec);
    cstl_scheduler_plan(s, 3 * S, &p);
    assert_int_equal(p.nwaiting, 1);
    assert_string_equal(p.waiting[0].job_id, "finished-meanwhile");
    assert_true(p.waiting[0].tombstone);
    cstl_sched_plan_clear(&p);
    cstl_scheduler_free(s);
}

/* Places job_id on the fleet and starts its run at started_at; returns its run id in run_id. */
static void run_job(cstl_scheduler *s, const char *job_id, int64_t started_at, char run_id[64])
{
    cstl_sched_plan p = {0};
    cstl_scheduler_plan(s, started_at, &p);
    accept_placement(s, &p, job_id);
    const cstl_sched_command *a = find(&p, "AssignJob", job_id);
    assert_non_null(a);
    snprintf(run_id, 64, "%s", json_string_value(json_object_get(a->payload, "run_id")));
    ev(s, "jobs", "RunStarted", a->tenant_id,
       json_pack("{s:s,s:s,s:s,s:I}", "job_id", job_id, "run_id", run_id, "worker_id",
                 json_string_value(json_object_get(a->payload, "worker_id")), "started_at",
                 (json_int_t)started_at));
    cstl_sched_plan_clear(&p);
}

static json_t *run_finished(const char *job_id,
                            const char *run_id,
                            const char *outcome,
                            int64_t finished_at,
                            int64_t gpu_seconds)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:n,s:n,s:I,s:I}", "job_id", job_id, "run_id", run_id,
                     "worker_id", "w1", "outcome", outcome, "exit_code", "failure_reason",
                     "finished_at", (json_int_t)finished_at, "gpu_seconds",
                     (json_int_t)gpu_seconds);
}

/* A finished run was charged its billed gpu_seconds, rounded up to whole seconds: a 0.25 s run of
 * 2 GPUs counted 1 GPU-second instead of 0.5, so tenants of short runs got less than their share.
 * It is charged its measured time, as it was counted while it ran. */
static void test_usage_short_run_charged_its_time_not_billed_seconds(void **state)
{
    (void)state;
    cstl_scheduler *s = cstl_scheduler_new(&(cstl_scheduler_options){.half_life_s = 1e9});
    worker(s, "w1", 4, 1 * S);
    cstl_scheduler_heartbeat(s, "w1", 9 * S);
    job(s, "j1", T1, 2, 0, 2 * S);
    char run_id[64];
    run_job(s, "j1", 10 * S, run_id);
    double running = cstl_scheduler_usage(s, T1, 10 * S + S / 4);
    assert_true(running > 0.499 && running < 0.501);
    ev(s, "jobs", "RunFinished", T1, run_finished("j1", run_id, "SUCCEEDED", 10 * S + S / 4, 1));
    ev(s, "jobs", "JobSucceeded", T1, json_pack("{s:s}", "job_id", "j1"));
    double finished = cstl_scheduler_usage(s, T1, 10 * S + S / 4);
    assert_true(finished > 0.499 && finished < 0.501);
    /* a run whose start the state never saw is charged what was billed */
    job(s, "j2", T2, 1, 0, 3 * S);
    ev(s, "jobs", "RunFinished", T2, run_finished("j2", "r-unseen", "FAILED", 11 * S, 3));
    double billed = cstl_scheduler_usage(s, T2, 11 * S);
    assert_true(billed > 2.999 && billed < 3.001);
    cstl_scheduler_free(s);
}

/* A running job that was cancelled left the state at JobCancelled, so the RunFinished its worker
 * reports afterwards was ignored and its GPU time was never charged to the tenant. */
static void test_usage_cancelled_running_job_charged(void **state)
{
    (void)state;
    cstl_scheduler *s = cstl_scheduler_new(&(cstl_scheduler_options){.half_life_s = 1e9});
    worker(s, "w1", 4, 1 * S);
    cstl_scheduler_heartbeat(s, "w1", 9 * S);
    job(s, "j1", T1, 2, 0, 2 * S);
    char run_id[64];
    run_job(s, "j1", 10 * S, run_id);
    ev(s, "jobs", "JobCancelled", T1,
       json_pack("{s:s,s:s,s:s,s:I}", "job_id", "j1", "reason", "USER", "cancelled_by", "u", "at",
                 (json_int_t)(15 * S)));
    ev(s, "jobs", "RunFinished", T1, run_finished("j1", run_id, "CANCELLED", 16 * S, 12));
    double u = cstl_scheduler_usage(s, T1, 16 * S);
    assert_true(u > 11.999 && u < 12.001);
    cstl_scheduler_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placement_and_in_flight),
        cmocka_unit_test(test_lost_worker_requeues),
        cmocka_unit_test(test_timeout_and_stale_reservation),
        cmocka_unit_test(test_fair_share_and_queue),
        cmocka_unit_test(test_pending_reasons_published),
        cmocka_unit_test(test_heartbeats_read_before_registration_count),
        cmocka_unit_test(test_usage_short_run_charged_its_time_not_billed_seconds),
        cmocka_unit_test(test_usage_cancelled_running_job_charged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
