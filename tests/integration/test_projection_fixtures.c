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
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
