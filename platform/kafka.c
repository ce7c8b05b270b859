/*
 * kafka.c - Kafka configuration, error classification, the key partitioner and the producers
 * (idempotent and transactional) over librdkafka. See kafka.h.
 *
 * Invariants: every producer is idempotent (enable.idempotence=true implies acks=all and at most
 * 5 requests in flight, so retries never reorder or duplicate). Delivery reports are served by
 * rd_kafka_poll/flush/commit on the calling thread; each record sent with a callback or waited on
 * carries a heap "slot" as its per-message opaque, freed by the delivery report. librdkafka's log
 * callback runs on its internal threads and only calls cstl_log, which is thread-safe.
 */
#include "platform/kafka_internal.h"
#include "platform/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------------------------------
 * Errors
 */

static bool is_fenced_code(rd_kafka_resp_err_t code)
{
    return code == RD_KAFKA_RESP_ERR__FENCED || code == RD_KAFKA_RESP_ERR_PRODUCER_FENCED ||
           code == RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH;
}

static int code_class(rd_kafka_resp_err_t code)
{
    if (is_fenced_code(code))
        return CSTL_EFENCED;
    switch (code) {
    case RD_KAFKA_RESP_ERR__FATAL:
        return CSTL_EKAFKA_FATAL;
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
        return CSTL_ETIMEDOUT;
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
        return CSTL_ENOTFOUND;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
        return CSTL_ETOOBIG;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
        return CSTL_EFORBIDDEN;
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR__CONFLICT:
    case RD_KAFKA_RESP_ERR__STATE:
    case RD_KAFKA_RESP_ERR__NOT_CONFIGURED:
    case RD_KAFKA_RESP_ERR_INVALID_PARTITIONS:
    case RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR:
    case RD_KAFKA_RESP_ERR_INVALID_CONFIG:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
        return CSTL_EINVAL;
    default:
        return CSTL_EKAFKA;
    }
}

static int
fill(cstl_error *err, int code, rd_kafka_resp_err_t kcode, const char *context, const char *kmsg)
{
    if (err == NULL)
        return code;
    cstl_error_set(err, code, "%s: %s", context ? context : "kafka", kmsg ? kmsg : "");
    cstl_error_detail(err, "kafka error %s (%d)", rd_kafka_err2name(kcode), (int)kcode);
    err->origin = CSTL_ORIGIN_KAFKA;
    err->origin_code = (int)kcode;
    return code;
}

int cstl_kafka_error_from_code(cstl_error *err, rd_kafka_resp_err_t code, const char *context)
{
    return fill(err, code_class(code), code, context, rd_kafka_err2str(code));
}

int cstl_kafka_error_from(cstl_error *err, const rd_kafka_error_t *kerr, const char *context)
{
    rd_kafka_resp_err_t kcode = rd_kafka_error_code(kerr);
    int code;
    /* Fencing first: librdkafka reports it as fatal, and the caller must know it lost its id. */
    if (is_fenced_code(kcode))
        code = CSTL_EFENCED;
    else if (rd_kafka_error_is_fatal(kerr))
        code = CSTL_EKAFKA_FATAL;
    else if (rd_kafka_error_txn_requires_abort(kerr))
        code = CSTL_EKAFKA_ABORT;
    else if (rd_kafka_error_is_retriable(kerr))
        code = code_class(kcode) == CSTL_ETIMEDOUT ? CSTL_ETIMEDOUT : CSTL_EKAFKA;
    else
        code = code_class(kcode);
    return fill(err, code, kcode, context, rd_kafka_error_string(kerr));
}

int cstl_kafka_error_take(cstl_error *err, rd_kafka_error_t *kerr, const char *context)
{
    if (kerr == NULL)
        return 0;
    int code = cstl_kafka_error_from(err, kerr, context);
    rd_kafka_error_destroy(kerr);
    return code;
}

int cstl_kafka_error_from_handle(cstl_error *err,
                                 rd_kafka_t *rk,
                                 rd_kafka_resp_err_t code,
                                 const char *context)
{
    if (code == RD_KAFKA_RESP_ERR__FATAL && rk != NULL) {
        char msg[256];
        rd_kafka_resp_err_t real = rd_kafka_fatal_error(rk, msg, sizeof(msg));
        if (real != RD_KAFKA_RESP_ERR_NO_ERROR) {
            int c = is_fenced_code(real) ? CSTL_EFENCED : CSTL_EKAFKA_FATAL;
            return fill(err, c, real, context, msg);
        }
    }
    return cstl_kafka_error_from_code(err, code, context);
}

/* ---------------------------------------------------------------------------------------------
 * Configuration
 */

typedef struct conf_pair {
    char *key;
    char *value;
} conf_pair;

struct cstl_kafka_conf {
    rd_kafka_conf_t *base; /* bootstrap.servers, client.id, callbacks, and every extra setting */
    conf_pair *extra;      /* extra settings, in order, re-applied after a client's defaults */
    size_t extra_len;
};

static cstl_log_level syslog_to_level(int level)
{
    if (level <= 3)
        return CSTL_LOG_ERROR;
    if (level == 4)
        return CSTL_LOG_WARN;
    if (level <= 6)
        return CSTL_LOG_INFO;
    return CSTL_LOG_DEBUG;
}

/* Runs on librdkafka's threads. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    cstl_log_level lvl = syslog_to_level(level);
    if (!cstl_log_enabled(lvl))
        return;
    json_t *fields = json_object();
    json_object_set_new(fields, "facility", json_string(fac ? fac : ""));
    if (rk != NULL)
        json_object_set_new(fields, "client", json_string(rd_kafka_name(rk)));
    cstl_log_fields(lvl, "kafka", fields, "%s", buf ? buf : "");
}

/* Runs on the thread that polls the handle. */
static void on_error(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    (void)opaque;
    bool fatal = code == RD_KAFKA_RESP_ERR__FATAL;
    json_t *fields = json_object();
    json_object_set_new(fields, "client", json_string(rd_kafka_name(rk)));
    json_object_set_new(fields, "kafka_error", json_string(rd_kafka_err2name(code)));
    json_object_set_new(fields, "fatal", json_boolean(fatal));
    cstl_log_fields(fatal ? CSTL_LOG_ERROR : CSTL_LOG_WARN, "kafka", fields, "%s",
                    reason ? reason : rd_kafka_err2str(code));
}

static int conf_apply(rd_kafka_conf_t *rc, const char *key, const char *value, cstl_error *err)
{
    char errstr[512];
    if (rd_kafka_conf_set(rc, key, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        cstl_error_set(err, CSTL_ECONFIG, "invalid kafka setting \"%s\" = \"%s\"", key, value);
        cstl_error_detail(err, "%s", errstr);
        return CSTL_ECONFIG;
    }
    return 0;
}

cstl_kafka_conf *cstl_kafka_conf_new(const char *brokers, const char *client_id, cstl_error *err)
{
    if (brokers == NULL || *brokers == '\0') {
        cstl_error_set(err, CSTL_EINVAL, "kafka brokers are not set");
        return NULL;
    }
    if (client_id == NULL || *client_id == '\0') {
        cstl_error_set(err, CSTL_EINVAL, "kafka client id is not set");
        return NULL;
    }
    cstl_kafka_conf *conf = cstl_xcalloc(1, sizeof(*conf));
    conf->base = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf->base, on_log);
    rd_kafka_conf_set_error_cb(conf->base, on_error);
    if (conf_apply(conf->base, "bootstrap.servers", brokers, err) != 0 ||
        conf_apply(conf->base, "client.id", client_id, err) != 0) {
        cstl_kafka_conf_free(conf);
        return NULL;
    }
    return conf;
}

int cstl_kafka_conf_set(cstl_kafka_conf *conf, const char *key, const char *value, cstl_error *err)
{
    if (conf == NULL || key == NULL || *key == '\0' || value == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "kafka setting needs a key and a value");
    if (strcmp(key, "transactional.id") == 0)
        return cstl_error_set(err, CSTL_ECONFIG,
                              "kafka setting \"%s\" is set by the transactional producer", key);
    int rc = conf_apply(conf->base, key, value, err);
    if (rc != 0)
        return rc;
    conf->extra = cstl_xrealloc(conf->extra, (conf->extra_len + 1) * sizeof(*conf->extra));
    conf->extra[conf->extra_len].key = cstl_xstrdup(key);
    conf->extra[conf->extra_len].value = cstl_xstrdup(value);
    conf->extra_len++;
    return 0;
}

void cstl_kafka_conf_free(cstl_kafka_conf *conf)
{
    if (conf == NULL)
        return;
    for (size_t i = 0; i < conf->extra_len; i++) {
        free(conf->extra[i].key);
        free(conf->extra[i].value);
    }
    free(conf->extra);
    if (conf->base != NULL)
        rd_kafka_conf_destroy(conf->base);
    free(conf);
}

rd_kafka_conf_t *
cstl_kafka_conf_build(const cstl_kafka_conf *conf, const char *const *defaults, cstl_error *err)
{
    if (conf == NULL) {
        cstl_error_set(err, CSTL_EINVAL, "kafka configuration is missing");
        return NULL;
    }
    rd_kafka_conf_t *rc = rd_kafka_conf_dup(conf->base);
    for (size_t i = 0; defaults != NULL && defaults[i] != NULL; i += 2) {
        if (conf_apply(rc, defaults[i], defaults[i + 1], err) != 0)
            goto fail;
    }
    for (size_t i = 0; i < conf->extra_len; i++) {
        if (conf_apply(rc, conf->extra[i].key, conf->extra[i].value, err) != 0)
            goto fail;
    }
    return rc;
fail:
    rd_kafka_conf_destroy(rc);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Partitioner
 */

/* murmur2 as in Kafka's org.apache.kafka.common.utils.Utils.murmur2: 32-bit, seed 0x9747b28c,
 * little-endian 4-byte blocks, unsigned arithmetic standing in for Java's wrapping int. */
static uint32_t murmur2(const unsigned char *data, size_t len)
{
    const uint32_t m = 0x5bd1e995u;
    const int r = 24;
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    size_t blocks = len / 4;
    for (size_t i = 0; i < blocks; i++) {
        const unsigned char *b = data + i * 4;
        uint32_t k =
            (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const unsigned char *tail = data + blocks * 4;
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)tail[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)tail[1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)tail[0];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

int32_t cstl_kafka_partition_for_key(const void *key, size_t len, int32_t partitions)
{
    if (partitions < 1)
        return -1;
    static const unsigned char empty[1] = {0};
    uint32_t h = murmur2(key != NULL ? key : empty, key != NULL ? len : 0);
    return (int32_t)((h & 0x7fffffffu) % (uint32_t)partitions);
}

/* ---------------------------------------------------------------------------------------------
 * Producers
 */

struct cstl_kafka_producer {
    rd_kafka_t *rk;
    bool transactional;
    int pending_code; /* first failed delivery without a callback since the last flush */
    cstl_error pending_error;
};

/* Per-record state for a callback or a waiter. */
typedef struct delivery_slot {
    cstl_kafka_delivery_cb cb;
    void *opaque;
    bool waiting; /* a send_wait caller is polling for this slot */
    bool done;
    bool abandoned; /* the waiter timed out: the report frees the slot */
    int code;
    cstl_error error;
    int32_t partition;
    int64_t offset;
} delivery_slot;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    cstl_kafka_producer *p = opaque;
    delivery_slot *slot = msg->_private;
    cstl_error e;
    int code = 0;
    if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        char context[300];
        snprintf(context, sizeof(context), "cannot deliver record to \"%s\" [%d]",
                 msg->rkt ? rd_kafka_topic_name(msg->rkt) : "", (int)msg->partition);
        code = cstl_kafka_error_from_handle(&e, rk, msg->err, context);
    }
    if (slot == NULL) {
        if (code != 0 && p->pending_code == 0) {
            p->pending_code = code;
            p->pending_error = e;
        }
        return;
    }
    if (slot->cb != NULL) {
        cstl_kafka_delivery d = {
            .topic = msg->rkt ? rd_kafka_topic_name(msg->rkt) : "",
            .partition = msg->partition,
            .offset = code == 0 ? msg->offset : -1,
            .code = code,
            .error = code == 0 ? NULL : &e,
        };
        slot->cb(slot->opaque, &d);
    }
    if (slot->waiting && !slot->abandoned) {
        slot->done = true;
        slot->code = code;
        if (code != 0)
            slot->error = e;
        slot->partition = msg->partition;
        slot->offset = msg->offset;
        return; /* the waiter frees it */
    }
    free(slot);
}

static cstl_kafka_producer *
producer_new(const cstl_kafka_conf *conf, const char *txn_id, cstl_error *err)
{
    /* acks=all with idempotence: a record is acknowledged once every in-sync replica has it, and
     * retries can neither duplicate nor reorder it. murmur2_random matches Java's partitioner for
     * keyed records. */
    const char *defaults[] = {
        "enable.idempotence",
        "true",
        "acks",
        "all",
        "partitioner",
        "murmur2_random",
        "linger.ms",
        "5",
        /* A crashed owner's open transaction blocks read_committed readers of its partitions
         * until this timeout, unless a successor fences it first (which it does on start). */
        txn_id != NULL ? "transaction.timeout.ms" : NULL,
        "60000",
        NULL,
    };
    rd_kafka_conf_t *rc = cstl_kafka_conf_build(conf, defaults, err);
    if (rc == NULL)
        return NULL;
    if (txn_id != NULL && conf_apply(rc, "transactional.id", txn_id, err) != 0) {
        rd_kafka_conf_destroy(rc);
        return NULL;
    }
    cstl_kafka_producer *p = cstl_xcalloc(1, sizeof(*p));
    p->transactional = txn_id != NULL;
    rd_kafka_conf_set_dr_msg_cb(rc, on_delivery);
    rd_kafka_conf_set_opaque(rc, p);
    char errstr[512];
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, errstr, sizeof(errstr));
    if (p->rk == NULL) {
        rd_kafka_conf_destroy(rc);
        free(p);
        cstl_error_set(err, CSTL_ECONFIG, "cannot create kafka producer: %s", errstr);
        return NULL;
    }
    return p;
}

cstl_kafka_producer *cstl_kafka_producer_new(const cstl_kafka_conf *conf, cstl_error *err)
{
    return producer_new(conf, NULL, err);
}

cstl_kafka_producer *cstl_kafka_txn_producer_new(const cstl_kafka_conf *conf,
                                                 const char *transactional_id,
                                                 cstl_error *err)
{
    if (transactional_id == NULL || *transactional_id == '\0') {
        cstl_error_set(err, CSTL_EINVAL, "transactional id is not set");
        return NULL;
    }
    return producer_new(conf, transactional_id, err);
}

static int send_slot(cstl_kafka_producer *p,
                     const char *topic,
                     int32_t partition,
                     const void *key,
                     size_t key_len,
                     const void *value,
                     size_t value_len,
                     rd_kafka_headers_t *headers,
                     delivery_slot *slot,
                     cstl_error *err)
{
    if (p == NULL || topic == NULL || *topic == '\0')
        return cstl_error_set(err, CSTL_EINVAL, "kafka send needs a producer and a topic");
    if (partition < 0 && partition != CSTL_KAFKA_PARTITION_UA)
        return cstl_error_set(err, CSTL_EINVAL, "invalid partition \"%d\"", (int)partition);
    rd_kafka_resp_err_t rc;
    /* librdkafka's value argument is not const; RD_KAFKA_MSG_F_COPY means it is only read. */
    void *mutable_value = (void *)(uintptr_t)value;
    /* RD_KAFKA_V_HEADERS must not be given NULL headers. */
    if (headers != NULL)
        rc = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, key_len),
            RD_KAFKA_V_VALUE(mutable_value, value_len), RD_KAFKA_V_HEADERS(headers),
            RD_KAFKA_V_OPAQUE(slot), RD_KAFKA_V_END);
    else
        rc = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, key_len),
            RD_KAFKA_V_VALUE(mutable_value, value_len), RD_KAFKA_V_OPAQUE(slot), RD_KAFKA_V_END);
    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR) {
        char context[300];
        snprintf(context, sizeof(context), "cannot send record to \"%s\"", topic);
        int code = rc == RD_KAFKA_RESP_ERR__QUEUE_FULL
                       ? fill(err, CSTL_EKAFKA, rc, context, rd_kafka_err2str(rc))
                       : cstl_kafka_error_from_handle(err, p->rk, rc, context);
        return code;
    }
    rd_kafka_poll(p->rk, 0); /* serve delivery reports and error events as we go */
    return 0;
}

int cstl_kafka_producer_send(cstl_kafka_producer *p,
                             const char *topic,
                             int32_t partition,
                             const void *key,
                             size_t key_len,
                             const void *value,
                             size_t value_len,
                             rd_kafka_headers_t *headers,
                             cstl_kafka_delivery_cb cb,
                             void *opaque,
                             cstl_error *err)
{
    delivery_slot *slot = NULL;
    if (cb != NULL) {
        slot = cstl_xcalloc(1, sizeof(*slot));
        slot->cb = cb;
        slot->opaque = opaque;
    }
    int rc = send_slot(p, topic, partition, key, key_len, value, value_len, headers, slot, err);
    if (rc != 0)
        free(slot);
    return rc;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cstl_kafka_producer_send_wait(cstl_kafka_producer *p,
                                  const char *topic,
                                  int32_t partition,
                                  const void *key,
                                  size_t key_len,
                                  const void *value,
                                  size_t value_len,
                                  rd_kafka_headers_t *headers,
                                  int timeout_ms,
                                  int32_t *partition_out,
                                  int64_t *offset_out,
                                  cstl_error *err)
{
    delivery_slot *slot = cstl_xcalloc(1, sizeof(*slot));
    slot->waiting = true;
    int rc = send_slot(p, topic, partition, key, key_len, value, value_len, headers, slot, err);
    if (rc != 0) {
        free(slot);
        return rc;
    }
    int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    while (!slot->done) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        rd_kafka_poll(p->rk, left > 100 ? 100 : (int)left);
    }
    if (!slot->done) {
        slot->abandoned = true; /* freed by its delivery report */
        return cstl_error_set(err, CSTL_ETIMEDOUT,
                              "no delivery report for record to \"%s\" within %d ms", topic,
                              timeout_ms);
    }
    rc = slot->code;
    if (rc != 0) {
        if (err != NULL)
            *err = slot->error;
    } else {
        if (partition_out != NULL)
            *partition_out = slot->partition;
        if (offset_out != NULL)
            *offset_out = slot->offset;
    }
    free(slot);
    return rc;
}

int cstl_kafka_producer_poll(cstl_kafka_producer *p, int timeout_ms)
{
    return p == NULL ? 0 : rd_kafka_poll(p->rk, timeout_ms);
}

static int take_pending(cstl_kafka_producer *p, cstl_error *err)
{
    int rc = p->pending_code;
    if (rc != 0) {
        if (err != NULL)
            *err = p->pending_error;
        p->pending_code = 0;
        cstl_error_clear(&p->pending_error);
    }
    return rc;
}

int cstl_kafka_producer_flush(cstl_kafka_producer *p, int timeout_ms, cstl_error *err)
{
    if (p == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "kafka flush needs a producer");
    rd_kafka_resp_err_t rc = rd_kafka_flush(p->rk, timeout_ms);
    if (rc == RD_KAFKA_RESP_ERR__TIMED_OUT)
        return cstl_error_set(err, CSTL_ETIMEDOUT, "%d records still undelivered after %d ms",
                              rd_kafka_outq_len(p->rk), timeout_ms);
    return take_pending(p, err);
}

static int need_txn(cstl_kafka_producer *p, cstl_error *err, const char *what)
{
    if (p == NULL || !p->transactional)
        return cstl_error_set(err, CSTL_EINVAL, "cannot %s: not a transactional producer", what);
    return 0;
}

int cstl_kafka_producer_init_transactions(cstl_kafka_producer *p, int timeout_ms, cstl_error *err)
{
    int rc = need_txn(p, err, "initialize transactions");
    if (rc != 0)
        return rc;
    return cstl_kafka_error_take(err, rd_kafka_init_transactions(p->rk, timeout_ms),
                                 "cannot initialize transactions");
}

int cstl_kafka_producer_begin(cstl_kafka_producer *p, cstl_error *err)
{
    int rc = need_txn(p, err, "begin a transaction");
    if (rc != 0)
        return rc;
    return cstl_kafka_error_take(err, rd_kafka_begin_transaction(p->rk),
                                 "cannot begin transaction");
}

int cstl_kafka_producer_send_offsets(cstl_kafka_producer *p,
                                     const rd_kafka_topic_partition_list_t *offsets,
                                     const rd_kafka_consumer_group_metadata_t *group,
                                     int timeout_ms,
                                     cstl_error *err)
{
    int rc = need_txn(p, err, "send offsets to the transaction");
    if (rc != 0)
        return rc;
    if (offsets == NULL || group == NULL)
        return cstl_error_set(err, CSTL_EINVAL,
                              "sending offsets to a transaction needs offsets and a group");
    return cstl_kafka_error_take(
        err, rd_kafka_send_offsets_to_transaction(p->rk, offsets, group, timeout_ms),
        "cannot send offsets to transaction");
}

int cstl_kafka_producer_commit(cstl_kafka_producer *p, int timeout_ms, cstl_error *err)
{
    int rc = need_txn(p, err, "commit a transaction");
    if (rc != 0)
        return rc;
    rc = cstl_kafka_error_take(err, rd_kafka_commit_transaction(p->rk, timeout_ms),
                               "cannot commit transaction");
    /* Failed deliveries of the transaction's records are reported through the commit itself. */
    p->pending_code = 0;
    return rc;
}

int cstl_kafka_producer_abort(cstl_kafka_producer *p, int timeout_ms, cstl_error *err)
{
    int rc = need_txn(p, err, "abort a transaction");
    if (rc != 0)
        return rc;
    rc = cstl_kafka_error_take(err, rd_kafka_abort_transaction(p->rk, timeout_ms),
                               "cannot abort transaction");
    p->pending_code = 0;
    return rc;
}

rd_kafka_t *cstl_kafka_producer_handle(cstl_kafka_producer *p)
{
    return p == NULL ? NULL : p->rk;
}

void cstl_kafka_producer_free(cstl_kafka_producer *p)
{
    if (p == NULL)
        return;
    rd_kafka_flush(p->rk, 10000);
    /* Records still queued get a failed delivery report during destroy: their slots are freed by
     * on_delivery, which must therefore still find p alive. */
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    for (int i = 0; i < 50 && rd_kafka_outq_len(p->rk) > 0; i++)
        rd_kafka_poll(p->rk, 20);
    rd_kafka_destroy(p->rk);
    free(p);
}
