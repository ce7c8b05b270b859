/* Unit tests for commands/views.c without Kafka: events applied with cstl_views_apply update the
 * tenants, the API key store, the GPU -> worker map and the fleet maxima. */
#include "commands/views.h"

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

#define TENANT "0190a4d2-6f1e-7c3a-9b2d-3f4e5a6b7c8d"
#define WORKER "0190a4d2-6f1e-7c3a-9b2d-000000000001"

static void apply(cstl_views *v, const char *type, const char *json)
{
    json_t *data = json_loads(json, 0, NULL);
    assert_non_null(data);
    cstl_error err;
    assert_int_equal(cstl_views_apply(v, type, data, TENANT, &err), 0);
    json_decref(data);
}

static void test_tenants_and_keys(void **state)
{
    (void)state;
    cstl_error err;
    cstl_auth_options ao = {0};
    cstl_auth *auth = cstl_auth_new(&ao, &err);
    assert_non_null(auth);
    cstl_views_options o = {.auth = auth};
    cstl_views *v = cstl_views_new(&o, &err);
    assert_true(cstl_views_ready(v));
    bool suspended = true;
    assert_int_equal(cstl_views_tenant(v, TENANT, &suspended), CSTL_ENOTFOUND);
    apply(v, "TenantCreated",
          "{\"tenant_id\":\"" TENANT "\",\"name\":\"a\",\"contact_email\":\"a@b.c\",\"at\":1}");
    assert_int_equal(cstl_views_tenant(v, TENANT, &suspended), 0);
    assert_false(suspended);

    char key[CSTL_API_KEY_LEN + 1], key_id[37], hash[65];
    assert_int_equal(cstl_api_key_generate(key, sizeof(key), key_id, hash), 0);
    char json[512];
    snprintf(json, sizeof(json),
             "{\"tenant_id\":\"" TENANT "\",\"key_id\":\"%s\",\"key_hash\":\"%s\",\"role\":"
             "\"member\",\"expires_at\":null,\"at\":1}",
             key_id, hash);
    apply(v, "ApiKeyIssued", json);
    char header[200];
    snprintf(header, sizeof(header), "Bearer %s", key);
    cstl_principal who;
    assert_int_equal(cstl_auth_authenticate(auth, header, 1000, &who, &err), 0);
    assert_string_equal(who.tenant_id, TENANT);
    assert_int_equal(who.role, CSTL_ROLE_MEMBER);

    apply(v, "TenantSuspended", "{\"tenant_id\":\"" TENANT "\",\"reason\":\"x\",\"at\":2}");
    assert_int_equal(cstl_views_tenant(v, TENANT, &suspended), 0);
    assert_true(suspended);
    assert_int_equal(cstl_auth_authenticate(auth, header, 1000, &who, &err), CSTL_EAUTH);

    snprintf(json, sizeof(json), "{\"tenant_id\":\"" TENANT "\",\"key_id\":\"%s\",\"at\":3}",
             key_id);
    apply(v, "ApiKeyRevoked", json);
    cstl_views_free(v);
    cstl_auth_free(auth);
}

static void test_fleet(void **state)
{
    (void)state;
    cstl_error err;
    cstl_views_options o = {0};
    cstl_views *v = cstl_views_new(&o, &err);
    int gpus = -1;
    int64_t memory = -1;
    cstl_views_fleet_max(v, &gpus, &memory);
    assert_int_equal(gpus, 0);
    assert_int_equal(memory, 0);
    apply(v, "WorkerRegistered",
          "{\"worker_id\":\"" WORKER "\",\"hostname\":\"h\",\"labels\":{},\"at\":1,\"gpus\":["
          "{\"uuid\":\"GPU-a\",\"model\":\"H100\",\"memory_mib\":81920,\"compute_capability\":"
          "\"9.0\"},{\"uuid\":\"GPU-b\",\"model\":\"H100\",\"memory_mib\":40960,"
          "\"compute_capability\":\"9.0\"}]}");
    char worker[37], tenant[37];
    assert_int_equal(cstl_views_gpu_worker(v, "GPU-b", worker, tenant), 0);
    assert_string_equal(worker, WORKER);
    assert_string_equal(tenant, TENANT);
    assert_int_equal(cstl_views_gpu_worker(v, "GPU-z", worker, NULL), CSTL_ENOTFOUND);
    assert_int_equal(cstl_views_worker(v, WORKER, tenant), 0);
    cstl_views_fleet_max(v, &gpus, &memory);
    assert_int_equal(gpus, 2);
    assert_int_equal(memory, 81920);

    apply(v, "WorkerDeregistered", "{\"worker_id\":\"" WORKER "\",\"at\":2}");
    assert_int_equal(cstl_views_gpu_worker(v, "GPU-a", worker, NULL), CSTL_ENOTFOUND);
    assert_int_equal(cstl_views_worker(v, WORKER, NULL), CSTL_ENOTFOUND);
    cstl_views_fleet_max(v, &gpus, &memory);
    assert_int_equal(gpus, 0);

    json_t *bad = json_loads("{\"hostname\":\"h\"}", 0, NULL);
    assert_int_equal(cstl_views_apply(v, "WorkerRegistered", bad, TENANT, &err), CSTL_EDECODE);
    assert_non_null(strstr(err.message, "worker_id"));
    json_decref(bad);
    cstl_views_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tenants_and_keys),
        cmocka_unit_test(test_fleet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
