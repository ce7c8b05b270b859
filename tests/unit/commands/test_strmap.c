/* Unit tests for commands/strmap.c: get/put/remove, insertion order, growth, value ownership. */
#include "commands/strmap.h"
#include "platform/error.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cmocka needs the standard headers above; keep it last. */
// clang-format off
#include <cmocka.h>
// clang-format on

static int freed;

static void count_free(void *v)
{
    freed++;
    free(v);
}

static void collect(void *ud, const char *key, void *value)
{
    (void)value;
    size_t used = strlen(ud);
    snprintf((char *)ud + used, 16 - used, "%s", key); /* ud is char[16] */
}

static void test_basic(void **state)
{
    (void)state;
    freed = 0;
    cstl_strmap *m = cstl_strmap_new(count_free);
    assert_null(cstl_strmap_get(m, "a"));
    cstl_strmap_put(m, "a", cstl_xstrdup("1"));
    cstl_strmap_put(m, "b", cstl_xstrdup("2"));
    cstl_strmap_put(m, "c", cstl_xstrdup("3"));
    assert_string_equal(cstl_strmap_get(m, "b"), "2");
    cstl_strmap_put(m, "a", cstl_xstrdup("1b")); /* replaced, keeps its place */
    assert_int_equal(freed, 1);
    assert_int_equal(cstl_strmap_len(m), 3);
    char order[16] = "";
    cstl_strmap_each(m, collect, order);
    assert_string_equal(order, "abc");
    void *v = NULL;
    assert_string_equal(cstl_strmap_oldest(m, &v), "a");
    assert_string_equal(v, "1b");
    assert_true(cstl_strmap_remove(m, "a"));
    assert_false(cstl_strmap_remove(m, "a"));
    assert_string_equal(cstl_strmap_oldest(m, NULL), "b");
    char *t = cstl_strmap_take(m, "c");
    assert_string_equal(t, "3");
    free(t);
    assert_int_equal(cstl_strmap_len(m), 1);
    cstl_strmap_free(m);
    assert_int_equal(freed, 3); /* 1, 1b, 2 */
}

static void test_many(void **state)
{
    (void)state;
    cstl_strmap *m = cstl_strmap_new(NULL);
    char key[32];
    for (intptr_t i = 0; i < 50000; i++) {
        snprintf(key, sizeof(key), "k%ld", (long)i);
        cstl_strmap_put(m, key, (void *)(i + 1));
    }
    assert_int_equal(cstl_strmap_len(m), 50000);
    for (intptr_t i = 0; i < 50000; i += 7) {
        snprintf(key, sizeof(key), "k%ld", (long)i);
        assert_int_equal((intptr_t)cstl_strmap_get(m, key), i + 1);
    }
    /* Trimming from the old end removes in insertion order. */
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_string_equal(cstl_strmap_oldest(m, NULL), key);
        assert_true(cstl_strmap_remove(m, key));
    }
    assert_false(cstl_strmap_has(m, "k999"));
    assert_true(cstl_strmap_has(m, "k1000"));
    cstl_strmap_free(m);
    cstl_strmap_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
