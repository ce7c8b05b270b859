/*
 * handler.c - the command handler loop: group membership, partition ownership and batches (see
 * handler.h, docs/write-side.md).
 *
 * Invariants:
 *   - A partition is handled only when it is ready: its transactional producer was initialized
 *     (fencing older owners) and its aggregates were restored after that. A record polled for a
 *     partition that is not ready is dropped and the partition paused; once ready again it is
 *     sought back to the group's committed offset and resumed, so nothing is skipped.
 *   - One transaction per partition and batch: events, replies, snapshots, dead letters and the
 *     consumed offsets commit together or not at all. In-memory state changes before the commit;
 *     when a transaction fails it is aborted and the partition's state is rebuilt from the log,
 *     so memory never holds what the log does not.
 *   - Records are matched to partitions by (context, partition, generation): a partition revoked
 *     and reassigned while a batch was being collected does not receive the stale records.
 *
 * Thread: the loop, the rebalance hook (inside its consumer polls) and all failure handling run
 * on the thread in cstl_cmd_handler_run. Only the transactions of one batch (handler_batch.c) run
 * in parallel, one thread per partition, while this thread waits for them.
 * cstl_cmd_handler_stop only stores an atomic.
 */
#include "commands/handler.h"

#include "commands/envelope.h"
#include "commands/handler_internal.h"
#include "platform/codec.h"
#include "platform/events.h"
#include "platform/id.h"
#include "platform/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DLQ_TOPIC     "constellation.dlq"
#define REPLIES_TOPIC "constellation.replies"
#define IDLE_POLL_MS  100
#define RETRY_US      1000000LL

/* ---- options and setup --------------------------------------------------------------------- */

static int topic_partitions(
    cstl_kafka_admin *a, const char *topic, int timeout_ms, int32_t *out, cstl_error *err)
{
    return cstl_kafka_admin_partition_count(a, topic, timeout_ms, out, err);
}

static int check_topics(cstl_cmd_handler *h, cstl_error *err)
{
    cstl_kafka_admin *a = cstl_kafka_admin_new(h->conf, err);
    if (a == NULL)
        return err != NULL ? err->code : CSTL_EKAFKA;
    int rc = 0;
    for (int i = 0; rc == 0 && i < h->n_ctx; i++) {
        cstl_hctx *c = &h->ctx[i];
        int32_t nc = 0, ne = 0, ns = 0;
        rc = topic_partitions(a, c->commands, h->timeout_ms, &nc, err);
        if (rc == 0)
            rc = topic_partitions(a, c->events, h->timeout_ms, &ne, err);
        if (rc == 0)
            rc = topic_partitions(a, c->snapshots, h->timeout_ms, &ns, err);
        if (rc == 0 && (nc != ne || nc != ns))
            rc = cstl_error_set(
                err, CSTL_ECONFLICT,
                "partition counts of \"%s\" (%d), \"%s\" (%d) and \"%s\" (%d) differ", c->commands,
                (int)nc, c->events, (int)ne, c->snapshots, (int)ns);
        c->partitions = nc;
    }
    int32_t ndlq = 0;
    if (rc == 0)
        rc = topic_partitions(a, REPLIES_TOPIC, h->timeout_ms, &h->replies_partitions, err);
    if (rc == 0)
        rc = topic_partitions(a, DLQ_TOPIC, h->timeout_ms, &ndlq, err);
    cstl_kafka_admin_free(a);
    return rc;
}

cstl_cmd_handler *cstl_cmd_handler_new(const cstl_cmd_handler_options *opts, cstl_error *err)
{
    if (opts == NULL || opts->brokers == NULL || *opts->brokers == '\0') {
        cstl_error_set(err, CSTL_EINVAL, "command handler needs the kafka brokers");
        return NULL;
    }
    if (opts->instance_id == NULL || *opts->instance_id == '\0' ||
        strlen(opts->instance_id) > 100) {
        cstl_error_set(err, CSTL_EINVAL, "command handler instance id must be 1-100 bytes");
        return NULL;
    }
    if (opts->batch_max < 0 || opts->batch_wait_ms < 0 || opts->snapshot_every < 0 ||
        opts->timeout_ms < 0 || opts->restore_timeout_ms < 0 || opts->handled_ids_ttl_us < 0 ||
        opts->session_timeout_ms < 0) {
        cstl_error_set(err, CSTL_EINVAL, "command handler options must not be negative");
        return NULL;
    }
    const cstl_aggregate_type *defaults[] = {&cstl_tenant_aggregate, &cstl_job_aggregate,
                                             &cstl_worker_aggregate};
    const cstl_aggregate_type *const *types = opts->contexts;
    size_t n = opts->n_contexts;
    if (types == NULL) {
        types = defaults;
        n = CSTL_ARRAY_LEN(defaults);
    }
    if (n == 0 || n > CSTL_HANDLER_MAX_CONTEXTS) {
        cstl_error_set(err, CSTL_EINVAL, "command handler serves 1-%d contexts, not %zu",
                       CSTL_HANDLER_MAX_CONTEXTS, n);
        return NULL;
    }
    cstl_cmd_handler *h = cstl_xcalloc(1, sizeof(*h));
    h->brokers = cstl_xstrdup(opts->brokers);
    h->instance_id = cstl_xstrdup(opts->instance_id);
    h->group_id =
        cstl_xstrdup(opts->group_id != NULL && *opts->group_id != '\0' ? opts->group_id
                                                                       : "constellation-commands");
    size_t slen = strlen(h->instance_id) + 32;
    h->source = cstl_xmalloc(slen);
    snprintf(h->source, slen, "constellation/commands/%s", h->instance_id);
    h->batch_max = opts->batch_max > 0 ? opts->batch_max : 500;
    h->batch_wait_ms = opts->batch_wait_ms > 0 ? opts->batch_wait_ms : 5;
    h->snapshot_every = opts->snapshot_every > 0 ? opts->snapshot_every : 100;
    h->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 30000;
    h->restore_timeout_ms = opts->restore_timeout_ms > 0 ? opts->restore_timeout_ms : 300000;
    h->handled_ids_max = opts->handled_ids_max > 0 ? opts->handled_ids_max : 200000;
    h->handled_ids_ttl_us =
        opts->handled_ids_ttl_us > 0 ? opts->handled_ids_ttl_us : 7LL * 24 * 3600 * 1000000;
    h->metrics = opts->metrics != NULL ? opts->metrics : cstl_metrics_default();

    for (size_t i = 0; i < n; i++) {
        const cstl_aggregate_type *t = types[i];
        if (t == NULL || t->context == NULL || strlen(t->context) > 64) {
            cstl_error_set(err, CSTL_EINVAL, "command handler context %zu is not set", i);
            goto fail;
        }
        for (int j = 0; j < h->n_ctx; j++) {
            if (strcmp(h->ctx[j].type->context, t->context) == 0) {
                cstl_error_set(err, CSTL_EINVAL, "context \"%s\" is served twice", t->context);
                goto fail;
            }
        }
        cstl_hctx *c = &h->ctx[h->n_ctx++];
        c->type = t;
        snprintf(c->commands, sizeof(c->commands), "constellation.%s.commands", t->context);
        snprintf(c->events, sizeof(c->events), "constellation.%s.events", t->context);
        snprintf(c->snapshots, sizeof(c->snapshots), "constellation.%s.snapshots", t->context);
    }

    char client_id[160];
    snprintf(client_id, sizeof(client_id), "constellation-commands-%s", h->instance_id);
    h->conf = cstl_kafka_conf_new(h->brokers, client_id, err);
    if (h->conf == NULL)
        goto fail;
    h->restore_conf = cstl_kafka_conf_new(h->brokers, client_id, err);
    if (h->restore_conf == NULL ||
        cstl_kafka_conf_set(h->restore_conf, "enable.partition.eof", "true", err) != 0 ||
        /* the end of a partition is seen after one fetch wait: keep it short */
        cstl_kafka_conf_set(h->restore_conf, "fetch.wait.max.ms", "10", err) != 0)
        goto fail;
    h->group_conf = cstl_kafka_conf_new(h->brokers, client_id, err);
    if (h->group_conf == NULL)
        goto fail;
    {
        /* A dead handler's partitions move to the survivors after the session timeout: short
         * enough that commands wait seconds, not the 45 s of librdkafka's default. */
        int session = opts->session_timeout_ms > 0 ? opts->session_timeout_ms : 10000;
        char st[32], hb[32];
        snprintf(st, sizeof(st), "%d", session);
        snprintf(hb, sizeof(hb), "%d", session / 4 > 0 ? session / 4 : 1);
        if (cstl_kafka_conf_set(h->group_conf, "session.timeout.ms", st, err) != 0 ||
            cstl_kafka_conf_set(h->group_conf, "heartbeat.interval.ms", hb, err) != 0)
            goto fail;
    }
    if (check_topics(h, err) != 0)
        goto fail;

    static const char *const outcome_labels[] = {"context", "outcome", NULL};
    static const char *const ctx_labels[] = {"context", NULL};
    static const double batch_buckets[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
    h->handled_family =
        cstl_metrics_counter(h->metrics, "commands_handled_total",
                             "Commands handled, by context and outcome", outcome_labels, err);
    cstl_metric_family *bs =
        cstl_metrics_histogram(h->metrics, "command_batch_size", "Commands per handled batch", NULL,
                               batch_buckets, CSTL_ARRAY_LEN(batch_buckets), err);
    cstl_metric_family *cs = cstl_metrics_histogram(
        h->metrics, "command_commit_seconds", "Duration of one partition's transaction commit",
        NULL, NULL, 0, err);
    cstl_metric_family *po =
        cstl_metrics_gauge(h->metrics, "partitions_owned",
                           "Command partitions owned and ready, by context", ctx_labels, err);
    if (h->handled_family == NULL || bs == NULL || cs == NULL || po == NULL)
        goto fail;
    h->batch_size = cstl_metrics_child(bs, NULL);
    h->commit_seconds = cstl_metrics_child(cs, NULL);
    for (int i = 0; i < h->n_ctx; i++) {
        const char *v[] = {h->ctx[i].type->context};
        h->ctx[i].owned = cstl_metrics_child(po, v);
    }
    return h;
fail:
    cstl_cmd_handler_free(h);
    return NULL;
}

void cstl_cmd_handler_stop(cstl_cmd_handler *h)
{
    if (h != NULL)
        atomic_store(&h->stop, 1);
}

int cstl_cmd_handler_ready_partitions(const cstl_cmd_handler *h)
{
    return h == NULL ? 0 : atomic_load(&((cstl_cmd_handler *)h)->ready);
}

/* ---- partitions ---------------------------------------------------------------------------- */

static int ctx_of_topic(const cstl_cmd_handler *h, const char *topic)
{
    for (int i = 0; i < h->n_ctx; i++)
        if (strcmp(h->ctx[i].commands, topic) == 0)
            return i;
    return -1;
}

static cstl_hpart *find_part(cstl_cmd_handler *h, int ctx, int32_t p)
{
    for (int i = 0; i < h->n_parts; i++)
        if (h->parts[i]->ctx == ctx && h->parts[i]->p == p)
            return h->parts[i];
    return NULL;
}

static void set_ready(cstl_cmd_handler *h, cstl_hpart *pt, int ready)
{
    if (pt->ready == ready)
        return;
    pt->ready = ready;
    atomic_fetch_add(&h->ready, ready ? 1 : -1);
    cstl_metrics_gauge_add(h->ctx[pt->ctx].owned, ready ? 1 : -1);
}

static void pause_part(cstl_cmd_handler *h, cstl_hpart *pt, int pause)
{
    if (pt->paused == pause)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, h->ctx[pt->ctx].commands, pt->p);
    rd_kafka_t *rk = cstl_kafka_consumer_handle(h->consumer);
    if (pause)
        rd_kafka_pause_partitions(rk, l);
    else
        rd_kafka_resume_partitions(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    pt->paused = pause;
}

/* Drops pt's producer and state; it stays in the list (still assigned) but not ready. */
static void drop_part(cstl_cmd_handler *h, cstl_hpart *pt)
{
    set_ready(h, pt, 0);
    cstl_kafka_producer_free(pt->producer);
    pt->producer = NULL;
    cstl_handler_part_clear_state(h, pt);
}

/* Makes pt ready: producer, init_transactions (fencing), restore, and the seek back to the
 * committed offset when records were dropped. Logs and returns non-zero on failure. */
static int setup_part(cstl_cmd_handler *h, cstl_hpart *pt)
{
    cstl_error err;
    const char *context = h->ctx[pt->ctx].type->context;
    int rc = 0;
    cstl_handler_part_clear_state(h, pt);
    if (pt->producer == NULL) {
        char txid[200];
        snprintf(txid, sizeof(txid), "constellation-cmd-%s-%d", context, (int)pt->p);
        pt->producer = cstl_kafka_txn_producer_new(h->conf, txid, &err);
        if (pt->producer == NULL) {
            rc = err.code;
        } else {
            rc = cstl_kafka_producer_init_transactions(pt->producer, h->timeout_ms, &err);
            if (rc != 0) {
                cstl_kafka_producer_free(pt->producer);
                pt->producer = NULL;
            }
        }
    }
    if (rc == 0)
        rc = cstl_handler_restore(h, pt, &err);
    if (rc == 0 && pt->need_seek) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, h->ctx[pt->ctx].commands, pt->p);
        rc = cstl_kafka_consumer_committed(h->consumer, l, h->timeout_ms, &err);
        if (rc == 0) {
            if (l->elems[0].offset < 0)
                l->elems[0].offset = RD_KAFKA_OFFSET_BEGINNING;
            rd_kafka_error_t *kerr =
                rd_kafka_seek_partitions(cstl_kafka_consumer_handle(h->consumer), l, h->timeout_ms);
            if (kerr != NULL) {
                rc = cstl_kafka_error_from(&err, kerr, "cannot seek to the committed offset");
                rd_kafka_error_destroy(kerr);
            } else if (l->elems[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
                rc = cstl_kafka_error_from_code(&err, l->elems[0].err,
                                                "cannot seek to the committed offset");
            }
        }
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (rc != 0) {
        cstl_log_error("commands", &err, "cannot take partition %d of \"%s\"", (int)pt->p, context);
        cstl_handler_part_clear_state(h, pt);
        pt->retry_at_us = cstl_handler_mono_us() + RETRY_US;
        pt->need_seek = 1; /* records may be dropped until it is ready */
        return rc;
    }
    pt->need_seek = 0;
    set_ready(h, pt, 1);
    return 0;
}

static void free_part(cstl_cmd_handler *h, cstl_hpart *pt)
{
    drop_part(h, pt);
    cstl_strmap_free(pt->aggs);
    cstl_strmap_free(pt->handled);
    free(pt);
}

static int on_rebalance(void *opaque,
                        cstl_kafka_consumer *consumer,
                        cstl_kafka_rebalance_event event,
                        rd_kafka_topic_partition_list_t *partitions)
{
    (void)consumer;
    cstl_cmd_handler *h = opaque;
    for (int i = 0; i < partitions->cnt; i++) {
        int ctx = ctx_of_topic(h, partitions->elems[i].topic);
        int32_t p = partitions->elems[i].partition;
        if (ctx < 0)
            continue;
        cstl_hpart *pt = find_part(h, ctx, p);
        if (event == CSTL_KAFKA_ASSIGNED) {
            if (pt != NULL || h->n_parts >= CSTL_HANDLER_MAX_PARTITIONS)
                continue;
            pt = cstl_xcalloc(1, sizeof(*pt));
            pt->ctx = ctx;
            pt->p = p;
            pt->gen = ++h->next_gen;
            h->parts[h->n_parts++] = pt;
            cstl_log(CSTL_LOG_INFO, "commands", "assigned partition %d of \"%s\"", (int)p,
                     h->ctx[ctx].type->context);
            /* Start from the committed offset (the entry's offset stays INVALID). If this fails
             * the main loop retries, dropping records until then. */
            setup_part(h, pt);
        } else {
            if (pt == NULL)
                continue;
            cstl_log(CSTL_LOG_INFO, "commands", "%s partition %d of \"%s\"",
                     event == CSTL_KAFKA_LOST ? "lost" : "revoked", (int)p,
                     h->ctx[ctx].type->context);
            for (int j = 0; j < h->n_parts; j++) {
                if (h->parts[j] == pt) {
                    h->parts[j] = h->parts[--h->n_parts];
                    break;
                }
            }
            free_part(h, pt);
        }
    }
    return 0;
}

/* Retries the partitions that are not ready (not fenced: those wait for their revocation). */
static void recover_parts(cstl_cmd_handler *h)
{
    int64_t now = cstl_handler_mono_us();
    for (int i = 0; i < h->n_parts; i++) {
        cstl_hpart *pt = h->parts[i];
        if (pt->ready || pt->fenced || now < pt->retry_at_us)
            continue;
        pause_part(h, pt, 1);
        if (setup_part(h, pt) == 0)
            pause_part(h, pt, 0);
    }
}

/* What to do after a failed transaction step. */
void cstl_handler_fail_part(cstl_cmd_handler *h, cstl_hpart *pt, int rc, const cstl_error *err)
{
    const char *context = h->ctx[pt->ctx].type->context;
    if (rc == CSTL_EFENCED) {
        cstl_log_error("commands", err,
                       "partition %d of \"%s\" is owned by another instance now: dropping it",
                       (int)pt->p, context);
        drop_part(h, pt);
        pt->fenced = 1;
        pause_part(h, pt, 1);
        return;
    }
    if (rc == CSTL_HANDLER_BROKEN_STATE)
        cstl_log(CSTL_LOG_ERROR, "commands",
                 "partition %d of \"%s\": a command broke the aggregate state, redoing the batch "
                 "without it",
                 (int)pt->p, context);
    else
        cstl_log_error("commands", err, "transaction on partition %d of \"%s\" failed, redoing it",
                       (int)pt->p, context);
    cstl_error e;
    if (rc == CSTL_EKAFKA_FATAL ||
        cstl_kafka_producer_abort(pt->producer, h->timeout_ms, &e) != 0) {
        /* The producer cannot go on: a new one (same id) fences what is left of it. */
        cstl_kafka_producer_free(pt->producer);
        pt->producer = NULL;
    }
    set_ready(h, pt, 0);
    cstl_handler_part_clear_state(h, pt);
    pt->need_seek = 1;
    pt->retry_at_us = 0;
    pause_part(h, pt, 1);
}

/* ---- the loop ------------------------------------------------------------------------------ */

typedef struct polled {
    rd_kafka_message_t *m;
    int ctx;
    uint64_t gen;
} polled;

int cstl_cmd_handler_run(cstl_cmd_handler *h, cstl_error *err)
{
    if (h->ran)
        return cstl_error_set(err, CSTL_EINVAL, "a command handler runs once");
    h->ran = 1;
    char group[200];
    snprintf(group, sizeof(group), "%s-restore-%s", h->group_id, h->instance_id);
    h->restorer = cstl_kafka_consumer_new(h->restore_conf, group, NULL, NULL, err);
    if (h->restorer == NULL)
        return err != NULL ? err->code : CSTL_EKAFKA;
    h->consumer = cstl_kafka_consumer_new(h->group_conf, h->group_id, on_rebalance, h, err);
    if (h->consumer == NULL)
        return err != NULL ? err->code : CSTL_EKAFKA;
    const char *topics[CSTL_HANDLER_MAX_CONTEXTS];
    for (int i = 0; i < h->n_ctx; i++)
        topics[i] = h->ctx[i].commands;
    int rc = cstl_kafka_consumer_subscribe(h->consumer, topics, (size_t)h->n_ctx, err);
    if (rc != 0)
        return rc;

    polled *batch_msgs = cstl_xcalloc((size_t)h->batch_max, sizeof(*batch_msgs));
    rd_kafka_message_t **group_msgs =
        cstl_xcalloc((size_t)h->batch_max, sizeof(rd_kafka_message_t *));
    cstl_hjob *jobs = cstl_xcalloc((size_t)h->batch_max, sizeof(cstl_hjob));
    while (!atomic_load(&h->stop)) {
        recover_parts(h);
        /* Collect: wait for a first record, then up to batch_wait_ms for more. */
        int n = 0;
        int64_t deadline = 0;
        while (n < h->batch_max && !atomic_load(&h->stop)) {
            int wait = IDLE_POLL_MS;
            if (n > 0) {
                int64_t left = (deadline - cstl_handler_mono_us()) / 1000;
                if (left <= 0)
                    break;
                wait = (int)left;
            }
            rd_kafka_message_t *m = NULL;
            cstl_error e;
            rc = cstl_kafka_consumer_poll(h->consumer, wait, &m, &e);
            if (rc != 0) {
                if (rc == CSTL_EKAFKA || rc == CSTL_ETIMEDOUT)
                    continue; /* informational: librdkafka retries */
                if (err != NULL)
                    *err = e;
                goto out;
            }
            if (m == NULL) {
                if (n == 0)
                    break; /* idle: give recover_parts and stop a chance */
                continue;
            }
            int ctx = ctx_of_topic(h, rd_kafka_topic_name(m->rkt));
            cstl_hpart *pt = ctx >= 0 ? find_part(h, ctx, m->partition) : NULL;
            if (pt == NULL || !pt->ready) {
                /* Not handled now; the partition is re-read from its committed offset once
                 * it is ready. */
                if (pt != NULL) {
                    pt->need_seek = 1;
                    pause_part(h, pt, 1);
                }
                rd_kafka_message_destroy(m);
                continue;
            }
            if (n == 0)
                deadline = cstl_handler_mono_us() + (int64_t)h->batch_wait_ms * 1000;
            batch_msgs[n++] = (polled){.m = m, .ctx = ctx, .gen = pt->gen};
        }
        if (n == 0)
            continue;
        cstl_metrics_histogram_observe(h->batch_size, n);
        int64_t now_us = cstl_handler_wall_us();
        rd_kafka_consumer_group_metadata_t *gm = cstl_kafka_consumer_group_metadata(h->consumer);
        /* Per partition, in order of first appearance; each group's records are contiguous in
         * group_msgs. */
        int njobs = 0, used = 0;
        for (int i = 0; i < n; i++) {
            if (batch_msgs[i].m == NULL)
                continue;
            int ctx = batch_msgs[i].ctx;
            int32_t p = batch_msgs[i].m->partition;
            uint64_t gen = batch_msgs[i].gen;
            int first = used;
            for (int j = i; j < n; j++) {
                if (batch_msgs[j].m != NULL && batch_msgs[j].ctx == ctx &&
                    batch_msgs[j].m->partition == p && batch_msgs[j].gen == gen) {
                    group_msgs[used++] = batch_msgs[j].m;
                    batch_msgs[j].m = NULL;
                }
            }
            cstl_hpart *pt = find_part(h, ctx, p);
            if (pt != NULL && pt->gen == gen && pt->ready)
                jobs[njobs++] =
                    (cstl_hjob){.pt = pt, .msgs = &group_msgs[first], .n = used - first};
        }
        cstl_handler_run_batch(h, jobs, njobs, now_us, gm);
        for (int i = 0; i < used; i++)
            rd_kafka_message_destroy(group_msgs[i]);
        rd_kafka_consumer_group_metadata_destroy(gm);
    }
    rc = 0;
out:
    free(batch_msgs);
    free(group_msgs);
    free(jobs);
    /* Leave the group: the hook sees the revocation and frees every partition. */
    cstl_error e;
    cstl_kafka_consumer_close(h->consumer, &e);
    h->consumer = NULL;
    return rc;
}

void cstl_cmd_handler_free(cstl_cmd_handler *h)
{
    if (h == NULL)
        return;
    if (h->consumer != NULL) {
        cstl_kafka_consumer_close(h->consumer, NULL);
        h->consumer = NULL;
    }
    while (h->n_parts > 0)
        free_part(h, h->parts[--h->n_parts]);
    cstl_kafka_consumer_close(h->restorer, NULL);
    cstl_kafka_conf_free(h->conf);
    cstl_kafka_conf_free(h->group_conf);
    cstl_kafka_conf_free(h->restore_conf);
    free(h->brokers);
    free(h->instance_id);
    free(h->group_id);
    free(h->source);
    free(h);
}
