/*
 * event_reader.c - a self-assigned, read_committed reader of whole events topics (see
 * event_reader.h). Catch-up: each partition is done when an end-of-partition event arrives or a
 * record at or past its end offset seen at creation has been read.
 */
#include "commands/event_reader.h"

#include "platform/codec.h"
#include "platform/kafka.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define READER_MAX_PARTITIONS 512

typedef struct reader_partition {
    char topic[128];
    char context[128];
    int32_t partition;
    int64_t end;
    bool done;
} reader_partition;

struct cstl_event_reader {
    cstl_kafka_consumer *consumer;
    reader_partition *parts;
    int n_parts;
    atomic_bool caught_up;
    long skipped;
};

static void
mark_done(cstl_event_reader *r, const char *topic, int32_t partition, int64_t next_offset, bool eof)
{
    bool all = true;
    for (int i = 0; i < r->n_parts; i++) {
        reader_partition *p = &r->parts[i];
        if (!p->done && p->partition == partition && strcmp(p->topic, topic) == 0 &&
            (eof || next_offset >= p->end))
            p->done = true;
        all = all && p->done;
    }
    if (all)
        atomic_store(&r->caught_up, true);
}

static const reader_partition *
find_partition(const cstl_event_reader *r, const char *topic, int32_t partition)
{
    for (int i = 0; i < r->n_parts; i++)
        if (r->parts[i].partition == partition && strcmp(r->parts[i].topic, topic) == 0)
            return &r->parts[i];
    return NULL;
}

/* Reads the partition count and end offsets of one context's events topic. */
static int add_topic(cstl_event_reader *r,
                     const char *context,
                     int timeout_ms,
                     rd_kafka_topic_partition_list_t *assign,
                     cstl_error *err)
{
    char name[128];
    if (strchr(context, '.') != NULL)
        snprintf(name, sizeof(name), "%s", context); /* a whole topic name */
    else
        snprintf(name, sizeof(name), "constellation.%s.events", context);
    rd_kafka_t *rk = cstl_kafka_consumer_handle(r->consumer);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, name, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        return cstl_kafka_error_from_code(err, kerr, "cannot read the topic metadata");
    int n = 0;
    if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
        n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    if (n < 1)
        return cstl_error_set(err, CSTL_ENOTFOUND,
                              "topic \"%s\" does not exist (run `constellation topics create`)",
                              name);
    for (int32_t p = 0; p < n; p++) {
        if (r->n_parts >= READER_MAX_PARTITIONS)
            return cstl_error_set(err, CSTL_ETOOBIG, "more than %d partitions to read",
                                  READER_MAX_PARTITIONS);
        int64_t low = 0, high = 0;
        int rc;
        /* Right after the topics were created their leaders may not be known yet. */
        for (int waited = 0;; waited += 200) {
            rc = cstl_kafka_consumer_watermarks(r->consumer, name, p, &low, &high, timeout_ms, err);
            if (rc == 0 || !cstl_error_is_retriable(rc) || waited >= timeout_ms)
                break;
            struct timespec pause = {0, 200L * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
        if (rc != 0)
            return rc;
        reader_partition *rp = &r->parts[r->n_parts++];
        snprintf(rp->topic, sizeof(rp->topic), "%s", name);
        snprintf(rp->context, sizeof(rp->context), "%s", context);
        rp->partition = p;
        rp->end = high;
        rp->done = high <= low;
        rd_kafka_topic_partition_list_add(assign, name, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    return 0;
}

cstl_event_reader *cstl_event_reader_new(const char *brokers,
                                         const char *client_id,
                                         const char *const *contexts,
                                         size_t n,
                                         int timeout_ms,
                                         cstl_error *err)
{
    cstl_event_reader *r = cstl_xcalloc(1, sizeof(*r));
    r->parts = cstl_xcalloc(READER_MAX_PARTITIONS, sizeof(*r->parts));
    if (timeout_ms <= 0)
        timeout_ms = 10000;
    cstl_kafka_conf *conf = cstl_kafka_conf_new(brokers, client_id, err);
    /* Never joins a group: the id is only there because librdkafka wants one for a consumer. */
    if (conf == NULL || cstl_kafka_conf_set(conf, "enable.partition.eof", "true", err) != 0 ||
        cstl_kafka_conf_set(conf, "fetch.wait.max.ms", "50", err) != 0 ||
        (r->consumer = cstl_kafka_consumer_new(conf, client_id, NULL, NULL, err)) == NULL) {
        cstl_kafka_conf_free(conf);
        cstl_event_reader_free(r);
        return NULL;
    }
    cstl_kafka_conf_free(conf);
    rd_kafka_topic_partition_list_t *assign = rd_kafka_topic_partition_list_new(32);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = add_topic(r, contexts[i], timeout_ms, assign, err);
    if (rc == 0)
        rc = cstl_kafka_consumer_assign(r->consumer, assign, err);
    rd_kafka_topic_partition_list_destroy(assign);
    if (rc != 0) {
        cstl_event_reader_free(r);
        return NULL;
    }
    mark_done(r, "", -1, 0, false); /* every partition may be empty */
    return r;
}

static bool
handle(cstl_event_reader *r, const rd_kafka_message_t *m, cstl_event_reader_fn fn, void *ud)
{
    const reader_partition *p = find_partition(r, rd_kafka_topic_name(m->rkt), m->partition);
    rd_kafka_headers_t *hdrs = NULL;
    cstl_event_headers h;
    const cstl_schema_entry *writer = NULL;
    json_t *data = NULL;
    /* A whole topic that is not an events topic (heartbeats) carries fewer headers: its records
     * are read without them. */
    bool events = p != NULL && strchr(p->context, '.') == NULL;
    memset(&h, 0, sizeof(h));
    if (p != NULL && !events && m->payload == NULL && m->key_len > 0) {
        /* a tombstone of a compacted topic: the key's earlier records are void */
        data = json_pack("{s:s%}", "key", (const char *)m->key, m->key_len);
        if (data == NULL) {
            r->skipped++;
            return false;
        }
        fn(ud, p->context, CSTL_EVENT_READER_TOMBSTONE, data, &h);
        json_decref(data);
        return true;
    }
    if (p == NULL ||
        (events && (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
                    cstl_event_headers_parse(hdrs, &h, NULL) != 0)) ||
        cstl_codec_writer(m->payload, m->len, &writer, NULL) != 0 ||
        cstl_codec_decode_json(m->payload, m->len, NULL, &data, NULL) != 0) {
        json_decref(data);
        r->skipped++;
        return false;
    }
    const char *dot = strrchr(writer->fullname, '.');
    fn(ud, p->context, dot ? dot + 1 : writer->fullname, data, &h);
    json_decref(data);
    return true;
}

int cstl_event_reader_poll(cstl_event_reader *r, int timeout_ms, cstl_event_reader_fn fn, void *ud)
{
    rd_kafka_t *rk = cstl_kafka_consumer_handle(r->consumer);
    int handled = 0;
    /* Drain what is there, waiting only for the first record. */
    for (int wait = timeout_ms; handled < 10000; wait = 0) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, wait);
        if (m == NULL)
            break;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            mark_done(r, rd_kafka_topic_name(m->rkt), m->partition, m->offset, true);
        } else if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (handle(r, m, fn, ud))
                handled++;
            if (!atomic_load(&r->caught_up))
                mark_done(r, rd_kafka_topic_name(m->rkt), m->partition, m->offset + 1, false);
        } else if (rd_kafka_message_errstr(m) != NULL && m->err == RD_KAFKA_RESP_ERR__FATAL) {
            rd_kafka_message_destroy(m);
            return CSTL_EKAFKA_FATAL;
        }
        rd_kafka_message_destroy(m);
    }
    return handled;
}

bool cstl_event_reader_caught_up(const cstl_event_reader *r)
{
    return atomic_load(&r->caught_up);
}

long cstl_event_reader_skipped(const cstl_event_reader *r)
{
    return r->skipped;
}

void cstl_event_reader_free(cstl_event_reader *r)
{
    if (r == NULL)
        return;
    if (r->consumer != NULL)
        cstl_kafka_consumer_close(r->consumer, NULL);
    free(r->parts);
    free(r);
}
