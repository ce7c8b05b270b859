/* Unit tests for platform/error.c: the table, the classes and the error record. */
#include "platform/error.h"

#include <cmocka.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static void test_strerror_and_names(void **state)
{
    (void)state;
    assert_string_equal(cstl_strerror(CSTL_OK), "success");
    assert_string_equal(cstl_strerror(CSTL_EINVAL), "invalid argument");
    assert_string_equal(cstl_error_name(CSTL_EFENCED), "CSTL_EFENCED");
    assert_string_equal(cstl_strerror(-12345), "unknown error");
    assert_string_equal(cstl_error_name(-12345), "CSTL_E?");
}

static void test_classes(void **state)
{
    (void)state;
    assert_true(cstl_error_is_retriable(CSTL_ETIMEDOUT));
    assert_true(cstl_error_is_retriable(CSTL_EPG_CONN));
    assert_false(cstl_error_is_retriable(CSTL_EINVAL));
    assert_true(cstl_error_is_fatal(CSTL_EFENCED));
    assert_true(cstl_error_is_fatal(CSTL_EKAFKA_FATAL));
    assert_int_equal(cstl_error_class(CSTL_EKAFKA_ABORT), CSTL_ECLASS_ABORT_TXN);
    /* A code outside the table is treated as fatal, never silently retried. */
    assert_true(cstl_error_is_fatal(-777));
}

static void test_codes_are_unique_and_negative(void **state)
{
    (void)state;
    static const int codes[] = {
#define CODE_(name, value, klass, msg) value,
        CSTL_ERROR_TABLE(CODE_)
#undef CODE_
    };
    for (size_t i = 0; i < CSTL_ARRAY_LEN(codes); i++) {
        assert_true(codes[i] <= 0);
        for (size_t j = i + 1; j < CSTL_ARRAY_LEN(codes); j++)
            assert_int_not_equal(codes[i], codes[j]);
    }
}

static void test_error_set(void **state)
{
    (void)state;
    cstl_error err;
    int rc = cstl_error_set(&err, CSTL_ECONFIG, "%s must be set", "CONSTELLATION_X");
    assert_int_equal(rc, CSTL_ECONFIG);
    assert_int_equal(err.code, CSTL_ECONFIG);
    assert_string_equal(err.message, "CONSTELLATION_X must be set");
    assert_string_equal(err.detail, "");
    cstl_error_detail(&err, "got \"%s\"", "abc");
    assert_string_equal(err.detail, "got \"abc\"");
    /* A NULL record is allowed and the code still comes back. */
    assert_int_equal(cstl_error_set(NULL, CSTL_EIO, "x"), CSTL_EIO);
    cstl_error_clear(&err);
    assert_int_equal(err.code, 0);
    cstl_error_clear(NULL);
}

static void test_error_message_truncates(void **state)
{
    (void)state;
    char big[2000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cstl_error err;
    cstl_error_set(&err, CSTL_EINVAL, "%s", big);
    assert_int_equal(strlen(err.message), CSTL_ERROR_MESSAGE_MAX - 1);
}

static void test_xstrndup(void **state)
{
    (void)state;
    char *s = cstl_xstrndup("abcdef", 3);
    assert_string_equal(s, "abc");
    free(s);
    s = cstl_xstrndup("ab", 10);
    assert_string_equal(s, "ab");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_and_names),
        cmocka_unit_test(test_classes),
        cmocka_unit_test(test_codes_are_unique_and_negative),
        cmocka_unit_test(test_error_set),
        cmocka_unit_test(test_error_message_truncates),
        cmocka_unit_test(test_xstrndup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
