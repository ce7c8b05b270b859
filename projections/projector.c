/*
 * projector.c - the live projector: one thread per projection consuming its events topics in a
 * consumer group and applying batches through projector_batch.c (see projector.h).
 *
 * Invariants: offsets live only in PostgreSQL; on assignment the rebalance hook seeks to them. On
 * revocation the hook drops the held records of the revoked partitions: they were not applied, and
 * whoever gets the partition next starts from the stored offset. The hook runs only inside the
 * projector thread's polls, and no poll happens while a batch is being applied, so once it has
 * returned no record of a revoked partition is applied by this projector. Lag gauges are computed
 * at scrape time from the live per-partition state (stored offset, last seen high watermark,
 * timestamp of the oldest held unapplied record), kept under the projector's mutex.
 *
 * Two batches are held at most: the one applied next, decoded and with its statements built, and
 * the one after it, made of the records already waiting when the first is about to be applied
 * (collected without waiting, so a batch is never held back for the next). While the first runs in
 * PostgreSQL the second is decoded and its statements built (proj_plan_build) on a short-lived
 * prep thread, so the projector's own CPU work hides behind the server's.
 * Threads: the projector thread does all Kafka and PostgreSQL work (the hook runs inside its
 * polls); the prep thread only decodes the next batch's records, which nothing else touches until
 * it is joined (before the next poll); the metrics scrape thread reads the partition state under
 * the mutex.
 */
#include "projections/projector.h"

#include "platform/log.h"
#include "projections/projector_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOPICS         4
#define BACKOFF_MAX_MS     5000
#define SESSION_TIMEOUT_MS "6000" /* the broker's default group.min.session.timeout.ms */
#define BATCH_IDLE_MS      5      /* a batch ends when no further record comes within this */
/* A read_committed fetch parked on the broker may wait this long after a commit made records
 * readable (librdkafka's default is 500 ms): bounds the added end-to-end lag. */
#define FETCH_WAIT_MS "20"

typedef struct part_state {
    char topic[PROJ_NAME_MAX];
    int32_t partition;
    int64_t next;       /* stored next offset; 0 when none stored */
    int64_t high;       /* last seen high watermark, -1 unknown */
    int64_t pending_ts; /* ms timestamp of the oldest held unapplied record, 0 none */
    int64_t position;   /* consumer position when nothing is held (past transaction markers) */
} part_state;

struct cstl_projector {
    const cstl_projection *proj;
    char brokers[1024], dsn[1024], client_id[256], group[PROJ_NAME_MAX];
    char topics[MAX_TOPICS][PROJ_NAME_MAX];
    size_t ntopics;
    int batch_max, batch_ms, kafka_timeout_ms, statement_timeout_ms;
    cstl_metrics *metrics;

    proj_core core;
    cstl_kafka_conf *kconf; /* the DLQ producer's */
    cstl_kafka_conf *cconf; /* the consumer's: a short session, so a crashed member is replaced
                               within SESSION_TIMEOUT_MS rather than librdkafka's 45 s */
    cstl_kafka_consumer *consumer;
    proj_item *batch; /* the batch applied next: decoded when not empty */
    size_t nbatch;
    proj_plan *plan;  /* its statements, built ahead (may be empty) */
    proj_item *ahead; /* the batch after it, decoded while batch is applied */
    size_t nahead;
    proj_plan *ahead_plan;

    pthread_t thread;
    bool started;
    volatile int stop;
    atomic_int ready;
    atomic_uint_fast64_t applied, dead, batches;

    pthread_mutex_t mu; /* parts */
    part_state *parts;
    size_t nparts;
    struct cstl_projector *next_live; /* in the list the lag gauges read */
};

/* Every running projector, for the lag gauges of each registry. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static cstl_projector *live;

/* Offsets below this are applied: the stored offset, or the consumer's position when it holds
 * nothing (the position moves past transaction markers, which are never records). */
static int64_t done_upto(const part_state *s)
{
    return s->pending_ts == 0 && s->position > s->next ? s->position : s->next;
}

static void collect_lag(void *ud, cstl_metrics_sink *sink, bool seconds)
{
    int64_t now = (int64_t)time(NULL) * 1000;
    pthread_mutex_lock(&live_mu);
    for (cstl_projector *p = live; p; p = p->next_live) {
        if (p->metrics != ud)
            continue;
        pthread_mutex_lock(&p->mu);
        for (size_t i = 0; i < p->nparts; i++) {
            part_state *s = &p->parts[i];
            char part[16];
            snprintf(part, sizeof(part), "%d", (int)s->partition);
            const char *values[] = {p->proj->name, s->topic, part};
            double v;
            if (seconds)
                v = s->pending_ts > 0 && now > s->pending_ts ? (double)(now - s->pending_ts) / 1e3
                                                             : 0.0;
            else
                v = s->high > done_upto(s) ? (double)(s->high - done_upto(s)) : 0.0;
            cstl_metrics_sink_add(sink, values, v);
        }
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&live_mu);
}

static void collect_records(void *ud, cstl_metrics_sink *sink)
{
    collect_lag(ud, sink, false);
}

static void collect_seconds(void *ud, cstl_metrics_sink *sink)
{
    collect_lag(ud, sink, true);
}

static void register_metrics(cstl_projector *p)
{
    if (p->metrics == NULL)
        return;
    static const char *const proj_label[] = {"projection", NULL};
    static const char *const part_labels[] = {"projection", "topic", "partition", NULL};
    const char *values[] = {p->proj->name};
    cstl_error err;
    p->core.m_applied = cstl_metrics_child(
        cstl_metrics_counter(p->metrics, "projector_events_applied_total",
                             "events applied to the read models", proj_label, &err),
        values);
    p->core.m_dlq = cstl_metrics_child(cstl_metrics_counter(p->metrics, "projector_dlq_total",
                                                            "records sent to the dead-letter topic",
                                                            proj_label, &err),
                                       values);
    p->core.m_batch = cstl_metrics_child(
        cstl_metrics_histogram(p->metrics, "projector_batch_seconds",
                               "time to apply and commit one batch", proj_label, NULL, 0, &err),
        values);
    /* one callback family per registry serves every projector of it; EEXISTS is expected */
    cstl_metrics_gauge_func(p->metrics, "projector_lag_records",
                            "high watermark minus the stored next offset", part_labels,
                            collect_records, p->metrics, &err);
    cstl_metrics_gauge_func(p->metrics, "projector_lag_seconds",
                            "age of the oldest record not yet applied (0 when caught up)",
                            part_labels, collect_seconds, p->metrics, &err);
}

static part_state *part_find(cstl_projector *p, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < p->nparts; i++)
        if (p->parts[i].partition == partition && strcmp(p->parts[i].topic, topic) == 0)
            return &p->parts[i];
    return NULL;
}

/* Drops the records of items of the given partitions (decoded or not); true when any. */
static bool drop_revoked(proj_item *items, size_t *n, rd_kafka_topic_partition_list_t *partitions)
{
    size_t kept = 0;
    for (size_t i = 0; i < *n; i++) {
        rd_kafka_message_t *m = items[i].msg;
        if (rd_kafka_topic_partition_list_find(partitions, rd_kafka_topic_name(m->rkt),
                                               m->partition) != NULL) {
            proj_items_release(&items[i], 1);
            rd_kafka_message_destroy(m);
        } else {
            items[kept++] = items[i];
        }
    }
    bool dropped = kept < *n;
    *n = kept;
    return dropped;
}

typedef struct assign_ctx {
    rd_kafka_topic_partition_list_t *list;
} assign_ctx;

static void set_start(void *ud, const char *topic, int32_t partition, int64_t next)
{
    assign_ctx *a = ud;
    rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(a->list, topic, partition);
    if (tp != NULL)
        tp->offset = next;
}

static int on_rebalance(void *opaque,
                        cstl_kafka_consumer *consumer,
                        cstl_kafka_rebalance_event event,
                        rd_kafka_topic_partition_list_t *partitions)
{
    cstl_projector *p = opaque;
    (void)consumer;
    if (event == CSTL_KAFKA_ASSIGNED) {
        for (int i = 0; i < partitions->cnt; i++)
            partitions->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
        assign_ctx a = {partitions};
        cstl_error err;
        int delay = 100;
        while (proj_offsets_load(p->core.pg, p->core.offsets_key, set_start, &a, &err) != 0) {
            cstl_log_error("projector", &err, "cannot read the offsets of \"%s\", retrying",
                           p->core.offsets_key);
            if (p->stop)
                return CSTL_ESHUTDOWN;
            proj_sleep_ms(delay, &p->stop);
            delay = delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2;
            if (!cstl_pg_ok(p->core.pg))
                cstl_pg_reconnect(p->core.pg, &err);
        }
        pthread_mutex_lock(&p->mu);
        for (int i = 0; i < partitions->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &partitions->elems[i];
            if (part_find(p, tp->topic, tp->partition) != NULL)
                continue;
            p->parts = cstl_xrealloc(p->parts, (p->nparts + 1) * sizeof(part_state));
            part_state *s = &p->parts[p->nparts++];
            *s = (part_state){.partition = tp->partition, .high = -1};
            snprintf(s->topic, sizeof(s->topic), "%s", tp->topic);
            s->next = tp->offset >= 0 ? tp->offset : 0;
        }
        pthread_mutex_unlock(&p->mu);
        cstl_log(CSTL_LOG_INFO, "projector", "projection \"%s\": %d partitions assigned",
                 p->proj->name, partitions->cnt);
        return 0;
    }
    /* revoked or lost: drop held records of those partitions and forget their state */
    if (drop_revoked(p->batch, &p->nbatch, partitions))
        proj_plan_clear(p->plan); /* built from records dropped now: recorded again in the tx */
    drop_revoked(p->ahead, &p->nahead, partitions);
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < partitions->cnt; i++) {
        part_state *s = part_find(p, partitions->elems[i].topic, partitions->elems[i].partition);
        if (s != NULL)
            *s = p->parts[--p->nparts];
    }
    pthread_mutex_unlock(&p->mu);
    cstl_log(CSTL_LOG_INFO, "projector", "projection \"%s\": %d partitions %s", p->proj->name,
             partitions->cnt, event == CSTL_KAFKA_LOST ? "lost" : "revoked");
    return 0;
}

static void refresh_watermarks(cstl_projector *p)
{
    if (p->consumer == NULL)
        return;
    rd_kafka_t *rk = cstl_kafka_consumer_handle(p->consumer);
    pthread_mutex_lock(&p->mu);
    rd_kafka_topic_partition_list_t *pos = rd_kafka_topic_partition_list_new((int)p->nparts + 1);
    for (size_t i = 0; i < p->nparts; i++)
        rd_kafka_topic_partition_list_add(pos, p->parts[i].topic, p->parts[i].partition);
    rd_kafka_position(rk, pos);
    for (size_t i = 0; i < p->nparts; i++) {
        int64_t lo, hi;
        p->parts[i].position = p->nbatch == 0 && p->nahead == 0 ? pos->elems[i].offset : -1;
        if (rd_kafka_get_watermark_offsets(rk, p->parts[i].topic, p->parts[i].partition, &lo,
                                           &hi) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            hi >= 0)
            p->parts[i].high = hi;
    }
    rd_kafka_topic_partition_list_destroy(pos);
    pthread_mutex_unlock(&p->mu);
}

static void drop_items(proj_item *items, size_t *n)
{
    proj_items_release(items, *n);
    for (size_t i = 0; i < *n; i++)
        rd_kafka_message_destroy(items[i].msg);
    *n = 0;
}

/* Drops the batch applied next. */
static void drop_batch(cstl_projector *p)
{
    drop_items(p->batch, &p->nbatch);
    proj_plan_clear(p->plan);
}

/* Polls records into items (*n held) until the batch is full, batch_ms passed since its first
 * record, no record came for BATCH_IDLE_MS (nothing more is waiting: apply now rather than wait
 * out batch_ms), or stop. Without wait, takes only the records already waiting. */
static int collect_batch(cstl_projector *p, proj_item *items, size_t *n, bool wait, cstl_error *err)
{
    int64_t deadline = -1;
    while (!p->stop && *n < (size_t)p->batch_max) {
        int timeout = wait ? 100 : 0;
        if (wait && deadline >= 0) {
            int64_t left = deadline - proj_now_ms();
            if (left <= 0)
                break;
            timeout = left < BATCH_IDLE_MS ? (int)left : BATCH_IDLE_MS;
        }
        rd_kafka_message_t *m = NULL;
        int rc = cstl_kafka_consumer_poll(p->consumer, timeout, &m, err);
        if (rc != 0 && !cstl_error_is_retriable(rc))
            return rc;
        if (m == NULL)
            return 0; /* idle, or nothing more waiting after the batch's first records */
        items[(*n)++] = (proj_item){.msg = m};
        if (deadline < 0)
            deadline = proj_now_ms() + p->batch_ms;
        rd_kafka_timestamp_type_t tstype;
        int64_t ts = rd_kafka_message_timestamp(m, &tstype);
        pthread_mutex_lock(&p->mu);
        part_state *s = part_find(p, rd_kafka_topic_name(m->rkt), m->partition);
        if (s != NULL && s->pending_ts == 0)
            s->pending_ts = ts > 0 ? ts : (int64_t)time(NULL) * 1000;
        pthread_mutex_unlock(&p->mu);
    }
    return 0;
}

static void batch_committed(cstl_projector *p)
{
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->nbatch; i++) {
        rd_kafka_message_t *m = p->batch[i].msg;
        part_state *s = part_find(p, rd_kafka_topic_name(m->rkt), m->partition);
        if (s != NULL && m->offset + 1 > s->next)
            s->next = m->offset + 1;
    }
    for (size_t i = 0; i < p->nparts; i++)
        p->parts[i].pending_ts = 0;
    /* the oldest unapplied records are now the next batch's */
    for (size_t i = 0; i < p->nahead; i++) {
        rd_kafka_message_t *m = p->ahead[i].msg;
        part_state *s = part_find(p, rd_kafka_topic_name(m->rkt), m->partition);
        rd_kafka_timestamp_type_t tstype;
        int64_t ts = rd_kafka_message_timestamp(m, &tstype);
        if (s != NULL && s->pending_ts == 0)
            s->pending_ts = ts > 0 ? ts : (int64_t)time(NULL) * 1000;
    }
    pthread_mutex_unlock(&p->mu);
    atomic_fetch_add(&p->batches, 1);
    atomic_store(&p->applied, p->core.applied);
    atomic_store(&p->dead, p->core.dead);
}

/* Applies the held batch (decoded), retrying until it is committed, the version switched or stop.
 */
static int apply_batch(cstl_projector *p)
{
    int delay = 100;
    for (int attempt = 1;; attempt++) {
        cstl_error err;
        int rc = proj_core_apply(&p->core, p->batch, p->nbatch, p->plan, &err);
        if (rc == 0) {
            if (attempt > 1)
                cstl_log(CSTL_LOG_INFO, "projector",
                         "projection \"%s\": batch applied after %d "
                         "attempts",
                         p->proj->name, attempt);
            batch_committed(p);
            drop_batch(p);
            return 0;
        }
        if (rc == CSTL_ECONFLICT) {
            drop_batch(p);
            return rc;
        }
        if (attempt == 1 || attempt % 10 == 0)
            cstl_log_error("projector", &err,
                           "projection \"%s\": cannot apply a batch of %zu "
                           "records (attempt %d), retrying",
                           p->proj->name, p->nbatch, attempt);
        if (p->stop) {
            drop_batch(p);
            return 0;
        }
        proj_sleep_ms(delay, &p->stop);
        delay = delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2;
        refresh_watermarks(p);
        if (!cstl_pg_ok(p->core.pg))
            cstl_pg_reconnect(p->core.pg, &err);
    }
}

/* Decoding a batch and building its statements: no Kafka or PostgreSQL call. */
typedef struct prep_job {
    const cstl_projection *proj;
    proj_item *items;
    size_t n;
    proj_plan *plan;
} prep_job;

static void *prep_main(void *arg)
{
    prep_job *j = arg;
    proj_items_prepare(j->proj, j->items, j->n);
    proj_plan_build(j->plan, j->proj, j->items, j->n);
    return NULL;
}

/* One consumer life on the active version: returns on stop, version switch or consumer failure. */
static int run_consumer(cstl_projector *p, cstl_error *err)
{
    int version;
    int rc = proj_active_version(p->core.pg, p->proj->name, &version, err);
    if (rc != 0)
        return rc;
    proj_core_set_version(&p->core, version);
    p->consumer = cstl_kafka_consumer_new(p->cconf, p->group, on_rebalance, p, err);
    if (p->consumer == NULL)
        return err->code;
    const char *topics[MAX_TOPICS];
    for (size_t i = 0; i < p->ntopics; i++)
        topics[i] = p->topics[i];
    rc = cstl_kafka_consumer_subscribe(p->consumer, topics, p->ntopics, err);
    atomic_store(&p->ready, rc == 0);
    while (rc == 0 && !p->stop) {
        if (p->nbatch == 0) {
            rc = collect_batch(p, p->batch, &p->nbatch, true, err);
            refresh_watermarks(p);
            if (rc != 0 || p->nbatch == 0)
                continue;
            prep_job job = {p->proj, p->batch, p->nbatch, p->plan};
            prep_main(&job);
        }
        /* what is already waiting is decoded while this batch runs in PostgreSQL */
        rc = collect_batch(p, p->ahead, &p->nahead, false, err);
        if (rc != 0)
            break;
        prep_job job = {p->proj, p->ahead, p->nahead, p->ahead_plan};
        pthread_t prep;
        bool threaded = p->nahead > 0 && pthread_create(&prep, NULL, prep_main, &job) == 0;
        if (p->nbatch > 0)
            rc = apply_batch(p);
        if (threaded)
            pthread_join(prep, NULL);
        else if (p->nahead > 0)
            prep_main(&job);
        proj_item *items = p->batch;
        proj_plan *plan = p->plan;
        p->batch = p->ahead, p->nbatch = p->nahead, p->plan = p->ahead_plan;
        p->ahead = items, p->nahead = 0, p->ahead_plan = plan;
        refresh_watermarks(p);
    }
    if (rc == CSTL_ECONFLICT)
        cstl_log(CSTL_LOG_INFO, "projector",
                 "projection \"%s\": a new version is active, "
                 "reopening the consumer",
                 p->proj->name);
    atomic_store(&p->ready, 0);
    drop_batch(p);
    drop_items(p->ahead, &p->nahead);
    proj_plan_clear(p->ahead_plan);
    cstl_error cerr;
    cstl_kafka_consumer_close(p->consumer, &cerr);
    p->consumer = NULL;
    pthread_mutex_lock(&p->mu);
    p->nparts = 0;
    pthread_mutex_unlock(&p->mu);
    return rc == CSTL_ECONFLICT ? 0 : rc;
}

static void *projector_main(void *arg)
{
    cstl_projector *p = arg;
    int delay = 100;
    while (!p->stop) {
        cstl_error err;
        int rc = 0;
        if (p->core.pg == NULL) {
            cstl_pg_retry policy = {.max_attempts = 1,
                                    .connect_timeout_s = 5,
                                    .application_name = "constellation-projector",
                                    .statement_timeout_ms = p->statement_timeout_ms};
            p->core.pg = cstl_pg_connect(p->dsn, &policy, &err);
            rc = p->core.pg == NULL ? err.code : 0;
        } else if (!cstl_pg_ok(p->core.pg)) {
            rc = cstl_pg_reconnect(p->core.pg, &err);
        }
        if (rc == 0)
            rc = run_consumer(p, &err);
        if (rc == 0) {
            delay = 100;
            continue;
        }
        cstl_log_error("projector", &err, "projection \"%s\" cannot run, retrying in %d ms",
                       p->proj->name, delay);
        proj_sleep_ms(delay, &p->stop);
        delay = delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2;
    }
    return NULL;
}

cstl_projector *cstl_projector_new(const cstl_projector_options *o, cstl_error *err)
{
    const cstl_projection *proj = cstl_projection_find(o->projection ? o->projection : "");
    if (proj == NULL) {
        cstl_error_set(err, CSTL_EINVAL, "unknown projection \"%s\"",
                       o->projection ? o->projection : "");
        return NULL;
    }
    cstl_projector *p = cstl_xcalloc(1, sizeof(*p));
    p->proj = proj;
    const char *prefix = o->topic_prefix ? o->topic_prefix : "constellation.";
    snprintf(p->brokers, sizeof(p->brokers), "%s", o->brokers ? o->brokers : "");
    snprintf(p->dsn, sizeof(p->dsn), "%s", o->pg_dsn ? o->pg_dsn : "");
    snprintf(p->client_id, sizeof(p->client_id), "%s",
             o->client_id ? o->client_id : "constellation-projector");
    snprintf(p->group, sizeof(p->group), "%s%s",
             o->group_prefix ? o->group_prefix : "constellation-projector-", proj->name);
    for (const char *const *c = proj->contexts; *c && p->ntopics < MAX_TOPICS; c++)
        snprintf(p->topics[p->ntopics++], PROJ_NAME_MAX, "%s%s.events", prefix, *c);
    for (const char *const *t = proj->topics; t && *t && p->ntopics < MAX_TOPICS; t++)
        snprintf(p->topics[p->ntopics++], PROJ_NAME_MAX, "%s%s", prefix, *t);
    for (const char *const *t = proj->telemetry; t && *t && p->ntopics < MAX_TOPICS; t++)
        snprintf(p->topics[p->ntopics++], PROJ_NAME_MAX, "%s%s", prefix, *t);
    p->batch_max = o->batch_max > 0 ? o->batch_max : 20000;
    p->batch_ms = o->batch_ms > 0 ? o->batch_ms : 50;
    p->kafka_timeout_ms = o->kafka_timeout_ms > 0 ? o->kafka_timeout_ms : 10000;
    p->statement_timeout_ms = o->pg_statement_timeout_ms;
    p->metrics = o->metrics;
    p->batch = cstl_xcalloc((size_t)p->batch_max, sizeof(proj_item));
    p->ahead = cstl_xcalloc((size_t)p->batch_max, sizeof(proj_item));
    p->plan = proj_plan_new();
    p->ahead_plan = proj_plan_new();
    pthread_mutex_init(&p->mu, NULL);
    p->core =
        (proj_core){.proj = proj, .check_version = true, .kafka_timeout_ms = p->kafka_timeout_ms};
    snprintf(p->core.dlq_topic, sizeof(p->core.dlq_topic), "%sdlq", prefix);
    p->kconf = cstl_kafka_conf_new(p->brokers, p->client_id, err);
    p->cconf = p->kconf ? cstl_kafka_conf_new(p->brokers, p->client_id, err) : NULL;
    bool ok = p->cconf != NULL &&
              cstl_kafka_conf_set(p->cconf, "session.timeout.ms", SESSION_TIMEOUT_MS, err) == 0 &&
              cstl_kafka_conf_set(p->cconf, "heartbeat.interval.ms", "1000", err) == 0 &&
              cstl_kafka_conf_set(p->cconf, "fetch.wait.max.ms", FETCH_WAIT_MS, err) == 0;
    if (ok)
        p->core.dlq = cstl_kafka_producer_new(p->kconf, err);
    if (p->core.dlq == NULL) {
        cstl_projector_free(p);
        return NULL;
    }
    register_metrics(p);
    return p;
}

int cstl_projector_start(cstl_projector *p, cstl_error *err)
{
    p->stop = 0;
    pthread_mutex_lock(&live_mu);
    p->next_live = live;
    live = p;
    pthread_mutex_unlock(&live_mu);
    if (pthread_create(&p->thread, NULL, projector_main, p) != 0)
        return cstl_error_set(err, CSTL_EINTERNAL, "cannot start the projector thread");
    p->started = true;
    return 0;
}

void cstl_projector_stop(cstl_projector *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&live_mu);
    for (cstl_projector **q = &live; *q; q = &(*q)->next_live)
        if (*q == p) {
            *q = p->next_live;
            break;
        }
    pthread_mutex_unlock(&live_mu);
    if (!p->started)
        return;
    p->stop = 1;
    pthread_join(p->thread, NULL);
    p->started = false;
}

void cstl_projector_free(cstl_projector *p)
{
    if (p == NULL)
        return;
    cstl_projector_stop(p);
    if (p->core.dlq != NULL) {
        cstl_kafka_producer_flush(p->core.dlq, p->kafka_timeout_ms, NULL);
        cstl_kafka_producer_free(p->core.dlq);
    }
    cstl_kafka_conf_free(p->kconf);
    cstl_kafka_conf_free(p->cconf);
    cstl_pg_close(p->core.pg);
    pthread_mutex_destroy(&p->mu);
    free(p->parts);
    free(p->batch);
    free(p->ahead);
    proj_plan_free(p->plan);
    proj_plan_free(p->ahead_plan);
    free(p);
}

int cstl_projector_ready(cstl_projector *p, cstl_error *why)
{
    if (atomic_load(&p->ready))
        return 0;
    return cstl_error_set(why, CSTL_EUNAVAILABLE, "projection \"%s\" is not consuming yet",
                          p->proj->name);
}

uint64_t cstl_projector_applied(cstl_projector *p)
{
    return atomic_load(&p->applied);
}

uint64_t cstl_projector_dead_lettered(cstl_projector *p)
{
    return atomic_load(&p->dead);
}

uint64_t cstl_projector_batches(cstl_projector *p)
{
    return atomic_load(&p->batches);
}

int64_t cstl_projector_lag(cstl_projector *p)
{
    int64_t lag = 0;
    pthread_mutex_lock(&p->mu);
    if (p->nparts == 0)
        lag = -1;
    for (size_t i = 0; i < p->nparts; i++) {
        if (p->parts[i].high < 0)
            lag = -1;
        else if (lag >= 0 && p->parts[i].high > done_upto(&p->parts[i]))
            lag += p->parts[i].high - done_upto(&p->parts[i]);
    }
    pthread_mutex_unlock(&p->mu);
    return lag;
}
