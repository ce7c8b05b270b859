/* Unit tests for commands/api_body.c: body -> payload mapping with defaults, unknown fields, types
 * and caps; If-Match parsing; Idempotency-Key validation; RFC 3339 times. */
#include "commands/api_body.h"

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

/* Maps text by fields; returns the rc, the payload in *out (new) and the error in *fe. */
static int
map_text(const cstl_api_field *fields, const char *text, json_t **out, cstl_api_field_error *fe)
{
    json_t *body = NULL;
    cstl_error err;
    assert_int_equal(cstl_api_body_parse(text, strlen(text), &body, &err), 0);
    *out = json_object();
    memset(fe, 0, sizeof(*fe));
    int rc = cstl_api_body_map(fields, body, *out, fe);
    json_decref(body);
    return rc;
}

static void test_submit_job_defaults(void **state)
{
    (void)state;
    json_t *p;
    cstl_api_field_error fe;
    assert_int_equal(map_text(cstl_api_submit_job_fields,
                              "{\"gpu_count\":2,\"parameters\":{\"command\":[\"x\"]}}", &p, &fe),
                     0);
    json_t *want = json_loads("{\"name\":null,\"gpu_count\":2,\"min_gpu_memory_mib\":0,"
                              "\"gpu_model\":null,\"priority\":50,\"runtime_limit_seconds\":3600,"
                              "\"retry_limit\":0,\"labels\":{},\"parameters\":{\"command\":[\"x\"],"
                              "\"environment\":{}}}",
                              0, NULL);
    assert_true(json_equal(p, want));
    json_decref(want);
    json_decref(p);
}

static void test_submit_job_given_values_kept(void **state)
{
    (void)state;
    json_t *p;
    cstl_api_field_error fe;
    assert_int_equal(map_text(cstl_api_submit_job_fields,
                              "{\"name\":\"train\",\"gpu_count\":8,\"priority\":90,\"gpu_model\":"
                              "\"H100\",\"labels\":{\"team\":\"ml\"},\"parameters\":{\"command\":"
                              "[\"python\",\"t.py\"],\"environment\":{\"A\":\"1\"}}}",
                              &p, &fe),
                     0);
    assert_string_equal(json_string_value(json_object_get(p, "name")), "train");
    assert_int_equal(json_integer_value(json_object_get(p, "priority")), 90);
    assert_string_equal(json_string_value(json_object_get(json_object_get(p, "labels"), "team")),
                        "ml");
    json_decref(p);
}

typedef struct bad_case {
    const char *body;
    const char *field;
    const char *code;
} bad_case;

static void test_submit_job_refusals(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"{\"gpu_count\":1,\"parameters\":{\"command\":[]},\"colour\":1}", "colour",
         "unknown_field"},
        {"{\"gpu_count\":1,\"parameters\":{\"command\":[],\"cwd\":\"/\"}}", "parameters.cwd",
         "unknown_field"},
        {"{\"gpu_count\":\"1\",\"parameters\":{\"command\":[]}}", "gpu_count", "invalid_type"},
        {"{\"gpu_count\":1.5,\"parameters\":{\"command\":[]}}", "gpu_count", "invalid_type"},
        {"{\"gpu_count\":true,\"parameters\":{\"command\":[]}}", "gpu_count", "invalid_type"},
        {"{\"gpu_count\":4294967297,\"parameters\":{\"command\":[]}}", "gpu_count", "out_of_range"},
        {"{\"parameters\":{\"command\":[]}}", "gpu_count", "missing_field"},
        {"{\"gpu_count\":1}", "parameters", "missing_field"},
        {"{\"gpu_count\":1,\"parameters\":{\"command\":[1]}}", "parameters.command[0]",
         "invalid_type"},
        {"{\"gpu_count\":1,\"labels\":{\"a\":1},\"parameters\":{\"command\":[]}}", "labels.a",
         "invalid_type"},
        {"{\"gpu_count\":1,\"priority\":null,\"parameters\":{\"command\":[]}}", "priority",
         "invalid_type"},
        {"[1]", "", "invalid_type"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *p;
        cstl_api_field_error fe;
        assert_int_equal(map_text(cstl_api_submit_job_fields, cases[i].body, &p, &fe), CSTL_EINVAL);
        if (strcmp(fe.field, cases[i].field) != 0 || strcmp(fe.code, cases[i].code) != 0)
            fail_msg("case %zu: got %s/%s (%s)", i, fe.field, fe.code, fe.message);
        assert_true(strlen(fe.message) > 0);
        json_decref(p);
    }
}

static void test_string_cap(void **state)
{
    (void)state;
    char body[600];
    char name[300];
    memset(name, 'a', 256);
    name[256] = '\0';
    snprintf(body, sizeof(body),
             "{\"gpu_count\":1,\"name\":\"%s\",\"parameters\":{\"command\":[]}}", name);
    json_t *p;
    cstl_api_field_error fe;
    assert_int_equal(map_text(cstl_api_submit_job_fields, body, &p, &fe), CSTL_EINVAL);
    assert_string_equal(fe.field, "name");
    assert_string_equal(fe.code, "invalid_length");
    assert_non_null(strstr(fe.message, "255"));
    json_decref(p);
}

static void test_heartbeat_ranges(void **state)
{
    (void)state;
    json_t *p;
    cstl_api_field_error fe;
    assert_int_equal(map_text(cstl_api_heartbeat_fields,
                              "{\"gpus\":[{\"uuid\":\"GPU-1\",\"utilization_percent\":101,"
                              "\"memory_used_mib\":1,\"temperature_c\":50}]}",
                              &p, &fe),
                     CSTL_EINVAL);
    assert_string_equal(fe.field, "gpus[0].utilization_percent");
    assert_string_equal(fe.code, "out_of_range");
    json_decref(p);
}

static void test_issue_key_time(void **state)
{
    (void)state;
    json_t *p;
    cstl_api_field_error fe;
    assert_int_equal(map_text(cstl_api_issue_key_fields,
                              "{\"role\":\"member\",\"expires_at\":\"2027-01-31T12:00:00Z\"}", &p,
                              &fe),
                     0);
    assert_int_equal(json_integer_value(json_object_get(p, "expires_at")), 1801396800000000LL);
    json_decref(p);
    assert_int_equal(map_text(cstl_api_issue_key_fields, "{\"role\":\"member\"}", &p, &fe), 0);
    assert_true(json_is_null(json_object_get(p, "expires_at")));
    json_decref(p);
    assert_int_equal(map_text(cstl_api_issue_key_fields,
                              "{\"role\":\"member\",\"expires_at\":\"tomorrow\"}", &p, &fe),
                     CSTL_EINVAL);
    assert_string_equal(fe.code, "invalid_format");
    json_decref(p);
}

static void test_body_parse(void **state)
{
    (void)state;
    json_t *v;
    cstl_error err;
    assert_int_equal(cstl_api_body_parse("", 0, &v, &err), 0);
    assert_true(json_is_object(v) && json_object_size(v) == 0);
    json_decref(v);
    assert_int_equal(cstl_api_body_parse(" \n", 2, &v, &err), 0);
    json_decref(v);
    assert_int_equal(cstl_api_body_parse("{\"a\":", 5, &v, &err), CSTL_EPARSE);
    assert_int_equal(cstl_api_body_parse("{\"a\":1,\"a\":2}", 13, &v, &err), CSTL_EPARSE);
    assert_int_equal(cstl_api_body_parse("{} x", 4, &v, &err), CSTL_EPARSE);
}

static void test_if_match(void **state)
{
    (void)state;
    int64_t v;
    cstl_error err;
    assert_int_equal(cstl_api_if_match_parse(NULL, &v, &err), 0);
    assert_int_equal(v, -1);
    assert_int_equal(cstl_api_if_match_parse("*", &v, &err), 0);
    assert_int_equal(v, -1);
    assert_int_equal(cstl_api_if_match_parse("\"3\"", &v, &err), 0);
    assert_int_equal(v, 3);
    assert_int_equal(cstl_api_if_match_parse(" \"12\" ", &v, &err), 0);
    assert_int_equal(v, 12);
    static const char *const bad[] = {
        "3",      "W/\"3\"", "\"\"", "\"a\"",   "\"1\", \"2\"",
        "\"-1\"", "\"3",     "",     "\"1e3\"", "\"12345678901234567890\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (cstl_api_if_match_parse(bad[i], &v, &err) != CSTL_EPARSE)
            fail_msg("If-Match %s was accepted", bad[i]);
        assert_non_null(strstr(err.message, "If-Match"));
    }
}

static void test_idempotency_key(void **state)
{
    (void)state;
    cstl_error err;
    assert_int_equal(cstl_api_idempotency_key_check("a", &err), 0);
    assert_int_equal(cstl_api_idempotency_key_check("order 42/retry-1", &err), 0);
    char key[300];
    memset(key, 'k', 255);
    key[255] = '\0';
    assert_int_equal(cstl_api_idempotency_key_check(key, &err), 0);
    key[255] = 'k';
    key[256] = '\0';
    assert_int_equal(cstl_api_idempotency_key_check(key, &err), CSTL_EPARSE);
    assert_int_equal(cstl_api_idempotency_key_check("", &err), CSTL_EPARSE);
    assert_int_equal(cstl_api_idempotency_key_check("a\tb", &err), CSTL_EPARSE);
    assert_int_equal(cstl_api_idempotency_key_check("caf\xc3\xa9", &err), CSTL_EPARSE);
    assert_non_null(strstr(err.message, "Idempotency-Key"));
}

static void test_time_parse(void **state)
{
    (void)state;
    int64_t us;
    assert_int_equal(cstl_api_time_parse("1970-01-01T00:00:00Z", &us), 0);
    assert_int_equal(us, 0);
    assert_int_equal(cstl_api_time_parse("2024-02-29T00:00:01.5Z", &us), 0);
    assert_int_equal(us, 1709164801500000LL);
    assert_int_equal(cstl_api_time_parse("2024-02-29T00:00:01+00:00", &us), 0);
    assert_int_equal(cstl_api_time_parse("2023-02-29T00:00:00Z", &us), CSTL_EPARSE);
    assert_int_equal(cstl_api_time_parse("2024-01-01T00:00:00+01:00", &us), CSTL_EPARSE);
    assert_int_equal(cstl_api_time_parse("2024-01-01 00:00:00Z", &us), CSTL_EPARSE);
    assert_int_equal(cstl_api_time_parse("2024-01-01T00:00:00", &us), CSTL_EPARSE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_job_defaults),
        cmocka_unit_test(test_submit_job_given_values_kept),
        cmocka_unit_test(test_submit_job_refusals),
        cmocka_unit_test(test_string_cap),
        cmocka_unit_test(test_heartbeat_ranges),
        cmocka_unit_test(test_issue_key_time),
        cmocka_unit_test(test_body_parse),
        cmocka_unit_test(test_if_match),
        cmocka_unit_test(test_idempotency_key),
        cmocka_unit_test(test_time_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
