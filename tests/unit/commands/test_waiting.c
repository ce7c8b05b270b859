/*
 * test_waiting.c - which pending reasons the scheduler publishes (commands/waiting.h): a stay's
 * first decision and every change of reason at once, a change of message alone at most once per
 * interval (then the newest), nothing for a job being placed, a tombstone once a job left the
 * queue, and what the records and tombstones a restart reads back, or a failed delivery, change.
 */
#include "commands/waiting.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define S (1000000LL) /* one second in microseconds */

static const char *const T1 = "01890a5d-ac96-774b-bcce-b302099a8001";

typedef struct diff {
    cstl_waiting_record *r;
    size_t n;
} diff;

static cstl_waiting_job
job(const char *id, int attempts, cstl_place_reason reason, const char *message)
{
    return (cstl_waiting_job){.job_id = id,
                              .tenant_id = T1,
                              .attempts = attempts,
                              .version = 2 + attempts,
                              .reason = reason,
                              .message = message};
}

static diff run(cstl_waiting *w, const cstl_waiting_job *jobs, size_t n, int64_t now)
{
    diff d = {NULL, 0};
    cstl_waiting_diff(w, jobs, n, now, &d.r, &d.n);
    return d;
}

static const cstl_waiting_record *find(const diff *d, const char *job_id)
{
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->r[i].job_id, job_id) == 0)
            return &d->r[i];
    return NULL;
}

static void test_first_decision_then_only_changes(void **state)
{
    (void)state;
    cstl_waiting *w = cstl_waiting_new(30);
    cstl_waiting_job j[] = {job("a", 0, CSTL_PLACE_GPU_MODEL_ABSENT, "no B200"),
                            job("b", 0, CSTL_PLACE_EARLIER_JOBS, "a goes first")};
    diff d = run(w, j, 2, 1 * S);
    assert_int_equal(d.n, 2);
    const cstl_waiting_record *r = find(&d, "a");
    assert_non_null(r);
    assert_false(r->tombstone);
    assert_int_equal(r->reason, CSTL_PLACE_GPU_MODEL_ABSENT);
    assert_string_equal(r->message, "no B200");
    assert_string_equal(r->tenant_id, T1);
    assert_int_equal(r->attempts, 0);
    assert_int_equal(r->version, 2);
    assert_int_equal(r->at, 1 * S);
    assert_int_equal(cstl_waiting_len(w), 2);
    free(d.r);

    /* the same decisions, plan after plan: nothing */
    for (int64_t t = 2; t < 100; t++) {
        d = run(w, j, 2, t * S);
        assert_int_equal(d.n, 0);
        free(d.r);
    }

    /* a change of reason goes out at once, even right after the last record */
    j[0] = job("a", 0, CSTL_PLACE_WAITING_FOR_GPUS, "next in line");
    d = run(w, j, 2, 100 * S + 1);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.r[0].job_id, "a");
    assert_int_equal(d.r[0].reason, CSTL_PLACE_WAITING_FOR_GPUS);
    free(d.r);
    j[0] = job("a", 0, CSTL_PLACE_HIGHER_PRIORITY, "c goes first");
    d = run(w, j, 2, 100 * S + 2);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.r[0].reason, CSTL_PLACE_HIGHER_PRIORITY);
    free(d.r);
    cstl_waiting_free(w);
}

static void test_message_changes_are_rate_limited(void **state)
{
    (void)state;
    cstl_waiting *w = cstl_waiting_new(30);
    cstl_waiting_job j = job("a", 0, CSTL_PLACE_WAITING_FOR_GPUS, "3 are free");
    diff d = run(w, &j, 1, 10 * S);
    assert_int_equal(d.n, 1);
    free(d.r);
    /* the free GPUs change every plan: nothing until 30 s after the last record */
    char msg[32];
    for (int64_t t = 11; t < 40; t++) {
        snprintf(msg, sizeof(msg), "%d are free", (int)(t % 4));
        j.message = msg;
        d = run(w, &j, 1, t * S);
        assert_int_equal(d.n, 0);
        free(d.r);
    }
    /* then the newest message */
    j.message = "1 is free";
    d = run(w, &j, 1, 40 * S);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.r[0].message, "1 is free");
    assert_int_equal(d.r[0].at, 40 * S);
    free(d.r);
    /* the interval counts from that record */
    d = run(w, &j, 1, 45 * S);
    assert_int_equal(d.n, 0);
    free(d.r);
    j.message = "0 are free";
    d = run(w, &j, 1, 69 * S);
    assert_int_equal(d.n, 0);
    free(d.r);
    d = run(w, &j, 1, 70 * S);
    assert_int_equal(d.n, 1);
    free(d.r);
    /* an unchanged message never goes out again */
    d = run(w, &j, 1, 1000 * S);
    assert_int_equal(d.n, 0);
    free(d.r);
    cstl_waiting_free(w);

    /* the default interval is 30 s */
    w = cstl_waiting_new(0);
    j = job("a", 0, CSTL_PLACE_WAITING_FOR_GPUS, "x");
    free(run(w, &j, 1, 0).r);
    j.message = "y";
    d = run(w, &j, 1, 30 * S - 1);
    assert_int_equal(d.n, 0);
    free(d.r);
    d = run(w, &j, 1, 30 * S);
    assert_int_equal(d.n, 1);
    free(d.r);
    cstl_waiting_free(w);
}

static void test_placed_jobs_and_tombstones(void **state)
{
    (void)state;
    cstl_waiting *w = cstl_waiting_new(30);
    cstl_waiting_job j[] = {job("a", 0, CSTL_PLACE_WAITING_FOR_GPUS, "next"),
                            job("b", 0, CSTL_PLACE_ASSIGNED, "assigned to 1 GPU on worker w")};
    diff d = run(w, j, 2, 1 * S);
    /* a job being placed publishes nothing */
    assert_int_equal(d.n, 1);
    assert_string_equal(d.r[0].job_id, "a");
    free(d.r);
    /* a placed, in flight: still queued in the log, its record stays */
    j[0].reason = CSTL_PLACE_ASSIGNED;
    d = run(w, j, 2, 2 * S);
    assert_int_equal(d.n, 0);
    free(d.r);
    /* a's JobAssigned read: it is no longer queued, its record gets a tombstone, once; b never
     * had a record and gets none */
    d = run(w, NULL, 0, 3 * S);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.r[0].job_id, "a");
    assert_true(d.r[0].tombstone);
    assert_string_equal(d.r[0].tenant_id, T1);
    free(d.r);
    assert_int_equal(cstl_waiting_len(w), 0);
    d = run(w, NULL, 0, 4 * S);
    assert_int_equal(d.n, 0);
    free(d.r);
    /* requeued: a new stay publishes its reason, however like the last one */
    j[0] = job("a", 1, CSTL_PLACE_WAITING_FOR_GPUS, "next");
    d = run(w, j, 1, 5 * S);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.r[0].attempts, 1);
    assert_int_equal(d.r[0].version, 3);
    free(d.r);
    /* a new stay read before the tombstone was owed: the record replaces the old one */
    j[0] = job("a", 2, CSTL_PLACE_WAITING_FOR_GPUS, "next");
    d = run(w, j, 1, 6 * S);
    assert_int_equal(d.n, 1);
    assert_false(d.r[0].tombstone);
    assert_int_equal(d.r[0].attempts, 2);
    free(d.r);
    cstl_waiting_free(w);
}

static void test_restart_reads_back_what_was_published(void **state)
{
    (void)state;
    cstl_waiting *w = cstl_waiting_new(30);
    cstl_waiting_seen(w, "a", T1, 0, CSTL_PLACE_GPU_MODEL_ABSENT, "no B200", 1 * S);
    cstl_waiting_seen(w, "gone", T1, 0, CSTL_PLACE_WAITING_FOR_GPUS, "next", 1 * S);
    cstl_waiting_seen(w, "newer", T1, 0, CSTL_PLACE_NREASONS, "a reason of a later build", 1 * S);
    cstl_waiting_seen(w, NULL, T1, 0, CSTL_PLACE_WAITING_FOR_GPUS, "ignored", 1 * S);
    /* a record followed by its tombstone: nothing owed */
    cstl_waiting_seen(w, "ended", T1, 0, CSTL_PLACE_WAITING_FOR_GPUS, "next", 1 * S);
    cstl_waiting_clear(w, "ended");
    cstl_waiting_clear(w, "never-seen");
    assert_int_equal(cstl_waiting_len(w), 3);
    cstl_waiting_job j[] = {job("a", 0, CSTL_PLACE_GPU_MODEL_ABSENT, "no B200"),
                            job("newer", 0, CSTL_PLACE_EARLIER_JOBS, "a goes first")};
    diff d = run(w, j, 2, 5 * S);
    /* unchanged: not again; a reason this build cannot name: again; left the queue while no
     * scheduler ran: its tombstone */
    assert_int_equal(d.n, 2);
    assert_null(find(&d, "a"));
    assert_false(find(&d, "newer")->tombstone);
    assert_true(find(&d, "gone")->tombstone);
    free(d.r);
    /* the message interval counts from the record read back */
    j[0].message = "no B200 anywhere";
    d = run(w, j, 2, 30 * S);
    assert_int_equal(d.n, 0);
    free(d.r);
    d = run(w, j, 2, 31 * S);
    assert_int_equal(d.n, 1);
    free(d.r);
    cstl_waiting_free(w);
}

static void test_failed_deliveries_are_owed_again(void **state)
{
    (void)state;
    cstl_waiting *w = cstl_waiting_new(30);
    cstl_waiting_job j = job("a", 0, CSTL_PLACE_GPU_MODEL_ABSENT, "no B200");
    diff first = run(w, &j, 1, 1 * S);
    assert_int_equal(first.n, 1);
    /* not delivered: the same reason goes out again at the next plan */
    cstl_waiting_failed(w, &first.r[0]);
    diff d = run(w, &j, 1, 2 * S);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.r[0].reason, CSTL_PLACE_GPU_MODEL_ABSENT);
    /* a failure reported after a later record went out changes nothing */
    cstl_waiting_failed(w, &first.r[0]);
    free(first.r);
    free(d.r);
    d = run(w, &j, 1, 3 * S);
    assert_int_equal(d.n, 0);
    free(d.r);

    /* a failed record of a job that left the queue meanwhile: a tombstone is still owed */
    diff again = {NULL, 0};
    j.reason = CSTL_PLACE_WAITING_FOR_GPUS;
    again = run(w, &j, 1, 4 * S);
    assert_int_equal(again.n, 1);
    cstl_waiting_failed(w, &again.r[0]);
    free(again.r);
    d = run(w, NULL, 0, 5 * S);
    assert_int_equal(d.n, 1);
    assert_true(d.r[0].tombstone);
    /* the tombstone failed too: owed again while the job is not queued */
    cstl_waiting_record tomb = d.r[0];
    free(d.r);
    cstl_waiting_failed(w, &tomb);
    d = run(w, NULL, 0, 6 * S);
    assert_int_equal(d.n, 1);
    assert_true(d.r[0].tombstone);
    free(d.r);
    d = run(w, NULL, 0, 7 * S);
    assert_int_equal(d.n, 0);
    free(d.r);
    /* a failed tombstone of a job queued and published again since: nothing owed */
    j = job("a", 1, CSTL_PLACE_WAITING_FOR_GPUS, "next");
    d = run(w, &j, 1, 8 * S);
    assert_int_equal(d.n, 1);
    free(d.r);
    cstl_waiting_failed(w, &tomb);
    d = run(w, &j, 1, 9 * S);
    assert_int_equal(d.n, 0);
    free(d.r);
    cstl_waiting_free(w);
}

static void test_bad_input_is_ignored(void **state)
{
    (void)state;
    cstl_waiting *w = cstl_waiting_new(30);
    char long_id[80];
    memset(long_id, 'x', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    cstl_waiting_job j[] = {job(NULL, 0, CSTL_PLACE_GPU_MODEL_ABSENT, "x"),
                            job(long_id, 0, CSTL_PLACE_GPU_MODEL_ABSENT, "x"),
                            job("a", 0, CSTL_PLACE_NREASONS, "x"),
                            job("b", 0, CSTL_PLACE_NO_WORKERS, NULL)};
    diff d = run(w, j, 4, 1 * S);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.r[0].job_id, "b");
    assert_string_equal(d.r[0].message, "");
    free(d.r);
    cstl_waiting_free(w);
    cstl_waiting_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_decision_then_only_changes),
        cmocka_unit_test(test_message_changes_are_rate_limited),
        cmocka_unit_test(test_placed_jobs_and_tombstones),
        cmocka_unit_test(test_restart_reads_back_what_was_published),
        cmocka_unit_test(test_failed_deliveries_are_owed_again),
        cmocka_unit_test(test_bad_input_is_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
