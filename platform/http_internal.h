/*
 * http_internal.h - private to platform/http.c and platform/http_request.c: the server, route and
 * request structures, and the functions the two files share. Not for use outside the http module.
 */
#ifndef CSTL_PLATFORM_HTTP_INTERNAL_H
#define CSTL_PLATFORM_HTTP_INTERNAL_H

#include "platform/http.h"

#include <microhttpd.h>

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define DRAIN_MAX ((size_t)1024 * 1024) /* body bytes discarded after the cap before dropping */

typedef struct route {
    char *method;
    char *pattern;
    size_t nseg;
    char *seg[CSTL_HTTP_MAX_SEGMENTS];
    bool param[CSTL_HTTP_MAX_SEGMENTS];
    cstl_http_handler handler;
    void *ud;
} route;

enum server_state { STATE_NEW, STATE_STARTED, STATE_STOPPED };

struct cstl_http_server {
    char *host;
    char *service;
    char *problem_base;
    size_t max_body;
    size_t max_header;
    unsigned max_query;
    unsigned threads;
    unsigned timeout;
    cstl_http_ready_fn ready;
    void *ready_ud;
    cstl_http_access_fn access_log;
    void *access_log_ud;
    cstl_metrics *metrics;
    cstl_metric_family *m_requests;
    cstl_metric_family *m_duration;
    int listen_fd;
    int family;
    unsigned port;
    struct MHD_Daemon *daemon;
    route *routes;
    size_t nroutes;
    size_t cap;
    int state;
    atomic_bool stopping;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    long inflight;
};

typedef struct pool_block {
    struct pool_block *next;
    size_t used;
    size_t cap;
    _Alignas(16) unsigned char data[];
} pool_block;

typedef struct cleanup {
    struct cleanup *next;
    void (*fn)(void *);
    void *ptr;
} cleanup;

typedef struct header {
    struct header *next;
    char *name;
    char *value;
} header;

struct cstl_http_request {
    cstl_http_server *server;
    struct MHD_Connection *conn;
    pool_block *pool;
    cleanup *cleanups;
    const char *method;
    const char *path;
    const route *route;
    const char *param_name[CSTL_HTTP_MAX_SEGMENTS];
    const char *param_value[CSTL_HTTP_MAX_SEGMENTS];
    size_t nparams;
    char id[CSTL_HTTP_REQUEST_ID_MAX + 1];
    const char *traceparent;
    char *body;
    size_t body_len;
    size_t body_cap;
    size_t drained;
    bool too_big;
    bool has_body;  /* a body was announced (Content-Length > 0 or Transfer-Encoding) */
    bool body_read; /* the whole body has been received (or discarded) */
    struct timespec start;
    /* The response, kept until queued. */
    bool responded;
    bool queued;
    int status;
    char *content_type;
    char *resp_body;
    size_t resp_len;
    header *headers;
};

/* A copy of s in the request's pool. */
char *cstl_http_pool_strdup(cstl_http_request *req, const char *s);

/* True when s is a non-empty HTTP token (method, header name). */
bool cstl_http_token_valid(const char *s);

/* Runs the request's cleanups and frees its pool, body and response: the one place request memory
 * is released. */
void cstl_http_request_free(cstl_http_request *req);

/* Replaces any stored response with the generic 500 problem. */
void cstl_http_respond_internal(cstl_http_request *req);

#endif
