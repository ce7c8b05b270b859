/*
 * admission_run.c - the admission process manager's loop (see admission.h): events in, AdmitJob or
 * RejectJob out, exactly once in effect.
 *
 * Exactly once: the state is rebuilt from the whole log at every start; a job is decided only when
 * no decision for it is in the log; the decision's command id is derived from the job id, so a
 * decision sent again (a restart before its event was read back, or a second instance) is a
 * duplicate the command handler answers without new events.
 *
 * Thread: run() on one thread; stop() and ready() from any.
 */
#include "commands/admission.h"
#include "commands/event_reader.h"
#include "platform/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cstl_admission_runner {
    cstl_admission *state;
    cstl_event_reader *reader;
    cstl_cmd_client *client;
    atomic_bool stop;
    atomic_bool ready;
    json_t *to_decide; /* job ids submitted while live, decided after the poll that read them */
    cstl_metric_family *decisions;
};

static void on_event(void *ud,
                     const char *context,
                     const char *type,
                     const json_t *data,
                     const cstl_event_headers *headers)
{
    (void)headers;
    cstl_admission_runner *r = ud;
    cstl_admission_apply(r->state, context, type, data);
    if (atomic_load(&r->ready) && strcmp(context, "jobs") == 0 && strcmp(type, "JobSubmitted") == 0)
        json_array_append(r->to_decide, json_object_get(data, "job_id"));
}

cstl_admission_runner *cstl_admission_runner_new(const cstl_admission_runner_options *opts,
                                                 cstl_error *err)
{
    static const char *const contexts[] = {"tenants", "fleet", "jobs"};
    char client_id[256];
    snprintf(client_id, sizeof(client_id), "constellation-admission-%s",
             opts->instance_id ? opts->instance_id : "");
    cstl_event_reader *reader =
        cstl_event_reader_new(opts->brokers, client_id, contexts, 3, opts->timeout_ms, err);
    if (reader == NULL)
        return NULL;
    cstl_admission_runner *r = cstl_xcalloc(1, sizeof(*r));
    r->state = cstl_admission_new(opts->max_queued);
    r->reader = reader;
    r->client = opts->client;
    r->to_decide = json_array();
    if (opts->metrics != NULL) {
        static const char *const labels[] = {"decision", "reason", NULL};
        r->decisions = cstl_metrics_counter(opts->metrics, "admission_decisions_total",
                                            "jobs admitted or rejected by admission", labels, NULL);
    }
    return r;
}

/* Counts and logs a decision that is in the log. */
static void decided(cstl_admission_runner *r, const cstl_admission_decision *d)
{
    const char *reason = json_string_value(json_object_get(d->payload, "reason"));
    if (r->decisions != NULL) {
        const char *values[] = {d->command_type, reason ? reason : "", NULL};
        cstl_metrics_counter_inc(cstl_metrics_child(r->decisions, values));
    }
    cstl_log_fields(CSTL_LOG_DEBUG, "admission",
                    json_pack("{s:s,s:s,s:s?}", "job_id", d->job_id, "decision", d->command_type,
                              "reason", reason),
                    "job decided");
}

/*
 * Sends the n decisions together (they share the handler's batches instead of a round trip each),
 * retrying those that could not be appended with backoff until they are or the runner stops. Each
 * command id is derived from the job, so a decision sent twice is answered as a duplicate.
 */
static void send_decisions(cstl_admission_runner *r, cstl_admission_decision *d, size_t n)
{
    cstl_cmd_request *reqs = cstl_xcalloc(n, sizeof(*reqs));
    cstl_cmd_result *res = cstl_xcalloc(n, sizeof(*res));
    char(*ids)[37] = cstl_xcalloc(n, sizeof(*ids));
    size_t *which = cstl_xcalloc(n, sizeof(*which)), left = n;
    for (size_t i = 0; i < n; i++) {
        char key[80];
        snprintf(key, sizeof(key), "admission:%s", d[i].job_id);
        cstl_cmd_id_from_key(d[i].tenant_id, key, ids[i]);
        which[i] = i;
    }
    for (int attempt = 0; left > 0 && !atomic_load(&r->stop); attempt++) {
        for (size_t k = 0; k < left; k++) {
            const cstl_admission_decision *x = &d[which[k]];
            reqs[k] = (cstl_cmd_request){.context = "jobs",
                                         .command_type = x->command_type,
                                         .command_id = ids[which[k]],
                                         .tenant_id = x->tenant_id,
                                         .aggregate_id = x->job_id,
                                         .expected_version = -1,
                                         .issued_by = "admission",
                                         .payload = x->payload,
                                         .want_reply = 0};
        }
        cstl_cmd_client_send_batch(r->client, reqs, left, 0, res);
        size_t again = 0;
        for (size_t k = 0; k < left; k++) {
            const cstl_admission_decision *x = &d[which[k]];
            int rc = res[k].rc;
            if (rc == 0 || rc == CSTL_ETIMEDOUT) {
                decided(r, x);
            } else if (!cstl_error_is_retriable(rc)) {
                cstl_log_error("admission", &res[k].err, "cannot send %s for job %s",
                               x->command_type, x->job_id);
            } else {
                which[again++] = which[k];
            }
        }
        left = again;
        if (left > 0) {
            int ms = attempt < 6 ? 100 << attempt : 5000;
            struct timespec pause = {ms / 1000, (long)(ms % 1000) * 1000000L};
            nanosleep(&pause, NULL);
        }
    }
    free(reqs);
    free(res);
    free(ids);
    free(which);
}

static void decide_all(cstl_admission_runner *r, json_t *job_ids)
{
    size_t n = json_array_size(job_ids), nd = 0;
    if (n == 0)
        return;
    cstl_admission_decision *d = cstl_xcalloc(n, sizeof(*d));
    size_t i;
    json_t *id;
    json_array_foreach(job_ids, i, id)
    {
        if (cstl_admission_decide(r->state, json_string_value(id), &d[nd]) == 0)
            nd++; /* else decided meanwhile, or not a job admission knows */
    }
    if (nd > 0)
        send_decisions(r, d, nd);
    for (size_t k = 0; k < nd; k++)
        json_decref(d[k].payload);
    free(d);
}

int cstl_admission_runner_run(cstl_admission_runner *r, cstl_error *err)
{
    while (!atomic_load(&r->stop)) {
        int n = cstl_event_reader_poll(r->reader, 100, on_event, r);
        if (n < 0)
            return cstl_error_set(err, n, "admission cannot read the events");
        if (!atomic_load(&r->ready)) {
            if (!cstl_event_reader_caught_up(r->reader))
                continue;
            json_t *pending = cstl_admission_pending(r->state);
            cstl_log(CSTL_LOG_INFO, "admission", "caught up with the log, %zu jobs to decide",
                     json_array_size(pending));
            decide_all(r, pending);
            json_decref(pending);
            atomic_store(&r->ready, true);
            continue;
        }
        if (json_array_size(r->to_decide) > 0) {
            decide_all(r, r->to_decide);
            json_array_clear(r->to_decide);
        }
    }
    return 0;
}

void cstl_admission_runner_stop(cstl_admission_runner *r)
{
    atomic_store(&r->stop, true);
}

bool cstl_admission_runner_ready(const cstl_admission_runner *r)
{
    return atomic_load(&r->ready);
}

void cstl_admission_runner_free(cstl_admission_runner *r)
{
    if (r == NULL)
        return;
    cstl_event_reader_free(r->reader);
    cstl_admission_free(r->state);
    json_decref(r->to_decide);
    free(r);
}
