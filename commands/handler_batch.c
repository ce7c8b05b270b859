/*
 * handler_batch.c - one batch of commands: per owned partition, one Kafka transaction carrying
 * the events, replies, snapshots and dead letters of its commands and their consumed offsets (see
 * docs/write-side.md for the outcome of each kind of command).
 *
 * Invariants: every record of a partition's batch is produced inside that partition's open
 * transaction; in-memory state (aggregates, handled ids) changes as commands are handled, before
 * the commit, and a failed transaction makes the loop rebuild that state from the log
 * (cstl_handler_fail_part), so memory never holds what the log does not.
 *
 * Thread: the partitions' transactions of one batch run in parallel, one thread each, touching
 * only their partition's producer and state and the handler's immutable settings; the
 * aftermath (failures, counters) runs on the calling (loop) thread.
 */
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

#define DLQ_TOPIC     "constellation.dlq"
#define REPLIES_TOPIC "constellation.replies"
/* Under the broker's default max.message.bytes (1 MiB). */
#define MAX_EVENT_BYTES ((size_t)900 * 1024)

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


static int is_poison_offset(const cstl_hpart *pt, int64_t offset)
{
    for (int i = 0; i < pt->n_poison; i++)
        if (pt->poison[i] == offset)
            return 1;
    return 0;
}

/* The schema of env's command if this partition may handle it; else NULL with the reply code
 * and why filled: an unknown type, or an aggregate that hashes to another partition (handling it
 * here would split the aggregate between two owners). */
static const cstl_schema_entry *
route(batch *b, const cstl_cmd_envelope *env, const char **code, char *why, size_t why_size)
{
    const cstl_hctx *cx = &b->h->ctx[b->pt->ctx];
    const char *context = cx->type->context;
    const cstl_schema_entry *entry =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), env->command_type);
    char dir[96];
    snprintf(dir, sizeof(dir), "schemas/%s/commands/", context);
    if (entry == NULL || strncmp(entry->path, dir, strlen(dir)) != 0) {
        snprintf(why, why_size, "unknown command type \"%s\" in context \"%s\"", env->command_type,
                 context);
        *code = "unknown_command_type";
        return NULL;
    }
    int32_t want =
        cstl_kafka_partition_for_key(env->aggregate_id, strlen(env->aggregate_id), cx->partitions);
    if (want != b->pt->p) {
        snprintf(why, why_size, "aggregate \"%s\" belongs to partition %d, not %d",
                 env->aggregate_id, (int)want, (int)b->pt->p);
        *code = "wrong_partition";
        return NULL;
    }
    return entry;
}

/* A heap cell the delivery report of a snapshot's last event writes its offset into (before the
 * commit returns); b->snaps may move when it grows, so the slot is a cell of its own. */
static int64_t *snapshot_slot(batch *b)
{
    if (b->n_snaps == b->cap_snaps) {
        b->cap_snaps = b->cap_snaps ? b->cap_snaps * 2 : 16;
        b->snaps = cstl_xrealloc(b->snaps, (size_t)b->cap_snaps * sizeof(*b->snaps));
    }
    int64_t *slot = cstl_xmalloc(sizeof(*slot));
    *slot = -1;
    return slot;
}

/* Hands slot to the batch, which frees it after commit or abort (a delivery report may still
 * write it until the transaction ends). With agg, a snapshot of agg is written after the commit;
 * without (the command failed), only the slot is kept. */
static void snapshot_queue(batch *b,
                           int64_t *slot,
                           const cstl_hagg *agg,
                           const char *aggregate_id,
                           const cstl_aggregate_type *type)
{
    pending_snapshot *s = &b->snaps[b->n_snaps++];
    memset(s, 0, sizeof(*s));
    s->offset_slot = slot;
    s->version = -1;
    if (agg != NULL) {
        snprintf(s->aggregate_id, sizeof(s->aggregate_id), "%s", aggregate_id);
        s->version = agg->version;
        s->state = type->snapshot(agg->state);
    }
}

/* Encodes the events of d into enc (entries in ev_entry). Returns 0, or -1 with why filled. */
static int encode_events(const char *context,
                         const cstl_decision *d,
                         cstl_codec_buf *enc,
                         const cstl_schema_entry **ev_entry,
                         char *why,
                         size_t why_size)
{
    cstl_error e;
    for (int i = 0; i < d->n_events; i++) {
        char name[200];
        snprintf(name, sizeof(name), "%s.%s", context, d->events[i].type);
        ev_entry[i] = cstl_schema_catalog_find(cstl_schema_catalog_get(), name);
        if (ev_entry[i] == NULL) {
            snprintf(why, why_size, "decide produced unknown event \"%s\"", name);
            return -1;
        }
        if (cstl_codec_encode_json(ev_entry[i], d->events[i].data, &enc[i], &e) != 0) {
            snprintf(why, why_size, "event \"%s\" does not fit its schema: %.400s", name,
                     e.message);
            return -1;
        }
        if (enc[i].len > MAX_EVENT_BYTES) {
            snprintf(why, why_size, "event \"%s\" is too large (%zu bytes)", name, enc[i].len);
            return -1;
        }
    }
    return 0;
}

/*
 * Produces the events of d (encoded in enc) for the command env and applies them to agg. The
 * last event's delivery fills offset_slot when set. ids receives the event ids. Returns 0, a send
 * error, or CSTL_HANDLER_BROKEN_STATE when an event does not apply (the command is remembered as
 * poison for the redo).
 */
static int append_events(batch *b,
                         const rd_kafka_message_t *m,
                         const cstl_cmd_envelope *env,
                         cstl_hagg *agg,
                         const cstl_decision *d,
                         const cstl_codec_buf *enc,
                         const cstl_schema_entry *const *ev_entry,
                         int64_t *offset_slot,
                         char ids[][CSTL_UUID_STRLEN + 1],
                         cstl_error *err)
{
    cstl_cmd_handler *h = b->h;
    cstl_hpart *pt = b->pt;
    const cstl_hctx *cx = &h->ctx[pt->ctx];
    const cstl_aggregate_type *type = cx->type;
    cstl_error e;
    for (int i = 0; i < d->n_events; i++) {
        cstl_event_headers eh = {0};
        cstl_uuid_v7_string(eh.id);
        snprintf(eh.source, sizeof(eh.source), "%s", h->source);
        snprintf(eh.type, sizeof(eh.type), "%s", ev_entry[i]->ce_type);
        eh.time_us = b->now_us;
        snprintf(eh.subject, sizeof(eh.subject), "%s", env->aggregate_id);
        snprintf(eh.tenant, sizeof(eh.tenant), "%s", env->tenant_id);
        eh.version = agg->version + 1;
        snprintf(eh.causation, sizeof(eh.causation), "%s", env->command_id);
        snprintf(eh.correlation, sizeof(eh.correlation), "%s", env->correlation_id);
        snprintf(eh.traceparent, sizeof(eh.traceparent), "%s", env->traceparent);
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(12);
        int rc = cstl_event_headers_build(&eh, hdrs, err);
        if (rc != 0) {
            rd_kafka_headers_destroy(hdrs);
            return rc;
        }
        int last = i == d->n_events - 1;
        rc = send_record(b, cx->events, pt->p, env->aggregate_id, enc[i].data, enc[i].len, hdrs,
                         last && offset_slot ? on_event_delivery : NULL, last ? offset_slot : NULL,
                         err);
        if (rc != 0)
            return rc;
        memcpy(ids[i], eh.id, sizeof(ids[i]));
        cstl_event ev = {
            .type = d->events[i].type, .version = eh.version, .data = d->events[i].data};
        if (type->evolve(agg->state, &ev, &e) != 0) {
            cstl_log_error("commands", &e, "event \"%s\" of command \"%s\" does not apply",
                           d->events[i].type, env->command_id);
            if (pt->n_poison < CSTL_HANDLER_MAX_POISON)
                pt->poison[pt->n_poison++] = m->offset;
            return CSTL_HANDLER_BROKEN_STATE;
        }
        agg->version = eh.version;
    }
    return 0;
}

/*
 * Handles one command record inside the open transaction. Returns 0 (whatever the outcome), a
 * Kafka error code from a send, or CSTL_HANDLER_BROKEN_STATE.
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
    const char *code = NULL;
    const cstl_schema_entry *entry = route(b, &env, &code, why, sizeof(why));
    if (entry == NULL) {
        rc = poison(b, m, &env, CSTL_CMD_INVALID, code, why, err);
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
    rc = encode_events(type->context, &d, enc, ev_entry, why, sizeof(why));
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
    CSTL_ASSERT(agg != NULL);
    int64_t before = agg->version;
    int snap = (before + d.n_events) / h->snapshot_every > before / h->snapshot_every;
    int64_t *offset_slot = snap ? snapshot_slot(b) : NULL;
    char ids[CSTL_DECISION_MAX_EVENTS][CSTL_UUID_STRLEN + 1];
    const char *id_ptrs[CSTL_DECISION_MAX_EVENTS];
    rc = append_events(b, m, &env, agg, &d, enc, ev_entry, offset_slot, ids, err);
    for (int i = 0; i < d.n_events; i++)
        id_ptrs[i] = ids[i];
    for (int i = 0; i < d.n_events; i++)
        cstl_codec_buf_free(&enc[i]);
    if (rc == 0)
        cstl_handler_remember(h, pt, env.command_id, env.aggregate_id, agg->version, b->now_us);
    if (offset_slot != NULL)
        snapshot_queue(b, offset_slot, rc == 0 ? agg : NULL, env.aggregate_id, type);
    if (rc != 0)
        goto out;
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
        cstl_handler_fail_part(h, pt, j->rc,
                               &j->err); /* delivery reports of aborted records run here */
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
void cstl_handler_run_batch(cstl_cmd_handler *h,
                            const cstl_hjob *hjobs,
                            int njobs,
                            int64_t now_us,
                            rd_kafka_consumer_group_metadata_t *group)
{
    if (njobs == 0)
        return;
    part_job *jobs = cstl_xcalloc((size_t)njobs, sizeof(part_job));
    for (int i = 0; i < njobs; i++) {
        jobs[i].b = (batch){.h = h, .pt = hjobs[i].pt, .now_us = now_us};
        jobs[i].msgs = hjobs[i].msgs;
        jobs[i].n = hjobs[i].n;
        jobs[i].group = group;
    }
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
    free(jobs);
}
