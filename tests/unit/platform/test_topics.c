/* Unit tests for platform/topics.c: the embedded catalog, validation of bad catalogs, overrides. */
#include "platform/topics.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *config_value(const cstl_topic *t, const char *key)
{
    for (size_t k = 0; k < t->config_len; k++)
        if (strcmp(t->config[2 * k], key) == 0)
            return t->config[2 * k + 1];
    return NULL;
}

static void test_embedded_catalog(void **state)
{
    (void)state;
    cstl_error err;
    unsetenv("CONSTELLATION_JOB_LOGS_RETENTION_MS");
    cstl_topic_catalog *cat = cstl_topics_load(&err);
    assert_non_null(cat);
    assert_int_equal(cat->len, 20);
    assert_int_equal(cat->replication_factor, 1);
    const cstl_topic *t = cstl_topics_find(cat, "constellation.jobs.events");
    assert_non_null(t);
    assert_int_equal(t->partitions, 6);
    assert_string_equal(t->context, "jobs");
    assert_string_equal(config_value(t, "retention.ms"), "-1");
    assert_int_equal(cstl_topics_find(cat, "constellation.jobs.commands")->partitions, 6);
    assert_int_equal(cstl_topics_find(cat, "constellation.jobs.snapshots")->partitions, 6);
    t = cstl_topics_find(cat, "constellation.replies");
    assert_non_null(t);
    assert_null(t->context);
    assert_string_equal(config_value(t, "retention.ms"), "3600000");
    t = cstl_topics_find(cat, "constellation.jobs.logs");
    assert_string_equal(t->retention_env, "CONSTELLATION_JOB_LOGS_RETENTION_MS");
    /* config is NULL-terminated key/value pairs, ready for cstl_kafka_topic_spec */
    assert_null(t->config[2 * t->config_len]);
    assert_null(cstl_topics_find(cat, "constellation.nope"));
    cstl_topics_free(cat);
    cstl_topics_free(NULL);
}

#define TOPIC(name, ctx, parts) "{\"name\":\"" name "\"," ctx "\"partitions\":" parts "}"
#define CTX(c)                  "\"context\":\"" c "\","
#define CATALOG(topics)         "{\"_doc\":\"x\",\"replication_factor\":1,\"topics\":[" topics "]}"
#define JOBS(e_parts)                                                                              \
    TOPIC("constellation.jobs.commands", CTX("jobs"), "3")                                         \
    "," TOPIC("constellation.jobs.events", CTX("jobs"),                                            \
              e_parts) "," TOPIC("constellation.jobs.snapshots", CTX("jobs"), "3")

static void test_good_small_catalog(void **state)
{
    (void)state;
    const char *json = CATALOG(JOBS("3") "," TOPIC("constellation.dlq", "", "1"));
    cstl_error err;
    cstl_topic_catalog *cat = cstl_topics_parse(json, strlen(json), &err);
    if (cat == NULL) {
        fail_msg("%s", err.message);
        return; /* fail_msg does not return; this tells the analyzer so */
    }
    assert_int_equal(cat->len, 4);
    assert_int_equal(cat->topics[3].config_len, 0);
    assert_null(cat->topics[3].config[0]);
    cstl_topics_free(cat);
}

static void test_bad_catalogs(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        int code;
        const char *message_part;
    } cases[] = {
        {"{", CSTL_EPARSE, "not valid json"},
        {"[]", CSTL_ECONFIG, "must be a json object"},
        {"{\"replication_factor\":1}", CSTL_ECONFIG, "\"topics\" must be a non-empty array"},
        {"{\"replication_factor\":1,\"topics\":[]}", CSTL_ECONFIG, "non-empty array"},
        {"{\"replication_factor\":0,\"topics\":[" TOPIC("a", "", "1") "]}", CSTL_ECONFIG,
         "\"replication_factor\" must be an integer from 1 to 32767, got \"0\""},
        {"{\"replication_factor\":1,\"extra\":2,\"topics\":[" TOPIC("a", "", "1") "]}",
         CSTL_ECONFIG, "unknown field \"extra\""},
        {CATALOG(TOPIC("bad name", "", "1")), CSTL_ECONFIG, "invalid name \"bad name\""},
        {CATALOG(TOPIC("..", "", "1")), CSTL_ECONFIG, "invalid name \"..\""},
        {CATALOG(TOPIC("a", "", "0")), CSTL_ECONFIG,
         "topic \"a\": \"partitions\" must be an integer from 1 to 10000, got \"0\""},
        {CATALOG(TOPIC("a", "", "\"3\"")), CSTL_ECONFIG, "got \"3\""},
        {CATALOG(TOPIC("a", "", "1.5")), CSTL_ECONFIG, "got \"1.5\""},
        {CATALOG("{\"name\":\"a\"}"), CSTL_ECONFIG, "topic \"a\": \"partitions\" is missing"},
        {CATALOG("{\"partitions\":1}"), CSTL_ECONFIG, "topic #1: \"name\" must be a string"},
        {CATALOG(TOPIC("a", "", "1") "," TOPIC("a", "", "1")), CSTL_ECONFIG,
         "topic \"a\": is listed twice"},
        {CATALOG(TOPIC("a", "\"colour\":\"red\",", "1")), CSTL_ECONFIG, "unknown field \"colour\""},
        {CATALOG("{\"name\":\"a\",\"partitions\":1,\"config\":{\"retention.ms\":5}}"), CSTL_ECONFIG,
         "config \"retention.ms\" must be a string, got 5"},
        {CATALOG("{\"name\":\"a\",\"partitions\":1,\"config\":[]}"), CSTL_ECONFIG,
         "\"config\" must be an object"},
        {CATALOG("{\"name\":\"a\",\"partitions\":1,\"retention_env\":\"lower\","
                 "\"config\":{\"retention.ms\":\"1\"}}"),
         CSTL_ECONFIG, "\"retention_env\" must be a variable name, got \"lower\""},
        {CATALOG("{\"name\":\"a\",\"partitions\":1,\"retention_env\":\"A_B\"}"), CSTL_ECONFIG,
         "needs a default \"retention.ms\""},
        {CATALOG(JOBS("6")), CSTL_ECONFIG,
         "\"constellation.jobs.commands\": has 3 partitions but \"constellation.jobs.events\" has "
         "6"},
        {CATALOG(TOPIC("constellation.jobs.commands", CTX("jobs"),
                       "3") "," TOPIC("constellation.jobs.events", CTX("jobs"), "3")),
         CSTL_ECONFIG, "context \"jobs\" has no topic \"constellation.jobs.snapshots\""},
        {CATALOG(TOPIC("constellation.jobs.queue", CTX("jobs"), "3")), CSTL_ECONFIG,
         "must be named constellation.jobs.commands, .events or .snapshots"},
        {CATALOG(TOPIC("constellation.Jobs.events", CTX("Jobs"), "3")), CSTL_ECONFIG,
         "\"context\" must be a lower-case word, got \"Jobs\""},
    };
    for (size_t i = 0; i < CSTL_ARRAY_LEN(cases); i++) {
        cstl_error err;
        cstl_topic_catalog *cat = cstl_topics_parse(cases[i].json, strlen(cases[i].json), &err);
        if (cat != NULL)
            fail_msg("case %zu: accepted %s", i, cases[i].json);
        if (err.code != cases[i].code || strstr(err.message, cases[i].message_part) == NULL)
            fail_msg("case %zu: got %s \"%s\", want %s containing \"%s\"", i,
                     cstl_error_name(err.code), err.message, cstl_error_name(cases[i].code),
                     cases[i].message_part);
    }
    cstl_error err;
    assert_null(cstl_topics_parse(NULL, 0, &err));
    assert_int_equal(err.code, CSTL_EINVAL);
}

static void test_overrides(void **state)
{
    (void)state;
    cstl_error err;
    cstl_topic_catalog *cat = cstl_topics_load(&err);
    assert_non_null(cat);
    setenv("CONSTELLATION_JOB_LOGS_RETENTION_MS", "86400000", 1);
    assert_int_equal(cstl_topics_apply_overrides(cat, "test.1.x.", 3, &err), 0);
    unsetenv("CONSTELLATION_JOB_LOGS_RETENTION_MS");
    assert_int_equal(cat->replication_factor, 3);
    const cstl_topic *t = cstl_topics_find(cat, "test.1.x.constellation.jobs.logs");
    assert_non_null(t);
    assert_int_equal(t->replication_factor, 3);
    assert_string_equal(config_value(t, "retention.ms"), "86400000");
    assert_string_equal(config_value(t, "cleanup.policy"), "delete");
    assert_null(cstl_topics_find(cat, "constellation.jobs.logs"));
    t = cstl_topics_find(cat, "test.1.x.constellation.replies");
    assert_string_equal(config_value(t, "retention.ms"), "3600000");
    cstl_topics_free(cat);

    /* -1 (forever) is allowed; an empty variable keeps the catalog's value. */
    cat = cstl_topics_load(&err);
    setenv("CONSTELLATION_JOB_LOGS_RETENTION_MS", "-1", 1);
    assert_int_equal(cstl_topics_apply_overrides(cat, NULL, 0, &err), 0);
    assert_string_equal(
        config_value(cstl_topics_find(cat, "constellation.jobs.logs"), "retention.ms"), "-1");
    assert_int_equal(cat->replication_factor, 1);
    cstl_topics_free(cat);
    cat = cstl_topics_load(&err);
    setenv("CONSTELLATION_JOB_LOGS_RETENTION_MS", "", 1);
    assert_int_equal(cstl_topics_apply_overrides(cat, NULL, 0, &err), 0);
    assert_string_equal(
        config_value(cstl_topics_find(cat, "constellation.jobs.logs"), "retention.ms"),
        "604800000");
    cstl_topics_free(cat);
    unsetenv("CONSTELLATION_JOB_LOGS_RETENTION_MS");
}

static void test_bad_overrides(void **state)
{
    (void)state;
    const char *bad[] = {"abc", "-2", "1.5", "12abc", " 5", "+5", "99999999999999999999999"};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(bad); i++) {
        cstl_error err;
        cstl_topic_catalog *cat = cstl_topics_load(&err);
        setenv("CONSTELLATION_JOB_LOGS_RETENTION_MS", bad[i], 1);
        assert_int_equal(cstl_topics_apply_overrides(cat, "p.", 0, &err), CSTL_ECONFIG);
        assert_non_null(strstr(err.message, "CONSTELLATION_JOB_LOGS_RETENTION_MS"));
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "\"%s\"", bad[i]);
        assert_non_null(strstr(err.message, quoted));
        /* a failed override changes nothing */
        assert_non_null(cstl_topics_find(cat, "constellation.jobs.logs"));
        cstl_topics_free(cat);
    }
    unsetenv("CONSTELLATION_JOB_LOGS_RETENTION_MS");

    cstl_error err;
    cstl_topic_catalog *cat = cstl_topics_load(&err);
    assert_int_equal(cstl_topics_apply_overrides(cat, "bad prefix ", 0, &err), CSTL_ECONFIG);
    assert_non_null(strstr(err.message, "\"bad prefix \""));
    assert_int_equal(cstl_topics_apply_overrides(cat, NULL, 40000, &err), CSTL_ECONFIG);
    assert_non_null(strstr(err.message, "\"40000\""));
    cstl_topics_free(cat);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_catalog), cmocka_unit_test(test_good_small_catalog),
        cmocka_unit_test(test_bad_catalogs),     cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_bad_overrides),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
