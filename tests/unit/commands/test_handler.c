/* Unit tests for the pure parts of commands/handler.c and handler_restore.c: option checks made
 * before any broker is contacted, event short names, and the bounded set of handled command ids. */
#include "commands/handler.h"
#include "commands/handler_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* cmocka needs the standard headers above; keep it last. */
// clang-format off
#include <cmocka.h>
// clang-format on

static void test_options_refused(void **state)
{
    (void)state;
    cstl_error err;
    cstl_cmd_handler_options o = {0};
    assert_null(cstl_cmd_handler_new(&o, &err));
    assert_int_equal(err.code, CSTL_EINVAL);
    assert_null(cstl_cmd_handler_new(NULL, &err));
    o.brokers = "127.0.0.1:1";
    assert_null(cstl_cmd_handler_new(&o, &err));
    assert_non_null(strstr(err.message, "instance id"));
    o.instance_id = "i";
    o.batch_max = -1;
    assert_null(cstl_cmd_handler_new(&o, &err));
    assert_int_equal(err.code, CSTL_EINVAL);
    o.batch_max = 0;
    const cstl_aggregate_type *twice[] = {&cstl_job_aggregate, &cstl_job_aggregate};
    o.contexts = twice;
    o.n_contexts = 2;
    assert_null(cstl_cmd_handler_new(&o, &err));
    assert_non_null(strstr(err.message, "\"jobs\" is served twice"));
    o.n_contexts = 0;
    assert_null(cstl_cmd_handler_new(&o, &err));
    assert_int_equal(err.code, CSTL_EINVAL);
    cstl_cmd_handler_free(NULL);
    cstl_cmd_handler_stop(NULL);
    assert_int_equal(cstl_cmd_handler_ready_partitions(NULL), 0);
}

static void test_short_names(void **state)
{
    (void)state;
    char out[64];
    cstl_handler_short_name("io.constellation.jobs.JobSubmitted.v1", out, sizeof(out));
    assert_string_equal(out, "JobSubmitted");
    cstl_handler_short_name("io.constellation.jobs.SubmitJob", out, sizeof(out));
    assert_string_equal(out, "SubmitJob");
    cstl_handler_short_name("io.constellation.jobs.JobSubmitted.v12", out, sizeof(out));
    assert_string_equal(out, "JobSubmitted");
    cstl_handler_short_name("Plain", out, sizeof(out));
    assert_string_equal(out, "Plain");
}

static void test_handled_ids_bounded(void **state)
{
    (void)state;
    cstl_cmd_handler h;
    memset(&h, 0, sizeof(h));
    h.ctx[0].type = &cstl_job_aggregate;
    h.handled_ids_max = 3;
    h.handled_ids_ttl_us = 3600LL * 1000000;
    cstl_hpart pt;
    memset(&pt, 0, sizeof(pt));
    cstl_handler_part_clear_state(&h, &pt);
    int64_t now = cstl_handler_wall_us();
    /* Too old: dropped at once. */
    cstl_handler_remember(&h, &pt, "old", "a", 1, now - 2 * h.handled_ids_ttl_us);
    assert_false(cstl_strmap_has(pt.handled, "old"));
    char id[8];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "c%d", i);
        cstl_handler_remember(&h, &pt, id, "agg", i + 1, now);
    }
    /* The cap keeps the newest three. */
    assert_int_equal(cstl_strmap_len(pt.handled), 3);
    assert_false(cstl_strmap_has(pt.handled, "c1"));
    assert_true(cstl_strmap_has(pt.handled, "c4"));
    /* Several events of one command: the highest version is the outcome. */
    cstl_handler_remember(&h, &pt, "c4", "agg", 9, now);
    cstl_handled *x = cstl_strmap_get(pt.handled, "c4");
    assert_int_equal(x->version, 9);
    assert_string_equal(x->aggregate_id, "agg");
    cstl_strmap_free(pt.aggs);
    cstl_strmap_free(pt.handled);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options_refused),
        cmocka_unit_test(test_short_names),
        cmocka_unit_test(test_handled_ids_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
