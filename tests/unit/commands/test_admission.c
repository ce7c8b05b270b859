/* Unit tests for commands/admission.c: the admission rules and their order, restart replay. */
#include "commands/admission.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define TENANT_A "0190f5a2-7c1e-7b3a-8e4f-00000000000a"
#define TENANT_B "0190f5a2-7c1e-7b3a-8e4f-00000000000b"
#define WORKER_1 "0190f5a2-7c1e-7b3a-8e4f-0000000000f1"

static void apply(cstl_admission *a, const char *context, const char *type, const char *json)
{
    json_t *data = json_loads(json, 0, NULL);
    assert_non_null(data);
    cstl_admission_apply(a, context, type, data);
    json_decref(data);
}

static void tenant(cstl_admission *a, const char *id)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "{\"tenant_id\":\"%s\",\"name\":\"t\",\"contact_email\":\"a@b.c\"}",
             id);
    apply(a, "tenants", "TenantCreated", buf);
}

static void worker_4xh100(cstl_admission *a)
{
    apply(a, "fleet", "WorkerRegistered",
          "{\"worker_id\":\"" WORKER_1 "\",\"hostname\":\"gpu-1\",\"labels\":{},\"gpus\":["
          "{\"uuid\":\"GPU-1\",\"model\":\"H100\",\"memory_mib\":81920,\"compute_capability\":\"9."
          "0\"},"
          "{\"uuid\":\"GPU-2\",\"model\":\"H100\",\"memory_mib\":81920,\"compute_capability\":\"9."
          "0\"},"
          "{\"uuid\":\"GPU-3\",\"model\":\"H100\",\"memory_mib\":81920,\"compute_capability\":\"9."
          "0\"},"
          "{\"uuid\":\"GPU-4\",\"model\":\"H100\",\"memory_mib\":81920,\"compute_capability\":\"9."
          "0\"}]}");
}

static void submit(cstl_admission *a,
                   const char *job,
                   const char *tenant_id,
                   int gpus,
                   long memory,
                   const char *model)
{
    char buf[512];
    char model_json[64] = "null";
    if (model != NULL)
        snprintf(model_json, sizeof(model_json), "\"%s\"", model);
    snprintf(buf, sizeof(buf),
             "{\"job_id\":\"%s\",\"tenant_id\":\"%s\",\"gpu_count\":%d,"
             "\"min_gpu_memory_mib\":%ld,\"gpu_model\":%s}",
             job, tenant_id, gpus, memory, model_json);
    apply(a, "jobs", "JobSubmitted", buf);
}

/* Decides job and checks the command and, for a rejection, its reason. */
static void expect(cstl_admission *a, const char *job, const char *command, const char *reason)
{
    cstl_admission_decision d;
    assert_int_equal(cstl_admission_decide(a, job, &d), 0);
    assert_string_equal(d.command_type, command);
    assert_string_equal(json_string_value(json_object_get(d.payload, "job_id")), job);
    if (reason != NULL) {
        assert_string_equal(json_string_value(json_object_get(d.payload, "reason")), reason);
        assert_non_null(json_string_value(json_object_get(d.payload, "message")));
    } else {
        assert_non_null(json_string_value(json_object_get(d.payload, "reservation_id")));
    }
    json_decref(d.payload);
}

static void test_admits_when_everything_fits(void **state)
{
    (void)state;
    cstl_admission *a = cstl_admission_new(10);
    tenant(a, TENANT_A);
    worker_4xh100(a);
    submit(a, "job-1", TENANT_A, 4, 81920, "H100");
    expect(a, "job-1", "AdmitJob", NULL);
    cstl_admission_free(a);
}

static void test_unknown_or_suspended_tenant(void **state)
{
    (void)state;
    cstl_admission *a = cstl_admission_new(10);
    worker_4xh100(a);
    submit(a, "job-1", TENANT_A, 1, 0, NULL);
    expect(a, "job-1", "RejectJob", "TENANT_SUSPENDED");
    tenant(a, TENANT_B);
    apply(a, "tenants", "TenantSuspended", "{\"tenant_id\":\"" TENANT_B "\",\"reason\":\"x\"}");
    submit(a, "job-2", TENANT_B, 1, 0, NULL);
    expect(a, "job-2", "RejectJob", "TENANT_SUSPENDED");
    cstl_admission_free(a);
}

static void test_no_matching_gpu(void **state)
{
    (void)state;
    cstl_admission *a = cstl_admission_new(10);
    tenant(a, TENANT_A);
    submit(a, "job-0", TENANT_A, 1, 0, NULL); /* no worker at all */
    expect(a, "job-0", "RejectJob", "NO_MATCHING_GPU");
    worker_4xh100(a);
    submit(a, "job-1", TENANT_A, 5, 0, NULL); /* more GPUs than any worker has */
    expect(a, "job-1", "RejectJob", "NO_MATCHING_GPU");
    submit(a, "job-2", TENANT_A, 1, 81921, NULL); /* more memory than any GPU */
    expect(a, "job-2", "RejectJob", "NO_MATCHING_GPU");
    submit(a, "job-3", TENANT_A, 1, 0, "A100"); /* model absent from the fleet */
    expect(a, "job-3", "RejectJob", "NO_MATCHING_GPU");
    apply(a, "fleet", "WorkerLost", "{\"worker_id\":\"" WORKER_1 "\",\"job_ids\":[]}");
    submit(a, "job-4", TENANT_A, 1, 0, NULL); /* its only worker is lost */
    expect(a, "job-4", "RejectJob", "NO_MATCHING_GPU");
    cstl_admission_free(a);
}

static void test_quota_counts_waiting_jobs_per_tenant(void **state)
{
    (void)state;
    cstl_admission *a = cstl_admission_new(2);
    tenant(a, TENANT_A);
    tenant(a, TENANT_B);
    worker_4xh100(a);
    submit(a, "a-1", TENANT_A, 1, 0, NULL);
    expect(a, "a-1", "AdmitJob", NULL);
    apply(a, "jobs", "JobAdmitted", "{\"job_id\":\"a-1\"}");
    submit(a, "a-2", TENANT_A, 1, 0, NULL);
    expect(a, "a-2", "AdmitJob", NULL);
    apply(a, "jobs", "JobAdmitted", "{\"job_id\":\"a-2\"}");
    submit(a, "a-3", TENANT_A, 1, 0, NULL);
    expect(a, "a-3", "RejectJob", "QUOTA_EXCEEDED");
    apply(a, "jobs", "JobRejected", "{\"job_id\":\"a-3\"}");
    /* another tenant is not affected */
    submit(a, "b-1", TENANT_B, 1, 0, NULL);
    expect(a, "b-1", "AdmitJob", NULL);
    /* once one of A's jobs is assigned, A has room again */
    apply(a, "jobs", "JobAssigned", "{\"job_id\":\"a-1\"}");
    submit(a, "a-4", TENANT_A, 1, 0, NULL);
    expect(a, "a-4", "AdmitJob", NULL);
    cstl_admission_free(a);
}

static void test_pending_after_replay_in_order(void **state)
{
    (void)state;
    cstl_admission *a = cstl_admission_new(10);
    tenant(a, TENANT_A);
    worker_4xh100(a);
    submit(a, "job-1", TENANT_A, 1, 0, NULL);
    submit(a, "job-2", TENANT_A, 1, 0, NULL);
    submit(a, "job-3", TENANT_A, 1, 0, NULL);
    apply(a, "jobs", "JobAdmitted", "{\"job_id\":\"job-1\"}");
    apply(a, "jobs", "JobCancelled", "{\"job_id\":\"job-3\"}");
    json_t *pending = cstl_admission_pending(a);
    assert_int_equal(json_array_size(pending), 1);
    assert_string_equal(json_string_value(json_array_get(pending, 0)), "job-2");
    json_decref(pending);
    /* a decided job is not decided again */
    cstl_admission_decision d;
    assert_int_equal(cstl_admission_decide(a, "job-1", &d), CSTL_ENOTFOUND);
    assert_int_equal(cstl_admission_decide(a, "job-3", &d), CSTL_ENOTFOUND);
    cstl_admission_free(a);
}

static void test_decision_is_deterministic(void **state)
{
    (void)state;
    /* Two instances replaying the same log reach the same command and reservation id. */
    json_t *res[2];
    for (int i = 0; i < 2; i++) {
        cstl_admission *a = cstl_admission_new(10);
        tenant(a, TENANT_A);
        worker_4xh100(a);
        submit(a, "job-1", TENANT_A, 2, 1024, NULL);
        cstl_admission_decision d;
        assert_int_equal(cstl_admission_decide(a, "job-1", &d), 0);
        res[i] = d.payload;
        cstl_admission_free(a);
    }
    assert_true(json_equal(res[0], res[1]));
    json_decref(res[0]);
    json_decref(res[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admits_when_everything_fits),
        cmocka_unit_test(test_unknown_or_suspended_tenant),
        cmocka_unit_test(test_no_matching_gpu),
        cmocka_unit_test(test_quota_counts_waiting_jobs_per_tenant),
        cmocka_unit_test(test_pending_after_replay_in_order),
        cmocka_unit_test(test_decision_is_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
