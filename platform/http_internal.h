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
    char **cors; /* allowed origins; NULL when CORS is off */
    size_t ncors;
    bool etag;
    struct cstl_http_stream *streams; /* open streams, guarded by lock */
    size_t nstreams;
    struct cstl_http_deferred *deferreds; /* deferred requests not yet freed, guarded by lock */
    size_t ndeferred;
    bool deferred_closed; /* stop answered every deferred request: new ones get 503 at once */
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
    struct cstl_http_stream *stream;     /* a streamed response, else NULL */
    struct cstl_http_deferred *deferred; /* set by cstl_http_defer, else NULL */
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

/* CORS (http_extras.c). Parses the option into the server; returns 0 or CSTL_ECONFIG. */
int cstl_http_cors_init(cstl_http_server *s, const char *origins, cstl_error *err);
void cstl_http_cors_free(cstl_http_server *s);

/* Answers a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) when CORS is
 * on. Returns true when it answered. */
bool cstl_http_cors_preflight(cstl_http_request *req);

/* Adds the CORS response headers for an allowed Origin (and Vary: Origin when CORS is on). */
void cstl_http_cors_headers(cstl_http_request *req, struct MHD_Response *resp);

/* Sets the ETag of a 200 GET/HEAD answer and turns it into 304 when If-None-Match matches. */
void cstl_http_etag_apply(cstl_http_request *req);

/* Streams (http_stream.c): the MHD response of req's stream (new reference), NULL on failure. */
struct MHD_Response *cstl_http_stream_response(cstl_http_request *req);

/* The request is complete: its stream (if any) will not be resumed any more. */
void cstl_http_stream_request_done(cstl_http_request *req);

/* Wakes every open stream so that each sees the server stopping and ends. */
void cstl_http_stream_stop_all(cstl_http_server *server);

/* Deferred responses (http_deferred.c). After the handler of a deferred request returned: true
 * when the connection was suspended to wait for the answer, false when the answer is already there
 * (queue it now). Called on the connection's server thread. */
bool cstl_http_deferred_park(cstl_http_request *req);

/* True when req is deferred and its answer has been given (the connection was resumed for it). */
bool cstl_http_deferred_ready(cstl_http_request *req);

/* The request is complete: its deferred handle (if any) no longer reaches it. */
void cstl_http_deferred_request_done(cstl_http_request *req);

/* Answers 503 to every deferred request still waiting (resuming its connection) and makes later
 * deferrals answer 503 at once. Returns how many it answered. */
size_t cstl_http_deferred_stop_all(cstl_http_server *server);

#endif
