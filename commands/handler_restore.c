/*
 * handler_restore.c - rebuilding the state of an owned partition from the log.
 *
 * Called after the partition's transactional producer was initialized, so any open transaction
 * of an older owner is aborted and the last stable offset of the events partition is final. Two
 * passes with the restore reader (a consumer with no group membership, read_committed, partition
 * EOF events on):
 *   1. constellation.<context>.snapshots partition p from the beginning to its end: the latest
 *      snapshot of each aggregate ({"version","events_offset","state"} JSON);
 *   2. constellation.<context>.events partition p from the beginning to its end. For each event
 *      the headers give the aggregate (ce_subject), its version (cstl_version) and the command
 *      (cstl_causation). An event at or below its aggregate's snapshot version is not decoded;
 *      the others must follow their aggregate's version by exactly one and are decoded and
 *      evolved. Every event's causation is remembered for duplicate detection.
 * A snapshot the aggregate cannot restore (e.g. its state shape changed) is ignored: the events
 * are replayed from the first instead. A version gap or an event that does not evolve is a poison
 * event: the restore fails with CSTL_EDECODE and the partition is not served.
 *
 * Thread: the handler's thread.
 */
#include "commands/handler_internal.h"
#include "platform/codec.h"
#include "platform/events.h"
#include "platform/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t cstl_handler_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t cstl_handler_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void cstl_handler_short_name(const char *fullname, char *out, size_t cap)
{
    /* "io.constellation.jobs.JobSubmitted.v1" -> "JobSubmitted"; a fullname has no ".vN". */
    size_t len = strlen(fullname);
    const char *end = fullname + len;
    const char *dot = strrchr(fullname, '.');
    if (dot != NULL && dot[1] == 'v' && dot[2] >= '0' && dot[2] <= '9') {
        end = dot;
        dot = memrchr(fullname, '.', (size_t)(dot - fullname));
    }
    const char *start = dot != NULL ? dot + 1 : fullname;
    snprintf(out, cap, "%.*s", (int)(end - start), start);
}

static void destroy_agg(void *ud, const char *key, void *value)
{
    (void)key;
    const cstl_aggregate_type *type = ud;
    cstl_hagg *a = value;
    type->destroy(a->state);
    free(a);
}

void cstl_handler_part_clear_state(cstl_cmd_handler *h, cstl_hpart *pt)
{
    if (pt->aggs != NULL) {
        cstl_strmap_each(pt->aggs, destroy_agg, (void *)h->ctx[pt->ctx].type);
        cstl_strmap_free(pt->aggs);
    }
    cstl_strmap_free(pt->handled);
    pt->aggs = cstl_strmap_new(NULL);
    pt->handled = cstl_strmap_new(free);
}

void cstl_handler_remember(cstl_cmd_handler *h,
                           cstl_hpart *pt,
                           const char *command_id,
                           const char *aggregate_id,
                           int64_t version,
                           int64_t time_us)
{
    cstl_handled *prev = cstl_strmap_get(pt->handled, command_id);
    if (prev != NULL) {
        /* Several events of one command: the last version is the command's outcome. */
        if (version > prev->version)
            prev->version = version;
        return;
    }
    size_t n = strlen(aggregate_id);
    cstl_handled *x = cstl_xmalloc(sizeof(*x) + n + 1);
    x->version = version;
    x->time_us = time_us;
    memcpy(x->aggregate_id, aggregate_id, n + 1);
    cstl_strmap_put(pt->handled, command_id, x);
    int64_t horizon = cstl_handler_wall_us() - h->handled_ids_ttl_us;
    void *v;
    while (cstl_strmap_oldest(pt->handled, &v) != NULL) {
        cstl_handled *o = v;
        if (cstl_strmap_len(pt->handled) <= h->handled_ids_max && o->time_us >= horizon)
            break;
        cstl_strmap_remove(pt->handled, cstl_strmap_oldest(pt->handled, NULL));
    }
}

/*
 * Reads topic partition p from the beginning to its end, calling fn for each record. The end is
 * the partition EOF event of the read_committed reader, i.e. the last stable offset, which
 * control records (transaction markers) never hide the way "last record's offset + 1" would.
 */
static int read_to_end(cstl_cmd_handler *h,
                       const char *topic,
                       int32_t p,
                       int (*fn)(void *ud, const rd_kafka_message_t *m, cstl_error *err),
                       void *ud,
                       cstl_error *err)
{
    int64_t low = 0, high = 0;
    int64_t until = cstl_handler_mono_us() + (int64_t)h->timeout_ms * 1000;
    int rc;
    for (;;) {
        rc = cstl_kafka_consumer_watermarks(h->restorer, topic, p, &low, &high, h->timeout_ms, err);
        if (rc == 0)
            break;
        /* Leader elections (a new topic, a broker restart) are retriable. */
        if (!cstl_error_is_retriable(rc) || cstl_handler_mono_us() > until)
            return rc;
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    if (high <= low)
        return 0; /* empty */
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rc = cstl_kafka_consumer_assign(h->restorer, parts, err);
    rd_kafka_topic_partition_list_destroy(parts);
    if (rc != 0)
        return rc;
    rd_kafka_t *rk = cstl_kafka_consumer_handle(h->restorer);
    int64_t deadline = cstl_handler_mono_us() + (int64_t)h->restore_timeout_ms * 1000;
    for (;;) {
        if (atomic_load(&h->stop)) {
            rc = cstl_error_set(err, CSTL_ESHUTDOWN, "stopping while reading \"%s\" [%d]", topic,
                                (int)p);
            break;
        }
        if (cstl_handler_mono_us() > deadline) {
            rc = cstl_error_set(err, CSTL_ETIMEDOUT, "reading \"%s\" [%d] took over %d ms", topic,
                                (int)p, h->restore_timeout_ms);
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            int code = cstl_kafka_error_from_code(err, m->err, "restore read failed");
            rd_kafka_message_destroy(m);
            if (code == CSTL_EKAFKA)
                continue; /* transient: librdkafka retries */
            rc = code;
            break;
        }
        rc = fn(ud, m, err);
        rd_kafka_message_destroy(m);
        if (rc != 0)
            break;
    }
    rd_kafka_assign(rk, NULL);
    return rc;
}

typedef struct restore_ctx {
    cstl_cmd_handler *h;
    cstl_hpart *pt;
    const cstl_aggregate_type *type;
    cstl_strmap *snaps; /* aggregate id -> json_t snapshot (owned) */
    int64_t events, decoded;
} restore_ctx;

static void json_free(void *v)
{
    json_decref(v);
}

static int on_snapshot(void *ud, const rd_kafka_message_t *m, cstl_error *err)
{
    restore_ctx *r = ud;
    (void)err;
    if (m->key == NULL || m->key_len == 0 || m->key_len > 255)
        return 0;
    char id[256];
    memcpy(id, m->key, m->key_len);
    id[m->key_len] = '\0';
    if (m->payload == NULL) { /* a tombstone: no snapshot */
        cstl_strmap_remove(r->snaps, id);
        return 0;
    }
    json_t *j = json_loadb(m->payload, m->len, 0, NULL);
    if (j == NULL || !json_is_integer(json_object_get(j, "version")) ||
        json_object_get(j, "state") == NULL) {
        json_decref(j);
        cstl_log(CSTL_LOG_WARN, "commands", "ignoring malformed snapshot of \"%s\" at offset %lld",
                 id, (long long)m->offset);
        return 0;
    }
    cstl_strmap_put(r->snaps, id, j);
    return 0;
}

/* The aggregate id's entry, made from its snapshot (or empty) on first sight. */
static cstl_hagg *agg_for(restore_ctx *r, const char *id)
{
    cstl_hagg *a = cstl_strmap_get(r->pt->aggs, id);
    if (a != NULL)
        return a;
    a = cstl_xcalloc(1, sizeof(*a));
    json_t *snap = cstl_strmap_take(r->snaps, id);
    if (snap != NULL) {
        cstl_error e;
        a->state = r->type->restore(json_object_get(snap, "state"), &e);
        if (a->state != NULL)
            a->version = json_integer_value(json_object_get(snap, "version"));
        else
            cstl_log(CSTL_LOG_WARN, "commands",
                     "ignoring snapshot of \"%s\" (replaying its events): %s", id, e.message);
        json_decref(snap);
    }
    if (a->state == NULL) {
        a->state = r->type->create();
        a->version = 0;
    }
    cstl_strmap_put(r->pt->aggs, id, a);
    return a;
}

static int on_event(void *ud, const rd_kafka_message_t *m, cstl_error *err)
{
    restore_ctx *r = ud;
    rd_kafka_headers_t *hdrs = NULL;
    cstl_event_headers eh;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        cstl_event_headers_parse(hdrs, &eh, err) != 0) {
        cstl_error_set(err, CSTL_EDECODE, "event at offset %lld of \"%s\" [%d] has invalid headers",
                       (long long)m->offset, r->h->ctx[r->pt->ctx].events, (int)r->pt->p);
        return CSTL_EDECODE;
    }
    r->events++;
    cstl_hagg *a = agg_for(r, eh.subject);
    if (eh.causation[0] != '\0')
        cstl_handler_remember(r->h, r->pt, eh.causation, eh.subject, eh.version, eh.time_us);
    if (eh.version <= a->version)
        return 0; /* covered by the snapshot */
    if (eh.version != a->version + 1)
        return cstl_error_set(err, CSTL_EDECODE,
                              "event at offset %lld has version %lld but \"%s\" is at version %lld",
                              (long long)m->offset, (long long)eh.version, eh.subject,
                              (long long)a->version);
    const cstl_schema_entry *entry = cstl_schema_catalog_find(cstl_schema_catalog_get(), eh.type);
    if (entry == NULL)
        return cstl_error_set(err, CSTL_EDECODE, "event at offset %lld has unknown type \"%s\"",
                              (long long)m->offset, eh.type);
    json_t *data = NULL;
    int rc = cstl_codec_decode_json(m->payload, m->len, entry, &data, err);
    if (rc != 0)
        return rc;
    char type[128];
    cstl_handler_short_name(entry->fullname, type, sizeof(type));
    cstl_event ev = {.type = type, .version = eh.version, .data = data};
    rc = r->type->evolve(a->state, &ev, err);
    json_decref(data);
    if (rc != 0)
        return rc;
    a->version = eh.version;
    r->decoded++;
    return 0;
}

int cstl_handler_restore(cstl_cmd_handler *h, cstl_hpart *pt, cstl_error *err)
{
    restore_ctx r = {.h = h, .pt = pt, .type = h->ctx[pt->ctx].type};
    r.snaps = cstl_strmap_new(json_free);
    int64_t t0 = cstl_handler_mono_us();
    int rc = read_to_end(h, h->ctx[pt->ctx].snapshots, pt->p, on_snapshot, &r, err);
    size_t nsnaps = cstl_strmap_len(r.snaps);
    if (rc == 0)
        rc = read_to_end(h, h->ctx[pt->ctx].events, pt->p, on_event, &r, err);
    /* Snapshots of aggregates with no event read (cannot happen with a consistent log, since a
     * snapshot commits with its events) still restore. */
    while (rc == 0 && cstl_strmap_len(r.snaps) > 0) {
        char id[256];
        snprintf(id, sizeof(id), "%s", cstl_strmap_oldest(r.snaps, NULL));
        agg_for(&r, id);
    }
    cstl_strmap_free(r.snaps);
    if (rc == 0)
        cstl_log_fields(CSTL_LOG_INFO, "commands",
                        json_pack("{s:s,s:i,s:I,s:I,s:I,s:I,s:f}", "context",
                                  h->ctx[pt->ctx].type->context, "partition", (int)pt->p,
                                  "aggregates", (json_int_t)cstl_strmap_len(pt->aggs), "snapshots",
                                  (json_int_t)nsnaps, "events", (json_int_t)r.events, "replayed",
                                  (json_int_t)r.decoded, "seconds",
                                  (double)(cstl_handler_mono_us() - t0) / 1e6),
                        "partition restored");
    return rc;
}
