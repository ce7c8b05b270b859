/* Unit tests for platform/log.c: JSON-lines records, levels, fields, context, thread safety. */
#include "platform/log.h"

#include <cmocka.h>

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int pipe_fds[2];

static int setup(void **state)
{
    (void)state;
    if (pipe(pipe_fds) != 0)
        return -1;
    cstl_log_set_fd(pipe_fds[1]);
    cstl_log_set_level(CSTL_LOG_INFO);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cstl_log_set_fd(2);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    return 0;
}

/* Reads what has been written so far (the pipe is large enough for these tests). */
static char *drain(void)
{
    static char buf[1 << 16];
    close(pipe_fds[1]);
    ssize_t n = 0, r;
    while ((r = read(pipe_fds[0], buf + n, sizeof(buf) - 1 - (size_t)n)) > 0)
        n += r;
    buf[n] = '\0';
    close(pipe_fds[0]);
    assert_int_equal(pipe(pipe_fds), 0);
    cstl_log_set_fd(pipe_fds[1]);
    return buf;
}

static void test_record_is_json_line(void **state)
{
    (void)state;
    cstl_log(CSTL_LOG_INFO, "test", "hello %d \"quoted\"", 42);
    char *out = drain();
    size_t len = strlen(out);
    assert_true(len > 0);
    assert_int_equal(out[len - 1], '\n');
    json_error_t jerr;
    json_t *rec = json_loads(out, 0, &jerr);
    assert_non_null(rec);
    assert_string_equal(json_string_value(json_object_get(rec, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(rec, "component")), "test");
    assert_string_equal(json_string_value(json_object_get(rec, "msg")), "hello 42 \"quoted\"");
    const char *ts = json_string_value(json_object_get(rec, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), strlen("2026-11-21T23:41:03.123456Z"));
    assert_int_equal(ts[strlen(ts) - 1], 'Z');
    json_decref(rec);
}

static void test_level_filter(void **state)
{
    (void)state;
    cstl_log_set_level(CSTL_LOG_WARN);
    cstl_log(CSTL_LOG_INFO, "test", "dropped");
    cstl_log_fields(CSTL_LOG_DEBUG, "test", json_pack("{s:i}", "n", 1), "dropped too");
    cstl_log(CSTL_LOG_ERROR, "test", "kept");
    cstl_log_set_level(CSTL_LOG_INFO);
    char *out = drain();
    assert_null(strstr(out, "dropped"));
    assert_non_null(strstr(out, "kept"));
}

static void test_parse_level(void **state)
{
    (void)state;
    cstl_log_level l;
    assert_int_equal(cstl_log_parse_level("debug", &l), 0);
    assert_int_equal(l, CSTL_LOG_DEBUG);
    assert_int_equal(cstl_log_parse_level("error", &l), 0);
    assert_int_equal(l, CSTL_LOG_ERROR);
    assert_int_equal(cstl_log_parse_level("loud", &l), CSTL_EINVAL);
    assert_int_equal(cstl_log_parse_level(NULL, &l), CSTL_EINVAL);
}

static void test_fields_context_and_reserved_keys(void **state)
{
    (void)state;
    cstl_log_set_context("req-1", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    cstl_log_fields(CSTL_LOG_WARN, "http", json_pack("{s:i,s:s}", "status", 503, "msg", "spoof"),
                    "slow");
    cstl_log_set_context(NULL, NULL);
    cstl_log(CSTL_LOG_WARN, "http", "after");
    char *out = drain();
    char *second = strchr(out, '\n');
    assert_non_null(second);
    *second++ = '\0';
    json_t *rec = json_loads(out, 0, NULL);
    assert_non_null(rec);
    assert_int_equal(json_integer_value(json_object_get(rec, "status")), 503);
    assert_string_equal(json_string_value(json_object_get(rec, "msg")), "slow");
    assert_string_equal(json_string_value(json_object_get(rec, "request_id")), "req-1");
    assert_non_null(json_object_get(rec, "traceparent"));
    json_decref(rec);
    rec = json_loads(second, 0, NULL);
    assert_non_null(rec);
    assert_null(json_object_get(rec, "request_id"));
    json_decref(rec);
}

static void test_log_error_names_code(void **state)
{
    (void)state;
    cstl_error err;
    cstl_error_set(&err, CSTL_EPG_CONN, "connection refused");
    cstl_error_detail(&err, "host=127.0.0.1");
    cstl_log_error("pg", &err, "cannot connect to %s", "postgresql");
    char *out = drain();
    json_t *rec = json_loads(out, 0, NULL);
    assert_non_null(rec);
    assert_string_equal(json_string_value(json_object_get(rec, "msg")),
                        "cannot connect to postgresql: connection refused");
    assert_string_equal(json_string_value(json_object_get(rec, "error")), "CSTL_EPG_CONN");
    assert_string_equal(json_string_value(json_object_get(rec, "detail")), "host=127.0.0.1");
    json_decref(rec);
}

static void *log_many(void *arg)
{
    for (int i = 0; i < 200; i++)
        cstl_log(CSTL_LOG_INFO, "thread", "thread %ld line %d %s", (long)(intptr_t)arg, i,
                 "padding-padding-padding-padding-padding-padding");
    return NULL;
}

static void test_threads_do_not_interleave(void **state)
{
    (void)state;
    /* 4 x 200 lines of ~150 bytes exceed the pipe buffer: read concurrently into a file. */
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    cstl_log_set_fd(fileno(tmp));
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, log_many, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cstl_log_set_fd(pipe_fds[1]);
    rewind(tmp);
    char line[4096];
    int lines = 0;
    while (fgets(line, sizeof(line), tmp) != NULL) {
        json_t *rec = json_loads(line, 0, NULL);
        assert_non_null(rec);
        json_decref(rec);
        lines++;
    }
    assert_int_equal(lines, 800);
    fclose(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_is_json_line),
        cmocka_unit_test(test_level_filter),
        cmocka_unit_test(test_parse_level),
        cmocka_unit_test(test_fields_context_and_reserved_keys),
        cmocka_unit_test(test_log_error_names_code),
        cmocka_unit_test(test_threads_do_not_interleave),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
