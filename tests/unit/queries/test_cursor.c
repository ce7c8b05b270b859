/* Unit tests for queries/cursor.c: base64url, the opaque list cursor, RFC 3339 checks. */
#include "queries/query.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static void test_b64url(void **state)
{
    (void)state;
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar", "\xff\xfe\xfd"};
    const char *want[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy", "__79"};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        char out[32];
        unsigned char back[32];
        cstl_query_b64url_encode(in[i], strlen(in[i]), out);
        assert_string_equal(out, want[i]);
        long n = cstl_query_b64url_decode(out, back, sizeof(back));
        assert_int_equal(n, (long)strlen(in[i]));
        assert_memory_equal(back, in[i], (size_t)n);
    }
    unsigned char b[8];
    assert_int_equal(cstl_query_b64url_decode("Zm9v+A", b, sizeof(b)), -1); /* not url-safe */
    assert_int_equal(cstl_query_b64url_decode("Z", b, sizeof(b)), -1);      /* bad length */
    assert_int_equal(cstl_query_b64url_decode("Zh", b, sizeof(b)), -1);     /* non-zero pad bits */
    assert_int_equal(cstl_query_b64url_decode("Zm9vYmFyYmF6", b, 4), -1);   /* over the cap */
}

static void test_cursor_round_trip(void **state)
{
    (void)state;
    cstl_query_cursor c = {.ascending = 1, .at_us = 1790000000123456LL, .filters = 0xabcdef01ULL};
    snprintf(c.job_id, sizeof(c.job_id), "0190a5d2-8c1e-7b3a-9f00-1c2d3e4f5a6b");
    char text[512];
    cstl_query_cursor_encode(&c, text, sizeof(text));
    assert_null(strpbrk(text, "+/="));
    cstl_query_cursor d;
    assert_int_equal(cstl_query_cursor_decode(text, &d), 0);
    assert_int_equal(d.ascending, 1);
    assert_true(d.at_us == c.at_us);
    assert_true(d.filters == c.filters);
    assert_string_equal(d.job_id, c.job_id);
}

static void test_cursor_rejects(void **state)
{
    (void)state;
    cstl_query_cursor d;
    const char *bad[] = {
        "", "abc", "e30", /* {} */
        /* {"v":2,...} */
        "eyJ2IjoyLCJvIjoiZGVzYyIsInQiOjEsImlkIjoiYSIsImYiOiIwMDAwMDAwMDAwMDAwMDAwIn0",
        /* an extra member */
        "eyJ2IjoxLCJvIjoiZGVzYyIsInQiOjEsImlkIjoiYSIsImYiOiIwMDAwMDAwMDAwMDAwMDAwIiwieCI6MX0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(cstl_query_cursor_decode(bad[i], &d), CSTL_EINVAL);
    char big[4000];
    memset(big, 'A', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(cstl_query_cursor_decode(big, &d), CSTL_EINVAL);
}

static void test_rfc3339(void **state)
{
    (void)state;
    const char *good[] = {"2026-11-21T23:41:03Z", "2026-11-21T23:41:03.123456Z",
                          "2026-11-21t23:41:03+01:00", "2024-02-29T00:00:00-12:30"};
    const char *bad[] = {"2026-11-21",
                         "2026-11-21 23:41:03Z",
                         "2026-13-01T00:00:00Z",
                         "2026-02-30T00:00:00Z",
                         "0000-01-01T00:00:00Z",
                         "2026-11-21T24:00:00Z",
                         "2026-11-21T23:41:03",
                         "2026-11-21T23:41:03.Z",
                         "2026-11-21T23:41:03+1:00",
                         "yesterday"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(cstl_query_rfc3339_valid(good[i]));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(cstl_query_rfc3339_valid(bad[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_cursor_round_trip),
        cmocka_unit_test(test_cursor_rejects),
        cmocka_unit_test(test_rfc3339),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
