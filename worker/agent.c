/*
 * agent.c - the worker agent's log follower and runs (see agent.h; the HTTP side is agent_api.c).
 *
 * The follower reads constellation.jobs.events and constellation.fleet.events from the beginning.
 * It keeps each live job's parameters (from JobSubmitted, dropped when the job ends) and the runs
 * assigned to this worker that have not finished ("mine"). While replaying it only records; once
 * caught up it settles what the replay left open: a run assigned but never started is started, a
 * run that had started died with the previous process and is reported LOST (WORKER_LOST, so the
 * job is requeued), a run of a job cancelled or timed out meanwhile is closed with that outcome.
 * After that it acts on each event as it comes: JobAssigned to us starts a run; JobCancelled,
 * JobTimedOut and JobRequeued of a job we run stop it; WorkerLost of us makes the API thread
 * register again.
 *
 * Invariants: at most one run thread per job; w->mu guards jobs, mine, the run list and each
 * slot's run/reason; a run thread owns its slot's other fields until it sets done, after which
 * the follower joins and frees it.
 */
#include "commands/client.h"
#include "platform/codec.h"
#include "platform/events.h"
#include "platform/log.h"
#include "worker/agent_internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FOLLOW_POLL_MS 100
#define LOGS_TOPIC     "constellation.jobs.logs"

int64_t agent_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- output lines ------------------------------------------------------------------------ */

/* Copies len bytes into out (capacity 3 * len + 1) with every invalid UTF-8 byte as U+FFFD. */
static size_t utf8_clean(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = in[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = n > 0 && i + n <= len && c != 0;
        for (size_t k = 1; ok && k < n; k++)
            ok = (in[i + k] & 0xC0) == 0x80;
        if (ok && n == 2)
            ok = c >= 0xC2;
        if (ok && n == 3) {
            unsigned cp = ((c & 0x0Fu) << 12) | ((in[i + 1] & 0x3Fu) << 6) | (in[i + 2] & 0x3Fu);
            ok = cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF);
        }
        if (ok && n == 4) {
            unsigned cp = ((c & 0x07u) << 18) | ((in[i + 1] & 0x3Fu) << 12);
            ok = cp >= 0x10000 && cp <= 0x10FFFF;
        }
        if (ok) {
            memcpy(out + o, in + i, n);
            o += n;
            i += n;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    return o;
}

static void tally_unref(log_tally *t)
{
    if (atomic_fetch_sub(&t->refs, 1) == 1)
        free(t);
}

/* A line's delivery report, on whichever thread polls the producer. */
static void on_delivered(void *opaque, const cstl_kafka_delivery *d)
{
    log_tally *t = opaque;
    if (d->code != 0 && t->m_dropped != NULL)
        cstl_metrics_counter_inc(t->m_dropped);
    atomic_fetch_sub(&t->in_flight, 1);
    tally_unref(t);
}

/* Waits up to timeout_ms for the delivery reports of every line of t, serving the producer's
 * callbacks meanwhile. True when none is in flight any more. */
static bool wait_delivered(cstl_worker *w, log_tally *t, int timeout_ms)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t until = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 + timeout_ms;
    while (atomic_load(&t->in_flight) > 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 >= until)
            return false;
        cstl_kafka_producer_poll(w->producer, 10);
    }
    return true;
}

static void on_line(void *ud, cstl_run_stream stream, const char *line, size_t len)
{
    run_slot *s = ud;
    cstl_worker *w = s->w;
    char *clean = cstl_xcalloc(1, len * 3 + 1);
    size_t clen = utf8_clean((const unsigned char *)line, len, clean);
    json_t *rec =
        json_pack("{s:s,s:s,s:s,s:I,s:s%,s:I,s:s?}", "job_id", s->job_id, "run_id", s->run_id,
                  "stream", stream == CSTL_RUN_STDOUT ? "stdout" : "stderr", "seq",
                  (json_int_t)s->seq++, "line", clean, clen, "at", (json_int_t)agent_wall_us(),
                  "tenant_id", s->tenant_id[0] != '\0' ? s->tenant_id : NULL);
    free(clean);
    const cstl_schema_entry *entry =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), "jobs.JobLogLine");
    cstl_codec_buf buf = {0};
    cstl_error err;
    int rc = rec != NULL && entry != NULL ? cstl_codec_encode_json(entry, rec, &buf, &err)
                                          : CSTL_EINTERNAL;
    json_decref(rec);
    for (int tries = 0; rc == 0 && tries < 50; tries++) {
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(3);
        rd_kafka_header_add(hdrs, "content-type", -1, CSTL_EVENT_CONTENT_TYPE, -1);
        rd_kafka_header_add(hdrs, "ce_type", -1, entry->ce_type, -1);
        rd_kafka_header_add(hdrs, "cstl_tenant", -1, s->tenant_id, -1);
        atomic_fetch_add(&s->tally->refs, 1);
        atomic_fetch_add(&s->tally->in_flight, 1);
        rc = cstl_kafka_producer_send(w->producer, LOGS_TOPIC, CSTL_KAFKA_PARTITION_UA, s->job_id,
                                      strlen(s->job_id), buf.data, buf.len, hdrs, on_delivered,
                                      s->tally, &err);
        if (rc == 0)
            break;
        atomic_fetch_sub(&s->tally->in_flight, 1);
        atomic_fetch_sub(&s->tally->refs, 1);
        rd_kafka_headers_destroy(hdrs);
        if (rc != CSTL_EKAFKA)
            break;
        cstl_kafka_producer_poll(w->producer, 10); /* the local queue is full: let it drain */
        rc = 0;
        if (tries == 49)
            rc = CSTL_EKAFKA;
    }
    cstl_codec_buf_free(&buf);
    if (rc == 0 && w->m_lines != NULL)
        cstl_metrics_counter_inc(w->m_lines);
    else if (rc != 0 && w->m_lines_dropped != NULL)
        cstl_metrics_counter_inc(w->m_lines_dropped);
}

/* ---- one run ----------------------------------------------------------------------------- */

/* argv and the environment of a run: the job's environment, CUDA_VISIBLE_DEVICES, the ids, and
 * a PATH when the job sets none. Returns NULL-terminated arrays of new strings. */
static char **run_argv(const json_t *argv)
{
    size_t n = json_array_size(argv);
    char **out = cstl_xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        out[i] = strdup(json_string_value(json_array_get(argv, i)));
    return out;
}

static char **run_env(const run_slot *s)
{
    size_t n = json_object_size(s->environment);
    char **out = cstl_xcalloc(n + 5, sizeof(char *));
    size_t k = 0;
    const char *name;
    json_t *v;
    bool has_path = false;
    json_object_foreach(s->environment, name, v)
    {
        if (strcmp(name, "CUDA_VISIBLE_DEVICES") == 0)
            continue;
        has_path = has_path || strcmp(name, "PATH") == 0;
        if (asprintf(&out[k++], "%s=%s", name, json_string_value(v)) < 0)
            cstl_panic("out of memory");
    }
    char devices[CSTL_GPU_MAX * 81] = "";
    size_t i, o = 0;
    json_t *u;
    json_array_foreach(s->gpus, i, u)
    {
        int m =
            snprintf(devices + o, sizeof(devices) - o, "%s%s", i ? "," : "", json_string_value(u));
        if (m > 0 && (size_t)m < sizeof(devices) - o)
            o += (size_t)m;
    }
    if (asprintf(&out[k++], "CUDA_VISIBLE_DEVICES=%s", devices) < 0 ||
        asprintf(&out[k++], "CONSTELLATION_JOB_ID=%s", s->job_id) < 0 ||
        asprintf(&out[k++], "CONSTELLATION_RUN_ID=%s", s->run_id) < 0 ||
        (!has_path && asprintf(&out[k++], "PATH=/usr/local/bin:/usr/bin:/bin") < 0))
        cstl_panic("out of memory");
    return out;
}

static void free_strings(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++)
        free(v[i]);
    free(v);
}

static void report_path(const run_slot *s, const char *what, char *out, size_t size)
{
    snprintf(out, size, "/v1/jobs/%s/runs/%s/%s", s->job_id, s->run_id, what);
}

/* The FinishRun body for how the run ended. NULL when nothing is to be reported. */
static json_t *
finish_body(const cstl_worker *w, const run_slot *s, stop_reason why, const cstl_run_result *res)
{
    const char *outcome = "FAILED", *reason = NULL;
    bool exit_code = res->end != CSTL_RUN_LAUNCH_FAILED && res->exit_code >= 0;
    if (why == STOP_ABANDONED)
        return NULL;
    if (why == STOP_CANCELLED)
        outcome = "CANCELLED";
    else if (why == STOP_TIMED_OUT || res->end == CSTL_RUN_TIMED_OUT)
        outcome = "TIMED_OUT";
    else if (why == STOP_SHUTDOWN)
        reason = "WORKER_LOST";
    else if (res->end == CSTL_RUN_LAUNCH_FAILED)
        reason = "LAUNCH_FAILED";
    else if (res->end == CSTL_RUN_SIGNALLED)
        reason = "SIGNALLED";
    else if (res->exit_code != 0)
        reason = "NONZERO_EXIT";
    else
        outcome = "SUCCEEDED";
    int64_t wall_us = res->finished_us - res->started_us;
    int64_t gpus = (int64_t)json_array_size(s->gpus);
    /* whole GPU-seconds, rounded up: a started second is charged */
    int64_t gpu_seconds = (wall_us * gpus + 999999) / 1000000;
    json_t *body =
        json_pack("{s:s,s:s,s:s?,s:I,s:I,s:I}", "worker_id", w->worker_id, "outcome", outcome,
                  "failure_reason", reason, "finished_at", (json_int_t)res->finished_us,
                  "gpu_seconds", (json_int_t)gpu_seconds, "log_lines", (json_int_t)s->seq);
    if (exit_code)
        json_object_set_new(body, "exit_code", json_integer(res->exit_code));
    return body;
}

static const char *end_name(const cstl_run_result *res)
{
    static const char *const names[] = {"exited", "signalled", "timed_out", "cancelled",
                                        "launch_failed"};
    return names[res->end];
}

static void *run_main(void *arg)
{
    run_slot *s = arg;
    cstl_worker *w = s->w;
    char path[160], key[96];
    report_path(s, "start", path, sizeof(path));
    snprintf(key, sizeof(key), "start:%s", s->run_id);
    agent_report(w, "StartRun", path, key,
                 json_pack("{s:s,s:I}", "worker_id", w->worker_id, "started_at",
                           (json_int_t)agent_wall_us()));
    char **argv = run_argv(s->argv), **env = run_env(s);
    cstl_run_spec spec = {.argv = (const char *const *)argv,
                          .env = (const char *const *)env,
                          .runtime_limit_ms = s->runtime_limit_s * 1000,
                          .kill_grace_ms = w->kill_grace_ms,
                          .on_line = on_line,
                          .ud = s};
    cstl_error err;
    cstl_run_result res = {0};
    cstl_run *run = cstl_run_start(&spec, &err);
    if (run == NULL) {
        cstl_log(CSTL_LOG_ERROR, "worker", "cannot start job %s: %s", s->job_id, err.message);
        res = (cstl_run_result){.end = CSTL_RUN_LAUNCH_FAILED,
                                .exit_code = -1,
                                .started_us = agent_wall_us(),
                                .finished_us = agent_wall_us()};
    } else {
        pthread_mutex_lock(&w->mu);
        s->run = run;
        bool stop_now = s->reason != STOP_NONE;
        pthread_mutex_unlock(&w->mu);
        if (stop_now)
            cstl_run_cancel(run);
        cstl_log_fields(CSTL_LOG_INFO, "worker",
                        json_pack("{s:s,s:s,s:i}", "job_id", s->job_id, "run_id", s->run_id, "pgid",
                                  (int)cstl_run_pgid(run)),
                        "job started");
        cstl_run_wait(run, &res);
    }
    pthread_mutex_lock(&w->mu);
    stop_reason why = s->reason;
    s->run = NULL;
    pthread_mutex_unlock(&w->mu);
    cstl_run_free(run);
    /* Every line on the topic before the run is reported finished: RunFinished, and its
     * log_lines, then tell readers of the logs that nothing more is coming. */
    if (!wait_delivered(w, s->tally, w->kafka_timeout_ms))
        cstl_log_fields(CSTL_LOG_WARN, "worker",
                        json_pack("{s:s,s:s,s:I}", "job_id", s->job_id, "run_id", s->run_id,
                                  "in_flight", (json_int_t)atomic_load(&s->tally->in_flight)),
                        "output lines still undelivered after %d ms; reporting the run anyway",
                        w->kafka_timeout_ms);
    free_strings(argv);
    free_strings(env);
    json_t *body = finish_body(w, s, why, &res);
    cstl_log_fields(
        CSTL_LOG_INFO, "worker",
        json_pack("{s:s,s:s,s:s,s:i,s:I,s:s}", "job_id", s->job_id, "run_id", s->run_id, "end",
                  end_name(&res), "exit_code", res.exit_code, "lines", (json_int_t)res.lines,
                  "outcome",
                  body ? json_string_value(json_object_get(body, "outcome")) : "abandoned"),
        "job ended");
    if (w->m_runs != NULL) {
        const char *values[] = {body ? json_string_value(json_object_get(body, "outcome"))
                                     : "ABANDONED"};
        cstl_metrics_counter_inc(cstl_metrics_child(w->m_runs, values));
    }
    if (body != NULL) {
        report_path(s, "finish", path, sizeof(path));
        snprintf(key, sizeof(key), "finish:%s", s->run_id);
        agent_report(w, "FinishRun", path, key, body);
    }
    atomic_store(&s->done, true);
    return NULL;
}

/* Starts the run of job (under w->mu). */
static void launch_locked(cstl_worker *w, const char *job_id, json_t *m)
{
    json_t *params = json_object_get(w->jobs, job_id);
    json_object_set_new(m, "launched", json_true());
    run_slot *s = cstl_xcalloc(1, sizeof(*s));
    s->w = w;
    snprintf(s->job_id, sizeof(s->job_id), "%s", job_id);
    snprintf(s->run_id, sizeof(s->run_id), "%s", json_string_value(json_object_get(m, "run")));
    s->gpus = json_deep_copy(json_object_get(m, "gpus"));
    s->tally = cstl_xcalloc(1, sizeof(*s->tally));
    atomic_init(&s->tally->refs, 1);
    atomic_init(&s->tally->in_flight, 0);
    s->tally->m_dropped = w->m_lines_dropped;
    if (params != NULL) {
        snprintf(s->tenant_id, sizeof(s->tenant_id), "%s",
                 json_string_value(json_object_get(params, "tenant")));
        s->argv = json_deep_copy(json_object_get(params, "argv"));
        s->environment = json_deep_copy(json_object_get(params, "environment"));
        s->runtime_limit_s = json_integer_value(json_object_get(params, "limit"));
    } else { /* nothing known of the job: it fails to launch */
        s->argv = json_pack("[s]", "");
        s->environment = json_object();
    }
    if (pthread_create(&s->thread, NULL, run_main, s) != 0)
        cstl_panic("cannot start a run thread");
    s->next = w->runs;
    w->runs = s;
    if (w->m_running != NULL)
        cstl_metrics_gauge_inc(w->m_running);
}

static run_slot *slot_of(cstl_worker *w, const char *job_id)
{
    for (run_slot *s = w->runs; s != NULL; s = s->next)
        if (strcmp(s->job_id, job_id) == 0 && !atomic_load(&s->done))
            return s;
    return NULL;
}

static void stop_locked(run_slot *s, stop_reason why)
{
    if (s->reason == STOP_NONE)
        s->reason = why;
    if (s->run != NULL)
        cstl_run_cancel(s->run);
}

/* Joins and frees the runs that are done. */
static void reap_runs(cstl_worker *w)
{
    pthread_mutex_lock(&w->mu);
    for (run_slot **p = &w->runs; *p != NULL;) {
        run_slot *s = *p;
        if (!atomic_load(&s->done)) {
            p = &s->next;
            continue;
        }
        *p = s->next;
        pthread_mutex_unlock(&w->mu);
        pthread_join(s->thread, NULL);
        json_decref(s->argv);
        json_decref(s->environment);
        json_decref(s->gpus);
        tally_unref(s->tally);
        free(s);
        if (w->m_running != NULL)
            cstl_metrics_gauge_dec(w->m_running);
        pthread_mutex_lock(&w->mu);
        p = &w->runs;
    }
    pthread_mutex_unlock(&w->mu);
}

/* ---- events ------------------------------------------------------------------------------ */

static const char *str(const json_t *data, const char *name)
{
    const char *s = json_string_value(json_object_get(data, name));
    return s != NULL ? s : "";
}

static void on_submitted(cstl_worker *w, const json_t *data)
{
    const json_t *p = json_object_get(data, "parameters");
    json_object_set_new(
        w->jobs, str(data, "job_id"),
        json_pack("{s:O,s:O,s:I,s:s}", "argv", json_object_get(p, "command"), "environment",
                  json_object_get(p, "environment"), "limit",
                  json_integer_value(json_object_get(data, "runtime_limit_seconds")), "tenant",
                  str(data, "tenant_id")));
}

static void on_assigned(cstl_worker *w, const json_t *data)
{
    const char *job = str(data, "job_id");
    if (strcmp(str(data, "worker_id"), w->worker_id) != 0) {
        json_object_del(w->mine, job); /* requeued and placed elsewhere */
        return;
    }
    json_t *gpus = json_object_get(data, "gpu_uuids");
    json_t *m = json_pack("{s:s,s:o,s:b,s:b,s:s}", "run", str(data, "run_id"), "gpus",
                          json_is_array(gpus) ? json_deep_copy(gpus) : json_array(), "started", 0,
                          "launched", 0, "ended", "");
    json_object_set_new(w->mine, job, m);
    if (atomic_load(&w->caught_up) && !atomic_load(&w->stopping))
        launch_locked(w, job, m);
}

/* A job of ours is stopped from outside (cancel, timeout, requeue). */
static void on_stopped(cstl_worker *w, const char *job, stop_reason why, const char *ended)
{
    json_t *m = json_object_get(w->mine, job);
    if (m == NULL)
        return;
    run_slot *s = slot_of(w, job);
    if (s != NULL && strcmp(s->run_id, str(m, "run")) == 0)
        stop_locked(s, why);
    if (why == STOP_ABANDONED)
        json_object_del(w->mine, job);
    else
        json_object_set_new(m, "ended", json_string(ended));
}

static void follow(void *ud,
                   const char *context,
                   const char *type,
                   const json_t *data,
                   const cstl_event_headers *headers)
{
    cstl_worker *w = ud;
    (void)headers;
    const char *job = str(data, "job_id");
    pthread_mutex_lock(&w->mu);
    if (strcmp(context, "fleet") == 0) {
        if (strcmp(type, "WorkerLost") == 0 && strcmp(str(data, "worker_id"), w->worker_id) == 0 &&
            atomic_load(&w->caught_up)) {
            w->need_register = true;
            pthread_cond_signal(&w->wake);
        }
    } else if (strcmp(type, "JobSubmitted") == 0) {
        on_submitted(w, data);
    } else if (strcmp(type, "JobAssigned") == 0) {
        on_assigned(w, data);
    } else if (strcmp(type, "RunStarted") == 0) {
        json_t *m = json_object_get(w->mine, job);
        if (m != NULL && strcmp(str(m, "run"), str(data, "run_id")) == 0)
            json_object_set_new(m, "started", json_true());
    } else if (strcmp(type, "RunFinished") == 0) {
        json_t *m = json_object_get(w->mine, job);
        if (m != NULL && strcmp(str(m, "run"), str(data, "run_id")) == 0)
            json_object_del(w->mine, job);
    } else if (strcmp(type, "JobCancelled") == 0) {
        on_stopped(w, job, STOP_CANCELLED, "CANCELLED");
        json_object_del(w->jobs, job);
    } else if (strcmp(type, "JobTimedOut") == 0) {
        on_stopped(w, job, STOP_TIMED_OUT, "TIMED_OUT");
        json_object_del(w->jobs, job);
    } else if (strcmp(type, "JobRequeued") == 0) {
        on_stopped(w, job, STOP_ABANDONED, "");
    } else if (strcmp(type, "JobFailed") == 0 || strcmp(type, "JobSucceeded") == 0 ||
               strcmp(type, "JobRejected") == 0) {
        json_object_del(w->jobs, job);
        if (strcmp(type, "JobFailed") == 0) /* failed by RequeueJob: the run is abandoned */
            on_stopped(w, job, STOP_ABANDONED, "");
    }
    pthread_mutex_unlock(&w->mu);
}

/* Once caught up: what the replay left open (see the file comment). */
static void settle_replay(cstl_worker *w)
{
    pthread_mutex_lock(&w->mu);
    const char *job;
    json_t *m, *tmp;
    json_object_foreach_safe(w->mine, tmp, job, m)
    {
        const char *ended = str(m, "ended");
        bool started = json_is_true(json_object_get(m, "started"));
        if (ended[0] == '\0' && !started) {
            launch_locked(w, job, m);
            continue;
        }
        json_t *body = json_pack("{s:s,s:s,s:I,s:I}", "worker_id", w->worker_id, "outcome",
                                 ended[0] ? ended : "LOST", "finished_at",
                                 (json_int_t)agent_wall_us(), "gpu_seconds", (json_int_t)0);
        if (ended[0] == '\0')
            json_object_set_new(body, "failure_reason", json_string("WORKER_LOST"));
        char path[160], key[96];
        snprintf(path, sizeof(path), "/v1/jobs/%s/runs/%s/finish", job, str(m, "run"));
        snprintf(key, sizeof(key), "finish:%s", str(m, "run"));
        cstl_log_fields(CSTL_LOG_INFO, "worker",
                        json_pack("{s:s,s:s}", "job_id", job, "outcome", ended[0] ? ended : "LOST"),
                        "closing a run left open by the previous process");
        pthread_mutex_unlock(&w->mu);
        agent_report(w, "FinishRun", path, key, body);
        pthread_mutex_lock(&w->mu);
        json_object_del(w->mine, job);
    }
    pthread_mutex_unlock(&w->mu);
}

static void *follower_main(void *arg)
{
    cstl_worker *w = arg;
    while (!atomic_load(&w->stopping)) {
        int rc = cstl_event_reader_poll(w->reader, FOLLOW_POLL_MS, follow, w);
        if (rc < 0) {
            cstl_log(CSTL_LOG_ERROR, "worker", "reading the jobs events failed: %s",
                     cstl_strerror(rc));
            struct timespec ts = {1, 0};
            nanosleep(&ts, NULL);
        }
        if (!atomic_load(&w->caught_up) && cstl_event_reader_caught_up(w->reader)) {
            atomic_store(&w->caught_up, true);
            settle_replay(w);
            cstl_log(CSTL_LOG_INFO, "worker", "caught up with the jobs log");
        }
        cstl_kafka_producer_poll(w->producer, 0);
        reap_runs(w);
    }
    return NULL;
}

/* ---- life -------------------------------------------------------------------------------- */

static int find_gpus(cstl_worker *w, const cstl_worker_options *o, cstl_error *err)
{
    if (o->fake_gpus != NULL && o->fake_gpus[0] != '\0')
        return cstl_gpu_parse_fake(o->fake_gpus, w->worker_id, w->gpus, &w->n_gpus, err);
    cstl_error why;
    w->nvml = cstl_nvml_open(o->nvml_path, &why);
    if (w->nvml != NULL) {
        int rc = cstl_nvml_discover(w->nvml, w->gpus, &w->n_gpus, err);
        if (rc != 0)
            return rc;
        if (w->n_gpus > 0)
            return 0;
        snprintf(why.message, sizeof(why.message), "NVML reports no GPU");
    }
    return cstl_error_set(err, CSTL_ENOTFOUND,
                          "no GPUs found (%s); on a machine without GPUs set "
                          "CONSTELLATION_WORKER_FAKE_GPUS or --fake-gpus, e.g. \"4xH100:81920\"",
                          why.message);
}

static void metrics_setup(cstl_worker *w, cstl_metrics *reg)
{
    if (reg == NULL)
        return;
    cstl_error err;
    static const char *const outcome[] = {"outcome", NULL};
    static const char *const report_labels[] = {"command", "outcome", NULL};
    cstl_metric_family *f =
        cstl_metrics_gauge(reg, "worker_jobs_running", "jobs running on this worker", NULL, &err);
    w->m_running = f ? cstl_metrics_child(f, NULL) : NULL;
    w->m_runs = cstl_metrics_counter(
        reg, "worker_runs_total", "runs ended on this worker, by reported outcome", outcome, &err);
    f = cstl_metrics_counter(reg, "worker_log_lines_total",
                             "job output lines produced to constellation.jobs.logs", NULL, &err);
    w->m_lines = f ? cstl_metrics_child(f, NULL) : NULL;
    f = cstl_metrics_counter(
        reg, "worker_log_lines_dropped_total",
        "job output lines that could not be queued to Kafka or were not delivered", NULL, &err);
    w->m_lines_dropped = f ? cstl_metrics_child(f, NULL) : NULL;
    f = cstl_metrics_gauge(reg, "worker_registered",
                           "1 while the command API has accepted this worker's registration", NULL,
                           &err);
    w->m_registered = f ? cstl_metrics_child(f, NULL) : NULL;
    w->m_reports = cstl_metrics_counter(reg, "worker_reports_total",
                                        "run reports sent to the command API, by final answer",
                                        report_labels, &err);
}

cstl_worker *cstl_worker_new(const cstl_worker_options *opts, cstl_error *err)
{
    const cstl_worker_options *o = opts;
    cstl_worker *w = cstl_xcalloc(1, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->wake, NULL);
    pthread_cond_init(&w->report_wake, NULL);
    w->jobs = json_object();
    w->mine = json_object();
    w->producer = o->producer;
    w->heartbeat_s = o->heartbeat_s > 0 ? o->heartbeat_s : 5;
    w->kill_grace_ms = o->kill_grace_ms;
    w->kafka_timeout_ms = o->kafka_timeout_ms > 0 ? o->kafka_timeout_ms : 10000;
    if (o->hostname != NULL && o->hostname[0] != '\0')
        snprintf(w->hostname, sizeof(w->hostname), "%s", o->hostname);
    else if (gethostname(w->hostname, sizeof(w->hostname) - 1) != 0 || w->hostname[0] == '\0')
        snprintf(w->hostname, sizeof(w->hostname), "localhost");
    if (o->worker_id != NULL && o->worker_id[0] != '\0')
        snprintf(w->worker_id, sizeof(w->worker_id), "%s", o->worker_id);
    else /* the same host always registers as the same worker */
        cstl_cmd_id_from_key("constellation-worker", w->hostname, w->worker_id);
    snprintf(w->authorization, sizeof(w->authorization), "Bearer %s", o->token ? o->token : "");
    static const char *const contexts[] = {"jobs", "fleet"};
    char client_id[256];
    snprintf(client_id, sizeof(client_id), "constellation-worker-reader-%s", o->instance_id);
    if (cstl_http_url_parse(o->api_url, &w->url, err) != 0 || find_gpus(w, o, err) != 0 ||
        (w->reader = cstl_event_reader_new(o->brokers, client_id, contexts, 2, o->kafka_timeout_ms,
                                           err)) == NULL) {
        cstl_worker_free(w);
        return NULL;
    }
    w->nlanes = w->n_gpus > REPORT_LANES_MIN ? w->n_gpus : REPORT_LANES_MIN;
    metrics_setup(w, o->metrics);
    return w;
}

const char *cstl_worker_id(const cstl_worker *w)
{
    return w->worker_id;
}

int cstl_worker_start(cstl_worker *w, cstl_error *err)
{
    if (agent_lanes_start(w) != 0)
        return cstl_error_set(err, CSTL_EINTERNAL, "cannot start the worker's report threads");
    if (pthread_create(&w->api, NULL, agent_api_main, w) != 0) {
        agent_lanes_stop(w);
        return cstl_error_set(err, CSTL_EINTERNAL, "cannot start the worker's api thread");
    }
    if (pthread_create(&w->follower, NULL, follower_main, w) != 0) {
        atomic_store(&w->api_stop, true);
        pthread_cond_signal(&w->wake);
        pthread_join(w->api, NULL);
        agent_lanes_stop(w);
        return cstl_error_set(err, CSTL_EINTERNAL, "cannot start the worker's follower thread");
    }
    w->started = true;
    return 0;
}

bool cstl_worker_ready(cstl_worker *w)
{
    return atomic_load(&w->caught_up);
}

bool cstl_worker_registered(cstl_worker *w)
{
    return atomic_load(&w->registered);
}

void cstl_worker_stop(cstl_worker *w, int drain_ms)
{
    if (w == NULL || !w->started)
        return;
    w->started = false;
    atomic_store(&w->stopping, true);
    pthread_join(w->follower, NULL);
    pthread_mutex_lock(&w->mu);
    for (run_slot *s = w->runs; s != NULL; s = s->next)
        stop_locked(s, STOP_SHUTDOWN);
    pthread_mutex_unlock(&w->mu);
    for (;;) { /* every run ends within the kill grace */
        reap_runs(w);
        pthread_mutex_lock(&w->mu);
        bool left = w->runs != NULL;
        pthread_mutex_unlock(&w->mu);
        if (!left)
            break;
        struct timespec ts = {0, 20L * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int waited = 0; waited < drain_ms; waited += 50) {
        if (!agent_reports_pending(w))
            break;
        struct timespec ts = {0, 50L * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->api_stop, true);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->api, NULL);
    agent_lanes_stop(w);
    cstl_kafka_producer_flush(w->producer, 2000, NULL);
}

void cstl_worker_free(cstl_worker *w)
{
    if (w == NULL)
        return;
    cstl_worker_stop(w, 0);
    agent_lanes_stop(w); /* frees reports queued by a worker that never started */
    cstl_event_reader_free(w->reader);
    cstl_nvml_close(w->nvml);
    json_decref(w->jobs);
    json_decref(w->mine);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->report_wake);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
