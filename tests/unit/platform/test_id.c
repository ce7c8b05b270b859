/* Unit tests for platform/id.c: UUIDv7 layout, ordering, formatting and parsing. */
#include "platform/error.h"
#include "platform/id.h"

#include <cmocka.h>

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void test_layout(void **state)
{
    (void)state;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    cstl_uuid id = cstl_uuid_v7();
    assert_int_equal(cstl_uuid_version(&id), 7);
    assert_int_equal(id.bytes[8] >> 6, 2); /* RFC 9562 variant */
    uint64_t ms = cstl_uuid_v7_millis(&id);
    assert_true(ms + 1000 >= now && ms <= now + 1000);
}

static void test_strictly_increasing(void **state)
{
    (void)state;
    char prev[CSTL_UUID_STRLEN + 1], cur[CSTL_UUID_STRLEN + 1];
    cstl_uuid_v7_string(prev);
    /* Far more than 4096 ids in one millisecond exercises the counter overflow. */
    for (int i = 0; i < 100000; i++) {
        cstl_uuid_v7_string(cur);
        assert_true(strcmp(prev, cur) < 0);
        memcpy(prev, cur, sizeof(cur));
    }
}

static void test_format_parse_round_trip(void **state)
{
    (void)state;
    char text[CSTL_UUID_STRLEN + 1];
    cstl_uuid id = cstl_uuid_v7(), back;
    cstl_uuid_format(&id, text);
    assert_int_equal(strlen(text), 36);
    assert_int_equal(cstl_uuid_parse(text, &back), 0);
    assert_memory_equal(id.bytes, back.bytes, 16);
    assert_int_equal(cstl_uuid_parse("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", &back), 0);
    cstl_uuid_format(&back, text);
    assert_string_equal(text, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
}

static void test_parse_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "not-a-uuid",
        "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b",      /* no dashes */
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5",   /* short */
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5bb", /* long */
        "0190a1b2-c3d4-7e5f-8a9b_0c1d2e3f4a5b",  /* wrong separator */
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g",  /* not hex */
    };
    for (size_t i = 0; i < CSTL_ARRAY_LEN(bad); i++)
        assert_int_equal(cstl_uuid_parse(bad[i], NULL), CSTL_EPARSE);
    assert_false(cstl_uuid_valid(NULL));
}

#define THREADS    4
#define PER_THREAD 5000
static char thread_ids[THREADS * PER_THREAD][CSTL_UUID_STRLEN + 1];

static void *make_ids(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++)
        cstl_uuid_v7_string(thread_ids[t * PER_THREAD + i]);
    return NULL;
}

static int cmp_ids(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_unique_across_threads(void **state)
{
    (void)state;
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, make_ids, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    qsort(thread_ids, THREADS * PER_THREAD, sizeof(thread_ids[0]), cmp_ids);
    for (int i = 1; i < THREADS * PER_THREAD; i++)
        assert_true(strcmp(thread_ids[i - 1], thread_ids[i]) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_strictly_increasing),
        cmocka_unit_test(test_format_parse_round_trip),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_unique_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
