/* Unit tests for platform/pg.c that need no server: SQLSTATE mapping, password redaction,
 * connect failure classification, backoff, and argument checks. */
#include "platform/error.h"
#include "platform/pg.h"

#include <cmocka.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static void test_sqlstate_mapping(void **state)
{
    (void)state;
    static const struct {
        const char *sqlstate;
        int code;
    } table[] = {
        {"40001", CSTL_EPG_RETRY}, /* serialization_failure */
        {"40P01", CSTL_EPG_RETRY}, /* deadlock_detected */
        {"40000", CSTL_EPG},       /* transaction_rollback: not a retry signal by itself */
        {"40002", CSTL_EPG},       /* integrity constraint violation at commit */
        {"08000", CSTL_EPG_CONN},  /* connection_exception */
        {"08003", CSTL_EPG_CONN},  /* connection_does_not_exist */
        {"08006", CSTL_EPG_CONN},  /* connection_failure */
        {"08P01", CSTL_EPG_CONN},  /* protocol_violation */
        {"57P01", CSTL_EPG_CONN},  /* admin_shutdown (pg_terminate_backend) */
        {"57P02", CSTL_EPG_CONN},  /* crash_shutdown */
        {"57P03", CSTL_EPG_CONN},  /* cannot_connect_now */
        {"23505", CSTL_EEXISTS},   /* unique_violation */
        {"23503", CSTL_EPG},       /* foreign_key_violation */
        {"57014", CSTL_ETIMEDOUT}, /* query_canceled (statement_timeout) */
        {"42P01", CSTL_EPG},       /* undefined_table */
        {"42601", CSTL_EPG},       /* syntax_error */
        {"XX000", CSTL_EPG},       /* internal_error */
        {"", CSTL_EPG},
        {"4000", CSTL_EPG},
        {NULL, CSTL_EPG},
    };
    for (size_t i = 0; i < CSTL_ARRAY_LEN(table); i++)
        assert_int_equal(cstl_pg_sqlstate_code(table[i].sqlstate), table[i].code);
    assert_true(cstl_error_is_retriable(CSTL_EPG_RETRY));
    assert_true(cstl_error_is_retriable(CSTL_EPG_CONN));
    assert_false(cstl_error_is_retriable(CSTL_EPG));
}

static void test_dsn_redact(void **state)
{
    (void)state;
    static const struct {
        const char *dsn, *want;
    } table[] = {
        {"host=db user=u password=hunter2 dbname=x", "host=db user=u password=*** dbname=x"},
        {"password=hunter2", "password=***"},
        {"host=db password = 'hunter 2\\' x' port=5432", "host=db password = '***' port=5432"},
        {"host=db password='unterminated", "host=db password='***"},
        {"host=db user=u", "host=db user=u"},
        {"postgresql://u:hunter2@db:5432/x", "postgresql://u:***@db:5432/x"},
        {"postgres://u:p%40ss@db/x?sslmode=disable", "postgres://u:***@db/x?sslmode=disable"},
        {"postgresql://u@db/x?password=hunter2&sslmode=disable",
         "postgresql://u@db/x?password=***&sslmode=disable"},
        {"postgresql://db/x", "postgresql://db/x"},
        {"", ""},
    };
    char out[256];
    for (size_t i = 0; i < CSTL_ARRAY_LEN(table); i++) {
        cstl_pg_dsn_redact(table[i].dsn, out, sizeof(out));
        assert_string_equal(out, table[i].want);
        assert_null(strstr(out, "hunter"));
    }
    /* Truncation keeps the result NUL-terminated and never leaks a prefix of the secret. */
    char small[14];
    cstl_pg_dsn_redact("user=u password=hunter2", small, sizeof(small));
    assert_string_equal(small, "user=u passwo");
    cstl_pg_dsn_redact("password=hunter2", small, sizeof(small));
    assert_string_equal(small, "password=***");
}

static void test_message_redact(void **state)
{
    (void)state;
    char out[128];
    cstl_pg_message_redact("host=db password=hunter2",
                           "  missing \"=\" after \"hunter2\" in connection info string\n\tmore\n",
                           out, sizeof(out));
    assert_string_equal(out, "missing \"=\" after \"***\" in connection info string");
    /* The decoded value of a quoted password is scrubbed too. */
    cstl_pg_message_redact("password='a b\\'c'", "it was a b'c and 'a b\\'c'", out, sizeof(out));
    assert_null(strstr(out, "a b'c"));
    assert_null(strstr(out, "a b\\'c"));
    /* First line only, trimmed. */
    cstl_pg_message_redact(NULL, "connection to server failed: refused\nIs the server running?\n",
                           out, sizeof(out));
    assert_string_equal(out, "connection to server failed: refused");
    cstl_pg_message_redact(NULL, NULL, out, sizeof(out));
    assert_string_equal(out, "");
}

static void test_connect_failure_classification(void **state)
{
    (void)state;
    assert_true(cstl_pg_connect_failure_retriable(
        "connection to server at \"127.0.0.1\", port 1 failed: Connection refused"));
    assert_true(cstl_pg_connect_failure_retriable(
        "connection to server at \"db\" (10.0.0.1), port 5432 failed: timeout expired"));
    assert_true(cstl_pg_connect_failure_retriable(
        "connection to server at \"db\", port 5432 failed: FATAL:  the database system is "
        "starting up"));
    assert_true(cstl_pg_connect_failure_retriable(
        "connection to server failed: FATAL:  sorry, too many clients already"));
    assert_true(cstl_pg_connect_failure_retriable(
        "could not translate host name \"db\" to address: Temporary failure in name resolution"));
    assert_false(cstl_pg_connect_failure_retriable(
        "connection to server at \"db\", port 5432 failed: FATAL:  password authentication failed "
        "for user \"u\""));
    assert_false(cstl_pg_connect_failure_retriable(
        "connection to server at \"db\", port 5432 failed: FATAL:  database \"nope\" does not "
        "exist"));
    assert_false(cstl_pg_connect_failure_retriable(
        "connection to server failed: FATAL:  no pg_hba.conf entry for host \"1.2.3.4\""));
}

static void test_backoff(void **state)
{
    (void)state;
    cstl_pg_retry p = {.initial_backoff_ms = 50, .max_backoff_ms = 300};
    assert_int_equal(cstl_pg_backoff_ms(&p, 1), 50);
    assert_int_equal(cstl_pg_backoff_ms(&p, 2), 100);
    assert_int_equal(cstl_pg_backoff_ms(&p, 3), 200);
    assert_int_equal(cstl_pg_backoff_ms(&p, 4), 300);
    assert_int_equal(cstl_pg_backoff_ms(&p, 40), 300);
    assert_int_equal(cstl_pg_backoff_ms(&p, 0), 50);
    assert_int_equal(cstl_pg_backoff_ms(NULL, 1), 100);
    assert_int_equal(cstl_pg_backoff_ms(NULL, 100), 2000);
}

static void test_bad_dsn_is_config_error_without_password(void **state)
{
    (void)state;
    cstl_error err;
    cstl_pg_conn *conn = cstl_pg_connect("host=db password=hunter2 oops", NULL, &err);
    assert_null(conn);
    assert_int_equal(err.code, CSTL_ECONFIG);
    assert_non_null(strstr(err.message, "invalid postgresql connection string"));
    assert_null(strstr(err.message, "hunter2"));
    assert_null(strstr(err.detail, "hunter2"));
    conn = cstl_pg_connect("host=db nosuchoption=1 password=hunter2", NULL, &err);
    assert_null(conn);
    assert_int_equal(err.code, CSTL_ECONFIG);
    assert_non_null(strstr(err.message, "nosuchoption"));
    assert_null(strstr(err.message, "hunter2"));
    assert_null(cstl_pg_connect(NULL, NULL, &err));
    assert_int_equal(err.code, CSTL_EINVAL);
    assert_null(cstl_pg_pool_new("password=hunter2 x", NULL, &err));
    assert_int_equal(err.code, CSTL_ECONFIG);
    assert_null(strstr(err.message, "hunter2"));
}

static int never_called(cstl_pg_conn *conn, void *ud, cstl_error *err)
{
    (void)conn;
    (void)ud;
    (void)err;
    fail();
    return 0;
}

static void test_argument_checks(void **state)
{
    (void)state;
    cstl_error err;
    PGresult *res = (PGresult *)(uintptr_t)1;
    assert_int_equal(cstl_pg_exec(NULL, "select 1", 0, NULL, &res, &err), CSTL_EINVAL);
    assert_null(res);
    assert_int_equal(cstl_pg_tx(NULL, never_called, NULL, 1, &err), CSTL_EINVAL);
    cstl_pg_close(NULL);
    cstl_pg_pool_free(NULL);
    assert_false(cstl_pg_ok(NULL));
    assert_int_equal(cstl_pg_backend_pid(NULL), 0);
    /* A pool opens nothing until a thread asks. */
    cstl_pg_pool *pool = cstl_pg_pool_new("host=127.0.0.1 port=1", NULL, &err);
    assert_non_null(pool);
    assert_int_equal(cstl_pg_pool_size(pool), 0);
    cstl_pg_pool_release(pool);
    cstl_pg_pool_free(pool);
}

static void test_result_error_without_result(void **state)
{
    (void)state;
    cstl_error err;
    int rc = cstl_pg_result_error(NULL, NULL, "query \"select 1\"", &err);
    assert_int_equal(rc, CSTL_EPG_CONN);
    assert_int_equal(err.origin, CSTL_ORIGIN_PG);
    assert_non_null(strstr(err.message, "query \"select 1\" failed"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sqlstate_mapping),
        cmocka_unit_test(test_dsn_redact),
        cmocka_unit_test(test_message_redact),
        cmocka_unit_test(test_connect_failure_classification),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_bad_dsn_is_config_error_without_password),
        cmocka_unit_test(test_argument_checks),
        cmocka_unit_test(test_result_error_without_result),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
