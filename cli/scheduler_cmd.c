/*
 * scheduler_cmd.c - `constellation scheduler`: the scheduler process manager (commands/scheduler.h)
 * on its own thread, sending through a command client, with /healthz, /readyz (ready once it has
 * read the log to its end), /metrics and GET /v1/scheduler/queue (the latest plan's queue, for
 * operators) on CONSTELLATION_SCHEDULER_ADDR.
 *
 * Threads: start/stop on the service's main thread; the runner on its own; the queue route on
 * HTTP threads.
 */
#include "cli/service.h"
#include "commands/scheduler.h"
#include "platform/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct scheduler_state {
    cstl_cmd_client *client;
    cstl_scheduler_runner *runner;
    pthread_t thread;
    bool running;
    atomic_bool failed;
} scheduler_state;

static void *runner_main(void *arg)
{
    scheduler_state *st = arg;
    cstl_error err;
    if (cstl_scheduler_runner_run(st->runner, &err) != 0) {
        atomic_store(&st->failed, true);
        cstl_log_error("scheduler", &err, "the scheduler stopped");
    }
    return NULL;
}

static int handle_queue(cstl_http_request *req, void *ud)
{
    scheduler_state *st = ud;
    return cstl_http_respond_json(
        req, 200, json_pack("{s:o}", "jobs", cstl_scheduler_runner_queue(st->runner)));
}

/* Parses "TENANT=WEIGHT,..." into tenants (new strings) and weights, at most max. */
static int parse_weights(
    const char *spec, char **tenants, double *weights, size_t *n, size_t max, cstl_error *err)
{
    *n = 0;
    const char *p = spec;
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char weight[32];
        size_t wl = eq ? len - (size_t)(eq - p) - 1 : 0;
        if (eq == NULL || eq - p != 36 || wl == 0 || wl >= sizeof(weight) || *n == max)
            return cstl_error_set(err, CSTL_ECONFIG,
                                  "CONSTELLATION_SCHEDULER_TENANT_WEIGHTS: \"%.*s\" is not "
                                  "TENANT_UUID=WEIGHT",
                                  (int)(len > 80 ? 80 : len), p);
        memcpy(weight, eq + 1, wl);
        weight[wl] = '\0';
        char *end = NULL;
        errno = 0;
        double w = strtod(weight, &end);
        if (errno != 0 || end == weight || *end != '\0' || !(w > 0) || w > 1e6)
            return cstl_error_set(err, CSTL_ECONFIG,
                                  "CONSTELLATION_SCHEDULER_TENANT_WEIGHTS: weight \"%s\" must be "
                                  "a number above 0 and at most 1000000",
                                  weight);
        tenants[*n] = strndup(p, 36);
        weights[(*n)++] = w;
        p = comma ? comma + 1 : p + len;
    }
    return 0;
}

static int scheduler_start(cli_service *svc, cstl_error *err)
{
    const cstl_config *cfg = svc->cfg;
    scheduler_state *st = cstl_xcalloc(1, sizeof(*st));
    svc->state = st;
    enum { MAX_WEIGHTS = 256 };
    char *tenants[MAX_WEIGHTS];
    double weights[MAX_WEIGHTS];
    size_t nweights = 0;
    cstl_scheduler_runner_options o = {
        .brokers = cfg->kafka_brokers,
        .instance_id = cfg->instance_id,
        .policy = {.half_life_s = cfg->scheduler_usage_half_life_s,
                   .heartbeat_timeout_s = cfg->scheduler_heartbeat_timeout_s,
                   .timeout_grace_s = cfg->scheduler_timeout_grace_s,
                   .message_interval_s = cfg->scheduler_reason_message_interval_s},
        .timeout_ms = cfg->kafka_timeout_ms,
        .metrics = svc->metrics};
    int rc =
        parse_weights(cfg->scheduler_tenant_weights, tenants, weights, &nweights, MAX_WEIGHTS, err);
    if (rc == 0) {
        char client_instance[160];
        snprintf(client_instance, sizeof(client_instance), "%s-scheduler", cfg->instance_id);
        cstl_cmd_client_options co = {.brokers = cfg->kafka_brokers,
                                      .instance_id = client_instance,
                                      .timeout_ms = cfg->kafka_timeout_ms};
        st->client = cstl_cmd_client_new(&co, err);
        rc = st->client == NULL ? err->code : 0;
    }
    if (rc == 0) {
        o.client = st->client;
        st->runner = cstl_scheduler_runner_new(&o, err);
        rc = st->runner == NULL ? err->code : 0;
    }
    for (size_t i = 0; i < nweights; i++) {
        if (rc == 0)
            cstl_scheduler_runner_set_weight(st->runner, tenants[i], weights[i]);
        free(tenants[i]);
    }
    if (rc != 0)
        return rc;
    rc = cstl_http_route(svc->http, "GET", "/v1/scheduler/queue", handle_queue, st, err);
    if (rc != 0)
        return rc;
    if (pthread_create(&st->thread, NULL, runner_main, st) != 0)
        return cstl_error_set(err, CSTL_EINTERNAL, "cannot start the scheduler thread");
    st->running = true;
    return 0;
}

static void scheduler_stop(cli_service *svc)
{
    scheduler_state *st = svc->state;
    if (st == NULL)
        return;
    if (st->running) {
        cstl_scheduler_runner_stop(st->runner);
        pthread_join(st->thread, NULL);
    }
    cstl_scheduler_runner_free(st->runner);
    cstl_cmd_client_free(st->client);
    free(st);
    svc->state = NULL;
}

static int scheduler_ready(cli_service *svc, cstl_error *why)
{
    scheduler_state *st = svc->state;
    if (st == NULL || st->runner == NULL || atomic_load(&st->failed))
        return cstl_error_set(why, CSTL_EUNAVAILABLE, "the scheduler is not running");
    if (!cstl_scheduler_runner_ready(st->runner))
        return cstl_error_set(why, CSTL_EUNAVAILABLE, "reading the log");
    return 0;
}

const cli_service_hooks cli_scheduler_hooks = {
    .start = scheduler_start, .stop = scheduler_stop, .ready = scheduler_ready};
