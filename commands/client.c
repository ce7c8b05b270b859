/*
 * client.c - the command client (see client.h).
 *
 * Sending: the payload is encoded with the codec (which validates it against the command's
 * schema), wrapped in a CommandEnvelope and produced with the idempotent producer to
 * constellation.<context>.commands, partition murmur2(aggregate id) % the topic's partition count
 * (read from the cluster's metadata once per topic and cached). Nothing waits for the record: its
 * delivery report, served by the delivery thread's polls (or a sender's non-blocking one inside
 * the producer's send), moves the send on. A failed delivery finishes it (CSTL_EKAFKA); a
 * successful one starts its reply wait (a deadline in a heap) unless the reply came first.
 *
 * Replies: a reader thread owns a consumer assigned (no group membership) to the partition of
 * constellation.replies that murmur2(instance id) selects, from its end at the time the client
 * was made (read_committed). Every reply keyed by this instance is put in the recent-replies
 * cache (bounded: CSTL_CMD_CLIENT_RECENT_MAX entries, each kept at most an hour) and finishes the
 * sends waiting for its command id. A send registers as a waiter before it produces, so a fast
 * reply cannot be missed. Between two polls the reader finishes the sends whose deadline passed
 * (CSTL_ETIMEDOUT), so the wait costs no thread per send. Completions run with no lock held.
 *
 * The synchronous send is the asynchronous one plus a condition variable on the caller's stack.
 *
 * Locks: lock guards waiters, the deadline heap and recent; meta_lock guards the partition-count
 * cache. They are never nested. The producer is thread-safe and used without a lock.
 */
#include "commands/client.h"

#include "commands/envelope.h"
#include "commands/strmap.h"
#include "platform/codec.h"
#include "platform/events.h"
#include "platform/id.h"
#include "platform/kafka.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CSTL_CMD_CLIENT_RECENT_MAX 20000
#define CSTL_CMD_CLIENT_RECENT_US  (3600LL * 1000000)
#define REPLIES_TOPIC              "constellation.replies"
#define MAX_TOPICS                 16

#define READER_POLL_MS 50 /* longest sleep of the reader and delivery threads */
#define NOT_IN_HEAP    SIZE_MAX

/* One command sent with a reply or a delivery report still to come. Guarded by lock once
 * registered; owned by whoever takes it out of the waiters and the heap to finish it. */
typedef struct pending {
    struct pending *next; /* waiters for the same command id; lists being finished */
    struct cstl_cmd_client *client;
    char command_id[37];
    cstl_cmd_done_fn done;
    void *ud;
    int wait_ms;
    int want_reply;
    int delivered; /* the delivery report said appended: the reply wait runs */
    int replied;   /* the reply came (possibly before the delivery report) */
    cstl_cmd_reply reply;
    int64_t deadline_us; /* monotonic; set when delivered */
    size_t heap_index;   /* in the deadline heap, or NOT_IN_HEAP */
} pending;

typedef struct recent {
    cstl_cmd_reply reply;
    int64_t seen_us; /* monotonic */
} recent;

struct cstl_cmd_client {
    char *instance_id;
    int timeout_ms;
    cstl_kafka_conf *conf;

    cstl_kafka_producer *producer;

    pthread_mutex_t meta_lock;
    struct {
        char *topic;
        int32_t partitions;
    } topics[MAX_TOPICS];
    int n_topics;

    pthread_mutex_t lock;
    cstl_strmap *waiters; /* command id -> pending list awaiting a reply (not owned) */
    cstl_strmap *recent;  /* command id -> recent (owned) */
    pending **heap;       /* delivered commands awaiting a reply, by deadline */
    size_t heap_len, heap_cap;

    cstl_kafka_consumer *consumer;
    int32_t replies_partition;
    pthread_t reader, delivery;
    int reader_started, delivery_started;
    atomic_int stop;
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

const char *cstl_cmd_outcome_name(cstl_cmd_outcome outcome)
{
    switch (outcome) {
    case CSTL_CMD_ACCEPTED:
        return "accepted";
    case CSTL_CMD_DUPLICATE:
        return "duplicate";
    case CSTL_CMD_REJECTED:
        return "rejected";
    case CSTL_CMD_VERSION_MISMATCH:
        return "version_mismatch";
    case CSTL_CMD_INVALID:
        return "invalid";
    case CSTL_CMD_FAILED:
        return "failed";
    }
    return "unknown";
}

void cstl_cmd_id_from_key(const char *tenant_id, const char *key, char out[37])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        cstl_panic("out of memory for a sha-256 context");
    static const unsigned char zero = 0;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, tenant_id, strlen(tenant_id)) != 1 ||
        EVP_DigestUpdate(ctx, &zero, 1) != 1 || EVP_DigestUpdate(ctx, key, strlen(key)) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &len) != 1 || len != 32)
        cstl_panic("sha-256 failed");
    EVP_MD_CTX_free(ctx);
    cstl_uuid id;
    memcpy(id.bytes, md, 16);
    id.bytes[6] = (uint8_t)((id.bytes[6] & 0x0f) | 0x80); /* version 8 (RFC 9562 §5.8) */
    id.bytes[8] = (uint8_t)((id.bytes[8] & 0x3f) | 0x80); /* variant 10 */
    cstl_uuid_format(&id, out);
}

/* ---- the deadline heap (lock held) ---------------------------------------------------------- */

static bool heap_before(const pending *a, const pending *b)
{
    return a->deadline_us < b->deadline_us;
}

static void heap_set(cstl_cmd_client *c, size_t i, pending *p)
{
    c->heap[i] = p;
    p->heap_index = i;
}

static void heap_up(cstl_cmd_client *c, size_t i)
{
    pending *p = c->heap[i];
    while (i > 0 && heap_before(p, c->heap[(i - 1) / 2])) {
        heap_set(c, i, c->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(c, i, p);
}

static void heap_down(cstl_cmd_client *c, size_t i)
{
    pending *p = c->heap[i];
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= c->heap_len)
            break;
        if (k + 1 < c->heap_len && heap_before(c->heap[k + 1], c->heap[k]))
            k++;
        if (!heap_before(c->heap[k], p))
            break;
        heap_set(c, i, c->heap[k]);
        i = k;
    }
    heap_set(c, i, p);
}

static void heap_push(cstl_cmd_client *c, pending *p)
{
    if (c->heap_len == c->heap_cap) {
        c->heap_cap = c->heap_cap ? c->heap_cap * 2 : 256;
        c->heap = cstl_xrealloc(c->heap, c->heap_cap * sizeof(pending *));
    }
    heap_set(c, c->heap_len++, p);
    heap_up(c, p->heap_index);
}

static void heap_remove(cstl_cmd_client *c, pending *p)
{
    size_t i = p->heap_index;
    if (i == NOT_IN_HEAP)
        return;
    p->heap_index = NOT_IN_HEAP;
    pending *last = c->heap[--c->heap_len];
    if (i == c->heap_len)
        return;
    heap_set(c, i, last);
    heap_up(c, i);
    heap_down(c, last->heap_index);
}

/* ---- recent replies and waiters (lock held) ------------------------------------------------ */

static void trim_recent(cstl_cmd_client *c, int64_t now)
{
    void *v;
    while (cstl_strmap_oldest(c->recent, &v) != NULL) {
        recent *r = v;
        if (cstl_strmap_len(c->recent) <= CSTL_CMD_CLIENT_RECENT_MAX &&
            now - r->seen_us <= CSTL_CMD_CLIENT_RECENT_US)
            break;
        cstl_strmap_remove(c->recent, cstl_strmap_oldest(c->recent, NULL));
    }
}

/* Lock held. Removes p from the waiters of its command id, if still there. */
static void remove_waiter_locked(cstl_cmd_client *c, pending *p)
{
    pending *head = cstl_strmap_take(c->waiters, p->command_id);
    pending **pp = &head;
    while (*pp != NULL && *pp != p)
        pp = &(*pp)->next;
    if (*pp == p)
        *pp = p->next;
    if (head != NULL)
        cstl_strmap_put(c->waiters, p->command_id, head);
    p->next = NULL;
}

/* Calls p's completion (no lock held) and frees p. */
static void finish(pending *p, int rc, const cstl_cmd_reply *reply, const cstl_error *err)
{
    p->done(p->ud, rc, reply, err);
    free(p);
}

static void finish_timeout(pending *p)
{
    cstl_error err;
    cstl_error_set(&err, CSTL_ETIMEDOUT,
                   "no reply to command \"%s\" within %d ms (it was appended)", p->command_id,
                   p->wait_ms);
    finish(p, CSTL_ETIMEDOUT, NULL, &err);
}

static void deliver_reply(cstl_cmd_client *c, const cstl_cmd_reply *reply)
{
    int64_t now = mono_us();
    pthread_mutex_lock(&c->lock);
    /* A newer reply for the same id (a DUPLICATE after the ACCEPTED) moves to the young end. */
    cstl_strmap_remove(c->recent, reply->command_id);
    recent *r = cstl_xmalloc(sizeof(*r));
    r->reply = *reply;
    r->seen_us = now;
    cstl_strmap_put(c->recent, reply->command_id, r);
    trim_recent(c, now);
    /* Waiters whose delivery report came are finished here; the others keep the reply for it. */
    pending *ready = NULL;
    pending *w = cstl_strmap_take(c->waiters, reply->command_id);
    while (w != NULL) {
        pending *next = w->next;
        w->reply = *reply;
        w->replied = 1;
        w->next = NULL;
        if (w->delivered) {
            heap_remove(c, w);
            w->next = ready;
            ready = w;
        }
        w = next;
    }
    pthread_mutex_unlock(&c->lock);
    while (ready != NULL) {
        pending *next = ready->next;
        finish(ready, 0, &ready->reply, NULL);
        ready = next;
    }
}

/* Finishes with CSTL_ETIMEDOUT every waiter whose deadline is at or before now. Returns the time
 * to the next deadline in ms (at most max_ms). */
static int expire_waiters(cstl_cmd_client *c, int64_t now, int max_ms)
{
    pending *expired = NULL;
    pthread_mutex_lock(&c->lock);
    while (c->heap_len > 0 && c->heap[0]->deadline_us <= now) {
        pending *p = c->heap[0];
        heap_remove(c, p);
        remove_waiter_locked(c, p);
        p->next = expired;
        expired = p;
    }
    int64_t next_ms = c->heap_len > 0 ? (c->heap[0]->deadline_us - now + 999) / 1000 : max_ms;
    pthread_mutex_unlock(&c->lock);
    while (expired != NULL) {
        pending *next = expired->next;
        finish_timeout(expired);
        expired = next;
    }
    return next_ms < max_ms ? (int)next_ms : max_ms;
}

/* ---- reply reader and delivery reports ----------------------------------------------------- */

static void *reader_main(void *arg)
{
    cstl_cmd_client *c = arg;
    size_t idlen = strlen(c->instance_id);
    while (!atomic_load(&c->stop)) {
        int wait_ms = expire_waiters(c, mono_us(), READER_POLL_MS);
        rd_kafka_message_t *m = NULL;
        cstl_error err;
        int rc = cstl_kafka_consumer_poll(c->consumer, wait_ms, &m, &err);
        if (rc != 0 || m == NULL)
            continue; /* retriable consumer errors: librdkafka keeps trying */
        /* Other instances whose ids hash to the same partition: not ours. */
        if (m->key_len == idlen && memcmp(m->key, c->instance_id, idlen) == 0) {
            cstl_cmd_reply reply;
            if (cstl_cmd_reply_decode(m->payload, m->len, &reply, &err) == 0)
                deliver_reply(c, &reply);
        }
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

/* Serves the producer's delivery reports (and its error events) until the client stops. */
static void *delivery_main(void *arg)
{
    cstl_cmd_client *c = arg;
    while (!atomic_load(&c->stop))
        cstl_kafka_producer_poll(c->producer, READER_POLL_MS);
    return NULL;
}

/* ---- metadata ------------------------------------------------------------------------------ */

static int partition_count(cstl_cmd_client *c, const char *topic, int32_t *out, cstl_error *err)
{
    pthread_mutex_lock(&c->meta_lock);
    for (int i = 0; i < c->n_topics; i++) {
        if (strcmp(c->topics[i].topic, topic) == 0) {
            *out = c->topics[i].partitions;
            pthread_mutex_unlock(&c->meta_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&c->meta_lock);

    rd_kafka_t *rk = cstl_kafka_producer_handle(c->producer);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kr = rd_kafka_metadata(rk, 0, rkt, &md, c->timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (kr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        char ctx[300];
        snprintf(ctx, sizeof(ctx), "cannot read the metadata of \"%s\"", topic);
        return cstl_kafka_error_from_code(err, kr, ctx);
    }
    int32_t n = -1;
    int terr = 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic) == 0) {
            n = md->topics[i].partition_cnt;
            terr = md->topics[i].err;
        }
    }
    rd_kafka_metadata_destroy(md);
    if (n < 1 || terr != 0)
        return cstl_error_set(err, CSTL_ENOTFOUND, "topic \"%s\" does not exist", topic);
    pthread_mutex_lock(&c->meta_lock);
    if (c->n_topics < MAX_TOPICS) {
        c->topics[c->n_topics].topic = cstl_xstrdup(topic);
        c->topics[c->n_topics].partitions = n;
        c->n_topics++;
    }
    pthread_mutex_unlock(&c->meta_lock);
    *out = n;
    return 0;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

cstl_cmd_client *cstl_cmd_client_new(const cstl_cmd_client_options *opts, cstl_error *err)
{
    if (opts == NULL || opts->brokers == NULL || *opts->brokers == '\0') {
        cstl_error_set(err, CSTL_EINVAL, "command client needs the kafka brokers");
        return NULL;
    }
    if (opts->instance_id == NULL || *opts->instance_id == '\0' ||
        strlen(opts->instance_id) > CSTL_CMD_PRINCIPAL_MAX) {
        cstl_error_set(err, CSTL_EINVAL, "command client instance id must be 1-%d bytes",
                       CSTL_CMD_PRINCIPAL_MAX);
        return NULL;
    }
    cstl_cmd_client *c = cstl_xcalloc(1, sizeof(*c));
    c->instance_id = cstl_xstrdup(opts->instance_id);
    c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
    pthread_mutex_init(&c->meta_lock, NULL);
    pthread_mutex_init(&c->lock, NULL);
    c->waiters = cstl_strmap_new(NULL);
    c->recent = cstl_strmap_new(free);

    char client_id[200];
    snprintf(client_id, sizeof(client_id), "constellation-cmd-client-%s", opts->instance_id);
    c->conf = cstl_kafka_conf_new(opts->brokers, client_id, err);
    if (c->conf == NULL)
        goto fail;
    /* The producer's own configuration: a record not delivered within timeout_ms fails rather
     * than waits for librdkafka's default five minutes. */
    cstl_kafka_conf *pconf = cstl_kafka_conf_new(opts->brokers, client_id, err);
    if (pconf == NULL)
        goto fail;
    char tmo[32];
    snprintf(tmo, sizeof(tmo), "%d", c->timeout_ms);
    /* A command is one small record that someone waits for: linger 1 ms rather than the
     * producer default of 5. Concurrent sends still share requests (at most 5 in flight per
     * broker with idempotence, so records queue behind them); 0 made more, smaller requests and
     * measured slower on a loaded machine (docs/write-side.md, Latency). */
    if (cstl_kafka_conf_set(pconf, "linger.ms", "1", err) == 0 &&
        cstl_kafka_conf_set(pconf, "message.timeout.ms", tmo, err) == 0)
        c->producer = cstl_kafka_producer_new(pconf, err);
    cstl_kafka_conf_free(pconf);
    if (c->producer == NULL)
        goto fail;
    int32_t nreplies = 0;
    if (partition_count(c, REPLIES_TOPIC, &nreplies, err) != 0)
        goto fail;
    c->replies_partition =
        cstl_kafka_partition_for_key(c->instance_id, strlen(c->instance_id), nreplies);

    /* A group id is required by librdkafka; the consumer never joins it (manual assignment) and
     * never commits. */
    char group[200];
    snprintf(group, sizeof(group), "constellation-replies-%s", c->instance_id);
    /* Replies are written in transactions: with read_committed the broker may hold a fetch
     * until fetch.wait.max.ms even after the commit made records readable, so keep it short. */
    if (cstl_kafka_conf_set(c->conf, "fetch.wait.max.ms", "10", err) != 0)
        goto fail;
    c->consumer = cstl_kafka_consumer_new(c->conf, group, NULL, NULL, err);
    if (c->consumer == NULL)
        goto fail;
    /* Start at the end as of now, resolved here rather than by the broker later, so a command
     * sent as soon as this returns cannot have its reply skipped. */
    int64_t high = 0;
    int64_t until = mono_us() + (int64_t)c->timeout_ms * 1000;
    for (;;) {
        int wrc = cstl_kafka_consumer_watermarks(c->consumer, REPLIES_TOPIC, c->replies_partition,
                                                 NULL, &high, c->timeout_ms, err);
        if (wrc == 0)
            break;
        /* A new topic's leader may not be elected yet: retriable errors are retried. */
        if (!cstl_error_is_retriable(wrc) || mono_us() > until)
            goto fail;
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, REPLIES_TOPIC, c->replies_partition)->offset = high;
    int rc = cstl_kafka_consumer_assign(c->consumer, parts, err);
    rd_kafka_topic_partition_list_destroy(parts);
    if (rc != 0)
        goto fail;
    if (pthread_create(&c->delivery, NULL, delivery_main, c) != 0) {
        cstl_error_set(err, CSTL_EINTERNAL, "cannot start the delivery report thread");
        goto fail;
    }
    c->delivery_started = 1;
    if (pthread_create(&c->reader, NULL, reader_main, c) != 0) {
        cstl_error_set(err, CSTL_EINTERNAL, "cannot start the reply reader thread");
        goto fail;
    }
    c->reader_started = 1;
    return c;
fail:
    cstl_cmd_client_free(c);
    return NULL;
}

void cstl_cmd_client_free(cstl_cmd_client *c)
{
    if (c == NULL)
        return;
    atomic_store(&c->stop, 1);
    if (c->reader_started)
        pthread_join(c->reader, NULL);
    if (c->delivery_started)
        pthread_join(c->delivery, NULL);
    cstl_kafka_consumer_close(c->consumer, NULL);
    /* Every record gets its delivery report here (delivered, or failed by the purge), so every
     * pending send is then either finished or waiting for a reply that will not be read now. */
    cstl_kafka_producer_free(c->producer);
    c->producer = NULL;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        pending *p = c->heap_len > 0 ? c->heap[0] : NULL;
        if (p != NULL) {
            heap_remove(c, p);
            remove_waiter_locked(c, p);
        }
        pthread_mutex_unlock(&c->lock);
        if (p == NULL)
            break;
        finish_timeout(p);
    }
    cstl_kafka_conf_free(c->conf);
    for (int i = 0; i < c->n_topics; i++)
        free(c->topics[i].topic);
    cstl_strmap_free(c->waiters);
    cstl_strmap_free(c->recent);
    free(c->heap);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->meta_lock);
    free(c->instance_id);
    free(c);
}

/* ---- sending ------------------------------------------------------------------------------- */

/* The delivery report of a command: on whichever thread served the producer's reports (the
 * delivery thread, or a sender's non-blocking poll). */
static void on_delivery(void *opaque, const cstl_kafka_delivery *d)
{
    pending *p = opaque;
    cstl_cmd_client *c = p->client;
    if (d->code != 0) {
        if (p->want_reply) {
            pthread_mutex_lock(&c->lock);
            remove_waiter_locked(c, p);
            pthread_mutex_unlock(&c->lock);
        }
        /* A record that timed out in the producer was not appended: retriable, as any failure to
         * reach the log. */
        cstl_error e = d->error != NULL ? *d->error : (cstl_error){0};
        int code = d->code == CSTL_ETIMEDOUT ? CSTL_EKAFKA : d->code;
        if (d->error == NULL)
            cstl_error_set(&e, code, "command \"%s\" could not be appended", p->command_id);
        finish(p, code, NULL, &e);
        return;
    }
    if (!p->want_reply) {
        finish(p, 0, NULL, NULL);
        return;
    }
    pthread_mutex_lock(&c->lock);
    bool replied = p->replied != 0;
    if (!replied) {
        /* The wait for the reply starts once the command is in the log. */
        p->delivered = 1;
        p->deadline_us = mono_us() + (int64_t)p->wait_ms * 1000;
        heap_push(c, p);
    }
    pthread_mutex_unlock(&c->lock);
    if (replied)
        finish(p, 0, &p->reply, NULL);
}

/* Queues value for sending with p's delivery report. Returns 0 or the error of the producer. */
static int produce(cstl_cmd_client *c,
                   const char *topic,
                   int32_t partition,
                   const char *key,
                   const cstl_codec_buf *value,
                   pending *p,
                   cstl_error *err)
{
    int64_t deadline = mono_us() + (int64_t)c->timeout_ms * 1000;
    for (;;) {
        int rc = cstl_kafka_producer_send(c->producer, topic, partition, key, strlen(key),
                                          value->data, value->len, NULL, on_delivery, p, err);
        if (rc != CSTL_EKAFKA || mono_us() >= deadline)
            return rc;
        /* The local queue is full: the delivery thread drains it. */
        struct timespec pause = {0, 1000000L};
        nanosleep(&pause, NULL);
    }
}

static int check_request(const cstl_cmd_request *req, cstl_error *err)
{
    if (req == NULL || req->context == NULL || *req->context == '\0' || req->command_type == NULL ||
        *req->command_type == '\0')
        return cstl_error_set(err, CSTL_EINVAL, "command needs a context and a command type");
    if (req->command_id == NULL || !cstl_uuid_valid(req->command_id))
        return cstl_error_set(err, CSTL_EINVAL, "command id is not a uuid: \"%.40s\"",
                              req->command_id ? req->command_id : "");
    if (req->tenant_id == NULL || !cstl_uuid_valid(req->tenant_id))
        return cstl_error_set(err, CSTL_EINVAL, "tenant id is not a uuid: \"%.40s\"",
                              req->tenant_id ? req->tenant_id : "");
    if (req->aggregate_id == NULL || *req->aggregate_id == '\0' ||
        strlen(req->aggregate_id) > CSTL_CMD_AGGREGATE_MAX)
        return cstl_error_set(err, CSTL_EINVAL, "aggregate id must be 1-%d bytes",
                              CSTL_CMD_AGGREGATE_MAX);
    if (req->correlation_id != NULL && !cstl_uuid_valid(req->correlation_id))
        return cstl_error_set(err, CSTL_EINVAL, "correlation id is not a uuid: \"%.40s\"",
                              req->correlation_id);
    if (req->traceparent != NULL && !cstl_event_traceparent_valid(req->traceparent))
        return cstl_error_set(err, CSTL_EINVAL, "traceparent is invalid: \"%.60s\"",
                              req->traceparent);
    if (req->issued_by != NULL && strlen(req->issued_by) > CSTL_CMD_PRINCIPAL_MAX)
        return cstl_error_set(err, CSTL_EINVAL, "issued_by is longer than %d bytes",
                              CSTL_CMD_PRINCIPAL_MAX);
    if (req->expected_version < -1)
        return cstl_error_set(err, CSTL_EINVAL, "expected version is negative: %lld",
                              (long long)req->expected_version);
    if (req->payload == NULL || !json_is_object(req->payload))
        return cstl_error_set(err, CSTL_EINVAL, "command payload must be a json object");
    return 0;
}

int cstl_cmd_client_send_async(cstl_cmd_client *c,
                               const cstl_cmd_request *req,
                               int wait_ms,
                               cstl_cmd_done_fn done,
                               void *ud,
                               cstl_error *err)
{
    if (done == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "an asynchronous send needs a completion");
    int rc = check_request(req, err);
    if (rc != 0)
        return rc;
    char name[CSTL_CMD_TYPE_MAX + 64];
    snprintf(name, sizeof(name), "%s.%s", req->context, req->command_type);
    const cstl_schema_entry *entry = cstl_schema_catalog_find(cstl_schema_catalog_get(), name);
    char commands_dir[96];
    snprintf(commands_dir, sizeof(commands_dir), "schemas/%s/commands/", req->context);
    if (entry == NULL || strncmp(entry->path, commands_dir, strlen(commands_dir)) != 0)
        return cstl_error_set(err, CSTL_EINVAL, "unknown command type \"%s\"", name);

    cstl_codec_buf payload = {0}, value = {0};
    rc = cstl_codec_encode_json(entry, (json_t *)req->payload, &payload, err);
    if (rc != 0)
        goto out;
    cstl_cmd_envelope env = {0};
    snprintf(env.command_id, sizeof(env.command_id), "%s", req->command_id);
    snprintf(env.tenant_id, sizeof(env.tenant_id), "%s", req->tenant_id);
    snprintf(env.command_type, sizeof(env.command_type), "%s", entry->ce_type);
    snprintf(env.aggregate_id, sizeof(env.aggregate_id), "%s", req->aggregate_id);
    env.expected_version = req->expected_version;
    env.issued_at_us = wall_us();
    snprintf(env.issued_by, sizeof(env.issued_by), "%s", req->issued_by ? req->issued_by : "");
    snprintf(env.correlation_id, sizeof(env.correlation_id), "%s",
             req->correlation_id ? req->correlation_id : req->command_id);
    if (req->want_reply)
        snprintf(env.reply_to, sizeof(env.reply_to), "%s", c->instance_id);
    if (req->traceparent != NULL)
        snprintf(env.traceparent, sizeof(env.traceparent), "%s", req->traceparent);
    env.payload = payload.data;
    env.payload_len = payload.len;
    rc = cstl_cmd_envelope_encode(&env, &value, err);
    if (rc != 0)
        goto out;

    char topic[128];
    snprintf(topic, sizeof(topic), "constellation.%s.commands", req->context);
    int32_t n = 0;
    rc = partition_count(c, topic, &n, err);
    if (rc != 0)
        goto out;
    int32_t partition =
        cstl_kafka_partition_for_key(req->aggregate_id, strlen(req->aggregate_id), n);

    pending *p = cstl_xcalloc(1, sizeof(*p));
    p->client = c;
    snprintf(p->command_id, sizeof(p->command_id), "%s", req->command_id);
    p->done = done;
    p->ud = ud;
    p->wait_ms = wait_ms < 0 ? 0 : wait_ms;
    p->want_reply = req->want_reply != 0;
    p->heap_index = NOT_IN_HEAP;
    /* Registered before producing, so that a fast reply cannot be missed. */
    if (p->want_reply) {
        pthread_mutex_lock(&c->lock);
        p->next = cstl_strmap_take(c->waiters, p->command_id);
        cstl_strmap_put(c->waiters, p->command_id, p);
        pthread_mutex_unlock(&c->lock);
    }
    rc = produce(c, topic, partition, req->aggregate_id, &value, p, err);
    if (rc != 0) {
        /* not queued: no delivery report will come */
        if (p->want_reply) {
            pthread_mutex_lock(&c->lock);
            remove_waiter_locked(c, p);
            pthread_mutex_unlock(&c->lock);
        }
        free(p);
    }
out:
    cstl_codec_buf_free(&payload);
    cstl_codec_buf_free(&value);
    return rc;
}

/* A batch waiting for its outcomes: one lock and condition for all of its commands. */
typedef struct batch_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t pending;
} batch_wait;

typedef struct batch_slot {
    batch_wait *wait;
    cstl_cmd_result *result;
} batch_slot;

static void batch_done(void *ud, int rc, const cstl_cmd_reply *reply, const cstl_error *err)
{
    batch_slot *slot = ud;
    batch_wait *b = slot->wait;
    pthread_mutex_lock(&b->lock);
    slot->result->rc = rc;
    slot->result->has_reply = reply != NULL;
    if (reply != NULL)
        slot->result->reply = *reply;
    if (err != NULL)
        slot->result->err = *err;
    b->pending--;
    if (b->pending == 0)
        pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

void cstl_cmd_client_send_batch(cstl_cmd_client *c,
                                const cstl_cmd_request *reqs,
                                size_t n,
                                int wait_ms,
                                cstl_cmd_result *results)
{
    batch_wait b = {.pending = 0};
    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.cond, NULL);
    batch_slot one, *slots = n == 1 ? &one : cstl_xcalloc(n, sizeof(*slots));
    for (size_t i = 0; i < n; i++) {
        results[i] = (cstl_cmd_result){.rc = 0};
        slots[i] = (batch_slot){&b, &results[i]};
        pthread_mutex_lock(&b.lock);
        b.pending++;
        pthread_mutex_unlock(&b.lock);
        int rc = cstl_cmd_client_send_async(c, &reqs[i], wait_ms, batch_done, &slots[i],
                                            &results[i].err);
        if (rc != 0) { /* not queued: done is never called */
            pthread_mutex_lock(&b.lock);
            results[i].rc = rc;
            b.pending--;
            pthread_mutex_unlock(&b.lock);
        }
    }
    /* Bounded: each delivery report comes within the producer's message timeout, each reply or
     * its timeout within wait_ms after it. */
    pthread_mutex_lock(&b.lock);
    while (b.pending > 0)
        pthread_cond_wait(&b.cond, &b.lock);
    pthread_mutex_unlock(&b.lock);
    pthread_cond_destroy(&b.cond);
    pthread_mutex_destroy(&b.lock);
    if (slots != &one)
        free(slots);
}

int cstl_cmd_client_send(cstl_cmd_client *c,
                         const cstl_cmd_request *req,
                         int wait_ms,
                         cstl_cmd_reply *reply,
                         cstl_error *err)
{
    cstl_cmd_result r;
    cstl_cmd_client_send_batch(c, req, 1, wait_ms, &r);
    if (r.rc == 0 && reply != NULL && req->want_reply)
        *reply = r.reply;
    if (r.rc != 0 && err != NULL)
        *err = r.err;
    return r.rc;
}

int cstl_cmd_client_lookup(cstl_cmd_client *c, const char *command_id, cstl_cmd_reply *reply)
{
    pthread_mutex_lock(&c->lock);
    trim_recent(c, mono_us());
    recent *r = cstl_strmap_get(c->recent, command_id);
    if (r != NULL && reply != NULL)
        *reply = r->reply;
    pthread_mutex_unlock(&c->lock);
    return r != NULL ? 0 : CSTL_ENOTFOUND;
}
