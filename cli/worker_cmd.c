/*
 * worker_cmd.c - `constellation worker`: the GPU worker agent (worker/agent.h) with /healthz,
 * /readyz (ready once caught up with the jobs log; the registration shows in the
 * worker_registered gauge) and /metrics on
 * CONSTELLATION_WORKER_ADDR.
 *
 * Threads: start/stop on the service's main thread; the agent runs its own threads.
 */
#include "cli/service.h"
#include "worker/agent.h"

#include <stdlib.h>

static int worker_start(cli_service *svc, cstl_error *err)
{
    const cstl_config *cfg = svc->cfg;
    if (cfg->worker_token[0] == '\0')
        return cstl_error_set(err, CSTL_ECONFIG,
                              "CONSTELLATION_WORKER_TOKEN is not set: the worker needs an API "
                              "key of role worker (POST /v1/api-keys {\"role\":\"worker\"})");
    cstl_worker_options o = {.brokers = cfg->kafka_brokers,
                             .instance_id = cfg->instance_id,
                             .api_url = cfg->worker_api_url,
                             .token = cfg->worker_token,
                             .worker_id = cfg->worker_id,
                             .hostname = cfg->worker_hostname,
                             .fake_gpus = cfg->worker_fake_gpus,
                             .heartbeat_s = cfg->worker_heartbeat_s,
                             .kill_grace_ms = cfg->worker_kill_grace_ms,
                             .kafka_timeout_ms = cfg->kafka_timeout_ms,
                             .producer = svc->kafka,
                             .metrics = svc->metrics};
    cstl_worker *w = cstl_worker_new(&o, err);
    if (w == NULL)
        return err->code;
    svc->state = w;
    return cstl_worker_start(w, err);
}

static void worker_stop(cli_service *svc)
{
    cstl_worker *w = svc->state;
    if (w == NULL)
        return;
    cstl_worker_stop(w, svc->cfg->shutdown_grace_ms);
    cstl_worker_free(w);
    svc->state = NULL;
}

static int worker_ready(cli_service *svc, cstl_error *why)
{
    cstl_worker *w = svc->state;
    if (w == NULL || !cstl_worker_ready(w))
        return cstl_error_set(why, CSTL_EUNAVAILABLE, "reading the jobs log");
    return 0;
}

const cli_service_hooks cli_worker_hooks = {
    .start = worker_start, .stop = worker_stop, .ready = worker_ready};
