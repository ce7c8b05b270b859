/*
 * queries_cmd.c - `constellation queries`: the query API's service hooks (queries/query.h).
 * start() registers the routes and starts the event stream's consumer; stop() runs after the HTTP
 * server has drained.
 */
#include "cli/service.h"
#include "queries/query.h"

static int queries_start(cli_service *svc, cstl_error *err)
{
    cstl_query_api *api = cstl_query_api_new(svc->cfg, svc->pg, err);
    if (api == NULL)
        return err->code;
    svc->state = api;
    return cstl_query_api_start(api, svc->http, err);
}

static void queries_stop(cli_service *svc)
{
    cstl_query_api_free(svc->state);
    svc->state = NULL;
}

const cli_service_hooks cli_queries_hooks = {.start = queries_start, .stop = queries_stop};
