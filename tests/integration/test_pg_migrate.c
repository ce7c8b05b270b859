/*
 * Integration tests for platform/pg.c and platform/migrate.c against the real PostgreSQL named by
 * CONSTELLATION_PG_DSN. Everything happens in a throwaway database cstl_test_<pid>_<random>,
 * created by the group setup and dropped (WITH FORCE) by the group teardown, which cmocka runs
 * even when a test fails.
 */
#include "platform/error.h"
#include "platform/id.h"
#include "platform/migrate.h"
#include "platform/pg.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define DEFAULT_DSN "host=127.0.0.1 port=5432 dbname=constellation user=constellation"

static const cstl_pg_retry test_policy = {
    .max_attempts = 3,
    .initial_backoff_ms = 50,
    .max_backoff_ms = 200,
    .max_total_ms = 3000,
    .connect_timeout_s = 3,
    .application_name = "cstl-test-pg",
};

static char admin_dsn[1024];
static char test_dsn[1200];
static char db_name[64];
static cstl_pg_conn *admin; /* on the admin database, for CREATE/DROP DATABASE and kills */
static cstl_pg_conn *conn;  /* on the throwaway database */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Appends " key='value'" with libpq quoting. */
static void append_kv(char *out, size_t n, const char *key, const char *val)
{
    size_t o = strlen(out);
    o += (size_t)snprintf(out + o, n - o, "%s%s='", o ? " " : "", key);
    for (const char *p = val; *p != '\0' && o + 3 < n; p++) {
        if (*p == '\'' || *p == '\\')
            out[o++] = '\\';
        out[o++] = *p;
    }
    snprintf(out + o, n - o, "'");
}

/* admin_dsn with dbname replaced by db. */
static void dsn_for(const char *db, char *out, size_t n)
{
    out[0] = '\0';
    PQconninfoOption *opts = PQconninfoParse(admin_dsn, NULL);
    assert_non_null(opts);
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (o->val != NULL && o->val[0] != '\0' && strcmp(o->keyword, "dbname") != 0)
            append_kv(out, n, o->keyword, o->val);
    append_kv(out, n, "dbname", db);
    PQconninfoFree(opts);
}

static int exec_ok(cstl_pg_conn *c, const char *sql)
{
    cstl_error err;
    int rc = cstl_pg_exec_script(c, sql, &err);
    if (rc != 0)
        print_error("sql failed: %s (%s)\n", err.message, sql);
    return rc;
}

/* The single value of a one-row, one-column query, as a long. */
static long query_long(cstl_pg_conn *c, const char *sql)
{
    PGresult *res = NULL;
    cstl_error err;
    int rc = cstl_pg_exec(c, sql, 0, NULL, &res, &err);
    if (rc != 0)
        print_error("query failed: %s\n", err.message);
    assert_int_equal(rc, 0);
    assert_int_equal(PQntuples(res), 1);
    long v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

static void drop_db(void)
{
    if (admin == NULL || db_name[0] == '\0')
        return;
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name);
    cstl_error err;
    if (cstl_pg_exec(admin, sql, 0, NULL, NULL, &err) != 0)
        fprintf(stderr, "cannot drop test database %s: %s\n", db_name, err.message);
    db_name[0] = '\0';
}

static int group_setup(void **state)
{
    (void)state;
    const char *env = getenv("CONSTELLATION_PG_DSN");
    snprintf(admin_dsn, sizeof(admin_dsn), "%s", env && *env ? env : DEFAULT_DSN);
    cstl_error err;
    admin = cstl_pg_connect(admin_dsn, &test_policy, &err);
    if (admin == NULL) {
        fprintf(stderr, "cannot reach postgresql: %s\n", err.message);
        return -1;
    }
    char uuid[CSTL_UUID_STRLEN + 1];
    cstl_uuid_v7_string(uuid);
    snprintf(db_name, sizeof(db_name), "cstl_test_%d_%.8s", (int)getpid(), uuid + 28);
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db_name);
    if (cstl_pg_exec(admin, sql, 0, NULL, NULL, &err) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", db_name, err.message);
        db_name[0] = '\0';
        return -1;
    }
    dsn_for(db_name, test_dsn, sizeof(test_dsn));
    conn = cstl_pg_connect(test_dsn, &test_policy, &err);
    if (conn == NULL) {
        fprintf(stderr, "cannot connect to %s: %s\n", db_name, err.message);
        drop_db();
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    cstl_pg_close(conn);
    conn = NULL;
    drop_db();
    cstl_pg_close(admin);
    admin = NULL;
    return 0;
}

/* ---- migrations ---- */

static void test_migrate_embedded_twice(void **state)
{
    (void)state;
    cstl_migration *list = NULL;
    size_t n = 0;
    cstl_error err;
    assert_int_equal(cstl_migrations_embedded(&list, &n, &err), 0);
    assert_true(n >= 1);

    cstl_migrate_report rep;
    int rc = cstl_migrate_run(conn, list, n, &rep, &err);
    if (rc != 0)
        print_error("migrate: %s\n", err.message);
    assert_int_equal(rc, 0);
    assert_int_equal(rep.applied, n);
    assert_int_equal(rep.present, 0);
    assert_true(rep.last_version >= 1);

    rc = cstl_migrate_run(conn, list, n, &rep, &err);
    assert_int_equal(rc, 0);
    assert_int_equal(rep.applied, 0);
    assert_int_equal(rep.present, n);
    assert_int_equal(rep.unknown, 0);

    assert_int_equal(query_long(conn, "SELECT count(*) FROM schema_migrations"), (long)n);
    /* The stored checksum is the file's SHA-256. */
    char sum[CSTL_SHA256_HEX_LEN + 1];
    cstl_migration_checksum(list[0].sql, strlen(list[0].sql), sum);
    PGresult *res = NULL;
    assert_int_equal(cstl_pg_exec(conn,
                                  "SELECT name, checksum FROM schema_migrations WHERE version = 1",
                                  0, NULL, &res, &err),
                     0);
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(PQgetvalue(res, 0, 0), "projection_offsets");
    assert_string_equal(PQgetvalue(res, 0, 1), sum);
    PQclear(res);
    /* The table exists, with its comment. */
    assert_int_equal(query_long(conn, "SELECT count(*) FROM projection_offsets"), 0);
    assert_int_equal(query_long(conn, "SELECT (obj_description('projection_offsets'::regclass, "
                                      "'pg_class') IS NOT NULL)::int"),
                     1);
    free(list);
}

/* After the embedded migrations (test_migrate_embedded_twice ran them): cstl_ts keeps every
 * microsecond of the instants a bigint converts to double precision exactly (|v| < 2^53 us,
 * years 1685 to 2255), whatever the session's time zone, and the planner inlines it (no function
 * call per row in the projectors' statements). */
static void test_cstl_ts_exact_and_inlined(void **state)
{
    (void)state;
    assert_int_equal(exec_ok(conn, "SET TIME ZONE 'America/New_York'"), 0);
    /* the reference: the epoch in UTC plus whole seconds plus microseconds, no floating point */
    assert_int_equal(
        query_long(conn,
                   "SELECT count(*) FROM (SELECT v FROM unnest(ARRAY[0, -1, 1, 999999, "
                   "1763800000123457, 1763800000999999, 4102444800000001, -2208988800000001, "
                   "9007199254740991]::bigint[]) v UNION ALL SELECT 1700000000000000 + g * "
                   "7919 FROM generate_series(1, 20000) g) s WHERE cstl_ts(v) IS DISTINCT FROM "
                   "timestamptz '1970-01-01 00:00:00+00' + make_interval(secs => 0) + "
                   "(div(v, 1000000) * interval '1 second') + (mod(v, 1000000) * "
                   "interval '1 microsecond')"),
        0);
    assert_int_equal(query_long(conn, "SELECT (cstl_ts(NULL) IS NULL)::int"), 1);
    PGresult *res = NULL;
    cstl_error err;
    assert_int_equal(cstl_pg_exec(conn,
                                  "EXPLAIN (VERBOSE, COSTS OFF) SELECT cstl_ts(g) FROM "
                                  "generate_series(1::bigint, 3::bigint) g",
                                  0, NULL, &res, &err),
                     0);
    bool called = false;
    for (int i = 0; i < PQntuples(res); i++)
        called |= strstr(PQgetvalue(res, i, 0), "cstl_ts(") != NULL;
    PQclear(res);
    assert_false(called);
    assert_int_equal(exec_ok(conn, "RESET TIME ZONE"), 0);
}

static void test_checksum_mismatch_refused(void **state)
{
    (void)state;
    cstl_migration *list = NULL;
    size_t n = 0;
    cstl_error err;
    assert_int_equal(cstl_migrations_embedded(&list, &n, &err), 0);
    assert_int_equal(exec_ok(conn, "UPDATE schema_migrations SET checksum = 'tampered' "
                                   "WHERE version = 1"),
                     0);
    cstl_migrate_report rep;
    int rc = cstl_migrate_run(conn, list, n, &rep, &err);
    assert_int_equal(rc, CSTL_EMIGRATION);
    assert_non_null(strstr(err.message, "migration 0001"));
    assert_non_null(strstr(err.message, "0001_projection_offsets.sql"));
    assert_non_null(strstr(err.detail, "tampered"));
    assert_int_equal(rep.applied, 0);
    /* The lock was released: another session can take it at once. */
    assert_int_equal(query_long(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                      " AND database = (SELECT oid FROM pg_database"
                                      "                 WHERE datname = current_database())"
                                      " AND classid = (x'6373746c'::bigint)::oid"
                                      " AND objid = (x'6d696772'::bigint)::oid"),
                     0);
    /* Put the right checksum back for the tests that follow. */
    char sum[CSTL_SHA256_HEX_LEN + 1];
    cstl_migration_checksum(list[0].sql, strlen(list[0].sql), sum);
    const char *params[] = {sum};
    assert_int_equal(cstl_pg_exec(conn,
                                  "UPDATE schema_migrations SET checksum = $1 WHERE version = 1", 1,
                                  params, NULL, &err),
                     0);
    assert_int_equal(cstl_migrate_run(conn, list, n, &rep, &err), 0);
    assert_int_equal(rep.applied, 0);
    free(list);
}

static void test_failed_migration_names_file_and_rolls_back(void **state)
{
    (void)state;
    cstl_migration bad[] = {
        {"mem/8001_half_done.sql", "CREATE TABLE half_done (x int); SELECT * FROM no_such_table;"},
    };
    cstl_error err;
    cstl_migrate_report rep;
    assert_int_equal(cstl_migrate_run(conn, bad, 1, &rep, &err), CSTL_EMIGRATION);
    assert_non_null(strstr(err.message, "migration 8001"));
    assert_non_null(strstr(err.message, "8001_half_done.sql"));
    assert_string_equal(err.origin_sqlstate, "42P01");
    /* Neither the table nor the row was kept. */
    assert_int_equal(query_long(conn, "SELECT count(*) FROM pg_class WHERE relname = 'half_done'"),
                     0);
    assert_int_equal(
        query_long(conn, "SELECT count(*) FROM schema_migrations WHERE version = 8001"), 0);
}

#define MIGRATORS 3

typedef struct migrator {
    pthread_barrier_t *barrier;
    int rc;
    char message[CSTL_ERROR_MESSAGE_MAX];
    cstl_migrate_report rep;
} migrator;

static const cstl_migration race_list[] = {
    {"mem/9003_race_three.sql", "CREATE TABLE race_three (x int);"},
    {"mem/9001_race_one.sql", "SELECT pg_sleep(0.3); CREATE TABLE race_one (x int);"},
    {"mem/9002_race_two.sql", "CREATE TABLE race_two (x int);"},
};

static void *migrate_thread(void *arg)
{
    migrator *m = arg;
    cstl_error err;
    cstl_pg_conn *c = cstl_pg_connect(test_dsn, &test_policy, &err);
    pthread_barrier_wait(m->barrier);
    if (c == NULL) {
        m->rc = err.code;
    } else {
        m->rc = cstl_migrate_run(c, race_list, CSTL_ARRAY_LEN(race_list), &m->rep, &err);
    }
    if (m->rc != 0)
        snprintf(m->message, sizeof(m->message), "%s", err.message);
    cstl_pg_close(c);
    return NULL;
}

static void test_concurrent_migrators_apply_once(void **state)
{
    (void)state;
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, MIGRATORS);
    migrator m[MIGRATORS];
    pthread_t t[MIGRATORS];
    memset(m, 0, sizeof(m));
    for (int i = 0; i < MIGRATORS; i++) {
        m[i].barrier = &barrier;
        assert_int_equal(pthread_create(&t[i], NULL, migrate_thread, &m[i]), 0);
    }
    size_t applied = 0;
    for (int i = 0; i < MIGRATORS; i++) {
        pthread_join(t[i], NULL);
        if (m[i].rc != 0)
            print_error("migrator %d: %s\n", i, m[i].message);
        assert_int_equal(m[i].rc, 0);
        assert_int_equal(m[i].rep.applied + m[i].rep.present, CSTL_ARRAY_LEN(race_list));
        assert_true(m[i].rep.unknown >= 1); /* the embedded 0001 */
        applied += m[i].rep.applied;
    }
    pthread_barrier_destroy(&barrier);
    assert_int_equal(applied, CSTL_ARRAY_LEN(race_list));
    assert_int_equal(query_long(conn, "SELECT count(*) FROM schema_migrations "
                                      "WHERE version BETWEEN 9001 AND 9003"),
                     3);
    assert_int_equal(query_long(conn, "SELECT count(*) FROM pg_class WHERE relname LIKE 'race_%'"),
                     3);
}

/* ---- queries and transactions ---- */

typedef struct offset_row {
    const char *projection, *topic, *partition, *next_offset;
    long seen;
} offset_row;

static int upsert_offset(cstl_pg_conn *c, void *ud, cstl_error *err)
{
    offset_row *r = ud;
    const char *params[] = {r->projection, r->topic, r->partition, r->next_offset};
    return cstl_pg_exec_prepared(
        c, "upsert_offset",
        "INSERT INTO projection_offsets (projection, topic, partition, next_offset) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (projection, topic, partition) "
        "DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
        4, params, NULL, err);
}

static int select_offset(cstl_pg_conn *c, void *ud, cstl_error *err)
{
    offset_row *r = ud;
    const char *params[] = {r->projection, r->topic, r->partition};
    PGresult *res = NULL;
    int rc = cstl_pg_exec(c,
                          "SELECT next_offset FROM projection_offsets "
                          "WHERE projection = $1 AND topic = $2 AND partition = $3",
                          3, params, &res, err);
    if (rc != 0)
        return rc;
    r->seen = PQntuples(res) == 1 ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    PQclear(res);
    return 0;
}

static int insert_plain(cstl_pg_conn *c, void *ud, cstl_error *err)
{
    offset_row *r = ud;
    const char *params[] = {r->projection, r->topic, r->partition, r->next_offset};
    return cstl_pg_exec(c,
                        "INSERT INTO projection_offsets (projection, topic, partition, next_offset)"
                        " VALUES ($1, $2, $3, $4)",
                        4, params, NULL, err);
}

static int insert_then_fail(cstl_pg_conn *c, void *ud, cstl_error *err)
{
    int rc = insert_plain(c, ud, err);
    if (rc != 0)
        return rc;
    return cstl_error_set(err, CSTL_ECONFLICT, "the body said no");
}

static void test_projection_offsets_through_tx(void **state)
{
    (void)state;
    cstl_error err;
    offset_row r = {"jobs", "constellation.jobs.events", "3", "42", 0};
    int rc = cstl_pg_tx(conn, upsert_offset, &r, 3, &err);
    if (rc != 0)
        print_error("tx: %s\n", err.message);
    assert_int_equal(rc, 0);
    assert_int_equal(cstl_pg_tx(conn, select_offset, &r, 1, &err), 0);
    assert_int_equal(r.seen, 42);
    r.next_offset = "43";
    assert_int_equal(cstl_pg_tx_isolated(conn, CSTL_PG_SERIALIZABLE, upsert_offset, &r, 3, &err),
                     0);
    assert_int_equal(cstl_pg_tx_isolated(conn, CSTL_PG_REPEATABLE_READ, select_offset, &r, 1, &err),
                     0);
    assert_int_equal(r.seen, 43);
    /* The statement was prepared once on this connection. */
    assert_int_equal(query_long(conn, "SELECT count(*) FROM pg_prepared_statements "
                                      "WHERE name = 'upsert_offset'"),
                     1);

    /* A duplicate key is CSTL_EEXISTS with its SQLSTATE, and is not retried. */
    rc = cstl_pg_tx(conn, insert_plain, &r, 3, &err);
    assert_int_equal(rc, CSTL_EEXISTS);
    assert_string_equal(err.origin_sqlstate, "23505");
    assert_int_equal(err.origin, CSTL_ORIGIN_PG);
    assert_non_null(strstr(err.message, "query \"INSERT INTO projection_offsets"));
    assert_non_null(strstr(err.detail, "already exists"));

    /* A body error rolls back what the body did and is returned as is. */
    offset_row r2 = {"jobs", "constellation.jobs.events", "4", "7", 0};
    rc = cstl_pg_tx(conn, insert_then_fail, &r2, 3, &err);
    assert_int_equal(rc, CSTL_ECONFLICT);
    assert_string_equal(err.message, "the body said no");
    assert_int_equal(cstl_pg_tx(conn, select_offset, &r2, 1, &err), 0);
    assert_int_equal(r2.seen, -1);

    /* A negative offset violates the check constraint: CSTL_EPG with SQLSTATE 23514. */
    offset_row r3 = {"jobs", "constellation.jobs.events", "5", "-1", 0};
    assert_int_equal(cstl_pg_tx(conn, insert_plain, &r3, 3, &err), CSTL_EPG);
    assert_string_equal(err.origin_sqlstate, "23514");
    /* The connection is usable after all that, and application_name was set. */
    PGresult *res = NULL;
    assert_int_equal(cstl_pg_exec(conn, "SHOW application_name", 0, NULL, &res, &err), 0);
    assert_string_equal(PQgetvalue(res, 0, 0), "cstl-test-pg");
    PQclear(res);
}

typedef struct flaky_ctx {
    int calls;
    const char *fail_times;
} flaky_ctx;

static int call_flaky(cstl_pg_conn *c, void *ud, cstl_error *err)
{
    flaky_ctx *f = ud;
    f->calls++;
    const char *params[] = {f->fail_times};
    return cstl_pg_exec(c, "SELECT flaky($1::int)", 1, params, NULL, err);
}

static void test_tx_retries_simulated_serialization_failure(void **state)
{
    (void)state;
    /* nextval is not rolled back, so the sequence counts calls across attempts. */
    assert_int_equal(
        exec_ok(conn,
                "CREATE SEQUENCE flaky_calls;"
                "CREATE FUNCTION flaky(fail_times int) RETURNS bigint LANGUAGE plpgsql AS $$"
                " DECLARE n bigint := nextval('flaky_calls');"
                " BEGIN"
                "  IF n <= fail_times THEN"
                "   RAISE EXCEPTION 'simulated serialization failure %', n USING ERRCODE = '40001';"
                "  END IF;"
                "  RETURN n;"
                " END $$;"),
        0);
    cstl_error err;
    flaky_ctx f = {0, "2"};
    assert_int_equal(cstl_pg_tx(conn, call_flaky, &f, 5, &err), 0);
    assert_int_equal(f.calls, 3);

    assert_int_equal(exec_ok(conn, "ALTER SEQUENCE flaky_calls RESTART"), 0);
    f = (flaky_ctx){0, "100"};
    int64_t start = now_ms();
    assert_int_equal(cstl_pg_tx(conn, call_flaky, &f, 3, &err), CSTL_EPG_RETRY);
    assert_true(now_ms() - start < 5000);
    assert_int_equal(f.calls, 3);
    assert_string_equal(err.origin_sqlstate, "40001");
    assert_non_null(strstr(err.message, "gave up after 3 attempts"));
    assert_non_null(strstr(err.message, "simulated serialization failure"));
    assert_int_equal(query_long(conn, "SELECT last_value FROM flaky_calls"), 3);
}

typedef struct ser_ctx {
    cstl_pg_conn *other;
    int calls;
} ser_ctx;

static int bump_counter(cstl_pg_conn *c, void *ud, cstl_error *err)
{
    ser_ctx *s = ud;
    s->calls++;
    /* The first read fixes the snapshot of this transaction. */
    int rc = cstl_pg_exec(c, "SELECT n FROM ser_counter WHERE id = 1", 0, NULL, NULL, err);
    if (rc != 0)
        return rc;
    if (s->calls == 1) {
        /* Another session changes the row and commits behind our snapshot. */
        rc = cstl_pg_exec(s->other, "UPDATE ser_counter SET n = n + 100 WHERE id = 1", 0, NULL,
                          NULL, err);
        if (rc != 0)
            return rc;
    }
    return cstl_pg_exec(c, "UPDATE ser_counter SET n = n + 1 WHERE id = 1", 0, NULL, NULL, err);
}

static void test_tx_retries_real_serialization_failure(void **state)
{
    (void)state;
    assert_int_equal(exec_ok(conn, "CREATE TABLE ser_counter (id int PRIMARY KEY, n int NOT NULL);"
                                   "INSERT INTO ser_counter VALUES (1, 0);"),
                     0);
    cstl_error err;
    ser_ctx s = {cstl_pg_connect(test_dsn, &test_policy, &err), 0};
    assert_non_null(s.other);
    int rc = cstl_pg_tx_isolated(conn, CSTL_PG_SERIALIZABLE, bump_counter, &s, 3, &err);
    if (rc != 0)
        print_error("tx: %s\n", err.message);
    assert_int_equal(rc, 0);
    assert_int_equal(s.calls, 2);
    assert_int_equal(query_long(conn, "SELECT n FROM ser_counter WHERE id = 1"), 101);

    /* With one attempt the failure is returned, classified. */
    s.calls = 0;
    rc = cstl_pg_tx_isolated(conn, CSTL_PG_REPEATABLE_READ, bump_counter, &s, 1, &err);
    assert_int_equal(rc, CSTL_EPG_RETRY);
    assert_string_equal(err.origin_sqlstate, "40001");
    assert_int_equal(s.calls, 1);
    assert_int_equal(query_long(conn, "SELECT n FROM ser_counter WHERE id = 1"), 201);
    cstl_pg_close(s.other);
}

static int swallow_error(cstl_pg_conn *c, void *ud, cstl_error *err)
{
    (void)ud;
    cstl_pg_exec(c, "SELECT * FROM no_such_table", 0, NULL, NULL, err);
    return 0; /* pretends all went well */
}

static void test_tx_commit_of_failed_transaction(void **state)
{
    (void)state;
    cstl_error err;
    assert_int_equal(cstl_pg_tx(conn, swallow_error, NULL, 3, &err), CSTL_EPG);
    assert_non_null(strstr(err.message, "rolled back"));
    assert_int_equal(query_long(conn, "SELECT 1"), 1);
}

static void test_statement_timeout(void **state)
{
    (void)state;
    cstl_error err;
    assert_int_equal(cstl_pg_set_statement_timeout(conn, 100, &err), 0);
    int64_t start = now_ms();
    assert_int_equal(cstl_pg_exec(conn, "SELECT pg_sleep(2)", 0, NULL, NULL, &err), CSTL_ETIMEDOUT);
    assert_true(now_ms() - start < 1500);
    assert_string_equal(err.origin_sqlstate, "57014");
    assert_non_null(strstr(err.message, "query \"SELECT pg_sleep(2)\" failed"));
    assert_int_equal(cstl_pg_set_statement_timeout(conn, 0, &err), 0);
    assert_int_equal(query_long(conn, "SELECT 2"), 2);

    /* Set through the policy, it survives a reconnect. */
    cstl_pg_retry p = test_policy;
    p.statement_timeout_ms = 1234;
    cstl_pg_conn *c = cstl_pg_connect(test_dsn, &p, &err);
    assert_non_null(c);
    assert_int_equal(cstl_pg_reconnect(c, &err), 0);
    PGresult *res = NULL;
    assert_int_equal(cstl_pg_exec(c, "SHOW statement_timeout", 0, NULL, &res, &err), 0);
    assert_string_equal(PQgetvalue(res, 0, 0), "1234ms");
    PQclear(res);
    cstl_pg_close(c);
}

/* ---- connections ---- */

static void test_connect_gives_up_on_closed_port(void **state)
{
    (void)state;
    cstl_error err;
    int64_t start = now_ms();
    cstl_pg_conn *c = cstl_pg_connect("host=127.0.0.1 port=1 dbname=x user=u password=hunter2",
                                      &test_policy, &err);
    int64_t took = now_ms() - start;
    assert_null(c);
    assert_int_equal(err.code, CSTL_EPG_CONN);
    assert_true(cstl_error_is_retriable(err.code));
    assert_int_equal(err.origin, CSTL_ORIGIN_PG);
    assert_non_null(strstr(err.message, "after 3 attempts"));
    assert_non_null(strstr(err.message, "127.0.0.1"));
    assert_null(strchr(err.message, '\n'));
    assert_null(strstr(err.message, "hunter2"));
    assert_null(strstr(err.detail, "hunter2"));
    assert_non_null(strstr(err.detail, "password=***"));
    /* Two waits of at most 50 and 100 ms. */
    assert_true(took >= 70);
    assert_true(took < 3000);
}

static void test_missing_database_not_retried(void **state)
{
    (void)state;
    char dsn[1200];
    dsn_for("cstl_test_no_such_database", dsn, sizeof(dsn));
    cstl_error err;
    cstl_pg_retry p = test_policy;
    p.initial_backoff_ms = 1000;
    int64_t start = now_ms();
    assert_null(cstl_pg_connect(dsn, &p, &err));
    assert_int_equal(err.code, CSTL_ECONFIG);
    assert_non_null(strstr(err.message, "cstl_test_no_such_database"));
    assert_true(now_ms() - start < 1000);
}

static int note_pid(cstl_pg_conn *c, void *ud, cstl_error *err)
{
    int *calls = ud;
    (*calls)++;
    return cstl_pg_exec(c, "SELECT 1", 0, NULL, NULL, err);
}

static void kill_backend(int pid)
{
    char sql[96];
    /* With a timeout, pg_terminate_backend waits until the backend has exited. */
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d, 5000)::int", pid);
    assert_int_equal(query_long(admin, sql), 1);
}

static void test_killed_backend_is_reconnected(void **state)
{
    (void)state;
    cstl_error err;
    cstl_pg_pool *pool = cstl_pg_pool_new(test_dsn, &test_policy, &err);
    assert_non_null(pool);
    cstl_pg_conn *c = NULL, *again = NULL;
    assert_int_equal(cstl_pg_pool_get(pool, &c, &err), 0);
    assert_int_equal(cstl_pg_pool_get(pool, &again, &err), 0);
    assert_ptr_equal(c, again); /* one connection per thread */
    int pid = cstl_pg_backend_pid(c);
    assert_true(pid > 0);

    /* The transaction helper notices the loss, reconnects and runs the body again. */
    kill_backend(pid);
    int calls = 0;
    int rc = cstl_pg_tx(c, note_pid, &calls, 3, &err);
    if (rc != 0)
        print_error("tx: %s\n", err.message);
    assert_int_equal(rc, 0);
    assert_int_equal(calls, 1); /* the loss shows at BEGIN, before the body runs */
    int pid2 = cstl_pg_backend_pid(c);
    assert_true(pid2 > 0 && pid2 != pid);

    /* A plain query reports the loss as CSTL_EPG_CONN; the pool then hands out a new one. */
    kill_backend(pid2);
    assert_int_equal(cstl_pg_exec(c, "SELECT 1", 0, NULL, NULL, &err), CSTL_EPG_CONN);
    assert_false(cstl_pg_ok(c));
    assert_int_equal(cstl_pg_exec(c, "SELECT 1", 0, NULL, NULL, &err), CSTL_EPG_CONN);
    assert_int_equal(cstl_pg_pool_get(pool, &again, &err), 0);
    assert_true(cstl_pg_ok(again));
    assert_int_not_equal(cstl_pg_backend_pid(again), pid2);
    assert_int_equal(query_long(again, "SELECT 3"), 3);
    cstl_pg_pool_free(pool);
}

typedef struct pool_worker {
    cstl_pg_pool *pool;
    int pid1, pid2;
    int rc;
} pool_worker;

static void *pool_thread(void *arg)
{
    pool_worker *w = arg;
    cstl_error err;
    cstl_pg_conn *c = NULL;
    w->rc = cstl_pg_pool_get(w->pool, &c, &err);
    if (w->rc != 0)
        return NULL;
    w->pid1 = cstl_pg_backend_pid(c);
    w->rc = cstl_pg_exec(c, "SELECT pg_sleep(0.05)", 0, NULL, NULL, &err);
    if (w->rc == 0)
        w->rc = cstl_pg_pool_get(w->pool, &c, &err);
    w->pid2 = cstl_pg_backend_pid(c);
    return NULL;
}

static void test_pool_one_connection_per_thread(void **state)
{
    (void)state;
    cstl_error err;
    cstl_pg_pool *pool = cstl_pg_pool_new(test_dsn, &test_policy, &err);
    assert_non_null(pool);
    pool_worker w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (pool_worker){pool, 0, 0, 0};
        assert_int_equal(pthread_create(&t[i], NULL, pool_thread, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].rc, 0);
        assert_int_equal(w[i].pid1, w[i].pid2);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(w[i].pid1, w[j].pid1);
    }
    assert_int_equal(cstl_pg_pool_size(pool), 4);
    /* This thread gets its own connection; releasing it closes only that one. */
    cstl_pg_conn *c = NULL;
    assert_int_equal(cstl_pg_pool_get(pool, &c, &err), 0);
    assert_int_equal(cstl_pg_pool_size(pool), 5);
    cstl_pg_pool_release(pool);
    assert_int_equal(cstl_pg_pool_size(pool), 4);
    cstl_pg_pool_free(pool);
}

static void test_query_error_names_statement(void **state)
{
    (void)state;
    cstl_error err;
    PGresult *res = (PGresult *)(uintptr_t)1;
    assert_int_equal(cstl_pg_exec(conn, "SELECT * FROM no_such_table", 0, NULL, &res, &err),
                     CSTL_EPG);
    assert_null(res);
    assert_string_equal(err.origin_sqlstate, "42P01");
    assert_string_equal(err.message,
                        "query \"SELECT * FROM no_such_table\" failed: relation \"no_such_table\" "
                        "does not exist");
    assert_int_equal(cstl_pg_exec_prepared(conn, "bad_stmt", "SELEC 1", 0, NULL, NULL, &err),
                     CSTL_EPG);
    assert_non_null(strstr(err.message, "statement \"bad_stmt\" failed"));
    assert_int_equal(cstl_pg_exec_prepared(conn, "upsert_offset", "SELECT 1", 0, NULL, NULL, &err),
                     CSTL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_embedded_twice),
        cmocka_unit_test(test_cstl_ts_exact_and_inlined),
        cmocka_unit_test(test_checksum_mismatch_refused),
        cmocka_unit_test(test_failed_migration_names_file_and_rolls_back),
        cmocka_unit_test(test_concurrent_migrators_apply_once),
        cmocka_unit_test(test_projection_offsets_through_tx),
        cmocka_unit_test(test_tx_retries_simulated_serialization_failure),
        cmocka_unit_test(test_tx_retries_real_serialization_failure),
        cmocka_unit_test(test_tx_commit_of_failed_transaction),
        cmocka_unit_test(test_statement_timeout),
        cmocka_unit_test(test_connect_gives_up_on_closed_port),
        cmocka_unit_test(test_missing_database_not_retried),
        cmocka_unit_test(test_killed_backend_is_reconnected),
        cmocka_unit_test(test_pool_one_connection_per_thread),
        cmocka_unit_test(test_query_error_names_statement),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
