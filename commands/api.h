/*
 * api.h - the command API: the HTTP routes of the write side (docs/command-api.md).
 *
 * Every command route authenticates the caller (Authorization: Bearer, an API key or a JWT),
 * checks the caller's role, parses and maps the JSON body (unknown fields refused, defaults
 * filled), applies the command's stateless rules, sends the command with the command client and
 * answers from its reply: 201/200 with the aggregate id and version (ETag), 409 for a business-rule
 * rejection (404 for a not-found one), 412 when If-Match did not hold, 422 for invalid fields, and
 * 202 with a status URL when no reply came within the wait. It never writes an event itself
 * (DESIGN §1.4); heartbeats, which are telemetry and not commands, go to
 * constellation.fleet.heartbeats.
 *
 * Threads: handlers run on the HTTP server's threads; everything they use is thread-safe.
 */
#ifndef CSTL_COMMANDS_API_H
#define CSTL_COMMANDS_API_H

#include "commands/client.h"
#include "commands/views.h"
#include "platform/auth.h"
#include "platform/http.h"
#include "platform/kafka.h"

typedef struct cstl_cmd_api cstl_cmd_api;

typedef struct cstl_cmd_api_options {
    cstl_auth *auth;                /* borrowed, outlives the api */
    cstl_views *views;              /* borrowed */
    cstl_cmd_client *client;        /* borrowed */
    cstl_kafka_producer *producer;  /* for heartbeats; borrowed; NULL answers heartbeats 503 */
    int wait_ms;                    /* how long to wait for a reply before answering 202 */
    const char *operator_tenant_id; /* NULL or "": nobody may create tenants over HTTP */
    const char *topic_prefix;       /* NULL or "": the production topic names */
} cstl_cmd_api_options;

/* A new api (copies the options' strings). Never NULL. */
cstl_cmd_api *cstl_cmd_api_new(const cstl_cmd_api_options *opts);

/* Adds the command routes to server (before it starts). Returns 0 or the route error. */
int cstl_cmd_api_register(cstl_cmd_api *api, cstl_http_server *server, cstl_error *err);

/* Frees api, after the HTTP server stopped; NULL is a no-op. */
void cstl_cmd_api_free(cstl_cmd_api *api);

#endif
