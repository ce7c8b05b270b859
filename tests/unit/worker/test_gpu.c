/*
 * test_gpu.c - fake GPU specs (good and bad values, stable UUIDs) and NVML absent.
 */
#include "worker/gpu.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static const char *const WORKER = "01900000-0000-7000-8000-000000000001";

static void test_one_group(void **state)
{
    (void)state;
    cstl_gpu g[CSTL_GPU_MAX];
    int n = 0;
    cstl_error err;
    assert_int_equal(cstl_gpu_parse_fake("4xH100:81920", WORKER, g, &n, &err), 0);
    assert_int_equal(n, 4);
    for (int i = 0; i < n; i++) {
        assert_string_equal(g[i].model, "H100");
        assert_int_equal(g[i].memory_mib, 81920);
        assert_string_equal(g[i].compute_capability, "9.0");
        assert_int_equal(g[i].nvml_index, -1);
        assert_int_equal(strncmp(g[i].uuid, "GPU-", 4), 0);
        assert_int_equal(strlen(g[i].uuid), 40);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(g[i].uuid, g[j].uuid);
    }
}

static void test_groups_and_capability(void **state)
{
    (void)state;
    cstl_gpu g[CSTL_GPU_MAX];
    int n = 0;
    cstl_error err;
    assert_int_equal(
        cstl_gpu_parse_fake("2xA100:40960,1xL4:24576,1xMY-GPU_2.0:1024:12.1", WORKER, g, &n, &err),
        0);
    assert_int_equal(n, 4);
    assert_string_equal(g[0].model, "A100");
    assert_string_equal(g[0].compute_capability, "8.0");
    assert_string_equal(g[2].model, "L4");
    assert_int_equal(g[2].memory_mib, 24576);
    assert_string_equal(g[2].compute_capability, "8.9");
    assert_string_equal(g[3].model, "MY-GPU_2.0");
    assert_string_equal(g[3].compute_capability, "12.1");
    assert_int_equal(cstl_gpu_parse_fake("64xT4:16384", WORKER, g, &n, &err), 0);
    assert_int_equal(n, 64);
}

static void test_stable_uuids(void **state)
{
    (void)state;
    cstl_gpu a[CSTL_GPU_MAX], b[CSTL_GPU_MAX], c[CSTL_GPU_MAX];
    int na = 0, nb = 0, nc = 0;
    cstl_error err;
    assert_int_equal(cstl_gpu_parse_fake("2xH100:81920", WORKER, a, &na, &err), 0);
    assert_int_equal(cstl_gpu_parse_fake("2xH100:81920", WORKER, b, &nb, &err), 0);
    assert_int_equal(
        cstl_gpu_parse_fake("2xH100:81920", "01900000-0000-7000-8000-000000000002", c, &nc, &err),
        0);
    assert_string_equal(a[0].uuid, b[0].uuid);
    assert_string_equal(a[1].uuid, b[1].uuid);
    assert_string_not_equal(a[0].uuid, c[0].uuid);
}

static void expect_bad(const char *spec, const char *needle)
{
    cstl_gpu g[CSTL_GPU_MAX];
    int n = 7;
    cstl_error err;
    int rc = cstl_gpu_parse_fake(spec, WORKER, g, &n, &err);
    if (rc != CSTL_ECONFIG || strstr(err.message, needle) == NULL)
        fail_msg("spec \"%s\": rc %d, message \"%s\" lacks \"%s\"", spec, rc, rc ? err.message : "",
                 needle);
    assert_int_equal(n, 0);
}

static void test_bad_specs(void **state)
{
    (void)state;
    expect_bad("", "1 to 1024 bytes");
    expect_bad("H100:81920", "is not COUNTxMODEL");
    expect_bad("4xH100", "has no memory");
    expect_bad("0xH100:81920", "count \"0\" must be an integer from 1 to 64");
    expect_bad("65xH100:81920", "count \"65\" must be an integer from 1 to 64");
    expect_bad("-1xH100:81920", "count \"-1\"");
    expect_bad("+1xH100:81920", "count \"+1\"");
    expect_bad("4x:81920", "model \"\" must be 1 to 64");
    expect_bad("4xH 100:81920", "model \"H 100\"");
    expect_bad("4xH100:0", "memory \"0\" of H100 must be an integer from 1 to 1048576");
    expect_bad("4xH100:1048577", "memory \"1048577\"");
    expect_bad("4xH100:80GB", "memory \"80GB\"");
    expect_bad("4xH100:99999999999999999999", "memory \"99999999999999999999\"");
    expect_bad("4xH100:81920:9", "compute capability \"9\"");
    expect_bad("4xH100:81920:9.0.1", "compute capability \"9.0.1\"");
    expect_bad("4xH100:81920,", "empty group");
    expect_bad(",4xH100:81920", "empty group");
    expect_bad("40xH100:81920,25xL4:24576", "more than 64 GPUs in all");
}

static void test_nvml_absent(void **state)
{
    (void)state;
    cstl_error err;
    assert_null(cstl_nvml_open("libnvidia-ml-does-not-exist.so.1", &err));
    assert_int_equal(err.code, CSTL_ENOTFOUND);
    assert_non_null(strstr(err.message, "libnvidia-ml-does-not-exist.so.1"));
    cstl_nvml_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_group),    cmocka_unit_test(test_groups_and_capability),
        cmocka_unit_test(test_stable_uuids), cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_nvml_absent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
