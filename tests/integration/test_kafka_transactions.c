/*
 * Integration tests for platform/kafka.c against the real broker at CONSTELLATION_KAFKA_BROKERS
 * (default 127.0.0.1:9092): transactions commit and abort, read_committed isolation (and that
 * read_uncommitted does see aborted records, so a broken isolation setting would be caught),
 * fencing of a zombie producer, and consumer offsets committed atomically with a transaction.
 * Every topic is named test.<pid>.<random>.* and deleted at the end.
 */
#include "platform/kafka.h"
#include "platform/log.h"

#include <cmocka.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 30000

static char prefix[64];
static char topic_txn[128], topic_in[128], topic_out[128], topic_fence[128];
static const char *brokers;
static cstl_kafka_conf *conf;
static cstl_kafka_admin *admin;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void check(int rc, const cstl_error *err, const char *what)
{
    if (rc != 0)
        fail_msg("%s: %s: %s (%s)", what, cstl_error_name(rc), err->message, err->detail);
}

static int setup(void **state)
{
    (void)state;
    cstl_log_set_level(CSTL_LOG_WARN);
    brokers = getenv("CONSTELLATION_KAFKA_BROKERS");
    if (brokers == NULL || *brokers == '\0')
        brokers = "127.0.0.1:9092";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    srand((unsigned)(ts.tv_nsec ^ getpid()));
    snprintf(prefix, sizeof(prefix), "test.%d.%08x", (int)getpid(), (unsigned)rand());
    snprintf(topic_txn, sizeof(topic_txn), "%s.txn", prefix);
    snprintf(topic_in, sizeof(topic_in), "%s.in", prefix);
    snprintf(topic_out, sizeof(topic_out), "%s.out", prefix);
    snprintf(topic_fence, sizeof(topic_fence), "%s.fence", prefix);
    cstl_error err;
    conf = cstl_kafka_conf_new(brokers, "test-kafka-transactions", &err);
    if (conf == NULL)
        return -1;
    admin = cstl_kafka_admin_new(conf, &err);
    if (admin == NULL)
        return -1;
    cstl_kafka_topic_spec specs[] = {
        {.name = topic_txn, .partitions = 1, .replication_factor = 1},
        {.name = topic_in, .partitions = 1, .replication_factor = 1},
        {.name = topic_out, .partitions = 1, .replication_factor = 1},
        {.name = topic_fence, .partitions = 1, .replication_factor = 1},
    };
    size_t created = 0;
    int rc = cstl_kafka_admin_create_topics(admin, specs, CSTL_ARRAY_LEN(specs), TIMEOUT_MS,
                                            &created, NULL, &err);
    if (rc != 0 || created != CSTL_ARRAY_LEN(specs)) {
        fprintf(stderr, "cannot create test topics on %s: %s\n", brokers, err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {topic_txn, topic_in, topic_out, topic_fence};
    cstl_error err;
    int rc = admin ? cstl_kafka_admin_delete_topics(admin, names, 4, TIMEOUT_MS, &err) : 0;
    if (rc != 0)
        fprintf(stderr, "cannot delete test topics: %s\n", err.message);
    cstl_kafka_admin_free(admin);
    cstl_kafka_conf_free(conf);
    return rc == 0 ? 0 : -1;
}

static void txn_id(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s.%s", prefix, name);
}

/* Consumes until want records arrived, then keeps polling for linger_ms to catch extra ones.
 * Stores values (up to max). Returns how many arrived. */
static size_t
consume(cstl_kafka_consumer *c, size_t want, size_t max, int linger_ms, char values[][64])
{
    size_t got = 0;
    int64_t deadline = now_ms() + TIMEOUT_MS;
    int64_t linger_until = -1;
    for (;;) {
        int64_t t = now_ms();
        if (t >= deadline || (linger_until >= 0 && t >= linger_until))
            break;
        if (got >= want && linger_until < 0)
            linger_until = t + linger_ms;
        rd_kafka_message_t *msg = NULL;
        cstl_error err;
        int rc = cstl_kafka_consumer_poll(c, 100, &msg, &err);
        if (rc != 0 && !cstl_error_is_retriable(rc))
            fail_msg("consumer failed: %s", err.message);
        if (msg == NULL)
            continue;
        if (got < max)
            snprintf(values[got], 64, "%.*s", (int)msg->len, (const char *)msg->payload);
        got++;
        rd_kafka_message_destroy(msg);
    }
    return got;
}

static void send_values(cstl_kafka_producer *p, const char *topic, const char *tag, int n)
{
    for (int i = 0; i < n; i++) {
        char value[64];
        cstl_error err;
        snprintf(value, sizeof(value), "%s-%d", tag, i);
        check(cstl_kafka_producer_send(p, topic, 0, tag, strlen(tag), value, strlen(value), NULL,
                                       NULL, NULL, &err),
              &err, "send");
    }
}

typedef struct hook_state {
    int assigned;
} hook_state;

static int on_rebalance(void *opaque,
                        cstl_kafka_consumer *c,
                        cstl_kafka_rebalance_event ev,
                        rd_kafka_topic_partition_list_t *parts)
{
    (void)c;
    hook_state *h = opaque;
    if (ev == CSTL_KAFKA_ASSIGNED)
        h->assigned += parts->cnt;
    return 0;
}

/* Committed, aborted, committed: read_committed sees exactly the committed records in order. */
static void test_commit_abort_isolation(void **state)
{
    (void)state;
    enum { N = 5, M = 4, K = 3 };
    cstl_error err;
    char id[160];
    txn_id(id, sizeof(id), "txn-isolation");
    cstl_kafka_producer *p = cstl_kafka_txn_producer_new(conf, id, &err);
    assert_non_null(p);
    check(cstl_kafka_producer_init_transactions(p, TIMEOUT_MS, &err), &err, "init");

    check(cstl_kafka_producer_begin(p, &err), &err, "begin 1");
    send_values(p, topic_txn, "first", N);
    check(cstl_kafka_producer_commit(p, TIMEOUT_MS, &err), &err, "commit 1");

    check(cstl_kafka_producer_begin(p, &err), &err, "begin 2");
    send_values(p, topic_txn, "aborted", M);
    /* Make sure the records reach the log before the abort (abort drops unsent records). */
    check(cstl_kafka_producer_flush(p, TIMEOUT_MS, &err), &err, "flush 2");
    check(cstl_kafka_producer_abort(p, TIMEOUT_MS, &err), &err, "abort 2");

    check(cstl_kafka_producer_begin(p, &err), &err, "begin 3");
    send_values(p, topic_txn, "third", K);
    check(cstl_kafka_producer_commit(p, TIMEOUT_MS, &err), &err, "commit 3");
    cstl_kafka_producer_free(p);

    /* read_committed, through a group subscription and the rebalance hook */
    char group[160];
    snprintf(group, sizeof(group), "%s.reader", prefix);
    hook_state hs = {0};
    cstl_kafka_consumer *c = cstl_kafka_consumer_new(conf, group, on_rebalance, &hs, &err);
    assert_non_null(c);
    const char *topics[] = {topic_txn};
    check(cstl_kafka_consumer_subscribe(c, topics, 1, &err), &err, "subscribe");
    char values[32][64];
    size_t got = consume(c, N + K, 32, 1500, values);
    assert_int_equal(hs.assigned, 1);
    if (got != N + K)
        fail_msg("read_committed consumer got %zu records, want %d", got, N + K);
    for (int i = 0; i < N + K; i++) {
        char want[64];
        if (i < N)
            snprintf(want, sizeof(want), "first-%d", i);
        else
            snprintf(want, sizeof(want), "third-%d", i - N);
        assert_string_equal(values[i], want);
    }
    /* The last stable offset is past everything: nothing is pending. */
    int64_t lo = -1, hi = -1;
    check(cstl_kafka_consumer_watermarks(c, topic_txn, 0, &lo, &hi, TIMEOUT_MS, &err), &err,
          "watermarks");
    /* N + M + K records and three transaction markers */
    assert_int_equal(hi, N + M + K + 3);
    check(cstl_kafka_consumer_close(c, &err), &err, "close");

    /* read_uncommitted does see the aborted records: the test above would catch a consumer that
     * silently read uncommitted data. */
    cstl_kafka_conf *dirty = cstl_kafka_conf_new(brokers, "test-kafka-dirty", &err);
    check(cstl_kafka_conf_set(dirty, "isolation.level", "read_uncommitted", &err), &err, "conf");
    snprintf(group, sizeof(group), "%s.dirty", prefix);
    c = cstl_kafka_consumer_new(dirty, group, NULL, NULL, &err);
    assert_non_null(c);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic_txn, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    check(cstl_kafka_consumer_assign(c, parts, &err), &err, "assign");
    rd_kafka_topic_partition_list_destroy(parts);
    got = consume(c, N + M + K, 32, 1500, values);
    assert_int_equal(got, N + M + K);
    for (int i = 0; i < M; i++) {
        char want[64];
        snprintf(want, sizeof(want), "aborted-%d", i);
        assert_string_equal(values[N + i], want);
    }
    check(cstl_kafka_consumer_close(c, &err), &err, "close dirty");
    cstl_kafka_conf_free(dirty);
}

/* A second producer with the same transactional.id fences the first. */
static void test_zombie_is_fenced(void **state)
{
    (void)state;
    cstl_error err;
    char id[160];
    txn_id(id, sizeof(id), "txn-fence");
    cstl_kafka_producer *zombie = cstl_kafka_txn_producer_new(conf, id, &err);
    assert_non_null(zombie);
    check(cstl_kafka_producer_init_transactions(zombie, TIMEOUT_MS, &err), &err, "init zombie");
    check(cstl_kafka_producer_begin(zombie, &err), &err, "begin zombie");
    send_values(zombie, topic_fence, "zombie", 2);
    check(cstl_kafka_producer_flush(zombie, TIMEOUT_MS, &err), &err, "flush zombie");

    cstl_kafka_producer *owner = cstl_kafka_txn_producer_new(conf, id, &err);
    assert_non_null(owner);
    check(cstl_kafka_producer_init_transactions(owner, TIMEOUT_MS, &err), &err, "init owner");

    int rc = cstl_kafka_producer_commit(zombie, TIMEOUT_MS, &err);
    if (rc != CSTL_EFENCED)
        fail_msg("zombie commit: got %s (%s), want CSTL_EFENCED", cstl_error_name(rc), err.message);
    assert_int_equal(err.origin, CSTL_ORIGIN_KAFKA);
    assert_true(cstl_error_is_fatal(rc));
    /* Once fenced, the zombie can do nothing more. */
    rc = cstl_kafka_producer_begin(zombie, &err);
    assert_true(rc == CSTL_EFENCED || rc == CSTL_EKAFKA_FATAL);
    cstl_kafka_producer_free(zombie);

    /* The new owner works, and the zombie's records were aborted. */
    check(cstl_kafka_producer_begin(owner, &err), &err, "begin owner");
    send_values(owner, topic_fence, "owner", 2);
    check(cstl_kafka_producer_commit(owner, TIMEOUT_MS, &err), &err, "commit owner");
    cstl_kafka_producer_free(owner);

    char group[160];
    snprintf(group, sizeof(group), "%s.fence-reader", prefix);
    cstl_kafka_consumer *c = cstl_kafka_consumer_new(conf, group, NULL, NULL, &err);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, topic_fence, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    check(cstl_kafka_consumer_assign(c, parts, &err), &err, "assign");
    rd_kafka_topic_partition_list_destroy(parts);
    char values[8][64];
    assert_int_equal(consume(c, 2, 8, 1000, values), 2);
    assert_string_equal(values[0], "owner-0");
    assert_string_equal(values[1], "owner-1");
    check(cstl_kafka_consumer_close(c, &err), &err, "close");
}

/* Consumed offsets are committed if and only if the transaction commits. */
static void test_send_offsets(void **state)
{
    (void)state;
    enum { IN = 6 };
    cstl_error err;
    cstl_kafka_producer *plain = cstl_kafka_producer_new(conf, &err);
    assert_non_null(plain);
    for (int i = 0; i < IN; i++) {
        char value[32];
        snprintf(value, sizeof(value), "cmd-%d", i);
        check(cstl_kafka_producer_send_wait(plain, topic_in, 0, "agg", 3, value, strlen(value),
                                            NULL, TIMEOUT_MS, NULL, NULL, &err),
              &err, "send input");
    }
    cstl_kafka_producer_free(plain);

    char group[160];
    snprintf(group, sizeof(group), "%s.handler", prefix);
    hook_state hs = {0};
    cstl_kafka_consumer *c = cstl_kafka_consumer_new(conf, group, on_rebalance, &hs, &err);
    assert_non_null(c);
    const char *topics[] = {topic_in};
    check(cstl_kafka_consumer_subscribe(c, topics, 1, &err), &err, "subscribe");
    char values[16][64];
    assert_int_equal(consume(c, IN, 16, 0, values), IN);

    char id[160];
    txn_id(id, sizeof(id), "txn-handler");
    cstl_kafka_producer *p = cstl_kafka_txn_producer_new(conf, id, &err);
    assert_non_null(p);
    check(cstl_kafka_producer_init_transactions(p, TIMEOUT_MS, &err), &err, "init");
    rd_kafka_consumer_group_metadata_t *gmd = cstl_kafka_consumer_group_metadata(c);
    assert_non_null(gmd);
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(offsets, topic_in, 0)->offset = IN;

    /* Aborted: the offsets are not committed. */
    check(cstl_kafka_producer_begin(p, &err), &err, "begin 1");
    send_values(p, topic_out, "event", 2);
    check(cstl_kafka_producer_send_offsets(p, offsets, gmd, TIMEOUT_MS, &err), &err, "offsets 1");
    check(cstl_kafka_producer_abort(p, TIMEOUT_MS, &err), &err, "abort");
    rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(committed, topic_in, 0);
    check(cstl_kafka_consumer_committed(c, committed, TIMEOUT_MS, &err), &err, "committed 1");
    assert_int_equal(committed->elems[0].offset, RD_KAFKA_OFFSET_INVALID);

    /* Committed: they are. */
    check(cstl_kafka_producer_begin(p, &err), &err, "begin 2");
    send_values(p, topic_out, "event", 2);
    check(cstl_kafka_producer_send_offsets(p, offsets, gmd, TIMEOUT_MS, &err), &err, "offsets 2");
    check(cstl_kafka_producer_commit(p, TIMEOUT_MS, &err), &err, "commit");
    committed->elems[0].offset = RD_KAFKA_OFFSET_INVALID;
    check(cstl_kafka_consumer_committed(c, committed, TIMEOUT_MS, &err), &err, "committed 2");
    assert_int_equal(committed->elems[0].offset, IN);

    rd_kafka_topic_partition_list_destroy(committed);
    rd_kafka_topic_partition_list_destroy(offsets);
    rd_kafka_consumer_group_metadata_destroy(gmd);
    cstl_kafka_producer_free(p);
    check(cstl_kafka_consumer_close(c, &err), &err, "close");

    /* A new member of the group starts where the transaction left it: nothing is left to read. */
    c = cstl_kafka_consumer_new(conf, group, NULL, NULL, &err);
    check(cstl_kafka_consumer_subscribe(c, topics, 1, &err), &err, "subscribe again");
    rd_kafka_message_t *msg = NULL;
    int64_t until = now_ms() + 6000;
    while (msg == NULL && now_ms() < until)
        cstl_kafka_consumer_poll(c, 200, &msg, &err);
    if (msg != NULL) {
        int64_t off = msg->offset;
        rd_kafka_message_destroy(msg);
        fail_msg("the group re-read offset %lld after its offsets were committed", (long long)off);
    }
    check(cstl_kafka_consumer_close(c, &err), &err, "close again");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_abort_isolation),
        cmocka_unit_test(test_zombie_is_fenced),
        cmocka_unit_test(test_send_offsets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
