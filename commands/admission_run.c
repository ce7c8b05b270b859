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

/* Sends one decision, retrying with backoff until it is appended or the runner stops. */
static void send_decision(cstl_admission_runner *r, const cstl_admission_decision *d)
{
    char key[80], command_id[37];
    snprintf(key, sizeof(key), "admission:%s", d->job_id);
    cstl_cmd_id_from_key(d->tenant_id, key, command_id);
    cstl_cmd_request req = {.context = "jobs",
                            .command_type = d->command_type,
                            .command_id = command_id,
                            .tenant_id = d->tenant_id,
                            .aggregate_id = d->job_id,
                            .expected_version = -1,
                            .issued_by = "admission",
                            .payload = d->payload,
                            .want_reply = 0};
    for (int attempt = 0; !atomic_load(&r->stop); attempt++) {
        cstl_error err;
        int rc = cstl_cmd_client_send(r->client, &req, 0, NULL, &err);
        if (rc == 0 || rc == CSTL_ETIMEDOUT)
            break;
        if (!cstl_error_is_retriable(rc)) {
            cstl_log_error("admission", &err, "cannot send %s for job %s", d->command_type,
                           d->job_id);
            return;
        }
        int ms = attempt < 6 ? 100 << attempt : 5000;
        struct timespec pause = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
    }
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

static void decide_all(cstl_admission_runner *r, json_t *job_ids)
{
    size_t i;
    json_t *id;
    json_array_foreach(job_ids, i, id)
    {
        cstl_admission_decision d;
        if (cstl_admission_decide(r->state, json_string_value(id), &d) != 0)
            continue; /* decided meanwhile, or not a job admission knows */
        send_decision(r, &d);
        json_decref(d.payload);
    }
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
