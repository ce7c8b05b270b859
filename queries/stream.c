/*
 * stream.c - GET /v1/stream (placeholder until the event hub lands).
 */
#include "queries/internal.h"

int query_stream_start(cstl_query_api *api, cstl_http_server *http, cstl_error *err)
{
    (void)api;
    (void)http;
    (void)err;
    return 0;
}

void query_stream_stop(cstl_query_api *api)
{
    (void)api;
}
