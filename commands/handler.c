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
 * on the thread in cstl_cmd_handler_run. Only the transactions of one batch run in parallel, one
 * thread per partition, each touching its own partition's producer and state and reading the
 * handler's immutable settings. cstl_cmd_handler_stop only stores an atomic.
 */
#include "commands/handler.h"

#include "commands/envelope.h"
#include "commands/handler_internal.h"
#include "platform/codec.h"
#include "platform/events.h"
#include "platform/id.h"
#include "platform/log.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DLQ_TOPIC       "constellation.dlq"
#define REPLIES_TOPIC   "constellation.replies"
#define MAX_EVENT_BYTES (900 * 1024) /* under the broker's default max.message.bytes (1 MiB) */
#define IDLE_POLL_MS    100
#define RETRY_US        (1000 * 1000)

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
        cstl_kafka_conf_set(h->restore_conf, "enable.partition.eof", "true", err) != 0)
        goto fail;
    h->group_conf = cstl_kafka_conf_new(h->brokers, client_id, err);
    if (h->group_conf == NULL)
        goto fail;
    if (opts->session_timeout_ms > 0) {
        char st[32], hb[32];
        snprintf(st, sizeof(st), "%d", opts->session_timeout_ms);
        snprintf(hb, sizeof(hb), "%d",
                 opts->session_timeout_ms / 4 > 0 ? opts->session_timeout_ms / 4 : 1);
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

/* ---- handling one partition's commands ----------------------------------------------------- */

typedef struct pending_snapshot {
    char aggregate_id[CSTL_CMD_AGGREGATE_MAX + 1];
    int64_t version;
    json_t *state;        /* NULL: only the slot is kept (the command failed) */
    int64_t *offset_slot; /* the command's last event's offset, set by its delivery report */
} pending_snapshot;

typedef struct batch {
    cstl_cmd_handler *h;
    cstl_hpart *pt;
    int64_t now_us;
    pending_snapshot *snaps;
    int n_snaps, cap_snaps;
    int counts[CSTL_CMD_FAILED + 1];
    cstl_codec_buf buf, buf2;
} batch;

static void on_event_delivery(void *opaque, const cstl_kafka_delivery *d)
{
    int64_t *slot = opaque;
    *slot = d->code == 0 ? d->offset : -1;
}

/* Sends a record in the open transaction, polling while the local queue is full. */
static int send_record(batch *b,
                       const char *topic,
                       int32_t partition,
                       const char *key,
                       const void *value,
                       size_t len,
                       rd_kafka_headers_t *hdrs,
                       cstl_kafka_delivery_cb cb,
                       void *opaque,
                       cstl_error *err)
{
    int64_t deadline = cstl_handler_mono_us() + (int64_t)b->h->timeout_ms * 1000;
    for (;;) {
        int rc = cstl_kafka_producer_send(b->pt->producer, topic, partition, key,
                                          key ? strlen(key) : 0, value, len, hdrs, cb, opaque, err);
        if (rc != CSTL_EKAFKA || cstl_handler_mono_us() > deadline) {
            if (rc != 0 && hdrs != NULL)
                rd_kafka_headers_destroy(hdrs);
            return rc;
        }
        cstl_kafka_producer_poll(b->pt->producer, 10);
    }
}

static int send_reply(batch *b,
                      const cstl_cmd_envelope *env,
                      cstl_cmd_outcome outcome,
                      int64_t version,
                      const char *aggregate_id,
                      const char *code,
                      const char *message,
                      const char *const *event_ids,
                      int n_ids,
                      cstl_error *err)
{
    b->counts[outcome]++;
    if (env->reply_to[0] == '\0')
        return 0;
    cstl_cmd_reply_record rec = {0};
    rec.reply.outcome = outcome;
    snprintf(rec.reply.command_id, sizeof(rec.reply.command_id), "%s", env->command_id);
    snprintf(rec.reply.aggregate_id, sizeof(rec.reply.aggregate_id), "%s",
             aggregate_id != NULL ? aggregate_id : env->aggregate_id);
    rec.reply.version = version;
    snprintf(rec.reply.error_code, sizeof(rec.reply.error_code), "%s", code ? code : "");
    snprintf(rec.reply.error_message, sizeof(rec.reply.error_message), "%s",
             message ? message : "");
    rec.reply.handled_at_us = b->now_us;
    rec.tenant_id = env->tenant_id;
    rec.event_ids = event_ids;
    rec.n_event_ids = n_ids;
    int rc = cstl_cmd_reply_encode(&rec, &b->buf2, err);
    if (rc != 0)
        return rc;
    int32_t part = cstl_kafka_partition_for_key(env->reply_to, strlen(env->reply_to),
                                                b->h->replies_partitions);
    return send_record(b, REPLIES_TOPIC, part, env->reply_to, b->buf2.data, b->buf2.len, NULL, NULL,
                       NULL, err);
}

/* Copies a poison command to the dead-letter topic, inside the transaction. */
static int send_dlq(batch *b, const rd_kafka_message_t *m, const char *reason, cstl_error *err)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
    char part[16], off[24];
    snprintf(part, sizeof(part), "%d", (int)m->partition);
    snprintf(off, sizeof(off), "%" PRId64, m->offset);
    rd_kafka_header_add(hdrs, "cstl_dlq_reason", -1, reason, -1);
    rd_kafka_header_add(hdrs, "cstl_dlq_topic", -1, rd_kafka_topic_name(m->rkt), -1);
    rd_kafka_header_add(hdrs, "cstl_dlq_partition", -1, part, -1);
    rd_kafka_header_add(hdrs, "cstl_dlq_offset", -1, off, -1);
    int64_t deadline = cstl_handler_mono_us() + (int64_t)b->h->timeout_ms * 1000;
    for (;;) {
        int rc =
            cstl_kafka_producer_send(b->pt->producer, DLQ_TOPIC, CSTL_KAFKA_PARTITION_UA, m->key,
                                     m->key_len, m->payload, m->len, hdrs, NULL, NULL, err);
        if (rc != CSTL_EKAFKA || cstl_handler_mono_us() > deadline) {
            if (rc != 0)
                rd_kafka_headers_destroy(hdrs);
            return rc;
        }
        cstl_kafka_producer_poll(b->pt->producer, 10);
    }
}

/* A command that cannot be handled: dead letter, and a reply when one is wanted. */
static int poison(batch *b,
                  const rd_kafka_message_t *m,
                  const cstl_cmd_envelope *env,
                  cstl_cmd_outcome outcome,
                  const char *code,
                  const char *reason,
                  cstl_error *err)
{
    cstl_log(CSTL_LOG_WARN, "commands", "dead letter from \"%s\" [%d] at offset %" PRId64 ": %s",
             rd_kafka_topic_name(m->rkt), (int)m->partition, m->offset, reason);
    int rc = send_dlq(b, m, reason, err);
    if (rc == 0)
        rc = send_reply(b, env, outcome, -1, NULL, code, reason, NULL, 0, err);
    return rc;
}

#define BROKEN_STATE 1 /* evolve failed mid-command: the partition's state must be rebuilt */

static int is_poison_offset(const cstl_hpart *pt, int64_t offset)
{
    for (int i = 0; i < pt->n_poison; i++)
        if (pt->poison[i] == offset)
            return 1;
    return 0;
}

/*
 * Handles one command record inside the open transaction. Returns 0 (whatever the outcome), a
 * Kafka error code from a send, or BROKEN_STATE.
 */
static int handle_one(batch *b, const rd_kafka_message_t *m, cstl_error *err)
{
    cstl_cmd_handler *h = b->h;
    cstl_hpart *pt = b->pt;
    const cstl_hctx *cx = &h->ctx[pt->ctx];
    const cstl_aggregate_type *type = cx->type;
    char why[1024];
    cstl_error e;
    cstl_cmd_envelope env;
    int rc;

    if (cstl_cmd_envelope_decode(m->payload, m->len, &env, &e) != 0) {
        snprintf(why, sizeof(why), "invalid command envelope: %.400s", e.message);
        return poison(b, m, &env, CSTL_CMD_FAILED, "invalid_envelope", why, err);
    }
    json_t *payload = NULL;
    cstl_hagg *agg = NULL;
    void *fresh = NULL; /* state of an aggregate that has no event yet */
    cstl_decision d = {0};

    if (is_poison_offset(pt, m->offset)) {
        rc = poison(b, m, &env, CSTL_CMD_FAILED, "internal_error",
                    "the events this command produced could not be applied", err);
        goto out;
    }
    const cstl_schema_entry *entry =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), env.command_type);
    char dir[96];
    snprintf(dir, sizeof(dir), "schemas/%s/commands/", type->context);
    if (entry == NULL || strncmp(entry->path, dir, strlen(dir)) != 0) {
        snprintf(why, sizeof(why), "unknown command type \"%s\" in context \"%s\"",
                 env.command_type, type->context);
        rc = poison(b, m, &env, CSTL_CMD_INVALID, "unknown_command_type", why, err);
        goto out;
    }
    int32_t want =
        cstl_kafka_partition_for_key(env.aggregate_id, strlen(env.aggregate_id), cx->partitions);
    if (want != pt->p) {
        /* Handling it here would split the aggregate between two owners. */
        snprintf(why, sizeof(why), "aggregate \"%s\" belongs to partition %d, not %d",
                 env.aggregate_id, (int)want, (int)pt->p);
        rc = poison(b, m, &env, CSTL_CMD_INVALID, "wrong_partition", why, err);
        goto out;
    }
    cstl_handled *first = cstl_strmap_get(pt->handled, env.command_id);
    if (first != NULL) {
        rc = send_reply(b, &env, CSTL_CMD_DUPLICATE, first->version, first->aggregate_id, NULL,
                        NULL, NULL, 0, err);
        goto out;
    }
    agg = cstl_strmap_get(pt->aggs, env.aggregate_id);
    int64_t version = agg != NULL ? agg->version : 0;
    if (env.expected_version >= 0 && env.expected_version != version) {
        snprintf(why, sizeof(why), "expected version %" PRId64 " but \"%s\" is at version %" PRId64,
                 env.expected_version, env.aggregate_id, version);
        rc = send_reply(b, &env, CSTL_CMD_VERSION_MISMATCH, -1, NULL, "version_mismatch", why, NULL,
                        0, err);
        goto out;
    }
    if (cstl_codec_decode_json(env.payload, env.payload_len, entry, &payload, &e) != 0) {
        snprintf(why, sizeof(why), "invalid payload of \"%s\": %.400s", env.command_type,
                 e.message);
        rc = poison(b, m, &env, CSTL_CMD_INVALID, "invalid_payload", why, err);
        goto out;
    }
    char short_type[128];
    cstl_handler_short_name(entry->fullname, short_type, sizeof(short_type));
    const char *addressed = type->aggregate_id(short_type, payload);
    if (addressed == NULL || strcmp(addressed, env.aggregate_id) != 0) {
        snprintf(why, sizeof(why), "payload addresses \"%s\", the envelope \"%s\"",
                 addressed ? addressed : "", env.aggregate_id);
        rc = send_reply(b, &env, CSTL_CMD_INVALID, -1, NULL, "aggregate_id_mismatch", why, NULL, 0,
                        err);
        goto out;
    }
    void *state = agg != NULL ? agg->state : (fresh = type->create());
    cstl_command cmd = {.type = short_type,
                        .command_id = env.command_id,
                        .tenant_id = env.tenant_id,
                        .aggregate_id = env.aggregate_id,
                        .issued_by = env.issued_by,
                        .now_us = b->now_us,
                        .payload = payload};
    if (type->decide(state, version, &cmd, &d) != 0) {
        snprintf(why, sizeof(why), "aggregate \"%s\" does not handle \"%s\"", type->name,
                 short_type);
        rc = poison(b, m, &env, CSTL_CMD_INVALID, "unknown_command_type", why, err);
        goto out;
    }
    if (d.rejection != CSTL_REJECT_NONE || d.n_events == 0) {
        if (d.rejection == CSTL_REJECT_NONE) /* nothing to do: accepted at the same version */
            rc = send_reply(b, &env, CSTL_CMD_ACCEPTED, version, NULL, NULL, NULL, NULL, 0, err);
        else
            rc = send_reply(
                b, &env, d.rejection == CSTL_REJECT_INVALID ? CSTL_CMD_INVALID : CSTL_CMD_REJECTED,
                -1, NULL, d.code, d.message, NULL, 0, err);
        goto out;
    }

    /* Encode every event first: one that does not fit its schema fails the command whole. */
    cstl_codec_buf enc[CSTL_DECISION_MAX_EVENTS] = {{0}};
    const cstl_schema_entry *ev_entry[CSTL_DECISION_MAX_EVENTS];
    rc = 0;
    for (int i = 0; i < d.n_events && rc == 0; i++) {
        char name[200];
        snprintf(name, sizeof(name), "%s.%s", type->context, d.events[i].type);
        ev_entry[i] = cstl_schema_catalog_find(cstl_schema_catalog_get(), name);
        if (ev_entry[i] == NULL) {
            snprintf(why, sizeof(why), "decide produced unknown event \"%s\"", name);
            rc = -1;
        } else if (cstl_codec_encode_json(ev_entry[i], d.events[i].data, &enc[i], &e) != 0) {
            snprintf(why, sizeof(why), "event \"%s\" does not fit its schema: %.400s", name,
                     e.message);
            rc = -1;
        } else if (enc[i].len > MAX_EVENT_BYTES) {
            snprintf(why, sizeof(why), "event \"%s\" is too large (%zu bytes)", name, enc[i].len);
            rc = -1;
        }
    }
    if (rc != 0) {
        for (int i = 0; i < d.n_events; i++)
            cstl_codec_buf_free(&enc[i]);
        rc = poison(b, m, &env, CSTL_CMD_FAILED, "internal_error", why, err);
        goto out;
    }

    if (fresh != NULL) {
        agg = cstl_xcalloc(1, sizeof(*agg));
        agg->state = fresh;
        agg->version = 0;
        fresh = NULL;
        cstl_strmap_put(pt->aggs, env.aggregate_id, agg);
    }
    int64_t before = agg->version;
    int snap = (before + d.n_events) / h->snapshot_every > before / h->snapshot_every;
    int64_t *offset_slot = NULL;
    if (snap) {
        if (b->n_snaps == b->cap_snaps) {
            b->cap_snaps = b->cap_snaps ? b->cap_snaps * 2 : 16;
            b->snaps = cstl_xrealloc(b->snaps, (size_t)b->cap_snaps * sizeof(*b->snaps));
        }
        /* Filled by the delivery report (before the commit returns); b->snaps may move when
         * it grows, so the slot is a heap cell of its own. */
        offset_slot = cstl_xmalloc(sizeof(*offset_slot));
        *offset_slot = -1;
    }
    char ids[CSTL_DECISION_MAX_EVENTS][CSTL_UUID_STRLEN + 1];
    const char *id_ptrs[CSTL_DECISION_MAX_EVENTS];
    for (int i = 0; i < d.n_events && rc == 0; i++) {
        cstl_event_headers eh = {0};
        cstl_uuid_v7_string(eh.id);
        snprintf(eh.source, sizeof(eh.source), "%s", h->source);
        snprintf(eh.type, sizeof(eh.type), "%s", ev_entry[i]->ce_type);
        eh.time_us = b->now_us;
        snprintf(eh.subject, sizeof(eh.subject), "%s", env.aggregate_id);
        snprintf(eh.tenant, sizeof(eh.tenant), "%s", env.tenant_id);
        eh.version = agg->version + 1;
        snprintf(eh.causation, sizeof(eh.causation), "%s", env.command_id);
        snprintf(eh.correlation, sizeof(eh.correlation), "%s", env.correlation_id);
        snprintf(eh.traceparent, sizeof(eh.traceparent), "%s", env.traceparent);
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(12);
        rc = cstl_event_headers_build(&eh, hdrs, err);
        if (rc != 0) {
            rd_kafka_headers_destroy(hdrs);
            break;
        }
        int last = i == d.n_events - 1;
        rc = send_record(b, cx->events, pt->p, env.aggregate_id, enc[i].data, enc[i].len, hdrs,
                         last && offset_slot ? on_event_delivery : NULL, last ? offset_slot : NULL,
                         err);
        if (rc != 0)
            break;
        memcpy(ids[i], eh.id, sizeof(ids[i]));
        id_ptrs[i] = ids[i];
        cstl_event ev = {.type = d.events[i].type, .version = eh.version, .data = d.events[i].data};
        if (type->evolve(agg->state, &ev, &e) != 0) {
            cstl_log_error("commands", &e, "event \"%s\" of command \"%s\" does not apply",
                           d.events[i].type, env.command_id);
            if (pt->n_poison < CSTL_HANDLER_MAX_POISON)
                pt->poison[pt->n_poison++] = m->offset;
            rc = BROKEN_STATE;
            break;
        }
        agg->version = eh.version;
    }
    for (int i = 0; i < d.n_events; i++)
        cstl_codec_buf_free(&enc[i]);
    if (rc != 0) {
        /* The slot may still be written by a delivery report until the transaction ends: it is
         * handed to the batch, which frees it after commit or abort. */
        if (offset_slot != NULL) {
            pending_snapshot *s = &b->snaps[b->n_snaps++];
            memset(s, 0, sizeof(*s));
            s->offset_slot = offset_slot;
            s->version = -1;
        }
        goto out;
    }
    cstl_handler_remember(h, pt, env.command_id, env.aggregate_id, agg->version, b->now_us);
    if (offset_slot != NULL) {
        pending_snapshot *s = &b->snaps[b->n_snaps++];
        snprintf(s->aggregate_id, sizeof(s->aggregate_id), "%s", env.aggregate_id);
        s->version = agg->version;
        s->state = type->snapshot(agg->state);
        s->offset_slot = offset_slot;
    }
    rc = send_reply(b, &env, CSTL_CMD_ACCEPTED, agg->version, NULL, NULL, NULL, id_ptrs, d.n_events,
                    err);
out:
    if (fresh != NULL)
        type->destroy(fresh);
    cstl_decision_clear(&d);
    json_decref(payload);
    cstl_cmd_envelope_clear(&env);
    return rc;
}

static void clear_snapshots(batch *b)
{
    for (int i = 0; i < b->n_snaps; i++) {
        json_decref(b->snaps[i].state);
        free(b->snaps[i].offset_slot);
    }
    b->n_snaps = 0;
}

/* Flushes the events (so their offsets are known) and sends the due snapshots. */
static int send_snapshots(batch *b, cstl_error *err)
{
    if (b->n_snaps == 0)
        return 0;
    int rc = cstl_kafka_producer_flush(b->pt->producer, b->h->timeout_ms, err);
    const cstl_hctx *cx = &b->h->ctx[b->pt->ctx];
    for (int i = 0; rc == 0 && i < b->n_snaps; i++) {
        pending_snapshot *s = &b->snaps[i];
        if (s->state == NULL)
            continue;
        json_t *j = json_pack("{s:I,s:I,s:O}", "version", (json_int_t)s->version, "events_offset",
                              (json_int_t)*s->offset_slot, "state", s->state);
        char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(2);
        char ver[24];
        snprintf(ver, sizeof(ver), "%" PRId64, s->version);
        rd_kafka_header_add(hdrs, "content-type", -1, "application/json", -1);
        rd_kafka_header_add(hdrs, "cstl_version", -1, ver, -1);
        rc = send_record(b, cx->snapshots, b->pt->p, s->aggregate_id, text, strlen(text), hdrs,
                         NULL, NULL, err);
        free(text);
    }
    return rc;
}

/* What to do after a failed transaction step. */
static void fail_part(cstl_cmd_handler *h, cstl_hpart *pt, int rc, const cstl_error *err)
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
    if (rc == BROKEN_STATE)
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

/* One partition's share of a batch: its transaction runs on a thread of its own (the partition's
 * producer and state are touched by nobody else meanwhile); what follows, on the loop's thread. */
typedef struct part_job {
    batch b;
    rd_kafka_message_t **msgs;
    int n;
    rd_kafka_consumer_group_metadata_t *group;
    int rc;
    cstl_error err;
} part_job;

static void *part_txn(void *arg)
{
    part_job *j = arg;
    cstl_cmd_handler *h = j->b.h;
    cstl_hpart *pt = j->b.pt;
    int rc = cstl_kafka_producer_begin(pt->producer, &j->err);
    for (int i = 0; rc == 0 && i < j->n; i++)
        rc = handle_one(&j->b, j->msgs[i], &j->err);
    if (rc == 0)
        rc = send_snapshots(&j->b, &j->err);
    if (rc == 0) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, h->ctx[pt->ctx].commands, pt->p)->offset =
            j->msgs[j->n - 1]->offset + 1;
        rc = cstl_kafka_producer_send_offsets(pt->producer, l, j->group, h->timeout_ms, &j->err);
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (rc == 0) {
        int64_t t0 = cstl_handler_mono_us();
        for (int attempt = 0;; attempt++) {
            rc = cstl_kafka_producer_commit(pt->producer, h->timeout_ms, &j->err);
            if ((rc != CSTL_EKAFKA && rc != CSTL_ETIMEDOUT) || attempt >= 2)
                break;
        }
        cstl_metrics_histogram_observe(h->commit_seconds,
                                       (double)(cstl_handler_mono_us() - t0) / 1e6);
    }
    j->rc = rc;
    return NULL;
}

/* After the transaction, on the loop's thread: failure handling or the outcome counters. */
static void part_done(part_job *j)
{
    cstl_cmd_handler *h = j->b.h;
    cstl_hpart *pt = j->b.pt;
    if (j->rc != 0) {
        fail_part(h, pt, j->rc, &j->err); /* delivery reports of aborted records run here */
    } else {
        pt->n_poison = 0;
        for (int o = 0; o <= CSTL_CMD_FAILED; o++) {
            if (j->b.counts[o] == 0)
                continue;
            const char *v[] = {h->ctx[pt->ctx].type->context,
                               cstl_cmd_outcome_name((cstl_cmd_outcome)o)};
            cstl_metrics_counter_add(cstl_metrics_child(h->handled_family, v), j->b.counts[o]);
        }
    }
    clear_snapshots(&j->b);
    free(j->b.snaps);
    cstl_codec_buf_free(&j->b.buf);
    cstl_codec_buf_free(&j->b.buf2);
}

/* Runs the partitions' transactions of one batch in parallel (each commit is a few round trips;
 * partitions are independent), then finishes them in order. */
static void run_jobs(part_job *jobs, int njobs)
{
    if (njobs == 1) {
        part_txn(&jobs[0]);
    } else {
        pthread_t *t = cstl_xcalloc((size_t)njobs, sizeof(*t));
        int *started = cstl_xcalloc((size_t)njobs, sizeof(*started));
        for (int i = 0; i < njobs; i++)
            started[i] = pthread_create(&t[i], NULL, part_txn, &jobs[i]) == 0;
        for (int i = 0; i < njobs; i++) {
            if (started[i])
                pthread_join(t[i], NULL);
            else
                part_txn(&jobs[i]);
        }
        free(t);
        free(started);
    }
    for (int i = 0; i < njobs; i++)
        part_done(&jobs[i]);
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
    rd_kafka_message_t **group_msgs = cstl_xcalloc((size_t)h->batch_max, sizeof(*group_msgs));
    part_job *jobs = cstl_xcalloc((size_t)h->batch_max, sizeof(*jobs));
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
            if (pt != NULL && pt->gen == gen && pt->ready) {
                part_job *jb = &jobs[njobs++];
                memset(jb, 0, sizeof(*jb));
                jb->b = (batch){.h = h, .pt = pt, .now_us = now_us};
                jb->msgs = &group_msgs[first];
                jb->n = used - first;
                jb->group = gm;
            }
        }
        run_jobs(jobs, njobs);
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
