/*
 * scheduler_run.c - the scheduler process manager's loop (see scheduler.h): the jobs and fleet
 * events and the heartbeats in, the plan's commands out, and the queued jobs' reasons out to
 * constellation.jobs.waiting (telemetry, keyed by job id; read back at a start so that a restart
 * does not publish unchanged reasons again).
 *
 * Exactly once in effect: the state is rebuilt from the whole log at every start and every command
 * id is derived from what it decides, so a command sent again (a restart before its event was read
 * back, a plan repeated before the event arrived) is a duplicate the handlers answer without new
 * events. "A GPU is held by at most one job" is the Worker aggregate's rule: if two schedulers ever
 * overlap, the second ReserveGpus of a GPU is refused and that placement is dropped.
 *
 * Thread: run() on one thread (delivery reports of the reasons too); stop(), ready() and queue()
 * from any.
 */
#include "commands/event_reader.h"
#include "commands/scheduler.h"
#include "commands/strmap.h"
#include "platform/codec.h"
#include "platform/events.h"
#include "platform/kafka.h"
#include "platform/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEARTBEATS_TOPIC "constellation.fleet.heartbeats"
#define WAITING_TOPIC    "constellation.jobs.waiting"
#define RESEND_US        (5 * 1000000LL)

struct cstl_scheduler_runner {
    cstl_scheduler *state;
    cstl_event_reader *reader;
    cstl_cmd_client *client;
    int tick_ms;
    int timeout_ms;
    atomic_bool stop;
    atomic_bool ready;
    cstl_strmap *sent; /* command id -> int64_t* time sent (wall us), for RESEND_US */
    pthread_mutex_t queue_lock;
    json_t *queue;
    cstl_metric_family *commands;
    cstl_metric *queued;
    cstl_kafka_producer *producer; /* the reasons */
    const cstl_schema_entry *waiting_schema;
    cstl_metric_family *waiting; /* records by kind: reason, tombstone, failed */
};

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void on_event(void *ud,
                     const char *context,
                     const char *type,
                     const json_t *data,
                     const cstl_event_headers *headers)
{
    cstl_scheduler_runner *r = ud;
    if (strcmp(context, WAITING_TOPIC) == 0) {
        /* what an earlier run published; afterwards these are this run's own records */
        if (atomic_load(&r->ready))
            return;
        if (strcmp(type, CSTL_EVENT_READER_TOMBSTONE) == 0)
            cstl_scheduler_waiting_cleared(r->state,
                                           json_string_value(json_object_get(data, "key")));
        else
            cstl_scheduler_waiting_seen(r->state, data);
        return;
    }
    if (strcmp(context, HEARTBEATS_TOPIC) == 0) {
        cstl_scheduler_heartbeat(r->state, json_string_value(json_object_get(data, "worker_id")),
                                 json_integer_value(json_object_get(data, "at")));
        return;
    }
    cstl_scheduler_apply(r->state, context, type, headers->tenant, headers->version, data);
}

cstl_scheduler_runner *cstl_scheduler_runner_new(const cstl_scheduler_runner_options *opts,
                                                 cstl_error *err)
{
    static const char *const topics[] = {"fleet", "jobs", HEARTBEATS_TOPIC, WAITING_TOPIC};
    if (opts == NULL || opts->brokers == NULL || opts->client == NULL) {
        cstl_error_set(err, CSTL_EINVAL, "the scheduler needs the brokers and a command client");
        return NULL;
    }
    char client_id[256];
    snprintf(client_id, sizeof(client_id), "constellation-scheduler-%s",
             opts->instance_id ? opts->instance_id : "");
    int timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
    const cstl_schema_entry *schema =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), "jobs.JobWaiting");
    if (schema == NULL) {
        cstl_error_set(err, CSTL_EINTERNAL, "no schema jobs.JobWaiting in the catalog");
        return NULL;
    }
    cstl_kafka_conf *conf = cstl_kafka_conf_new(opts->brokers, client_id, err);
    cstl_kafka_producer *producer = conf != NULL ? cstl_kafka_producer_new(conf, err) : NULL;
    cstl_kafka_conf_free(conf);
    if (producer == NULL)
        return NULL;
    cstl_event_reader *reader =
        cstl_event_reader_new(opts->brokers, client_id, topics, 4, timeout_ms, err);
    if (reader == NULL) {
        cstl_kafka_producer_free(producer);
        return NULL;
    }
    cstl_scheduler_runner *r = cstl_xcalloc(1, sizeof(*r));
    r->state = cstl_scheduler_new(&opts->policy);
    r->reader = reader;
    r->producer = producer;
    r->waiting_schema = schema;
    r->client = opts->client;
    r->tick_ms = opts->tick_ms > 0 ? opts->tick_ms : 500;
    r->timeout_ms = timeout_ms;
    r->sent = cstl_strmap_new(free);
    pthread_mutex_init(&r->queue_lock, NULL);
    r->queue = json_array();
    if (opts->metrics != NULL) {
        static const char *const labels[] = {"command", "outcome", NULL};
        r->commands =
            cstl_metrics_counter(opts->metrics, "scheduler_commands_total",
                                 "commands sent by the scheduler, by outcome", labels, NULL);
        cstl_metric_family *q = cstl_metrics_gauge(opts->metrics, "scheduler_queued_jobs",
                                                   "queued jobs at the last plan", NULL, NULL);
        r->queued = q != NULL ? cstl_metrics_child(q, NULL) : NULL;
        static const char *const kind[] = {"kind", NULL};
        r->waiting = cstl_metrics_counter(
            opts->metrics, "scheduler_waiting_records_total",
            "pending reasons produced to constellation.jobs.waiting: reason, tombstone, failed",
            kind, NULL);
    }
    return r;
}

static void count(cstl_scheduler_runner *r, const char *command, const char *outcome)
{
    if (r->commands == NULL)
        return;
    const char *values[] = {command, outcome, NULL};
    cstl_metrics_counter_inc(cstl_metrics_child(r->commands, values));
}

/* Forgets sent commands older than RESEND_US. */
static void trim_sent(cstl_scheduler_runner *r, int64_t now)
{
    void *v;
    const char *k;
    while ((k = cstl_strmap_oldest(r->sent, &v)) != NULL && now - *(int64_t *)v > RESEND_US)
        cstl_strmap_remove(r->sent, k);
}

/* One command of a batch and its outcome. */
typedef struct outcome {
    const cstl_sched_command *cmd;
    int rc; /* cstl_cmd_result's rc */
    bool has_reply;
    cstl_cmd_reply reply;
    cstl_error err;
} outcome;

/*
 * Sends the n commands of out at once (each out[i].cmd set) and waits for all their outcomes, so
 * a plan's commands share the handlers' batches instead of paying a round trip each. Then each
 * out[i].rc is 0 when the command was accepted (or is a duplicate of an accepted one; without
 * want_reply: appended), 1 when it was refused, a negative code when it could not be sent or no
 * reply came.
 */
static void send_batch(cstl_scheduler_runner *r, outcome *out, size_t n, bool want_reply)
{
    if (n == 0)
        return;
    cstl_cmd_request *reqs = cstl_xcalloc(n, sizeof(*reqs));
    cstl_cmd_result *results = cstl_xcalloc(n, sizeof(*results));
    for (size_t i = 0; i < n; i++) {
        const cstl_sched_command *c = out[i].cmd;
        reqs[i] = (cstl_cmd_request){.context = c->context,
                                     .command_type = c->type,
                                     .command_id = c->command_id,
                                     .tenant_id = c->tenant_id,
                                     .aggregate_id = c->aggregate_id,
                                     .expected_version = -1,
                                     .issued_by = "scheduler",
                                     .payload = c->payload,
                                     .want_reply = want_reply};
        int64_t *at = cstl_xmalloc(sizeof(*at));
        *at = wall_us();
        cstl_strmap_remove(r->sent, c->command_id);
        cstl_strmap_put(r->sent, c->command_id, at);
    }
    cstl_cmd_client_send_batch(r->client, reqs, n, r->timeout_ms, results);
    for (size_t i = 0; i < n; i++) {
        out[i].rc = results[i].rc;
        out[i].has_reply = results[i].has_reply;
        out[i].reply = results[i].reply;
        out[i].err = results[i].err;
    }
    free(reqs);
    free(results);
    for (size_t i = 0; i < n; i++) {
        outcome *o = &out[i];
        const cstl_sched_command *c = o->cmd;
        if (o->rc != 0) {
            count(r, c->type, "error");
            cstl_log_error("scheduler", &o->err, "cannot send %s for %s", c->type, c->aggregate_id);
            continue;
        }
        if (!want_reply || !o->has_reply) {
            count(r, c->type, "sent");
            continue;
        }
        count(r, c->type, cstl_cmd_outcome_name(o->reply.outcome));
        if (o->reply.outcome == CSTL_CMD_ACCEPTED ||
            (o->reply.outcome == CSTL_CMD_DUPLICATE && o->reply.error_code[0] == '\0'))
            continue;
        o->rc = 1;
        cstl_log_fields(CSTL_LOG_INFO, "scheduler",
                        json_pack("{s:s,s:s,s:s,s:s}", "command", c->type, "aggregate_id",
                                  c->aggregate_id, "error_code", o->reply.error_code, "error",
                                  o->reply.error_message),
                        "command refused");
    }
}

/*
 * The plan's placements (reserve[i] with assign[i], n of them) in three rounds: every ReserveGpus
 * at once; then the AssignJob of each accepted one; then ReleaseGpus for each AssignJob refused
 * (the job was cancelled meanwhile). A placement that fails is placed again by a later plan.
 */
static void place_all(cstl_scheduler_runner *r,
                      const cstl_sched_command **reserve,
                      const cstl_sched_command **assign,
                      size_t n)
{
    outcome *res = cstl_xcalloc(n + 1, sizeof(outcome));
    outcome *asg = cstl_xcalloc(n + 1, sizeof(outcome));
    size_t *which = cstl_xcalloc(n + 1, sizeof(size_t));
    for (size_t i = 0; i < n; i++)
        res[i].cmd = reserve[i];
    send_batch(r, res, n, true);
    size_t na = 0;
    for (size_t i = 0; i < n; i++) {
        if (res[i].rc != 0) {
            cstl_scheduler_placement_failed(r->state, assign[i]->aggregate_id);
            continue;
        }
        which[na] = i;
        asg[na++].cmd = assign[i];
    }
    send_batch(r, asg, na, true);
    cstl_sched_command *releases = cstl_xcalloc(na + 1, sizeof(cstl_sched_command));
    outcome *rel = cstl_xcalloc(na + 1, sizeof(outcome));
    size_t nr = 0;
    for (size_t k = 0; k < na; k++) {
        const cstl_sched_command *a = asg[k].cmd, *rv = reserve[which[k]];
        if (asg[k].rc == 0) {
            cstl_log_fields(
                CSTL_LOG_INFO, "scheduler",
                json_pack("{s:s,s:O}", "job_id", a->aggregate_id, "placement", a->payload),
                "job assigned");
            continue;
        }
        cstl_scheduler_placement_failed(r->state, a->aggregate_id);
        if (asg[k].rc < 0)
            continue; /* unknown outcome: a later plan releases the GPUs if the job lacks them */
        releases[nr] = *rv;
        releases[nr].type = "ReleaseGpus";
        char key[128];
        snprintf(key, sizeof(key), "unassigned:%s", rv->command_id);
        cstl_cmd_id_from_key(rv->tenant_id, key, releases[nr].command_id);
        rel[nr].cmd = &releases[nr];
        nr++;
    }
    send_batch(r, rel, nr, false);
    free(rel);
    free(releases);
    free(which);
    free(asg);
    free(res);
}

static void publish_queue(cstl_scheduler_runner *r, const cstl_sched_plan *p)
{
    json_t *q = json_array();
    for (size_t i = 0; i < p->nqueue; i++) {
        const cstl_sched_pending *e = &p->queue[i];
        json_array_append_new(
            q, json_pack("{s:s,s:s,s:I,s:I,s:s,s:s}", "job_id", e->job_id, "tenant_id",
                         e->tenant_id, "position", (json_int_t)e->position, "tenant_position",
                         (json_int_t)e->tenant_position, "reason",
                         cstl_place_reason_name(e->reason), "message", e->message));
    }
    pthread_mutex_lock(&r->queue_lock);
    json_decref(r->queue);
    r->queue = q;
    pthread_mutex_unlock(&r->queue_lock);
    if (r->queued != NULL)
        cstl_metrics_gauge_set(r->queued, (double)p->nqueue);
}

static void count_waiting(cstl_scheduler_runner *r, const char *kind)
{
    if (r->waiting == NULL)
        return;
    const char *values[] = {kind, NULL};
    cstl_metrics_counter_inc(cstl_metrics_child(r->waiting, values));
}

/* A produced reason, until its delivery report. */
typedef struct waiting_sent {
    cstl_scheduler_runner *r;
    cstl_waiting_record rec;
} waiting_sent;

static void on_waiting_delivered(void *opaque, const cstl_kafka_delivery *d)
{
    waiting_sent *ws = opaque;
    if (d->code != 0) {
        count_waiting(ws->r, "failed");
        cstl_log_error("scheduler", d->error, "the reason of job %s was not delivered",
                       ws->rec.job_id);
        cstl_scheduler_waiting_failed(ws->r->state, &ws->rec);
    }
    free(ws);
}

/* Queues one record of a plan: a JobWaiting with CloudEvents headers (its version the job's
 * version it was decided from), or a tombstone without headers. */
static int send_waiting(cstl_scheduler_runner *r, const cstl_waiting_record *w, cstl_error *err)
{
    cstl_codec_buf buf = {0};
    rd_kafka_headers_t *hdrs = NULL;
    int rc = 0;
    if (!w->tombstone) {
        json_t *v =
            json_pack("{s:s,s:s,s:i,s:s,s:s,s:I}", "job_id", w->job_id, "tenant_id", w->tenant_id,
                      "attempts", w->attempts, "reason", cstl_place_reason_name(w->reason),
                      "message", w->message, "at", (json_int_t)w->at);
        rc = cstl_codec_encode_json(r->waiting_schema, v, &buf, err);
        json_decref(v);
        cstl_event_headers h = {.time_us = w->at, .version = w->version > 0 ? w->version : 1};
        cstl_uuid_v7_string(h.id);
        snprintf(h.source, sizeof(h.source), "/constellation/scheduler");
        snprintf(h.type, sizeof(h.type), "%s", r->waiting_schema->ce_type);
        snprintf(h.subject, sizeof(h.subject), "%s", w->job_id);
        snprintf(h.tenant, sizeof(h.tenant), "%s", w->tenant_id);
        hdrs = rd_kafka_headers_new(10);
        if (rc == 0)
            rc = cstl_event_headers_build(&h, hdrs, err);
    }
    waiting_sent *ws = cstl_xmalloc(sizeof(*ws));
    *ws = (waiting_sent){.r = r, .rec = *w};
    for (int tries = 0; rc == 0; tries++) {
        rc = cstl_kafka_producer_send(r->producer, WAITING_TOPIC, CSTL_KAFKA_PARTITION_UA,
                                      w->job_id, strlen(w->job_id), buf.data, buf.len, hdrs,
                                      on_waiting_delivered, ws, err);
        if (rc != CSTL_EKAFKA || tries >= 50)
            break;
        cstl_kafka_producer_poll(r->producer, 10); /* the local queue is full: let it drain */
        rc = 0;
    }
    cstl_codec_buf_free(&buf);
    if (rc != 0) {
        if (hdrs != NULL)
            rd_kafka_headers_destroy(hdrs);
        free(ws);
    }
    return rc;
}

/* Produces the plan's pending reasons; the delivery reports come in later polls. */
static void publish_waiting(cstl_scheduler_runner *r, const cstl_sched_plan *p)
{
    for (size_t i = 0; i < p->nwaiting; i++) {
        const cstl_waiting_record *w = &p->waiting[i];
        cstl_error err;
        int rc = send_waiting(r, w, &err);
        if (rc == 0) {
            count_waiting(r, w->tombstone ? "tombstone" : "reason");
            continue;
        }
        count_waiting(r, "failed");
        cstl_log_error("scheduler", &err, "cannot produce the reason of job %s", w->job_id);
        if (rc == CSTL_EKAFKA) /* the queue stayed full: published again by a later plan */
            cstl_scheduler_waiting_failed(r->state, w);
    }
    cstl_kafka_producer_poll(r->producer, 0);
}

static void plan_and_send(cstl_scheduler_runner *r)
{
    cstl_sched_plan p = {0};
    int64_t now = wall_us();
    cstl_scheduler_plan(r->state, now, &p);
    publish_queue(r, &p);
    publish_waiting(r, &p);
    trim_sent(r, now);
    /* liveness and releases first (fire and forget), then the placements */
    outcome *other = cstl_xcalloc(p.ncommands + 1, sizeof(outcome));
    const cstl_sched_command **reserve = cstl_xcalloc(p.ncommands + 1, sizeof(void *));
    const cstl_sched_command **assign = cstl_xcalloc(p.ncommands + 1, sizeof(void *));
    size_t no = 0, np = 0;
    for (size_t i = 0; i < p.ncommands; i++) {
        const cstl_sched_command *c = &p.commands[i];
        if (strcmp(c->type, "ReserveGpus") == 0 && i + 1 < p.ncommands &&
            strcmp(p.commands[i + 1].type, "AssignJob") == 0) {
            reserve[np] = c;
            assign[np++] = &p.commands[++i];
        } else if (!cstl_strmap_has(r->sent, c->command_id)) {
            other[no++].cmd = c; /* not sent a moment ago (its event is on its way) */
        }
    }
    if (!atomic_load(&r->stop))
        send_batch(r, other, no, false);
    if (!atomic_load(&r->stop) && np > 0)
        place_all(r, reserve, assign, np);
    free(assign);
    free(reserve);
    free(other);
    cstl_sched_plan_clear(&p);
}

int cstl_scheduler_runner_run(cstl_scheduler_runner *r, cstl_error *err)
{
    struct timespec last;
    clock_gettime(CLOCK_MONOTONIC, &last);
    while (!atomic_load(&r->stop)) {
        int n = cstl_event_reader_poll(r->reader, 50, on_event, r);
        cstl_kafka_producer_poll(r->producer, 0); /* delivery reports of the reasons */
        if (n < 0)
            return cstl_error_set(err, n, "the scheduler cannot read the events");
        if (!atomic_load(&r->ready)) {
            if (!cstl_event_reader_caught_up(r->reader))
                continue;
            cstl_log(CSTL_LOG_INFO, "scheduler", "caught up with the log");
            atomic_store(&r->ready, true);
            n = 1;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long ms =
            (long long)(now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000;
        if (n == 0 && ms < r->tick_ms)
            continue;
        plan_and_send(r);
        last = now;
    }
    return 0;
}

int cstl_scheduler_runner_set_weight(cstl_scheduler_runner *r, const char *tenant_id, double weight)
{
    return cstl_scheduler_set_weight(r->state, tenant_id, weight);
}

void cstl_scheduler_runner_stop(cstl_scheduler_runner *r)
{
    atomic_store(&r->stop, true);
}

bool cstl_scheduler_runner_ready(const cstl_scheduler_runner *r)
{
    return atomic_load(&r->ready);
}

json_t *cstl_scheduler_runner_queue(cstl_scheduler_runner *r)
{
    pthread_mutex_lock(&r->queue_lock);
    json_t *q = json_incref(r->queue);
    pthread_mutex_unlock(&r->queue_lock);
    return q;
}

void cstl_scheduler_runner_free(cstl_scheduler_runner *r)
{
    if (r == NULL)
        return;
    cstl_event_reader_free(r->reader);
    /* the last delivery reports, while the state they report to is still there */
    cstl_kafka_producer_flush(r->producer, r->timeout_ms, NULL);
    cstl_kafka_producer_free(r->producer);
    cstl_scheduler_free(r->state);
    cstl_strmap_free(r->sent);
    json_decref(r->queue);
    pthread_mutex_destroy(&r->queue_lock);
    free(r);
}
