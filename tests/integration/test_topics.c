/*
 * Integration test for platform/topics.c against the real broker at CONSTELLATION_KAFKA_BROKERS
 * (default 127.0.0.1:9092): creating the catalog twice creates it once, with the catalog's
 * partition counts, and a topic that exists with another partition count is refused. The catalog
 * is created under a unique test.<pid>.<random>. prefix and deleted at the end.
 */
#include "platform/log.h"
#include "platform/topics.h"

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

#define TIMEOUT_MS 60000

static char prefix[64];
static const char *brokers;
static cstl_kafka_conf *conf;
static cstl_kafka_admin *admin;
static cstl_topic_catalog *cat; /* with the prefix applied */

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
    snprintf(prefix, sizeof(prefix), "test.%d.%08x.", (int)getpid(), (unsigned)rand());
    unsetenv("CONSTELLATION_JOB_LOGS_RETENTION_MS");
    cstl_error err;
    conf = cstl_kafka_conf_new(brokers, "test-topics", &err);
    admin = conf ? cstl_kafka_admin_new(conf, &err) : NULL;
    cat = cstl_topics_load(&err);
    if (admin == NULL || cat == NULL || cstl_topics_apply_overrides(cat, prefix, 1, &err) != 0) {
        fprintf(stderr, "setup: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (admin != NULL && cat != NULL) {
        const char **names = calloc(cat->len + 1, sizeof(*names));
        for (size_t i = 0; i < cat->len; i++)
            names[i] = cat->topics[i].name;
        char extra[128];
        snprintf(extra, sizeof(extra), "%sconflict", prefix);
        names[cat->len] = extra;
        cstl_error err;
        rc = cstl_kafka_admin_delete_topics(admin, names, cat->len + 1, TIMEOUT_MS, &err);
        if (rc != 0)
            fprintf(stderr, "cannot delete test topics: %s\n", err.message);
        free(names);
    }
    cstl_topics_free(cat);
    cstl_kafka_admin_free(admin);
    cstl_kafka_conf_free(conf);
    return rc == 0 ? 0 : -1;
}

static void test_create_all_twice(void **state)
{
    (void)state;
    cstl_error err;
    cstl_topics_report report;
    int rc = cstl_topics_create_all(brokers, prefix, 1, TIMEOUT_MS, &report, &err);
    if (rc != 0)
        fail_msg("first create_all: %s (%s)", err.message, err.detail);
    assert_int_equal(report.created, cat->len);
    assert_int_equal(report.existing, 0);

    rc = cstl_topics_create_all(brokers, prefix, 1, TIMEOUT_MS, &report, &err);
    if (rc != 0)
        fail_msg("second create_all: %s (%s)", err.message, err.detail);
    assert_int_equal(report.created, 0);
    assert_int_equal(report.existing, cat->len);

    for (size_t i = 0; i < cat->len; i++) {
        int32_t n = 0;
        rc = cstl_kafka_admin_partition_count(admin, cat->topics[i].name, TIMEOUT_MS, &n, &err);
        if (rc != 0)
            fail_msg("%s", err.message);
        assert_int_equal(n, cat->topics[i].partitions);
    }
    /* spot checks of the layout of DESIGN.md §3 */
    char name[160];
    int32_t n = 0;
    snprintf(name, sizeof(name), "%sconstellation.jobs.events", prefix);
    assert_int_equal(cstl_kafka_admin_partition_count(admin, name, TIMEOUT_MS, &n, &err), 0);
    assert_int_equal(n, 6);
    snprintf(name, sizeof(name), "%sconstellation.nope", prefix);
    assert_int_equal(cstl_kafka_admin_partition_count(admin, name, TIMEOUT_MS, &n, &err),
                     CSTL_ENOTFOUND);
}

/* An existing topic with another partition count is a conflict naming both counts. */
static void test_partition_conflict(void **state)
{
    (void)state;
    cstl_error err;
    char name[160];
    snprintf(name, sizeof(name), "%sconflict", prefix);
    cstl_kafka_topic_spec spec = {.name = name, .partitions = 2, .replication_factor = 1};
    size_t created = 0, existing = 0;
    assert_int_equal(
        cstl_kafka_admin_create_topics(admin, &spec, 1, TIMEOUT_MS, &created, &existing, &err), 0);
    assert_int_equal(created, 1);
    spec.partitions = 3;
    int rc = cstl_kafka_admin_create_topics(admin, &spec, 1, TIMEOUT_MS, &created, &existing, &err);
    assert_int_equal(rc, CSTL_ECONFLICT);
    assert_non_null(strstr(err.message, "exists with 2 partitions, expected 3"));
    assert_int_equal(created, 0);
    assert_int_equal(existing, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_all_twice),
        cmocka_unit_test(test_partition_conflict),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
