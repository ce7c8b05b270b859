/*
 * test_rules.c - cstl_command_validate directly: a valid payload of every command passes, the
 * unknown is refused, rejections drop earlier events, and field paths and messages read as
 * documented. The limits themselves are covered boundary by boundary in the fixtures
 * (tests/fixtures/commands/<context>/validation.json).
 */
#include "commands/rules.h"

#include <stdlib.h>
#include <string.h>

/* cmocka needs these before it */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#define ID  "0193a1b2-7c00-7000-8000-00000000b001"
#define ID2 "0193a1b2-7c00-7000-8000-00000000b002"
#define HEX "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static const struct {
    const char *context, *type, *json;
} VALID[] = {
    {"tenants", "CreateTenant",
     "{\"tenant_id\":\"" ID "\",\"name\":\"acme\",\"contact_email\":\"a@b.io\"}"},
    {"tenants", "SuspendTenant", "{\"tenant_id\":\"" ID "\",\"reason\":\"\"}"},
    {"tenants", "IssueApiKey",
     "{\"tenant_id\":\"" ID "\",\"key_id\":\"" ID2 "\",\"key_hash\":\"" HEX
     "\",\"role\":\"viewer\",\"expires_at\":null}"},
    {"tenants", "RevokeApiKey", "{\"tenant_id\":\"" ID "\",\"key_id\":\"" ID2 "\"}"},
    {"jobs", "SubmitJob",
     "{\"job_id\":\"" ID "\",\"tenant_id\":\"" ID2 "\",\"name\":null,\"gpu_count\":1,"
     "\"min_gpu_memory_mib\":0,\"gpu_model\":null,\"priority\":50,\"runtime_limit_seconds\":60,"
     "\"retry_limit\":0,\"labels\":{},\"parameters\":{\"command\":[\"true\"],\"environment\":{}}}"},
    {"jobs", "AdmitJob", "{\"job_id\":\"" ID "\",\"reservation_id\":\"" ID2 "\"}"},
    {"jobs", "RejectJob", "{\"job_id\":\"" ID "\",\"reason\":\"QUOTA_EXCEEDED\",\"message\":null}"},
    {"jobs", "ChangeJobPriority", "{\"job_id\":\"" ID "\",\"priority\":7}"},
    {"jobs", "CancelJob", "{\"job_id\":\"" ID "\",\"reason\":null}"},
    {"jobs", "AssignJob",
     "{\"job_id\":\"" ID "\",\"worker_id\":\"" ID2 "\",\"run_id\":\"" ID2
     "\",\"gpu_uuids\":[\"GPU-1\"]}"},
    {"jobs", "StartRun", "{\"job_id\":\"" ID "\",\"run_id\":\"" ID2 "\",\"started_at\":1}"},
    {"jobs", "FinishRun",
     "{\"job_id\":\"" ID "\",\"run_id\":\"" ID2 "\",\"outcome\":\"LOST\",\"exit_code\":null,"
     "\"failure_reason\":null,\"finished_at\":2,\"gpu_seconds\":0}"},
    {"jobs", "RequeueJob", "{\"job_id\":\"" ID "\",\"run_id\":\"" ID2 "\",\"reason\":\"lost\"}"},
    {"jobs", "TimeOutJob", "{\"job_id\":\"" ID "\",\"run_id\":\"" ID2 "\"}"},
    {"fleet", "RegisterWorker",
     "{\"worker_id\":\"" ID
     "\",\"hostname\":\"n1\",\"gpus\":[{\"uuid\":\"GPU-1\",\"model\":\"H100\","
     "\"memory_mib\":81559,\"compute_capability\":\"9.0\"}],\"labels\":{\"zone\":\"a\"}}"},
    {"fleet", "ReserveGpus",
     "{\"worker_id\":\"" ID "\",\"job_id\":\"" ID2 "\",\"gpu_uuids\":[\"GPU-1\",\"GPU-2\"]}"},
    {"fleet", "ReleaseGpus",
     "{\"worker_id\":\"" ID "\",\"job_id\":\"" ID2 "\",\"gpu_uuids\":[\"GPU-1\"]}"},
    {"fleet", "DrainGpu", "{\"worker_id\":\"" ID "\",\"gpu_uuid\":\"GPU-1\",\"reason\":\"xid\"}"},
    {"fleet", "ResumeGpu", "{\"worker_id\":\"" ID "\",\"gpu_uuid\":\"GPU-1\"}"},
    {"fleet", "MarkWorkerLost", "{\"worker_id\":\"" ID "\",\"last_heartbeat_at\":0}"},
    {"fleet", "DeregisterWorker", "{\"worker_id\":\"" ID "\"}"},
};

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (j == NULL)
        fail_msg("bad test json: %s: %s", err.text, text);
    return j;
}

static void test_valid_payloads_pass(void **state)
{
    (void)state;
    for (size_t i = 0; i < CSTL_ARRAY_LEN(VALID); i++) {
        json_t *p = parse(VALID[i].json);
        cstl_decision d = {0};
        int rc = cstl_command_validate(VALID[i].context, VALID[i].type, p, &d);
        if (rc != 0)
            fail_msg("%s: %s (%s)", VALID[i].type, d.message, d.field);
        assert_int_equal(d.rejection, CSTL_REJECT_NONE);
        assert_true(cstl_command_known(VALID[i].context, VALID[i].type));
        json_decref(p);
    }
}

/* Every required field of every command, removed in turn, is reported as missing by name. */
static void test_every_field_is_required(void **state)
{
    (void)state;
    static const char *const optional[] = {"name",      "gpu_model",      "expires_at", "message",
                                           "exit_code", "failure_reason", "reason"};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(VALID); i++) {
        json_t *p = parse(VALID[i].json);
        const char *key;
        json_t *value;
        json_object_foreach(p, key, value)
        {
            int opt = 0;
            for (size_t k = 0; k < CSTL_ARRAY_LEN(optional); k++)
                opt |= strcmp(optional[k], key) == 0 && json_is_null(value);
            if (opt || strcmp(VALID[i].type, "CancelJob") == 0)
                continue;
            json_t *copy = json_deep_copy(p);
            json_object_del(copy, key);
            cstl_decision d = {0};
            assert_int_equal(cstl_command_validate(VALID[i].context, VALID[i].type, copy, &d), -1);
            assert_int_equal(d.rejection, CSTL_REJECT_INVALID);
            if (strcmp(d.field, key) != 0 || strcmp(d.code, "missing_field") != 0)
                fail_msg("%s without %s: %s %s", VALID[i].type, key, d.code, d.field);
            json_decref(copy);
        }
        json_decref(p);
    }
}

static void test_unknown_commands(void **state)
{
    (void)state;
    json_t *p = json_object();
    cstl_decision d = {0};
    assert_int_equal(cstl_command_validate("jobs", "PauseJob", p, &d), -1);
    assert_string_equal(d.code, "unknown_command");
    assert_string_equal(d.message, "jobs has no command \"PauseJob\"");
    cstl_decision_clear(&d);
    assert_int_equal(cstl_command_validate("billing", "GrantCredits", p, &d), -1);
    assert_string_equal(d.code, "unknown_command");
    cstl_decision_clear(&d);
    assert_int_equal(cstl_command_validate(NULL, NULL, p, &d), -1);
    cstl_decision_clear(&d);
    assert_int_equal(cstl_command_validate("jobs", "CancelJob", NULL, &d), -1);
    assert_string_equal(d.code, "invalid_type");
    assert_false(cstl_command_known("jobs", "PauseJob"));
    assert_false(cstl_command_known("tenants", "SubmitJob"));
    json_decref(p);
}

static void test_rejection_drops_events(void **state)
{
    (void)state;
    json_t *p = parse("{\"job_id\":\"" ID "\",\"priority\":101}");
    cstl_decision d = {0};
    cstl_decision_emit(&d, "JobAdmitted", json_object());
    assert_int_equal(cstl_command_validate("jobs", "ChangeJobPriority", p, &d), -1);
    assert_int_equal(d.n_events, 0);
    assert_string_equal(d.field, "priority");
    assert_string_equal(d.code, "out_of_range");
    assert_string_equal(d.message, "priority must be from 0 to 100, got 101");
    cstl_decision_clear(&d);
    json_decref(p);
}

static void test_paths_and_quotes(void **state)
{
    (void)state;
    /* a long offending value is quoted cut at 64 bytes; a long path is cut to the field size */
    char key[200];
    memset(key, 'K', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    json_t *p = parse(VALID[14].json);
    json_object_set_new(json_object_get(p, "labels"), key, json_string("v"));
    cstl_decision d = {0};
    assert_int_equal(cstl_command_validate("fleet", "RegisterWorker", p, &d), -1);
    assert_string_equal(d.code, "invalid_format");
    assert_int_equal(strlen(d.field), sizeof(d.field) - 1);
    assert_memory_equal(d.field, "labels.KKK", 10);
    assert_non_null(strstr(d.message, "...\""));
    json_decref(p);

    p = parse("{\"worker_id\":\"" ID "\",\"job_id\":\"" ID2
              "\",\"gpu_uuids\":[\"a\",\"b\",\"a\"]}");
    memset(&d, 0, sizeof(d));
    assert_int_equal(cstl_command_validate("fleet", "ReserveGpus", p, &d), -1);
    assert_string_equal(d.field, "gpu_uuids[2]");
    assert_string_equal(d.message, "gpu_uuids[2] repeats \"a\"");
    json_decref(p);

    p = parse("{\"worker_id\":\"" ID "\",\"job_id\":\"x\",\"gpu_uuids\":[\"a\"]}");
    memset(&d, 0, sizeof(d));
    assert_int_equal(cstl_command_validate("fleet", "ReleaseGpus", p, &d), -1);
    assert_string_equal(d.message, "job_id must be a uuid, got \"x\"");
    json_decref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_payloads_pass), cmocka_unit_test(test_every_field_is_required),
        cmocka_unit_test(test_unknown_commands),    cmocka_unit_test(test_rejection_drops_events),
        cmocka_unit_test(test_paths_and_quotes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
