/*
 * agent_api.c - the worker agent's side of the command API: registration (again whenever the
 * worker was marked lost or the API does not know it), heartbeats every heartbeat_s with the GPUs'
 * telemetry, and the run reports, each with an Idempotency-Key, so a report retried after a lost
 * answer, or by a restarted worker, is answered as a duplicate. Reports go out on one thread per
 * GPU (at least REPORT_LANES_MIN) once the worker is registered; all the reports of one run take
 * the same lane, one at a time in the order they were queued (StartRun before FinishRun), so runs
 * that end together are reported together instead of each waiting for the previous one's answer.
 *
 * Retries: the API down or answering 5xx, 202 (no outcome yet) or 401 (it is still reading its
 * keys after a restart) is retried with backoff from 200 ms to 5 s, for as long as it takes; 404
 * on a report (its views follow the log a few milliseconds behind us) for 30 s; any other answer
 * (409, 422, 403) is final and logged.
 *
 * Thread: the API thread and the lanes' threads; agent_report from any thread (under the agent's
 * mutex).
 */
#include "platform/log.h"
#include "worker/agent_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define API_TIMEOUT_MS     15000
#define API_BACKOFF_MIN_MS 200
#define API_BACKOFF_MAX_MS 5000
#define API_NOT_FOUND_MS   30000

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The lane of a report: by its run (the key is "start:<run>" / "finish:<run>"). */
static int lane_of(const char *key, int nlanes)
{
    const char *run = strchr(key, ':');
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = run != NULL ? run + 1 : key; *p != '\0'; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return (int)(h % (uint32_t)nlanes);
}

void agent_report(cstl_worker *w, const char *what, const char *path, const char *key, json_t *body)
{
    report *r = cstl_xcalloc(1, sizeof(*r));
    snprintf(r->what, sizeof(r->what), "%s", what);
    snprintf(r->path, sizeof(r->path), "%s", path);
    snprintf(r->idempotency_key, sizeof(r->idempotency_key), "%s", key);
    r->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (r->body == NULL)
        cstl_panic("out of memory for a report");
    report_lane *l = &w->lanes[lane_of(key, w->nlanes)];
    pthread_mutex_lock(&w->mu);
    if (l->tail != NULL)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    pthread_cond_broadcast(&w->report_wake);
    pthread_mutex_unlock(&w->mu);
}

bool agent_reports_pending(cstl_worker *w)
{
    bool pending = false;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->nlanes; i++)
        pending = pending || w->lanes[i].head != NULL;
    pthread_mutex_unlock(&w->mu);
    return pending;
}

/* The CLOCK_REALTIME time ms from now, for pthread_cond_timedwait. */
static struct timespec deadline_in(int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    return until;
}

/* Waits up to ms on the condition (or until stop); true when the API thread should stop. */
static bool api_sleep(cstl_worker *w, int ms)
{
    struct timespec until = deadline_in(ms);
    pthread_mutex_lock(&w->mu);
    if (!atomic_load(&w->api_stop))
        pthread_cond_timedwait(&w->wake, &w->mu, &until);
    pthread_mutex_unlock(&w->mu);
    return atomic_load(&w->api_stop);
}

/* One call; returns the status (0 when no answer came) and logs transport failures once a minute.
 */
static int call(cstl_worker *w, const char *path, const char *key, const char *body, char **answer)
{
    cstl_http_header h[2] = {{"Authorization", w->authorization}, {"Idempotency-Key", key}};
    cstl_http_response resp;
    cstl_error err;
    *answer = NULL;
    if (cstl_http_client_request(&w->url, "POST", path, h, key != NULL ? 2 : 1, body,
                                 API_TIMEOUT_MS, &resp, &err) != 0) {
        static _Thread_local int64_t last_logged;
        int64_t now = mono_ms();
        if (now - last_logged > 60000) {
            last_logged = now;
            cstl_log(CSTL_LOG_WARN, "worker", "the command API at %s:%s does not answer: %s",
                     w->url.host, w->url.port, err.message);
        }
        return 0;
    }
    *answer = resp.body;
    return resp.status;
}

static bool final_status(int status)
{
    return status >= 400 && status < 500 && status != 401 && status != 404 && status != 408 &&
           status != 429;
}

/* ---- registration and heartbeats --------------------------------------------------------- */

static json_t *registration_body(const cstl_worker *w)
{
    json_t *gpus = json_array();
    for (int i = 0; i < w->n_gpus; i++)
        json_array_append_new(gpus, json_pack("{s:s,s:s,s:I,s:s}", "uuid", w->gpus[i].uuid, "model",
                                              w->gpus[i].model, "memory_mib",
                                              (json_int_t)w->gpus[i].memory_mib,
                                              "compute_capability", w->gpus[i].compute_capability));
    return json_pack("{s:s,s:s,s:o}", "worker_id", w->worker_id, "hostname", w->hostname, "gpus",
                     gpus);
}

static bool do_register(cstl_worker *w)
{
    json_t *body = registration_body(w);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char key[64], *answer = NULL;
    /* the key changes with each attempt: a registration after WorkerLost must be a new command */
    snprintf(key, sizeof(key), "register:%lld", (long long)agent_wall_us());
    int status = call(w, "/v1/workers", key, text, &answer);
    free(text);
    bool ok = status == 200 || status == 201;
    if (ok)
        cstl_log_fields(CSTL_LOG_INFO, "worker",
                        json_pack("{s:s,s:i}", "worker_id", w->worker_id, "gpus", w->n_gpus),
                        "registered");
    else if (status != 0)
        cstl_log(CSTL_LOG_WARN, "worker", "registration answered %d: %.300s", status,
                 answer ? answer : "");
    free(answer);
    return ok;
}

/* The GPUs' telemetry; a fake GPU reports 100% while a job holds it, else 0%. */
static json_t *heartbeat_body(cstl_worker *w)
{
    json_t *gpus = json_array();
    json_t *busy = json_object();
    pthread_mutex_lock(&w->mu);
    for (run_slot *s = w->runs; s != NULL; s = s->next) {
        size_t i;
        json_t *u;
        json_array_foreach(s->gpus, i, u) json_object_set(busy, json_string_value(u), json_true());
    }
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->n_gpus; i++) {
        cstl_gpu_telemetry t = {0};
        if (w->gpus[i].nvml_index >= 0) {
            cstl_nvml_telemetry(w->nvml, &w->gpus[i], &t);
        } else {
            t.utilization_percent = json_object_get(busy, w->gpus[i].uuid) ? 100 : 0;
            t.temperature_c = t.utilization_percent ? 70 : 35;
        }
        json_array_append_new(gpus, json_pack("{s:s,s:i,s:I,s:i}", "uuid", w->gpus[i].uuid,
                                              "utilization_percent", t.utilization_percent,
                                              "memory_used_mib", (json_int_t)t.memory_used_mib,
                                              "temperature_c", t.temperature_c));
    }
    json_decref(busy);
    return json_pack("{s:o}", "gpus", gpus);
}

static void do_heartbeat(cstl_worker *w)
{
    json_t *body = heartbeat_body(w);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char path[96], *answer = NULL;
    snprintf(path, sizeof(path), "/v1/workers/%s/heartbeat", w->worker_id);
    int status = call(w, path, NULL, text, &answer);
    free(text);
    static _Thread_local int not_found;
    not_found = status == 404 ? not_found + 1 : 0;
    /* the API does not know us (any more): register again; once may be its view still catching
     * up with our registration */
    if (not_found >= 3) {
        not_found = 0;
        pthread_mutex_lock(&w->mu);
        w->need_register = true;
        pthread_mutex_unlock(&w->mu);
    } else if (status != 0 && status != 202 && status != 404) {
        cstl_log(CSTL_LOG_WARN, "worker", "heartbeat answered %d: %.300s", status,
                 answer ? answer : "");
    }
    free(answer);
}

/* ---- reports ----------------------------------------------------------------------------- */

/* Sends the first report; true when it is done with (sent or final), false to retry. */
static bool send_report(cstl_worker *w, report *r, int64_t first_try_ms)
{
    char *answer = NULL;
    int status = call(w, r->path, r->idempotency_key, r->body, &answer);
    const char *outcome = NULL;
    if (status == 200 || status == 201)
        outcome = "accepted";
    else if (final_status(status) || (status == 404 && mono_ms() - first_try_ms > API_NOT_FOUND_MS))
        outcome = "refused";
    if (outcome != NULL && strcmp(outcome, "refused") == 0)
        cstl_log_fields(
            CSTL_LOG_WARN, "worker",
            json_pack("{s:s,s:s,s:i}", "report", r->what, "path", r->path, "status", status),
            "the command API refused a report: %.300s", answer ? answer : "");
    free(answer);
    if (outcome != NULL && w->m_reports != NULL) {
        const char *values[] = {r->what, outcome};
        cstl_metrics_counter_inc(cstl_metrics_child(w->m_reports, values));
    }
    return outcome != NULL;
}

/* Waits up to ms (a negative ms: until woken) for the lane to have a report to send while the
 * worker is registered; false when the lanes should stop. */
static bool lane_wait(cstl_worker *w, const report_lane *l, int ms)
{
    struct timespec until = deadline_in(ms > 0 ? ms : 0);
    pthread_mutex_lock(&w->mu);
    while (ms > 0 && !atomic_load(&w->api_stop) &&
           pthread_cond_timedwait(&w->report_wake, &w->mu, &until) == 0) {
    }
    while (!atomic_load(&w->api_stop) && (l->head == NULL || !atomic_load(&w->registered)))
        pthread_cond_wait(&w->report_wake, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return !atomic_load(&w->api_stop);
}

/* A lane: sends its reports one at a time, retrying the first with backoff until it is done
 * with (accepted, or refused for good). */
static void *lane_main(void *arg)
{
    report_lane *l = arg;
    cstl_worker *w = l->w;
    int backoff = API_BACKOFF_MIN_MS;
    int wait_ms = 0;
    while (lane_wait(w, l, wait_ms)) {
        pthread_mutex_lock(&w->mu);
        report *r = l->head;
        pthread_mutex_unlock(&w->mu);
        if (r == NULL)
            continue; /* only this thread takes from its lane: not reached */
        static _Thread_local int64_t first_try;
        static _Thread_local const report *trying;
        if (trying != r) {
            trying = r;
            first_try = mono_ms();
        }
        if (!send_report(w, r, first_try)) {
            wait_ms = backoff;
            backoff = backoff * 2 > API_BACKOFF_MAX_MS ? API_BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        wait_ms = 0;
        backoff = API_BACKOFF_MIN_MS;
        pthread_mutex_lock(&w->mu);
        l->head = r->next;
        if (l->head == NULL)
            l->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        trying = NULL;
        free(r->body);
        free(r);
    }
    return NULL;
}

int agent_lanes_start(cstl_worker *w)
{
    for (int i = 0; i < w->nlanes; i++) {
        w->lanes[i].w = w;
        if (pthread_create(&w->lanes[i].thread, NULL, lane_main, &w->lanes[i]) != 0) {
            atomic_store(&w->api_stop, true);
            agent_lanes_stop(w);
            return -1;
        }
        w->lanes[i].started = true;
    }
    return 0;
}

void agent_lanes_stop(cstl_worker *w)
{
    pthread_mutex_lock(&w->mu);
    pthread_cond_broadcast(&w->report_wake);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nlanes; i++) {
        report_lane *l = &w->lanes[i];
        if (l->started)
            pthread_join(l->thread, NULL);
        l->started = false;
        for (report *r = l->head; r != NULL;) {
            report *next = r->next;
            free(r->body);
            free(r);
            r = next;
        }
        l->head = l->tail = NULL;
    }
}

void *agent_api_main(void *arg)
{
    cstl_worker *w = arg;
    int backoff = API_BACKOFF_MIN_MS;
    int64_t heartbeat_due = 0;
    while (!atomic_load(&w->api_stop)) {
        pthread_mutex_lock(&w->mu);
        bool again = w->need_register;
        w->need_register = false;
        pthread_mutex_unlock(&w->mu);
        if (again) {
            atomic_store(&w->registered, false);
            if (w->m_registered != NULL)
                cstl_metrics_gauge_set(w->m_registered, 0);
        }
        if (!atomic_load(&w->registered)) {
            if (do_register(w)) {
                pthread_mutex_lock(&w->mu);
                atomic_store(&w->registered, true);
                pthread_cond_broadcast(&w->report_wake);
                pthread_mutex_unlock(&w->mu);
                if (w->m_registered != NULL)
                    cstl_metrics_gauge_set(w->m_registered, 1);
                heartbeat_due = 0;
                backoff = API_BACKOFF_MIN_MS;
            } else {
                api_sleep(w, backoff);
                backoff = backoff * 2 > API_BACKOFF_MAX_MS ? API_BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
        }
        if (mono_ms() >= heartbeat_due) {
            do_heartbeat(w);
            heartbeat_due = mono_ms() + (int64_t)w->heartbeat_s * 1000;
        }
        int wait_ms = (int)(heartbeat_due - mono_ms());
        if (wait_ms > 0)
            api_sleep(w, wait_ms);
    }
    return NULL;
}
