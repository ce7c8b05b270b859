/* Unit tests for platform/migrate.c that need no server: file name rules, sorting, duplicates,
 * checksums and the embedded list. */
#include "platform/error.h"
#include "platform/migrate.h"

#include <cmocka.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static void test_parse_valid_names(void **state)
{
    (void)state;
    int version = -1;
    char name[CSTL_MIGRATION_NAME_MAX];
    assert_int_equal(cstl_migration_parse_name("projections/migrations/0001_projection_offsets.sql",
                                               &version, name, sizeof(name), NULL),
                     0);
    assert_int_equal(version, 1);
    assert_string_equal(name, "projection_offsets");
    assert_int_equal(
        cstl_migration_parse_name("0042_jobs2.sql", &version, name, sizeof(name), NULL), 0);
    assert_int_equal(version, 42);
    assert_string_equal(name, "jobs2");
    assert_int_equal(cstl_migration_parse_name("9999_a.sql", &version, NULL, 0, NULL), 0);
    assert_int_equal(version, 9999);
}

static void test_parse_rejects_bad_names(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "1_x.sql", /* version not 4 digits */
        "001_x.sql",
        "00001_x.sql", /* 5 digits: '_' expected after 4 */
        "0001-x.sql",
        "0001x.sql",
        "0001_x.SQL",
        "0001_x.sql.bak",
        "0001_.sql",      /* empty name */
        "0000_x.sql",     /* version 0 */
        "0001_Jobs.sql",  /* upper case */
        "0001_1jobs.sql", /* starts with a digit */
        "0001_job-runs.sql",
        "0001_job runs.sql",
        "0001_job__runs.sql",
        "0001_jobs_.sql",
        "abcd_jobs.sql",
        "",
        "dir/0001_x",
        "0001_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sql", /* 64 chars */
    };
    for (size_t i = 0; i < CSTL_ARRAY_LEN(bad); i++) {
        cstl_error err;
        int version = -7;
        assert_int_equal(cstl_migration_parse_name(bad[i], &version, NULL, 0, &err), CSTL_EINVAL);
        assert_int_equal(version, -7);
        /* The message quotes the offending file. */
        char quoted[128];
        snprintf(quoted, sizeof(quoted), "\"%s\"", bad[i]);
        assert_non_null(strstr(err.message, quoted));
    }
    assert_int_equal(cstl_migration_parse_name(NULL, NULL, NULL, 0, NULL), CSTL_EINVAL);
}

static void test_sort_and_duplicates(void **state)
{
    (void)state;
    cstl_migration list[] = {
        {"m/0010_c.sql", "select 3"},
        {"m/0002_b.sql", "select 2"},
        {"m/0001_a.sql", "select 1"},
    };
    assert_int_equal(cstl_migrations_sort(list, 3, NULL), 0);
    assert_string_equal(list[0].file, "m/0001_a.sql");
    assert_string_equal(list[1].file, "m/0002_b.sql");
    assert_string_equal(list[2].file, "m/0010_c.sql");
    assert_int_equal(cstl_migrations_sort(NULL, 0, NULL), 0);

    cstl_error err;
    cstl_migration dup[] = {
        {"m/0002_b.sql", "select 2"},
        {"m/0001_a.sql", "select 1"},
        {"m/0002_other.sql", "select 2"},
    };
    assert_int_equal(cstl_migrations_sort(dup, 3, &err), CSTL_EEXISTS);
    assert_non_null(strstr(err.message, "0002"));
    assert_non_null(strstr(err.message, "0002_b.sql"));
    assert_non_null(strstr(err.message, "0002_other.sql"));

    cstl_migration bad[] = {
        {"m/0001_a.sql", "select 1"},
        {"m/2_b.sql", "select 2"},
    };
    assert_int_equal(cstl_migrations_sort(bad, 2, &err), CSTL_EINVAL);
    assert_non_null(strstr(err.message, "\"m/2_b.sql\""));

    cstl_migration nosql[] = {{"m/0001_a.sql", NULL}};
    assert_int_equal(cstl_migrations_sort(nosql, 1, &err), CSTL_EINVAL);
}

static void test_checksum(void **state)
{
    (void)state;
    char hex[CSTL_SHA256_HEX_LEN + 1];
    cstl_migration_checksum("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    cstl_migration_checksum("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* One changed byte changes the checksum. */
    char other[CSTL_SHA256_HEX_LEN + 1];
    cstl_migration_checksum("abd", 3, other);
    assert_string_not_equal(hex, other);
}

static void test_embedded_list(void **state)
{
    (void)state;
    cstl_migration *list = NULL;
    size_t n = 0;
    cstl_error err;
    assert_int_equal(cstl_migrations_embedded(&list, &n, &err), 0);
    assert_true(n >= 1);
    assert_string_equal(list[0].file, "projections/migrations/0001_projection_offsets.sql");
    assert_non_null(strstr(list[0].sql, "CREATE TABLE projection_offsets"));
    int prev = 0;
    for (size_t i = 0; i < n; i++) {
        int version;
        assert_int_equal(cstl_migration_parse_name(list[i].file, &version, NULL, 0, NULL), 0);
        assert_true(version > prev);
        prev = version;
    }
    free(list);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid_names),   cmocka_unit_test(test_parse_rejects_bad_names),
        cmocka_unit_test(test_sort_and_duplicates), cmocka_unit_test(test_checksum),
        cmocka_unit_test(test_embedded_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
