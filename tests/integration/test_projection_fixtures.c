/*
 * Fixture tests of the projections: each JSON file in tests/fixtures/projections lists events and
 * SQL checks with their expected rows. The events are applied directly through the projections'
 * apply functions into a throwaway database, twice (a replay must change nothing), then every
 * check must return exactly its rows. An event with "topic" is a record of that telemetry topic
 * ("jobs.waiting"; type "Tombstone" for a record without a value): as the projector reads two
 * topics in no fixed order, each fixture is applied three times over, with those records where
 * they are listed, all before the events, and all after them (each topic's own order kept), and
 * the checks must hold every time.
 */
#include "../support/proj_env.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

// clang-format off
#include <cmocka.h>
// clang-format on

enum { AS_LISTED, TOPIC_FIRST, TOPIC_LAST, NORDERS };
static const char *const order_names[NORDERS] = {"as listed", "telemetry first", "telemetry last"};

/* Records the fixture's events in order (see the file comment). */
static void emit_events(const json_t *fx, int order)
{
    pe_events_clear();
    for (int pass = 0; pass < 2; pass++) {
        size_t i;
        json_t *ev;
        json_array_foreach(json_object_get(fx, "events"), i, ev)
        {
            const char *topic = json_string_value(json_object_get(ev, "topic"));
            bool telemetry = topic != NULL;
            if ((order == TOPIC_FIRST && telemetry != (pass == 0)) ||
                (order == TOPIC_LAST && telemetry != (pass == 1)) ||
                (order == AS_LISTED && pass == 1))
                continue;
            const char *type = json_string_value(json_object_get(ev, "type"));
            const char *subject = json_string_value(json_object_get(ev, "subject"));
            if (type != NULL && strcmp(type, CSTL_PROJ_TOMBSTONE) == 0) {
                pe_emit_tombstone(subject);
            } else {
                pe_event *e = pe_emit(json_string_value(json_object_get(ev, "ctx")), type, subject,
                                      json_string_value(json_object_get(ev, "tenant")),
                                      json_integer_value(json_object_get(ev, "version")),
                                      json_incref(json_object_get(ev, "data")));
                if (telemetry)
                    snprintf(e->topic, sizeof(e->topic), "%s", topic);
            }
        }
    }
}

static void run_fixture_in(const char *path, const json_t *fx, int order)
{
    assert_int_equal(pe_sql(pe.pg,
                            "TRUNCATE tenants_v1.tenants, tenants_v1.api_keys, "
                            "jobs_v1.jobs, jobs_v1.runs, jobs_v1.job_history, "
                            "jobs_v1.job_waiting, jobs_v1.jobs_queue_counts, fleet_v1.workers, "
                            "fleet_v1.gpus, "
                            "fleet_v1.gpu_assignments, fleet_v1.job_tenants"),
                     0);
    emit_events(fx, order);
    size_t i;
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(pe_apply_direct("tenants_v1", 0, pe.nevents), 0);
        assert_int_equal(pe_apply_direct("jobs_v1", 0, pe.nevents), 0);
        assert_int_equal(pe_apply_direct("fleet_v1", 0, pe.nevents), 0);
    }
    json_t *check;
    json_array_foreach(json_object_get(fx, "checks"), i, check)
    {
        const char *sql = json_string_value(json_object_get(check, "sql"));
        json_t *rows = json_object_get(check, "rows");
        PGresult *res = NULL;
        cstl_error err;
        if (cstl_pg_exec(pe.pg, sql, 0, NULL, &res, &err) != 0)
            fail_msg("%s (%s): %s: %s", path, order_names[order], sql, err.message);
        if ((size_t)PQntuples(res) != json_array_size(rows))
            fail_msg("%s (%s): %s: %d rows, expected %zu", path, order_names[order], sql,
                     PQntuples(res), json_array_size(rows));
        for (int r = 0; r < PQntuples(res); r++) {
            json_t *want = json_array_get(rows, (size_t)r);
            for (int c = 0; c < PQnfields(res); c++) {
                const char *exp = json_string_value(json_array_get(want, (size_t)c));
                if (exp == NULL || strcmp(exp, PQgetvalue(res, r, c)) != 0)
                    fail_msg("%s (%s): %s: row %d column %d is \"%s\", expected \"%s\"", path,
                             order_names[order], sql, r, c, PQgetvalue(res, r, c),
                             exp ? exp : "(missing)");
            }
        }
        PQclear(res);
    }
}

static void run_fixture(const char *path)
{
    json_error_t jerr;
    json_t *fx = json_load_file(path, 0, &jerr);
    if (fx == NULL)
        fail_msg("%s: %s", path, jerr.text);
    for (int order = 0; order < NORDERS; order++)
        run_fixture_in(path, fx, order);
    json_decref(fx);
}

static void test_fixtures(void **state)
{
    (void)state;
    const char *src = getenv("CSTL_SOURCE_DIR");
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/tests/fixtures/projections", src ? src : ".");
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0)
            continue;
        char path[1400];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        run_fixture(path);
        n++;
    }
    closedir(d);
    assert_true(n >= 2);
}

static void test_unknown_job_is_an_event_error(void **state)
{
    (void)state;
    pe_events_clear();
    pe_emit(
        "jobs", "JobAdmitted", "NOPE", "T1", 2,
        json_pack("{s:s,s:s,s:I}", "job_id", "NOPE", "reservation_id", "R", "at", (json_int_t)1));
    assert_int_equal(pe_sql(pe.pg, "BEGIN; SET LOCAL search_path TO jobs_v1, public"), 0);
    cstl_error err;
    const json_t *data[] = {pe.events[0].data};
    assert_int_equal(cstl_projection_jobs_batch_begin(pe.pg, data, 1, &err), 0);
    int rc =
        cstl_projection_jobs_apply(pe.pg, &pe.events[0].h, "JobAdmitted", pe.events[0].data, &err);
    pe_sql(pe.pg, "ROLLBACK");
    assert_int_equal(rc, CSTL_ENOTFOUND);
    assert_false(cstl_projection_error_retriable(rc));
}

/* A batch of the jobs projection holds the rows of its jobs locked from batch_begin to its
 * commit, so another projector process cannot change one of them in between (its change would be
 * overwritten when the batch writes its copy back), and writes each changed job back once. */
/* Emits the JobSubmitted of job (tenant T1) at the time at (us). */
static void emit_submitted(const char *job, json_int_t at)
{
    pe_emit("jobs", "JobSubmitted", job, "T1", 1,
            json_pack("{s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:{},s:{},s:s,s:I}", "job_id", job,
                      "tenant_id", "T1", "name", "n", "priority", 50, "gpu_count", 1,
                      "min_gpu_memory_mib", 0, "runtime_limit_seconds", 60, "retry_limit", 0,
                      "labels", "parameters", "submitted_by", "u", "at", at));
}

/* Empty jobs tables but for J1, submitted (event 0, applied). */
static void reset_with_j1(void)
{
    assert_int_equal(pe_sql(pe.pg, "TRUNCATE jobs_v1.jobs, jobs_v1.runs, jobs_v1.job_history, "
                                   "jobs_v1.job_waiting, jobs_v1.jobs_queue_counts"),
                     0);
    pe_events_clear();
    emit_submitted("J1", 1000);
    assert_int_equal(pe_apply_direct("jobs_v1", 0, pe.nevents), 0);
}

static void emit_admitted_j1(void)
{
    pe_emit(
        "jobs", "JobAdmitted", "J1", "T1", 2,
        json_pack("{s:s,s:s,s:I}", "job_id", "J1", "reservation_id", "R1", "at", (json_int_t)2000));
}

/* Applies events 1 and 2 inside a batch begun for them (not ended). */
static void apply_events_1_2(void)
{
    cstl_error err;
    for (int i = 1; i <= 2; i++)
        assert_int_equal(cstl_projection_jobs_apply(pe.pg, &pe.events[i].h, pe.events[i].type,
                                                    pe.events[i].data, &err),
                         0);
}

/* A counter of jobs_v1.jobs in pg_stat_xact_user_tables. */
static long jobs_xact_stat(const char *column)
{
    char sql[160];
    snprintf(sql, sizeof(sql),
             "SELECT %s FROM pg_stat_xact_user_tables WHERE relid = 'jobs_v1.jobs'::regclass",
             column);
    return pe_long(pe.pg, sql);
}

/* Opens a transaction and begins a batch of events 1 and 2 in it; returns the jobs counter column
 * as it was before. The view also holds the session's counts not yet reported: compare within
 * the transaction, which reports none. */
static long begin_batch_1_2(const char *column)
{
    assert_int_equal(pe_sql(pe.pg, "BEGIN; SET LOCAL search_path TO jobs_v1, public"), 0);
    long before = jobs_xact_stat(column);
    cstl_error err;
    const json_t *data[] = {pe.events[1].data, pe.events[2].data};
    assert_int_equal(cstl_projection_jobs_batch_begin(pe.pg, data, 2, &err), 0);
    return before;
}

static void test_batch_locks_its_jobs_and_writes_back_once(void **state)
{
    (void)state;
    reset_with_j1();

    emit_admitted_j1();
    pe_emit("jobs", "JobPriorityChanged", "J1", "T1", 3,
            json_pack("{s:s,s:i,s:I}", "job_id", "J1", "priority", 70, "at", (json_int_t)3000));
    long before = begin_batch_1_2("n_tup_upd");
    cstl_error err;
    /* another session cannot lock (or change) J1 while the batch runs */
    cstl_pg_conn *other = cstl_pg_connect(pe.dsn, &pe_policy, &err);
    assert_non_null(other);
    assert_int_not_equal(pe_sql(other, "SELECT 1 FROM jobs_v1.jobs WHERE job_id = 'J1' FOR "
                                       "UPDATE NOWAIT"),
                         0);
    apply_events_1_2();
    /* nothing reached jobs before the batch's end */
    assert_int_equal(pe_long(pe.pg, "SELECT version FROM jobs_v1.jobs WHERE job_id = 'J1'"), 1);
    assert_int_equal(cstl_projection_jobs_batch_end(pe.pg, &err), 0);
    /* the batch's two events made one update of jobs */
    assert_int_equal(jobs_xact_stat("n_tup_upd"), before + 1);
    assert_int_equal(pe_sql(pe.pg, "COMMIT"), 0);
    assert_int_equal(pe_sql(other, "SELECT 1 FROM jobs_v1.jobs WHERE job_id = 'J1' FOR UPDATE "
                                   "NOWAIT"),
                     0);
    cstl_pg_close(other);
    char *row = pe_value(pe.pg, "SELECT state || ' ' || priority || ' ' || version || ' ' || "
                                "reservation_id FROM jobs_v1.jobs WHERE job_id = 'J1'");
    assert_string_equal(row, "queued 70 3 R1");
    free(row);
    assert_int_equal(pe_long(pe.pg, "SELECT count(*) FROM jobs_v1.job_history WHERE job_id = 'J1'"),
                     3);
}

/* A batch's write-back touches the rows of its jobs through the primary key: it never reads jobs
 * whole, whatever the planner guesses of the temporary table (migration 0011). */
static void test_write_back_reads_no_whole_table(void **state)
{
    (void)state;
    reset_with_j1();
    /* 5,000 other jobs, as copies of J1 under other ids, and statistics that know of them */
    assert_int_equal(pe_sql(pe.pg,
                            "INSERT INTO jobs_v1.jobs SELECT (jsonb_populate_record(j, "
                            "jsonb_build_object('job_id', 'X' || g))).* FROM jobs_v1.jobs j, "
                            "generate_series(1, 5000) g; ANALYZE jobs_v1.jobs"),
                     0);
    emit_admitted_j1();
    emit_submitted("J2", 3000);
    long before = begin_batch_1_2("seq_scan");
    cstl_error err;
    apply_events_1_2();
    assert_int_equal(cstl_projection_jobs_batch_end(pe.pg, &err), 0);
    assert_int_equal(jobs_xact_stat("seq_scan"), before);
    assert_int_equal(pe_sql(pe.pg, "COMMIT"), 0);
    char *row = pe_value(pe.pg, "SELECT string_agg(job_id || ' ' || state || ' ' || version, ', ' "
                                "ORDER BY job_id) FROM jobs_v1.jobs WHERE job_id LIKE 'J%'");
    assert_string_equal(row, "J1 queued 2, J2 submitted 1");
    free(row);
    assert_int_equal(pe_long(pe.pg, "SELECT count(*) FROM jobs_v1.jobs"), 5002);
}

/* The set statements' parameters: text[] in binary, as PostgreSQL reads them back. */
static void test_binary_text_arrays(void **state)
{
    (void)state;
    const char *v[] = {"a", NULL, "q\"uo\\te", "", "gr\u00fc\u00dfe", "{x,y}"};
    int len = 0, elen = 0;
    char *arr = cstl_proj_text_array_binary(v, CSTL_ARRAY_LEN(v), &len);
    char *empty = cstl_proj_text_array_binary(NULL, 0, &elen);
    const char *params[] = {arr, empty};
    const int lengths[] = {len, elen};
    cstl_pg_piped st = {
        .name = "binary_text_arrays",
        .sql = "SELECT ($1::text[] IS NOT DISTINCT FROM ARRAY['a', NULL, 'q\"uo\\te', '', "
               "'gr\u00fc\u00dfe', '{x,y}']::text[] AND $2::text[] = '{}')::int",
        .nparams = 2,
        .params = params,
        .lengths = lengths,
        .binary = true};
    cstl_error err;
    assert_int_equal(cstl_pg_pipeline(pe.pg, &st, 1, &err), 0);
    assert_int_equal(st.count, 1);
    /* binary parameters without their lengths are refused before anything is sent */
    st.lengths = NULL;
    assert_int_equal(cstl_pg_pipeline(pe.pg, &st, 1, &err), CSTL_EINVAL);
    free(arr);
    free(empty);
}

static int setup(void **state)
{
    (void)state;
    return pe_setup();
}

static int teardown(void **state)
{
    (void)state;
    pe_teardown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_unknown_job_is_an_event_error),
        cmocka_unit_test(test_batch_locks_its_jobs_and_writes_back_once),
        cmocka_unit_test(test_binary_text_arrays),
        cmocka_unit_test(test_write_back_reads_no_whole_table),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
