/*
 * http.h - the HTTP server every service exposes, on libmicrohttpd (thread pool, epoll).
 *
 * A server is created (binding its listen socket, so a port conflict is reported at once), given
 * its routes, started, and stopped gracefully. Routes match a method and a path pattern whose
 * segments are literals or named parameters ("/v1/jobs/{id}"); a literal segment beats a parameter.
 * Built-in routes: GET /healthz, GET /readyz, GET /metrics. HEAD is answered by GET routes.
 *
 * A handler runs on one of the server's threads once the whole request (body included) has been
 * received. It answers with exactly one cstl_http_respond* call, or defers the answer
 * (cstl_http_defer) to give it later from another thread without holding a server thread
 * meanwhile; everything it gets from the request is borrowed until the request completes. Each
 * request owns a memory pool released in one place when the response has been sent (or the
 * connection has failed); cstl_http_request_defer attaches cleanups (json_t, PGresult, ...) to it.
 *
 * Errors are answered as RFC 9457 problem+json. Error codes are mapped to statuses in one table,
 * cstl_http_status_for_error (see docs/http.md). The library never logs: give it an access-log
 * callback and log from there.
 */
#ifndef CSTL_PLATFORM_HTTP_H
#define CSTL_PLATFORM_HTTP_H

#include "platform/error.h"
#include "platform/metrics.h"

#include <jansson.h>

#include <stddef.h>

typedef struct cstl_http_server cstl_http_server;
typedef struct cstl_http_request cstl_http_request;

/* Defaults used for zero option fields. */
#define CSTL_HTTP_DEFAULT_HOST         "127.0.0.1"
#define CSTL_HTTP_DEFAULT_THREADS      4
#define CSTL_HTTP_DEFAULT_MAX_BODY     ((size_t)1024 * 1024)
#define CSTL_HTTP_DEFAULT_MAX_HEADER   ((size_t)16 * 1024)
#define CSTL_HTTP_DEFAULT_TIMEOUT      30
#define CSTL_HTTP_DEFAULT_MAX_QUERY    64   /* query parameters per request */
#define CSTL_HTTP_MAX_QUERY_VALUE      2048 /* bytes in one decoded query name or value */
#define CSTL_HTTP_MAX_SEGMENTS         32   /* path segments in a pattern or a matched path */
#define CSTL_HTTP_REQUEST_ID_MAX       64
#define CSTL_HTTP_DEFAULT_PROBLEM_BASE "/problems/"

/* A handler: answers req with one cstl_http_respond* call and returns 0. Returning non-zero
 * without having responded makes the server answer a generic 500 problem. */
typedef int (*cstl_http_handler)(cstl_http_request *req, void *ud);

/* Readiness for GET /readyz: returns 0 when ready, else non-zero with why->message naming what is
 * not ready (it appears in the 503 problem's detail). Called on a server thread. */
typedef int (*cstl_http_ready_fn)(void *ud, cstl_error *why);

/* One finished request, for the access log. Every pointer is borrowed for the call only. */
typedef struct cstl_http_access {
    const char *service; /* the service option */
    const char *method;
    const char *path;
    const char *route; /* the matched pattern, or "unmatched" */
    const char *request_id;
    const char *traceparent; /* NULL when absent or invalid */
    int status;              /* 0 when no response could be sent */
    size_t body_bytes;       /* request body bytes received */
    size_t response_bytes;   /* response body bytes */
    double duration_seconds; /* first byte of headers processed -> completion */
    int completed;           /* 1 when the response was sent in full */
} cstl_http_access;

/* Access-log callback: called once per request on a server thread; must be thread-safe. */
typedef void (*cstl_http_access_fn)(void *ud, const cstl_http_access *entry);

/* Server options; zero fields take the documented defaults. Strings are copied by server_new. */
typedef struct cstl_http_options {
    const char *host;        /* bind address (numeric or name); default 127.0.0.1 */
    unsigned port;           /* 0 = ephemeral, see cstl_http_server_port */
    unsigned threads;        /* thread pool size; default 4 */
    size_t max_body_bytes;   /* request body cap, over it 413; default 1 MiB */
    size_t max_header_bytes; /* request line + headers cap, over it 431 (or 414); default 16 KiB */
    unsigned max_query_params; /* default 64; more is a 400 */
    unsigned timeout_seconds;  /* idle connection timeout; default 30 */
    const char *service;       /* service name, passed to the access log; default "constellation" */
    const char *problem_base;  /* prefix of problem type suffixes; default "/problems/" */
    cstl_metrics *metrics;     /* registry for /metrics and request metrics; default the
                                  process-wide one. Borrowed: must outlive the server */
    cstl_http_ready_fn ready;  /* NULL: /readyz always answers 200 */
    void *ready_ud;
    cstl_http_access_fn access_log; /* NULL: none */
    void *access_log_ud;
    /* Comma-separated exact origins ("https://ui.example.com") allowed to call cross-origin; NULL
     * or "" turns CORS off. See docs/http.md, CORS. */
    const char *cors_origins;
    /* Non-zero: every 200 answer to GET or HEAD carries a strong ETag (a hash of its body) and a
     * matching If-None-Match is answered 304 without a body. */
    int etag;
} cstl_http_options;

/*
 * Creates a server and binds its listening socket (not yet accepting). opts may be NULL for all
 * defaults. Returns a new server (free with cstl_http_server_free) or NULL with err filled:
 * CSTL_ECONFIG for invalid options, CSTL_EIO when the address cannot be bound (the message names
 * host:port, e.g. `cannot listen on "127.0.0.1:8080": address already in use`), CSTL_EEXISTS when
 * the metric names are taken with another type. Not thread-safe with other calls on the server.
 */
cstl_http_server *cstl_http_server_new(const cstl_http_options *opts, cstl_error *err);

/*
 * Adds a route. method is an upper-case token ("GET", "POST", "OPTIONS"...), pattern an absolute
 * path whose segments are literals or {name} parameters. ud is borrowed for the server's life.
 * Only before cstl_http_server_start. Returns 0, or CSTL_EINVAL (bad method or pattern, server
 * started) or CSTL_EEXISTS (same method and same pattern shape already routed), with err filled.
 */
int cstl_http_route(cstl_http_server *server,
                    const char *method,
                    const char *pattern,
                    cstl_http_handler handler,
                    void *ud,
                    cstl_error *err);

/* Starts serving on the thread pool. Returns 0, or CSTL_EINVAL (already started or stopped) or
 * CSTL_EIO (the daemon could not start) with err filled. */
int cstl_http_server_start(cstl_http_server *server, cstl_error *err);

/* The bound port (useful with port 0); valid from server_new on. */
unsigned cstl_http_server_port(const cstl_http_server *server);

/*
 * Graceful stop: stops accepting connections, lets in-flight requests finish for up to grace_ms
 * milliseconds (responses sent meanwhile carry "Connection: close"), then closes every connection
 * and joins the threads. A handler still running when grace_ms runs out is waited for: handlers
 * must be bounded. Returns 0, or CSTL_ETIMEDOUT when requests were still in flight at the
 * deadline. Idempotent; harmless before start. Not callable from a handler.
 */
int cstl_http_server_stop(cstl_http_server *server, unsigned grace_ms);

/* Stops (grace 0) and frees server. NULL is a harmless no-op. */
void cstl_http_server_free(cstl_http_server *server);

/*
 * The one table from error codes to HTTP statuses: EPARSE/EDECODE 400 (malformed syntax),
 * EINVAL 422 (well-formed but invalid fields), EAUTH 401, EFORBIDDEN 403, ENOTFOUND 404,
 * ECONFLICT/EEXISTS 409, EPRECONDITION 412, ETOOBIG 413, EUNAVAILABLE/ESHUTDOWN 503,
 * ETIMEDOUT 504, anything else 500.
 */
int cstl_http_status_for_error(int code);

/* Request accessors. Strings are borrowed until the request completes; NULL when absent. */
const char *cstl_http_request_method(const cstl_http_request *req);
const char *cstl_http_request_path(const cstl_http_request *req);  /* decoded, without query */
const char *cstl_http_request_route(const cstl_http_request *req); /* the matched pattern */
const char *cstl_http_request_param(const cstl_http_request *req, const char *name);
const char *cstl_http_request_query(const cstl_http_request *req, const char *name);  /* decoded */
const char *cstl_http_request_header(const cstl_http_request *req, const char *name); /* any case */

/* The name of the first query parameter of req that is not in known (a NULL-terminated list), or
 * that appears more than once; NULL when every parameter is known and single. Borrowed until the
 * request completes. */
const char *cstl_http_request_query_unknown(const cstl_http_request *req, const char *const *known);

/* The body (NUL-terminated, so JSON parsers can take it) and its length; "" when none. */
const char *cstl_http_request_body(const cstl_http_request *req, size_t *len);

/* The request id: the client's X-Request-Id when it is 1..64 chars of [A-Za-z0-9._-], else a new
 * UUIDv7. Always set; echoed in the X-Request-Id response header. */
const char *cstl_http_request_id(const cstl_http_request *req);

/* The W3C traceparent header when present and valid, else NULL. */
const char *cstl_http_request_traceparent(const cstl_http_request *req);

/* True when text is a valid W3C traceparent (version 00 exactly; later versions by prefix). */
bool cstl_http_traceparent_valid(const char *text);

/* Allocates size bytes (zeroed) from the request's pool; freed when the request completes. Never
 * NULL (allocation failure aborts). */
void *cstl_http_request_alloc(cstl_http_request *req, size_t size);

/* Registers fn(ptr) to run when the request completes (also when the client went away), in reverse
 * order of registration. */
void cstl_http_request_defer(cstl_http_request *req, void (*fn)(void *), void *ptr);

/*
 * Sets a response header (replacing one of the same name, case-insensitively). Name and value are
 * copied. Returns 0, or CSTL_EINVAL for an invalid name or a value containing CR or LF.
 */
int cstl_http_set_header(cstl_http_request *req, const char *name, const char *value);

/*
 * Answers with status and a copy of body (len bytes; body may be NULL when len is 0). content_type
 * may be NULL for none. Returns 0, or CSTL_EINVAL when the request was already answered or status
 * is outside 100..599.
 */
int cstl_http_respond(
    cstl_http_request *req, int status, const char *content_type, const void *body, size_t len);

/* Answers with body serialized as application/json. Steals the reference to body, also on
 * failure. Returns as cstl_http_respond. */
int cstl_http_respond_json(cstl_http_request *req, int status, json_t *body);

/*
 * Answers with an RFC 9457 application/problem+json document: type (type_suffix prefixed with the
 * server's problem base, or used as is when it contains ':' such as "about:blank" or an absolute
 * URL; NULL means "about:blank"), title, status, detail (omitted when NULL), instance (the request
 * path) and request_id. The members of extensions (stolen, may be NULL) are added, except those
 * reserved names. Returns as cstl_http_respond.
 */
int cstl_http_respond_problem(cstl_http_request *req,
                              int status,
                              const char *type_suffix,
                              const char *title,
                              const char *detail,
                              json_t *extensions);

/*
 * Answers err as a problem with the status of cstl_http_status_for_error(err->code). For 4xx the
 * detail is err->message (and err->detail, when set, becomes the "hint" member); for 5xx only a
 * generic title is sent, never the message. 401 adds "WWW-Authenticate: Bearer" unless set.
 */
int cstl_http_respond_error(cstl_http_request *req, const cstl_error *err);

/*
 * Registers GET /openapi.json (the embedded OpenAPI document of the HTTP services,
 * queries/openapi.json) and GET /docs (a self-contained HTML page that renders it). Only before
 * cstl_http_server_start. Returns as cstl_http_route.
 */
int cstl_http_route_openapi(cstl_http_server *server, cstl_error *err);

/* ---- Streaming responses (platform/http_stream.c) ------------------------------------------ */

typedef struct cstl_http_stream cstl_http_stream;

#define CSTL_HTTP_STREAM_END (-1L)

/*
 * Produces the next bytes of a streamed body: writes up to max bytes into buf and returns how many
 * (> 0), 0 when there is nothing to send now (the connection then sleeps, without a thread, until
 * cstl_http_stream_wake), or CSTL_HTTP_STREAM_END to finish the response. Called on a server
 * thread, never concurrently for one stream, with the stream's lock held: it must not block and
 * must not call cstl_http_stream_wake on its own stream.
 */
typedef long (*cstl_http_stream_fn)(void *ud, char *buf, size_t max);

/*
 * Answers with status and a body of unknown length produced by fn(ud, ...) (chunked encoding),
 * headers as set with cstl_http_set_header. done(ud) (may be NULL) is called exactly once when the
 * server is finished with the stream (the client went away, fn ended it, or the server stopped),
 * on a server thread; after it fn is never called again. When out is not NULL it receives a
 * reference to the stream for cstl_http_stream_wake, to be given back with
 * cstl_http_stream_release. When the server stops, every stream is woken and ended. Returns 0, or
 * CSTL_EINVAL (already answered, bad status, fn NULL), in which case done is not called and
 * nothing is stored in out.
 */
int cstl_http_respond_stream(cstl_http_request *req,
                             int status,
                             const char *content_type,
                             cstl_http_stream_fn fn,
                             void *ud,
                             void (*done)(void *ud),
                             cstl_http_stream **out);

/* Tells the stream that fn has bytes to send: a sleeping connection is resumed. Harmless after the
 * stream ended. Any thread; must not be called with a lock held that fn takes. */
void cstl_http_stream_wake(cstl_http_stream *stream);

/* Gives back the reference from cstl_http_respond_stream. NULL is a harmless no-op. Any thread. */
void cstl_http_stream_release(cstl_http_stream *stream);

/*
 * Bounds the kernel's send buffer of req's connection to bytes (Linux doubles the figure for its
 * bookkeeping), so that a client that stops reading a stream is noticed after that much rather
 * than after the kernel's autotuned maximum (megabytes). 0 leaves the kernel's choice. Returns 0,
 * CSTL_EINVAL for a negative size, or CSTL_EIO when the socket refuses it.
 */
int cstl_http_request_set_send_buffer(cstl_http_request *req, int bytes);

/* Number of streams currently open on server. Thread-safe. */
size_t cstl_http_stream_count(cstl_http_server *server);

/* ---- Deferred responses (platform/http_deferred.c) ----------------------------------------- */

typedef struct cstl_http_deferred cstl_http_deferred;

/*
 * Defers the answer to req: the handler returns 0 without answering, the connection then waits
 * without holding a server thread, and the answer is given later, from any thread, through the
 * returned handle. From this call on the handler must not use req (another thread may be answering
 * it already); what the answer needs must be copied out first (strings already obtained from req,
 * its headers and body, stay valid until the handler returns). The handle is owned by the caller,
 * who must give it back with exactly one cstl_http_deferred_complete or
 * cstl_http_deferred_respond_* call (whether or not the request is still there by then). Returns
 * NULL, and changes nothing, when req was already answered, deferred or streamed. When the server
 * is stopping and has already answered the deferred requests it had, req is answered 503 at once
 * (the handle is still returned and its completion refused).
 *
 * The wait is the owner's to bound: a deferred request does not time out on its own (libmicrohttpd
 * suspends the connection's timeout), and a client that goes away is noticed only once the answer
 * is sent. Server stop answers every deferred request still waiting at the end of its grace period
 * with 503 (Retry-After: 1).
 */
cstl_http_deferred *cstl_http_defer(cstl_http_request *req);

/* Writes the answer of a deferred request: sets headers and answers with one cstl_http_respond*
 * call on req, which belongs to it for the call only. Not answering means a 500. */
typedef void (*cstl_http_deferred_fn)(cstl_http_request *req, void *ud);

/*
 * Answers a deferred request: runs fn(req, ud), then resumes the connection so the answer is sent.
 * Gives the handle back (it must not be used again). Returns 0; CSTL_ESHUTDOWN when the request
 * no longer waits for an answer (the server answered it 503 on stop, or it is gone), in which case
 * fn is not called; CSTL_EINVAL when d or fn is NULL. Any thread, the handler's included (before or
 * after it returns); fn runs with the handle's lock held, so it must not block on the server.
 */
int cstl_http_deferred_complete(cstl_http_deferred *d, cstl_http_deferred_fn fn, void *ud);

/* cstl_http_deferred_complete answering cstl_http_respond_json(req, status, body). Steals body,
 * also on failure. */
int cstl_http_deferred_respond_json(cstl_http_deferred *d, int status, json_t *body);

/* cstl_http_deferred_complete answering cstl_http_respond_problem(req, status, type_suffix, title,
 * detail, NULL). The strings are borrowed for the call. */
int cstl_http_deferred_respond_problem(cstl_http_deferred *d,
                                       int status,
                                       const char *type_suffix,
                                       const char *title,
                                       const char *detail);

/* Number of deferred requests whose request has not completed yet (answered or not). Thread-safe.
 */
size_t cstl_http_deferred_count(cstl_http_server *server);

#endif
