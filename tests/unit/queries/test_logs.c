/* Unit tests for the pure parts of queries/logs.c: the resume position of a job log stream and
 * the step a stream takes after each read. */
#include "queries/query.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static void test_position_parse(void **state)
{
    (void)state;
    int64_t v = -1;
    assert_int_equal(cstl_query_log_position_parse("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(cstl_query_log_position_parse("1234", &v), 0);
    assert_int_equal(v, 1234);
    assert_int_equal(cstl_query_log_position_parse("9223372036854775807", &v), 0);
    assert_true(v == INT64_MAX);
    static const char *const bad[] = {"",
                                      "-1",
                                      "+1",
                                      " 1",
                                      "1 ",
                                      "1a",
                                      "0x10",
                                      "1.5",
                                      "9223372036854775808",
                                      "99999999999999999999",
                                      "v1.j0-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 42;
        assert_int_equal(cstl_query_log_position_parse(bad[i], &v), CSTL_EINVAL);
        assert_int_equal(v, 42); /* untouched */
    }
    assert_int_equal(cstl_query_log_position_parse(NULL, &v), CSTL_EINVAL);
}

/* A read of a running job that found nothing new, with the projectors caught up. */
static cstl_query_log_read idle_read(void)
{
    return (cstl_query_log_read){.lines = 0,
                                 .more = false,
                                 .follow = true,
                                 .want_jobs = 10,
                                 .want_logs = 20,
                                 .jobs_applied = 10,
                                 .logs_applied = 20};
}

static void test_more_reads_again_at_once(void **state)
{
    (void)state;
    cstl_query_log_read r = idle_read();
    r.lines = 256;
    r.more = true;
    r.complete = true; /* even a finished job: lines remain after this page */
    int backoff = 400, delay = -1;
    assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_READ_NOW);
    assert_int_equal(delay, 0);
    assert_int_equal(backoff, 25); /* progress resets the backoff */
}

static void test_end(void **state)
{
    (void)state;
    int backoff = 0, delay = -1;
    cstl_query_log_read r = idle_read();
    r.follow = false; /* what exists, then the end, whatever the job's state */
    r.lines = 3;
    assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_END);
    r = idle_read();
    r.terminal = r.complete = true;
    assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_END);
    r = idle_read();
    r.terminal = r.expired = true; /* lines missing, but the wait ran out */
    assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_END);
    r.want_logs = 99; /* an expired wait ends even when the read models seem behind */
    assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_END);
}

static void test_behind_backs_off(void **state)
{
    (void)state;
    cstl_query_log_read r = idle_read();
    r.logs_applied = 19; /* the hub read a line the projector has not applied yet */
    int backoff = 0, delay = 0;
    static const int want[] = {25, 50, 100, 200, 400, 800, 1000, 1000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_READ_LATER);
        assert_int_equal(delay, want[i]);
    }
    r.lines = 5; /* progress: short again */
    assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_READ_LATER);
    assert_int_equal(delay, 25);
    r = idle_read();
    r.jobs_applied = -1; /* the jobs projector applied nothing of that partition yet */
    assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_READ_LATER);
    assert_int_equal(delay, 50);
    /* a finished job whose lines are missing is still behind first */
    r.terminal = true;
    assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_READ_LATER);
    assert_int_equal(delay, 100);
}

static void test_caught_up_waits(void **state)
{
    (void)state;
    int backoff = 800, delay = 0;
    cstl_query_log_read r = idle_read();
    assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_READ_LATER);
    assert_int_equal(delay, 5000);  /* the hub's hints wake it earlier */
    r.want_jobs = r.want_logs = -1; /* nothing known of the hub: not behind */
    r.jobs_applied = r.logs_applied = -1;
    assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_READ_LATER);
    assert_int_equal(delay, 5000);
    r.terminal = true; /* finished, lines missing, not expired: poll until they come */
    assert_int_equal(cstl_query_logs_next(&r, &backoff, &delay), CSTL_QUERY_LOGS_READ_LATER);
    assert_int_equal(delay, 250);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_position_parse),
        cmocka_unit_test(test_more_reads_again_at_once),
        cmocka_unit_test(test_end),
        cmocka_unit_test(test_behind_backs_off),
        cmocka_unit_test(test_caught_up_waits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
