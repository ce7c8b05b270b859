/*
 * test_placement.c - the scheduler's placement: table cases from
 * tests/fixtures/placement/placement.json (fleet, tenants, jobs -> every decision in order), the
 * input limits, and properties over random rounds: no GPU given twice, never a held or drained
 * GPU, assigned GPUs qualify, the order respects priority and age, a job waits only when it
 * could not have been placed on a worker nobody reserved, and a tenant reserves at most one worker
 * per priority.
 */
#include "commands/placement.h"
#include "platform/error.h"

#include <jansson.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MAXW 16
#define MAXJ 64

typedef struct fixture {
    cstl_place_worker workers[MAXW];
    cstl_place_gpu gpus[MAXW][CSTL_PLACE_MAX_GPUS];
    cstl_place_tenant tenants[8];
    cstl_place_job jobs[MAXJ];
    cstl_place_input in;
} fixture;

static cstl_place_reason reason_by_name(const char *name)
{
    for (int r = 0; r < CSTL_PLACE_NREASONS; r++)
        if (strcmp(cstl_place_reason_name((cstl_place_reason)r), name) == 0)
            return (cstl_place_reason)r;
    fail_msg("unknown reason \"%s\" in the fixture", name);
    return CSTL_PLACE_NREASONS;
}

/* Fills f from one case; strings stay borrowed from c. */
static void load_case(json_t *c, fixture *f)
{
    memset(f, 0, sizeof(*f));
    size_t i, k;
    json_t *w, *g, *t, *j;
    json_array_foreach(json_object_get(c, "workers"), i, w)
    {
        assert_true(i < MAXW);
        f->workers[i].worker_id = json_string_value(json_object_get(w, "id"));
        json_t *online = json_object_get(w, "online");
        f->workers[i].online = online == NULL || json_is_true(online);
        json_array_foreach(json_object_get(w, "gpus"), k, g)
        {
            cstl_place_gpu *gpu = &f->gpus[i][k];
            gpu->uuid = json_string_value(json_array_get(g, 0));
            gpu->model = json_string_value(json_array_get(g, 1));
            gpu->memory_mib = json_integer_value(json_array_get(g, 2));
            const char *state = json_string_value(json_array_get(g, 3));
            gpu->held = strcmp(state, "held") == 0;
            gpu->drained = strcmp(state, "drained") == 0;
        }
        f->workers[i].gpus = f->gpus[i];
        f->workers[i].ngpus = json_array_size(json_object_get(w, "gpus"));
        f->in.nworkers = i + 1;
    }
    json_array_foreach(json_object_get(c, "tenants"), i, t)
    {
        f->tenants[i].tenant_id = json_string_value(json_object_get(t, "id"));
        f->tenants[i].weight = json_number_value(json_object_get(t, "weight"));
        f->tenants[i].usage_gpu_s = json_number_value(json_object_get(t, "usage"));
        f->in.ntenants = i + 1;
    }
    json_array_foreach(json_object_get(c, "jobs"), i, j)
    {
        assert_true(i < MAXJ);
        cstl_place_job *job = &f->jobs[i];
        job->job_id = json_string_value(json_object_get(j, "id"));
        job->tenant_id = json_string_value(json_object_get(j, "tenant"));
        job->gpu_count = (int)json_integer_value(json_object_get(j, "gpus"));
        job->min_gpu_memory_mib = json_integer_value(json_object_get(j, "memory"));
        job->gpu_model = json_string_value(json_object_get(j, "model"));
        job->priority = (int)json_integer_value(json_object_get(j, "priority"));
        job->submitted_at = json_integer_value(json_object_get(j, "at"));
        f->in.njobs = i + 1;
    }
    f->in.workers = f->workers;
    f->in.tenants = f->tenants;
    f->in.jobs = f->jobs;
    f->in.charge_s = 60;
}

/* Compares one decision with its expectation; returns the number of mismatches (printed). */
static int
check_decision(const char *name, const fixture *f, const cstl_place_decision *d, json_t *want)
{
    int bad = 0;
    const char *job = f->jobs[d->job].job_id;
    const char *want_job = json_string_value(json_object_get(want, "job"));
    if (job == NULL || want_job == NULL || strcmp(job, want_job) != 0) {
        print_error("%s: position %zu is %s, expected %s\n", name, d->position, job ? job : "?",
                    want_job ? want_job : "(no job in the case)");
        return 1;
    }
    const char *reason = json_string_value(json_object_get(want, "reason"));
    if (d->reason != reason_by_name(reason)) {
        print_error("%s: %s is %s (%s), expected %s\n", name, job,
                    cstl_place_reason_name(d->reason), d->message, reason);
        bad++;
    }
    if ((json_int_t)d->position != json_integer_value(json_object_get(want, "position"))) {
        print_error("%s: %s at position %zu\n", name, job, d->position);
        bad++;
    }
    json_t *tp = json_object_get(want, "tenant_position");
    if (tp != NULL && (json_int_t)d->tenant_position != json_integer_value(tp)) {
        print_error("%s: %s at tenant position %zu\n", name, job, d->tenant_position);
        bad++;
    }
    json_t *worker = json_object_get(want, "worker");
    if (worker != NULL) {
        if (d->worker >= f->in.nworkers ||
            strcmp(f->workers[d->worker].worker_id, json_string_value(worker)) != 0) {
            print_error("%s: %s not on worker %s\n", name, job, json_string_value(worker));
            bad++;
        } else {
            size_t i;
            json_t *u;
            json_array_foreach(json_object_get(want, "gpus"), i, u)
            {
                const char *got = f->gpus[d->worker][d->gpus[i]].uuid;
                if (strcmp(got, json_string_value(u)) != 0) {
                    print_error("%s: %s got GPU %s, expected %s\n", name, job, got,
                                json_string_value(u));
                    bad++;
                }
            }
        }
    } else if (d->reason == CSTL_PLACE_ASSIGNED) {
        print_error("%s: %s was assigned, the case says it waits\n", name, job);
        bad++;
    }
    json_t *by = json_object_get(want, "blocked_by");
    if (by != NULL && (d->blocked_by >= f->in.njobs ||
                       strcmp(f->jobs[d->blocked_by].job_id, json_string_value(by)) != 0)) {
        print_error("%s: %s is not blocked by %s\n", name, job, json_string_value(by));
        bad++;
    }
    if (d->message[0] == '\0') {
        print_error("%s: %s has no message\n", name, job);
        bad++;
    }
    return bad;
}

static void test_fixture_cases(void **state)
{
    (void)state;
    const char *src = getenv("CSTL_SOURCE_DIR");
    assert_non_null(src);
    char path[4096];
    snprintf(path, sizeof(path), "%s/tests/fixtures/placement/placement.json", src);
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (doc == NULL)
        fail_msg("%s: %s", path, jerr.text);
    json_t *cases = json_object_get(doc, "cases");
    assert_true(json_array_size(cases) >= 10);
    int bad = 0;
    size_t i;
    json_t *c;
    static fixture f;
    cstl_place_decision out[MAXJ];
    json_array_foreach(cases, i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        load_case(c, &f);
        assert_int_equal(cstl_place(&f.in, out), 0);
        json_t *expect = json_object_get(c, "expect");
        assert_int_equal(json_array_size(expect), f.in.njobs);
        for (size_t k = 0; k < f.in.njobs; k++)
            bad += check_decision(name, &f, &out[k], json_array_get(expect, k));
    }
    json_decref(doc);
    assert_int_equal(bad, 0);
}

static void test_limits(void **state)
{
    (void)state;
    cstl_place_gpu gpu = {.uuid = "g", .model = "H100", .memory_mib = 1};
    cstl_place_worker w = {.worker_id = "w", .gpus = &gpu, .ngpus = 1, .online = true};
    cstl_place_job j = {.job_id = "j", .tenant_id = "t", .gpu_count = 1};
    cstl_place_tenant t = {.tenant_id = "t", .weight = 1};
    cstl_place_input in = {.workers = &w,
                           .nworkers = 1,
                           .tenants = &t,
                           .ntenants = 1,
                           .jobs = &j,
                           .njobs = 1,
                           .charge_s = 60};
    cstl_place_decision d;
    assert_int_equal(cstl_place(&in, &d), 0);
    assert_int_equal(d.reason, CSTL_PLACE_ASSIGNED);
    j.gpu_count = 0;
    assert_int_equal(cstl_place(&in, &d), CSTL_EINVAL);
    j.gpu_count = CSTL_PLACE_MAX_GPUS + 1;
    assert_int_equal(cstl_place(&in, &d), CSTL_EINVAL);
    j.gpu_count = 1;
    t.weight = 0;
    assert_int_equal(cstl_place(&in, &d), CSTL_EINVAL);
    t.weight = 1;
    in.charge_s = 0;
    assert_int_equal(cstl_place(&in, &d), CSTL_EINVAL);
    in.charge_s = 60;
    j.job_id = NULL;
    assert_int_equal(cstl_place(&in, &d), CSTL_EINVAL);
    j.job_id = "j";
    w.ngpus = CSTL_PLACE_MAX_GPUS + 1;
    assert_int_equal(cstl_place(&in, &d), CSTL_EINVAL);
    assert_int_equal(cstl_place(NULL, &d), CSTL_EINVAL);
    /* an empty round is fine */
    in.njobs = 0;
    w.ngpus = 1;
    assert_int_equal(cstl_place(&in, NULL), 0);
    assert_string_equal(cstl_place_reason_name(CSTL_PLACE_NREASONS), "UNKNOWN");
    assert_true(cstl_place_decay(100, 60, 60) > 49.99 && cstl_place_decay(100, 60, 60) < 50.01);
    assert_true(cstl_place_decay(100, -5, 60) == 100);
}

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

static bool qualifies(const cstl_place_job *j, const cstl_place_gpu *g)
{
    if (j->gpu_model != NULL && strcmp(j->gpu_model, g->model) != 0)
        return false;
    return g->memory_mib >= j->min_gpu_memory_mib;
}

static const char *const models[] = {"H100", "A100", "L4"};
static const char *const tenant_ids[] = {"t0", "t1", "t2"};
static char wid[MAXW][32], uid[MAXW][CSTL_PLACE_MAX_GPUS][48], jid[MAXJ][32];

/* A random round: up to 6 workers of up to 8 GPUs (some held, drained or offline), 3 tenants,
 * up to 40 jobs. */
static void random_round(fixture *f, unsigned *seed)
{
    static const int64_t mems[] = {24576, 40960, 81920};
    memset(f, 0, sizeof(*f));
    f->in.nworkers = 1 + rnd(seed) % 6;
    for (size_t w = 0; w < f->in.nworkers; w++) {
        snprintf(wid[w], sizeof(wid[w]), "w%zu", w);
        f->workers[w].worker_id = wid[w];
        f->workers[w].online = rnd(seed) % 8 != 0;
        f->workers[w].ngpus = 1 + rnd(seed) % 8;
        f->workers[w].gpus = f->gpus[w];
        for (size_t g = 0; g < f->workers[w].ngpus; g++) {
            snprintf(uid[w][g], sizeof(uid[w][g]), "GPU-%zu-%zu", w, g);
            unsigned m = rnd(seed) % 3;
            f->gpus[w][g] = (cstl_place_gpu){.uuid = uid[w][g],
                                             .model = models[m],
                                             .memory_mib = mems[m],
                                             .held = rnd(seed) % 3 == 0,
                                             .drained = rnd(seed) % 10 == 0};
        }
    }
    for (size_t t = 0; t < 3; t++)
        f->tenants[t] = (cstl_place_tenant){.tenant_id = tenant_ids[t],
                                            .weight = 1 + rnd(seed) % 3,
                                            .usage_gpu_s = rnd(seed) % 500};
    f->in.ntenants = 3;
    f->in.njobs = rnd(seed) % 40;
    for (size_t j = 0; j < f->in.njobs; j++) {
        snprintf(jid[j], sizeof(jid[j]), "j%02zu", j);
        f->jobs[j] = (cstl_place_job){.job_id = jid[j],
                                      .tenant_id = tenant_ids[rnd(seed) % 3],
                                      .gpu_count = 1 + (int)(rnd(seed) % 4),
                                      .min_gpu_memory_mib = rnd(seed) % 2 ? 0 : 30000,
                                      .gpu_model = rnd(seed) % 4 ? NULL : models[rnd(seed) % 3],
                                      .priority = (int)(rnd(seed) % 3),
                                      .submitted_at = rnd(seed) % 100};
    }
    f->in.workers = f->workers;
    f->in.tenants = f->tenants;
    f->in.jobs = f->jobs;
    f->in.charge_s = 60;
}

/* Order and assignments: positions 1..n, each job once, priorities non-increasing, older first
 * within a tenant and priority; assigned GPUs online, free, undrained, qualifying, given once. */
static void check_order_and_gpus(const fixture *f, const cstl_place_decision *out)
{
    bool taken[MAXW][CSTL_PLACE_MAX_GPUS] = {{false}};
    bool seen[MAXJ] = {false};
    for (size_t k = 0; k < f->in.njobs; k++) {
        const cstl_place_decision *d = &out[k];
        const cstl_place_job *j = &f->jobs[d->job];
        assert_int_equal(d->position, k + 1);
        assert_false(seen[d->job]);
        seen[d->job] = true;
        if (k > 0)
            assert_true(f->jobs[out[k - 1].job].priority >= j->priority);
        for (size_t e = 0; e < k; e++) {
            const cstl_place_job *p = &f->jobs[out[e].job];
            if (strcmp(p->tenant_id, j->tenant_id) == 0 && p->priority == j->priority)
                assert_true(p->submitted_at <= j->submitted_at);
        }
        if (d->reason != CSTL_PLACE_ASSIGNED)
            continue;
        assert_true(d->worker < f->in.nworkers);
        assert_true(f->workers[d->worker].online);
        for (int g = 0; g < j->gpu_count; g++) {
            size_t gi = d->gpus[g];
            const cstl_place_gpu *gpu = &f->gpus[d->worker][gi];
            assert_false(gpu->held);
            assert_false(gpu->drained);
            assert_true(qualifies(j, gpu));
            assert_false(taken[d->worker][gi]); /* never two jobs on one GPU */
            taken[d->worker][gi] = true;
        }
    }
}

/* The first job that waits for GPUs (nothing was reserved before it) found no online worker with
 * enough free qualifying GPUs once the jobs before it were placed. */
static void check_first_wait(const fixture *f, const cstl_place_decision *out)
{
    for (size_t k = 0; k < f->in.njobs; k++) {
        if (out[k].reason != CSTL_PLACE_WAITING_FOR_GPUS)
            continue;
        const cstl_place_job *j = &f->jobs[out[k].job];
        bool before[MAXW][CSTL_PLACE_MAX_GPUS] = {{false}};
        for (size_t e = 0; e < k; e++) {
            if (out[e].reason != CSTL_PLACE_ASSIGNED)
                continue;
            for (int g = 0; g < f->jobs[out[e].job].gpu_count; g++)
                before[out[e].worker][out[e].gpus[g]] = true;
        }
        for (size_t w = 0; w < f->in.nworkers; w++) {
            if (!f->workers[w].online)
                continue;
            int free_q = 0;
            for (size_t g = 0; g < f->workers[w].ngpus; g++) {
                const cstl_place_gpu *gpu = &f->gpus[w][g];
                free_q += !gpu->held && !gpu->drained && !before[w][g] && qualifies(j, gpu);
            }
            assert_true(free_q < j->gpu_count);
        }
        return;
    }
}

/* A tenant has at most one job waiting for GPUs (reserving a worker) per priority: its later jobs
 * that do not fit wait behind it, leaving the other workers to the other tenants. */
static void check_one_wait_per_tenant(const fixture *f, const cstl_place_decision *out)
{
    for (size_t k = 0; k < f->in.njobs; k++) {
        if (out[k].reason != CSTL_PLACE_WAITING_FOR_GPUS)
            continue;
        const cstl_place_job *j = &f->jobs[out[k].job];
        for (size_t e = k + 1; e < f->in.njobs; e++) {
            const cstl_place_job *o = &f->jobs[out[e].job];
            if (strcmp(o->tenant_id, j->tenant_id) == 0 && o->priority == j->priority)
                assert_int_not_equal(out[e].reason, CSTL_PLACE_WAITING_FOR_GPUS);
        }
    }
}

static void test_random_rounds(void **state)
{
    (void)state;
    static fixture f;
    cstl_place_decision out[MAXJ];
    unsigned seed = 12345;
    for (int round = 0; round < 3000; round++) {
        random_round(&f, &seed);
        assert_int_equal(cstl_place(&f.in, out), 0);
        check_order_and_gpus(&f, out);
        check_first_wait(&f, out);
        check_one_wait_per_tenant(&f, out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_cases),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_random_rounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
