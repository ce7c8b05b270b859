/*
 * commands_service.c - the hooks of `constellation commands`: the command API (commands/api.h),
 * the views it needs (commands/views.h) and, unless CONSTELLATION_COMMAND_HANDLER=off, the command
 * handler (commands/handler.h) on a background thread, so one process runs the whole write side by
 * default and a deployment can split the API from the handlers.
 *
 * Threads: start/stop/ready on the service's threads (ready on HTTP threads); the handler runs on
 * its own thread, the views reader on its own.
 */
#include "cli/service.h"
#include "commands/admission.h"
#include "commands/api.h"
#include "commands/client.h"
#include "commands/handler.h"
#include "commands/views.h"
#include "platform/auth.h"
#include "platform/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct commands_state {
    cstl_auth *auth;
    cstl_views *views;
    cstl_cmd_client *client;
    cstl_cmd_api *api;
    cstl_cmd_handler *handler;
    pthread_t handler_thread;
    bool handler_running;
    atomic_bool handler_failed;
    cstl_admission_runner *admission;
    pthread_t admission_thread;
    bool admission_running;
} commands_state;

static void *admission_main(void *arg)
{
    commands_state *st = arg;
    cstl_error err;
    if (cstl_admission_runner_run(st->admission, &err) != 0)
        cstl_log_error("admission", &err, "admission stopped");
    return NULL;
}

/* Starts the admission process manager on its own thread (it sends through st->client). */
static int admission_start(cli_service *svc, commands_state *st, cstl_error *err)
{
    const cstl_config *cfg = svc->cfg;
    cstl_admission_runner_options o = {.brokers = cfg->kafka_brokers,
                                       .instance_id = cfg->instance_id,
                                       .client = st->client,
                                       .max_queued = cfg->max_queued_jobs_per_tenant,
                                       .timeout_ms = cfg->kafka_timeout_ms,
                                       .metrics = svc->metrics};
    st->admission = cstl_admission_runner_new(&o, err);
    if (st->admission == NULL)
        return err->code;
    if (pthread_create(&st->admission_thread, NULL, admission_main, st) != 0)
        return cstl_error_set(err, CSTL_EINTERNAL, "cannot start the admission thread");
    st->admission_running = true;
    return 0;
}

static void *handler_main(void *arg)
{
    commands_state *st = arg;
    cstl_error err;
    if (cstl_cmd_handler_run(st->handler, &err) != 0) {
        atomic_store(&st->handler_failed, true);
        cstl_log_error("commands", &err, "the command handler stopped");
    }
    return NULL;
}

static int commands_start(cli_service *svc, cstl_error *err)
{
    const cstl_config *cfg = svc->cfg;
    commands_state *st = cstl_xcalloc(1, sizeof(*st));
    svc->state = st;
    st->auth = cstl_auth_new_from_config(cfg, err);
    if (st->auth == NULL)
        return err->code;
    cstl_views_options vo = {.brokers = cfg->kafka_brokers,
                             .instance_id = cfg->instance_id,
                             .auth = st->auth,
                             .timeout_ms = cfg->kafka_timeout_ms};
    st->views = cstl_views_new(&vo, err);
    if (st->views == NULL || cstl_views_start(st->views, err) != 0)
        return err->code;
    cstl_cmd_client_options co = {.brokers = cfg->kafka_brokers,
                                  .instance_id = cfg->instance_id,
                                  .timeout_ms = cfg->kafka_timeout_ms};
    st->client = cstl_cmd_client_new(&co, err);
    if (st->client == NULL)
        return err->code;
    cstl_cmd_api_options ao = {.auth = st->auth,
                               .views = st->views,
                               .client = st->client,
                               .producer = svc->kafka,
                               .wait_ms = cfg->command_wait_ms,
                               .operator_tenant_id = cfg->operator_tenant_id};
    st->api = cstl_cmd_api_new(&ao);
    int rc = cstl_cmd_api_register(st->api, svc->http, err);
    if (rc != 0)
        return rc;
    if (cfg->admission && (rc = admission_start(svc, st, err)) != 0)
        return rc;
    if (!cfg->command_handler) {
        cstl_log(CSTL_LOG_INFO, "commands",
                 "the command handler is off (CONSTELLATION_COMMAND_HANDLER=off)");
        return 0;
    }
    cstl_cmd_handler_options ho = {.brokers = cfg->kafka_brokers,
                                   .instance_id = cfg->instance_id,
                                   .metrics = svc->metrics,
                                   .timeout_ms = cfg->kafka_timeout_ms};
    st->handler = cstl_cmd_handler_new(&ho, err);
    if (st->handler == NULL)
        return err->code;
    if (pthread_create(&st->handler_thread, NULL, handler_main, st) != 0)
        return cstl_error_set(err, CSTL_EINTERNAL, "cannot start the command handler thread");
    st->handler_running = true;
    return 0;
}

static void commands_stop(cli_service *svc)
{
    commands_state *st = svc->state;
    if (st == NULL)
        return;
    /* Admission first: it sends commands the handler below is still there to take. */
    if (st->admission_running) {
        cstl_admission_runner_stop(st->admission);
        pthread_join(st->admission_thread, NULL);
    }
    cstl_admission_runner_free(st->admission);
    /* The HTTP server has drained: no request waits for a reply any more. */
    if (st->handler_running) {
        cstl_cmd_handler_stop(st->handler);
        pthread_join(st->handler_thread, NULL);
    }
    cstl_cmd_handler_free(st->handler);
    cstl_views_stop(st->views);
    cstl_cmd_api_free(st->api);
    cstl_cmd_client_free(st->client);
    cstl_views_free(st->views);
    cstl_auth_free(st->auth);
    free(st);
    svc->state = NULL;
}

static int commands_ready(cli_service *svc, cstl_error *why)
{
    commands_state *st = svc->state;
    if (!cstl_views_ready(st->views))
        return cstl_error_set(why, CSTL_EUNAVAILABLE,
                              "reading the tenants and fleet events (api keys, gpus)");
    if (st->handler != NULL) {
        if (atomic_load(&st->handler_failed))
            return cstl_error_set(why, CSTL_EUNAVAILABLE, "the command handler stopped");
        if (cstl_cmd_handler_ready_partitions(st->handler) == 0)
            return cstl_error_set(why, CSTL_EUNAVAILABLE,
                                  "the command handler owns no restored partition yet");
    }
    return 0;
}

const cli_service_hooks cli_commands_hooks = {
    .start = commands_start,
    .stop = commands_stop,
    .ready = commands_ready,
};
