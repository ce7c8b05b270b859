/*
 * test_schema_check.c - the compatibility checker's rules and messages.
 */
#include "platform/schema_check.h"

#include <cmocka.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#define REC(fields)                                                                                \
    "{\"type\":\"record\",\"name\":\"io.constellation.jobs.JobSubmitted\",\"fields\":[" fields "]" \
                                                                                               "}"

/* Returns the check's result; when want is not NULL, the single message must equal it. */
static int compat(const char *reader, const char *writer, const char *want)
{
    cstl_error err;
    cstl_avro_schema *r = cstl_avro_schema_parse(reader, strlen(reader), &err);
    cstl_avro_schema *w = cstl_avro_schema_parse(writer, strlen(writer), &err);
    assert_non_null(r);
    assert_non_null(w);
    cstl_schema_report *rep = cstl_schema_report_new();
    int rc = cstl_schema_compat_check(cstl_avro_schema_root(r), cstl_avro_schema_root(w),
                                      "jobs.JobSubmitted", rep);
    if (want) {
        assert_int_equal(cstl_schema_report_count(rep), 1);
        assert_string_equal(cstl_schema_report_message(rep, 0), want);
    } else if (rc == 0) {
        assert_int_equal(cstl_schema_report_count(rep), 0);
    }
    cstl_schema_report_free(rep);
    cstl_avro_schema_free(r);
    cstl_avro_schema_free(w);
    return rc;
}

static void test_rules(void **state)
{
    (void)state;
    const char *v1 = REC("{\"name\":\"a\",\"type\":\"int\"}");
    assert_int_equal(compat(v1, v1, NULL), 0);
    assert_int_equal(
        compat(REC("{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"gpu_count\",\"type\":\"int\"}"),
               v1, "jobs.JobSubmitted: field \"gpu_count\" was added without a default"),
        CSTL_ESCHEMA);
    assert_int_equal(compat(REC("{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"g\",\"type\":"
                                "\"int\",\"default\":1}"),
                            v1, NULL),
                     0);
    /* removal is fine for a reader */
    assert_int_equal(compat(REC(""), v1, NULL), 0);
    assert_int_equal(compat(REC("{\"name\":\"a\",\"type\":\"string\"}"), v1,
                            "jobs.JobSubmitted: field \"a\" changed type from int to string, which "
                            "is not a promotion"),
                     CSTL_ESCHEMA);
    assert_int_equal(compat(REC("{\"name\":\"a\",\"type\":\"long\"}"), v1, NULL), 0);
    assert_int_equal(compat(REC("{\"name\":\"a\",\"type\":\"double\"}"), v1, NULL), 0);
    assert_int_equal(compat(v1, REC("{\"name\":\"a\",\"type\":\"long\"}"),
                            "jobs.JobSubmitted: field \"a\" changed type from long to int, which "
                            "is not a promotion"),
                     CSTL_ESCHEMA);
    assert_int_equal(compat(REC("{\"name\":\"s\",\"type\":\"bytes\"}"),
                            REC("{\"name\":\"s\",\"type\":\"string\"}"), NULL),
                     0);
    /* rename: with an alias it reads, without it the new field has no value */
    assert_int_equal(compat(REC("{\"name\":\"b\",\"aliases\":[\"a\"],\"type\":\"int\"}"), v1, NULL),
                     0);
    assert_int_equal(compat(REC("{\"name\":\"b\",\"type\":\"int\"}"), v1,
                            "jobs.JobSubmitted: field \"b\" was added without a default"),
                     CSTL_ESCHEMA);
    /* enums */
    const char *e3 = REC("{\"name\":\"r\",\"type\":{\"type\":\"enum\",\"name\":\"R\",\"symbols\":["
                         "\"A\",\"B\",\"C\"]}}");
    const char *e2 = REC(
        "{\"name\":\"r\",\"type\":{\"type\":\"enum\",\"name\":\"R\",\"symbols\":[\"A\",\"B\"]}}");
    const char *e2d = REC("{\"name\":\"r\",\"type\":{\"type\":\"enum\",\"name\":\"R\",\"symbols\":["
                          "\"A\",\"B\"],\"default\":\"A\"}}");
    assert_int_equal(compat(e3, e2, NULL), 0);
    assert_int_equal(compat(e2, e3,
                            "jobs.JobSubmitted: field \"r\" enum \"io.constellation.jobs.R\" lost "
                            "symbol \"C\" and has no default"),
                     CSTL_ESCHEMA);
    assert_int_equal(compat(e2d, e3, NULL), 0);
    /* unions */
    const char *opt = REC("{\"name\":\"a\",\"type\":[\"null\",\"int\"],\"default\":null}");
    assert_int_equal(compat(opt, v1, NULL), 0);
    assert_int_equal(compat(v1, opt,
                            "jobs.JobSubmitted: field \"a\" changed type from null to int, which "
                            "is not a promotion"),
                     CSTL_ESCHEMA);
}

static void test_nested(void **state)
{
    (void)state;
    const char *w =
        REC("{\"name\":\"parameters\",\"type\":{\"type\":\"record\",\"name\":\"P\",\"fields\":["
            "{\"name\":\"command\",\"type\":{\"type\":\"array\",\"items\":\"string\"}}]}}");
    const char *r =
        REC("{\"name\":\"parameters\",\"type\":{\"type\":\"record\",\"name\":\"P\",\"fields\":["
            "{\"name\":\"command\",\"type\":{\"type\":\"array\",\"items\":\"int\"}},"
            "{\"name\":\"cwd\",\"type\":\"string\"}]}}");
    cstl_error err;
    cstl_avro_schema *rs = cstl_avro_schema_parse(r, strlen(r), &err);
    cstl_avro_schema *ws = cstl_avro_schema_parse(w, strlen(w), &err);
    cstl_schema_report *rep = cstl_schema_report_new();
    assert_int_equal(cstl_schema_compat_check(cstl_avro_schema_root(rs), cstl_avro_schema_root(ws),
                                              "jobs.JobSubmitted", rep),
                     CSTL_ESCHEMA);
    assert_int_equal(cstl_schema_report_count(rep), 2);
    assert_string_equal(cstl_schema_report_message(rep, 0),
                        "jobs.JobSubmitted: field \"parameters.command[]\" changed type from "
                        "string to int, which is not a promotion");
    assert_string_equal(cstl_schema_report_message(rep, 1),
                        "jobs.JobSubmitted: field \"parameters.cwd\" was added without a default");
    cstl_schema_report_free(rep);
    cstl_avro_schema_free(rs);
    cstl_avro_schema_free(ws);
    char label[64];
    assert_string_equal(
        cstl_schema_label("io.constellation.jobs.JobSubmitted", label, sizeof label),
        "jobs.JobSubmitted");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_nested),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
