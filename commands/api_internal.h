/*
 * api_internal.h - what api.c (the common request path) and api_routes.c (the endpoints) share.
 * Private to commands/api*.c.
 */
#ifndef CSTL_COMMANDS_API_INTERNAL_H
#define CSTL_COMMANDS_API_INTERNAL_H

#include "commands/api.h"
#include "commands/api_body.h"

#include <pthread.h>
#include <stdbool.h>

#define API_RECENT_MAX 8192 /* commands remembered for GET /v1/commands/{id} */
#define API_PERM_NONE  (-1)

typedef struct api_recent {
    char command_id[37];
    char tenant_id[37];
    char context[16];
} api_recent;

typedef struct api_endpoint api_endpoint;

struct cstl_cmd_api {
    cstl_auth *auth;
    cstl_views *views;
    cstl_cmd_client *client;
    cstl_kafka_producer *producer;
    pthread_mutex_t producer_mu; /* the service producer is used by one thread at a time */
    int wait_ms;
    char operator_tenant_id[37];
    char topic_prefix[128];
    pthread_mutex_t recent_mu;
    api_recent *recent;
    size_t recent_next;
    api_endpoint *endpoints; /* the routes' user data */
};

/* One request on its way through api_handle. */
typedef struct api_call {
    cstl_cmd_api *api;
    const api_endpoint *ep;
    cstl_http_request *req;
    cstl_principal who;
    char command_id[37];
    const char *idempotency_key; /* NULL when absent; borrowed from the request */
    int64_t expected_version;    /* -1: none */
    char tenant_id[37];          /* the command's tenant: the caller's unless prepare changes it */
    char aggregate_id[128];
    char resource_id[37]; /* the "id" answered when it is not the aggregate id ("" otherwise) */
    char location[192];   /* Location of a creation, "" for none */
    json_t *payload;      /* owned: the mapped body, completed by prepare */
    json_t *extra;        /* owned, may be NULL: members added to a success body */
} api_call;

struct api_endpoint {
    cstl_cmd_api *api;
    const char *method;
    const char *pattern;
    const char *action;       /* for 403 messages: "submit jobs" */
    int perms[3];             /* cstl_perm values, any of which allows; API_PERM_NONE ends */
    const char *context;      /* "jobs" */
    const char *command_type; /* "SubmitJob"; NULL for a route that is not a command */
    const cstl_api_field *fields;
    bool creates; /* 201 + Location */
    bool if_match;
    /* Completes c (ids, payload, location) after the body was mapped. Returns 0, or non-zero
     * after answering the request itself. */
    int (*prepare)(api_call *c);
    /* For a route that is not a command: answers the request. */
    int (*finish)(api_call *c);
    cstl_http_handler handler; /* api_handle unless special */
};

/* Answers a problem with a printf-formatted detail (401 adds WWW-Authenticate). Returns 0. */
int api_problem(
    cstl_http_request *req, int status, const char *type, const char *title, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Answers 422 with an `errors` extension holding one field error. Returns 0. */
int api_invalid(cstl_http_request *req, const char *field, const char *code, const char *message);

/* Authenticates and authorizes for ep; 0, or -1 after answering 401/403. */
int api_authenticate(cstl_cmd_api *api,
                     cstl_http_request *req,
                     const api_endpoint *ep,
                     cstl_principal *who);

/* Maps a command reply to the response. Returns 0. */
int api_respond_reply(api_call *c, const cstl_cmd_reply *r);

/* A new id for a resource the command creates: a UUIDv7, or, with an Idempotency-Key, an id
 * derived from the tenant, the key and what, so a retried request addresses the same aggregate. */
void api_derived_id(api_call *c, const char *what, char out[37]);

/* The route handlers. ud is the api_endpoint. */
int api_handle(cstl_http_request *req, void *ud);
int api_get_command(cstl_http_request *req, void *ud);

#endif
