/*
 * test_aggregates.c - table tests of the tenant, job and worker aggregates from JSON fixtures.
 *
 * Every file under tests/fixtures/commands/<context>/ is a list of cases:
 *   {"name": "...", "given": [{"type": "JobSubmitted", "data": {...}}, ...],
 *    "command": {"type": "CancelJob", "tenant_id": "...", "aggregate_id": "...",
 *                "issued_by": "...", "now_us": 1, "payload": {...}},
 *    "expect": {"events": [{"type": "JobCancelled", "data": {...}}]}
 *            | {"rejection": "conflict", "code": "job_already_finished", "field": ""}
 *            | {"unknown_command": true}}
 * For each case the given events are applied with evolve (versions 1..n), the state must survive
 * snapshot -> restore -> snapshot unchanged, decide runs at version n, and its outcome must match
 * exactly. Every produced event is also encoded with its Avro schema and applied with evolve, so
 * an event that does not fit its schema or its own aggregate fails the case. Finally every command
 * of the three aggregates must have at least one accepted case.
 */
#include "commands/aggregate.h"
#include "commands/rules.h"
#include "platform/codec.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cmocka needs these before it */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

static const char *const COMMANDS[] = {
    "tenants/CreateTenant", "tenants/SuspendTenant",  "tenants/IssueApiKey",
    "tenants/RevokeApiKey", "jobs/SubmitJob",         "jobs/AdmitJob",
    "jobs/RejectJob",       "jobs/ChangeJobPriority", "jobs/CancelJob",
    "jobs/AssignJob",       "jobs/StartRun",          "jobs/FinishRun",
    "jobs/RequeueJob",      "jobs/TimeOutJob",        "fleet/RegisterWorker",
    "fleet/ReserveGpus",    "fleet/ReleaseGpus",      "fleet/DrainGpu",
    "fleet/ResumeGpu",      "fleet/MarkWorkerLost",   "fleet/DeregisterWorker",
};

typedef struct run_stats {
    int cases;
    int failures;
    int accepted[CSTL_ARRAY_LEN(COMMANDS)];
    int rejected[CSTL_ARRAY_LEN(COMMANDS)];
} run_stats;

static const char *kind_name(cstl_rejection_kind k)
{
    switch (k) {
    case CSTL_REJECT_NONE:
        return "none";
    case CSTL_REJECT_INVALID:
        return "invalid";
    case CSTL_REJECT_NOT_FOUND:
        return "not_found";
    case CSTL_REJECT_CONFLICT:
        return "conflict";
    }
    return "?";
}

__attribute__((format(printf, 3, 4))) static int
case_fail(const char *file, const char *name, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s: %s: ", file, name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

static char *dump(const json_t *j)
{
    return json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Snapshot -> restore -> snapshot must give the same JSON. */
static int
check_snapshot(const cstl_aggregate_type *agg, void *state, const char *file, const char *name)
{
    json_t *snap = agg->snapshot(state);
    cstl_error err = {0};
    void *copy = agg->restore(snap, &err);
    int bad = 0;
    if (copy == NULL) {
        bad = case_fail(file, name, "restore failed: %s", err.message);
    } else {
        json_t *again = agg->snapshot(copy);
        if (!json_equal(snap, again)) {
            char *a = dump(snap), *b = dump(again);
            bad = case_fail(file, name, "snapshot round trip differs:\n  %s\n  %s", a, b);
            free(a);
            free(b);
        }
        json_decref(again);
        agg->destroy(copy);
    }
    json_decref(snap);
    return bad;
}

static int command_index(const char *context, const char *type)
{
    char key[128];
    snprintf(key, sizeof(key), "%s/%s", context, type ? type : "");
    for (size_t i = 0; i < CSTL_ARRAY_LEN(COMMANDS); i++)
        if (strcmp(COMMANDS[i], key) == 0)
            return (int)i;
    return -1;
}

static int compare_events(const cstl_aggregate_type *agg,
                          void *state,
                          int64_t version,
                          const cstl_decision *d,
                          const json_t *want,
                          const char *file,
                          const char *name)
{
    const cstl_schema_catalog *cat = cstl_schema_catalog_get();
    if (d->rejection != CSTL_REJECT_NONE)
        return case_fail(file, name, "expected events, got rejection %s/%s field \"%s\": %s",
                         kind_name(d->rejection), d->code, d->field, d->message);
    if ((size_t)d->n_events != json_array_size(want)) {
        case_fail(file, name, "expected %zu events, got %d", json_array_size(want), d->n_events);
        for (int i = 0; i < d->n_events; i++) {
            char *s = dump(d->events[i].data);
            fprintf(stderr, "  got %s %s\n", d->events[i].type, s);
            free(s);
        }
        return 1;
    }
    int bad = 0;
    cstl_codec_buf buf = {0};
    for (int i = 0; i < d->n_events; i++) {
        const json_t *w = json_array_get(want, (size_t)i);
        const char *wtype = json_string_value(json_object_get(w, "type"));
        if (wtype == NULL || strcmp(wtype, d->events[i].type) != 0 ||
            !json_equal(json_object_get(w, "data"), d->events[i].data)) {
            char *a = dump(json_object_get(w, "data")), *b = dump(d->events[i].data);
            bad |= case_fail(file, name, "event %d differs:\n  want %s %s\n  got  %s %s", i,
                             wtype ? wtype : "?", a, d->events[i].type, b);
            free(a);
            free(b);
        }
        char schema[128];
        snprintf(schema, sizeof(schema), "%s.%s", agg->context, d->events[i].type);
        const cstl_schema_entry *entry = cstl_schema_catalog_find(cat, schema);
        cstl_error err = {0};
        if (entry == NULL)
            bad |= case_fail(file, name, "no schema %s", schema);
        else if (cstl_codec_encode_json(entry, d->events[i].data, &buf, &err) != 0)
            bad |=
                case_fail(file, name, "event %s does not fit its schema: %s", schema, err.message);
        cstl_event ev = {d->events[i].type, version + 1 + i, d->events[i].data};
        if (agg->evolve(state, &ev, &err) != 0)
            bad |= case_fail(file, name, "evolve refuses produced %s: %s", ev.type, err.message);
    }
    cstl_codec_buf_free(&buf);
    return bad;
}

static int
compare_rejection(const cstl_decision *d, const json_t *expect, const char *file, const char *name)
{
    const char *kind = json_string_value(json_object_get(expect, "rejection"));
    const char *code = json_string_value(json_object_get(expect, "code"));
    const char *field = json_string_value(json_object_get(expect, "field"));
    if (field == NULL)
        field = "";
    if (d->rejection == CSTL_REJECT_NONE)
        return case_fail(file, name, "expected rejection %s/%s, got %d events", kind ? kind : "?",
                         code ? code : "?", d->n_events);
    if (d->n_events != 0)
        return case_fail(file, name, "a rejection carries %d events", d->n_events);
    if (kind == NULL || strcmp(kind, kind_name(d->rejection)) != 0 || code == NULL ||
        strcmp(code, d->code) != 0 || strcmp(field, d->field) != 0)
        return case_fail(file, name, "expected %s/%s field \"%s\", got %s/%s field \"%s\": %s",
                         kind ? kind : "?", code ? code : "?", field, kind_name(d->rejection),
                         d->code, d->field, d->message);
    size_t n = strlen(d->message);
    if (n == 0 || d->message[n - 1] == '.')
        return case_fail(file, name, "message \"%s\" is empty or ends with a period", d->message);
    const char *want_message = json_string_value(json_object_get(expect, "message"));
    if (want_message != NULL && strcmp(want_message, d->message) != 0)
        return case_fail(file, name, "expected message \"%s\", got \"%s\"", want_message,
                         d->message);
    return 0;
}

static int
run_case(const cstl_aggregate_type *agg, const json_t *c, const char *file, run_stats *stats)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    const json_t *given = json_object_get(c, "given");
    const json_t *cj = json_object_get(c, "command");
    const json_t *expect = json_object_get(c, "expect");
    if (name == NULL || !json_is_object(cj) || !json_is_object(expect) ||
        (given != NULL && !json_is_array(given)))
        return case_fail(file, name ? name : "?", "malformed case");

    void *state = agg->create();
    int bad = 0;
    int64_t version = 0;
    size_t i;
    json_t *g;
    json_array_foreach(given, i, g)
    {
        cstl_error err = {0};
        cstl_event ev = {json_string_value(json_object_get(g, "type")), ++version,
                         json_object_get(g, "data")};
        if (ev.type == NULL || agg->evolve(state, &ev, &err) != 0) {
            bad = case_fail(file, name, "given event %zu does not apply: %s", i, err.message);
            goto done;
        }
    }
    bad |= check_snapshot(agg, state, file, name);

    cstl_command cmd = {
        .type = json_string_value(json_object_get(cj, "type")),
        .command_id = json_string_value(json_object_get(cj, "command_id")),
        .tenant_id = json_string_value(json_object_get(cj, "tenant_id")),
        .aggregate_id = json_string_value(json_object_get(cj, "aggregate_id")),
        .issued_by = json_string_value(json_object_get(cj, "issued_by")),
        .now_us = (int64_t)json_integer_value(json_object_get(cj, "now_us")),
        .payload = json_object_get(cj, "payload"),
    };
    cstl_decision d = {0};
    int rc = agg->decide(state, version, &cmd, &d);
    int idx = command_index(agg->context, cmd.type);
    if (json_is_true(json_object_get(expect, "unknown_command"))) {
        if (rc == 0)
            bad |= case_fail(file, name, "decide accepted unknown command \"%s\"", cmd.type);
    } else if (rc != 0) {
        bad |= case_fail(file, name, "decide returned %d", rc);
    } else if (json_object_get(expect, "events") != NULL) {
        bad |=
            compare_events(agg, state, version, &d, json_object_get(expect, "events"), file, name);
        const char *id = agg->aggregate_id(cmd.type, cmd.payload);
        if (id == NULL || cmd.aggregate_id == NULL || strcmp(id, cmd.aggregate_id) != 0)
            bad |= case_fail(file, name, "aggregate_id() gives \"%s\"", id ? id : "(null)");
        if (!bad)
            bad |= check_snapshot(agg, state, file, name);
        if (!bad && idx >= 0)
            stats->accepted[idx]++;
    } else {
        bad |= compare_rejection(&d, expect, file, name);
        if (!bad && idx >= 0)
            stats->rejected[idx]++;
    }
    cstl_decision_clear(&d);
done:
    agg->destroy(state);
    return bad;
}

static int is_json(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 5 && strcmp(e->d_name + n - 5, ".json") == 0;
}

static void run_context(const char *context, run_stats *stats)
{
    const char *src = getenv("CSTL_SOURCE_DIR");
    assert_non_null(src);
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/tests/fixtures/commands/%s", src, context);
    const cstl_aggregate_type *agg = cstl_aggregate_for_context(context);
    assert_non_null(agg);
    struct dirent **names;
    int n = scandir(dir, &names, is_json, alphasort);
    assert_true(n > 0);
    for (int f = 0; f < n; f++) {
        char path[4096 + 256];
        snprintf(path, sizeof(path), "%s/%s", dir, names[f]->d_name);
        json_error_t jerr;
        json_t *cases = json_load_file(path, 0, &jerr);
        if (!json_is_array(cases)) {
            stats->failures += case_fail(path, "", "not a json list of cases: %s", jerr.text);
        } else {
            size_t i;
            json_t *c;
            json_array_foreach(cases, i, c)
            {
                stats->cases++;
                stats->failures += run_case(agg, c, names[f]->d_name, stats);
            }
        }
        json_decref(cases);
        free(names[f]);
    }
    free(names);
}

static void test_fixtures(void **state)
{
    (void)state;
    run_stats stats = {0};
    run_context("tenants", &stats);
    run_context("jobs", &stats);
    run_context("fleet", &stats);
    int rejected = 0;
    for (size_t i = 0; i < CSTL_ARRAY_LEN(COMMANDS); i++) {
        if (stats.accepted[i] == 0)
            stats.failures += case_fail("fixtures", COMMANDS[i], "no accepted case");
        rejected += stats.rejected[i];
    }
    printf("fixtures: %d cases, %d rejections checked, %d failed\n", stats.cases, rejected,
           stats.failures);
    assert_int_equal(stats.failures, 0);
}

static void test_decision_helpers(void **state)
{
    (void)state;
    cstl_decision d = {0};
    cstl_decision_emit(&d, "JobAdmitted", json_object());
    cstl_decision_emit(&d, "JobAssigned", json_object());
    assert_int_equal(d.n_events, 2);
    assert_int_equal(cstl_decision_reject(&d, CSTL_REJECT_CONFLICT, "job_not_queued", NULL,
                                          "job \"%s\" is %s", "x", "running"),
                     -1);
    assert_int_equal(d.n_events, 0);
    assert_int_equal(d.rejection, CSTL_REJECT_CONFLICT);
    assert_string_equal(d.code, "job_not_queued");
    assert_string_equal(d.field, "");
    assert_string_equal(d.message, "job \"x\" is running");
    cstl_decision_clear(&d);
    assert_int_equal(d.rejection, CSTL_REJECT_NONE);
    cstl_decision_emit(&d, "JobAdmitted", json_object());
    cstl_decision_clear(&d);
    assert_int_equal(d.n_events, 0);
}

static void test_aggregate_for_context(void **state)
{
    (void)state;
    assert_ptr_equal(cstl_aggregate_for_context("tenants"), &cstl_tenant_aggregate);
    assert_ptr_equal(cstl_aggregate_for_context("jobs"), &cstl_job_aggregate);
    assert_ptr_equal(cstl_aggregate_for_context("fleet"), &cstl_worker_aggregate);
    assert_null(cstl_aggregate_for_context("billing"));
    assert_null(cstl_aggregate_for_context(NULL));
    json_t *p = json_pack("{s:s}", "job_id", "0193a1b2-0000-7000-8000-000000000001");
    assert_string_equal(cstl_job_aggregate.aggregate_id("CancelJob", p),
                        "0193a1b2-0000-7000-8000-000000000001");
    assert_null(cstl_job_aggregate.aggregate_id("NoSuchCommand", p));
    assert_null(cstl_worker_aggregate.aggregate_id("DrainGpu", p));
    json_decref(p);
}

/* Restore refuses snapshots that do not fit, without leaking. */
static void test_restore_refuses_garbage(void **state)
{
    (void)state;
    const cstl_aggregate_type *all[] = {&cstl_tenant_aggregate, &cstl_job_aggregate,
                                        &cstl_worker_aggregate};
    json_t *bad[] = {json_object(), json_pack("{s:s}", "status", "nonsense"), json_array()};
    for (size_t a = 0; a < CSTL_ARRAY_LEN(all); a++) {
        for (size_t b = 0; b < CSTL_ARRAY_LEN(bad); b++) {
            cstl_error err = {0};
            assert_null(all[a]->restore(bad[b], &err));
            assert_int_equal(err.code, CSTL_EDECODE);
        }
        void *s = all[a]->create();
        json_t *snap = all[a]->snapshot(s);
        void *copy = all[a]->restore(snap, NULL);
        assert_non_null(copy);
        all[a]->destroy(copy);
        all[a]->destroy(s);
        all[a]->destroy(NULL);
        json_decref(snap);
    }
    for (size_t b = 0; b < CSTL_ARRAY_LEN(bad); b++)
        json_decref(bad[b]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decision_helpers),
        cmocka_unit_test(test_aggregate_for_context),
        cmocka_unit_test(test_restore_refuses_garbage),
        cmocka_unit_test(test_fixtures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
