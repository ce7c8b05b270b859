/*
 * test_events.c - CloudEvents and cstl_* headers: build, parse back, and refuse what is missing,
 * malformed or oversized.
 */
#include "platform/events.h"

#include <cmocka.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

static cstl_event_headers sample(void)
{
    cstl_event_headers h = {0};
    strcpy(h.id, "0190f5a2-7c1e-7b3a-8e4f-1a2b3c4d5e6f");
    strcpy(h.source, "/constellation/commands/jobs");
    strcpy(h.type, "io.constellation.jobs.JobSubmitted.v1");
    h.time_us = 1732000000123456;
    strcpy(h.subject, "0190f5a2-7c1e-7b3a-8e4f-aaaaaaaaaaaa");
    strcpy(h.tenant, "0190f5a2-7c1e-7b3a-8e4f-000000000001");
    h.version = 3;
    strcpy(h.causation, "0190f5a2-7c1e-7b3a-8e4f-000000000002");
    strcpy(h.traceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    return h;
}

static void test_round_trip(void **state)
{
    (void)state;
    cstl_event_headers h = sample(), back;
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(16);
    cstl_error err;
    assert_int_equal(cstl_event_headers_build(&h, hdrs, &err), 0);
    const void *v;
    size_t n;
    assert_int_equal(rd_kafka_header_get_last(hdrs, "ce_time", &v, &n), 0);
    assert_int_equal(n, 27);
    assert_memory_equal(v, "2024-11-19T07:06:40.123456Z", 27);
    assert_int_equal(rd_kafka_header_get_last(hdrs, "content-type", &v, &n), 0);
    assert_memory_equal(v, "application/avro", 16);
    assert_int_equal(cstl_event_headers_parse(hdrs, &back, &err), 0);
    assert_memory_equal(&h, &back, sizeof h);
    /* a missing required header is named */
    rd_kafka_header_remove(hdrs, "cstl_tenant");
    assert_int_equal(cstl_event_headers_parse(hdrs, &back, &err), CSTL_EDECODE);
    assert_string_equal(err.message, "missing cstl_tenant header");
    rd_kafka_header_add(hdrs, "cstl_tenant", -1, "not-a-uuid", -1);
    assert_int_equal(cstl_event_headers_parse(hdrs, &back, &err), CSTL_EDECODE);
    assert_string_equal(err.message, "invalid cstl_tenant header \"not-a-uuid\"");
    rd_kafka_header_add(hdrs, "cstl_tenant", -1, h.tenant, -1);
    char big[1000];
    memset(big, 'x', sizeof big);
    rd_kafka_header_add(hdrs, "ce_source", -1, big, sizeof big);
    assert_int_equal(cstl_event_headers_parse(hdrs, &back, &err), CSTL_ETOOBIG);
    rd_kafka_header_add(hdrs, "ce_source", -1, "/s", -1);
    rd_kafka_header_add(hdrs, "ce_time", -1, "2024-02-31T00:00:00.000000Z", -1);
    assert_int_equal(cstl_event_headers_parse(hdrs, &back, &err), CSTL_EDECODE);
    rd_kafka_header_add(hdrs, "ce_time", -1, "2024-02-29T00:00:00.000001Z", -1);
    rd_kafka_header_add(hdrs, "cstl_version", -1, "0", -1);
    assert_int_equal(cstl_event_headers_parse(hdrs, &back, &err), CSTL_EDECODE);
    rd_kafka_header_add(hdrs, "cstl_version", -1, "12", -1);
    rd_kafka_header_add(hdrs, "traceparent", -1,
                        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", -1);
    assert_int_equal(cstl_event_headers_parse(hdrs, &back, &err), CSTL_EDECODE);
    rd_kafka_header_remove(hdrs, "traceparent");
    assert_int_equal(cstl_event_headers_parse(hdrs, &back, &err), 0);
    assert_int_equal(back.version, 12);
    assert_string_equal(back.traceparent, "");
    rd_kafka_headers_destroy(hdrs);
}

static void test_build_refuses(void **state)
{
    (void)state;
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(16);
    cstl_error err;
    cstl_event_headers h = sample();
    strcpy(h.id, "nope");
    assert_int_equal(cstl_event_headers_build(&h, hdrs, &err), CSTL_EINVAL);
    assert_string_equal(err.message, "invalid ce_id header \"nope\"");
    h = sample();
    h.version = 0;
    assert_int_equal(cstl_event_headers_build(&h, hdrs, &err), CSTL_EINVAL);
    h = sample();
    h.source[0] = '\0';
    assert_int_equal(cstl_event_headers_build(&h, hdrs, &err), CSTL_EINVAL);
    rd_kafka_headers_destroy(hdrs);
    char t[CSTL_EVENT_TIME_STRLEN + 1];
    assert_int_equal(cstl_event_time_format(0, t), 0);
    assert_string_equal(t, "1970-01-01T00:00:00.000000Z");
    int64_t us;
    assert_int_equal(cstl_event_time_parse("1970-01-01T00:00:00.000000+00:00", &us), CSTL_EPARSE);
    assert_int_equal(cstl_event_time_parse("2026-11-21T23:41:03.123456Z", &us), 0);
    assert_int_equal(cstl_event_time_format(us, t), 0);
    assert_string_equal(t, "2026-11-21T23:41:03.123456Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_build_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
