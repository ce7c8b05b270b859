/*
 * http.c - HTTP server on libmicrohttpd (see http.h).
 *
 * Threads: MHD runs a pool of epoll threads; the access handler, the handlers and the completion
 * callback run on them. Routes are only added before start, so matching reads them without a
 * lock. server->lock guards the in-flight count that graceful stop waits on.
 *
 * A request's life: the first access-handler call (headers only) creates the request and checks
 * the limits, the request id and the route, answering at once when any fails (413 on a declared
 * over-long body, 431, 404, 405...). Body chunks are copied up to the cap; beyond it they are
 * discarded (up to a drain cap, then the connection is dropped) and the final call answers 413
 * without running the handler. The final call runs the handler and queues its response. The
 * completion callback records metrics, calls the access log and frees the request's pool: the one
 * place request memory is released.
 */
#include "platform/http_internal.h"
#include "platform/id.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* After stop answered the deferred requests still waiting, how long it lets those answers go out
 * before closing every connection. */
#define DEFERRED_FLUSH_MS 250u

/* Hands the stored response to MHD. */
static enum MHD_Result queue_response(cstl_http_request *req)
{
    cstl_http_etag_apply(req);
    struct MHD_Response *resp =
        req->stream != NULL
            ? cstl_http_stream_response(req)
            : MHD_create_response_from_buffer(req->resp_len,
                                              req->resp_body ? req->resp_body : (void *)"",
                                              MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    cstl_http_cors_headers(req, resp);
    if (req->content_type != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->content_type);
    for (header *h = req->headers; h != NULL; h = h->next)
        MHD_add_response_header(resp, h->name, h->value);
    MHD_add_response_header(resp, "X-Request-Id", req->id);
    /* Unread body bytes would otherwise be parsed as the next request. */
    bool unread = req->has_body && !req->body_read;
    if (atomic_load(&req->server->stopping) || unread)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result rc = MHD_queue_response(req->conn, (unsigned)req->status, resp);
    MHD_destroy_response(resp);
    req->queued = true;
    return rc;
}

static bool request_id_valid(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n > CSTL_HTTP_REQUEST_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

/* Routing. */

/* Splits a path copy in place into segments; returns the count or -1 (too many, not absolute). */
static int split_path(char *path, char **seg)
{
    if (path[0] != '/')
        return -1;
    if (path[1] == '\0')
        return 0;
    int n = 0;
    for (char *p = path + 1;; n++) {
        if (n == CSTL_HTTP_MAX_SEGMENTS)
            return -1;
        seg[n] = p;
        char *slash = strchr(p, '/');
        if (slash == NULL)
            return n + 1;
        *slash = '\0';
        p = slash + 1;
    }
}

static bool route_matches(const route *r, char **seg, size_t nseg)
{
    if (r->nseg != nseg)
        return false;
    for (size_t i = 0; i < nseg; i++) {
        if (r->param[i] ? seg[i][0] == '\0' : strcmp(r->seg[i], seg[i]) != 0)
            return false;
    }
    return true;
}

/* True when a is more specific than b: at the first segment where they differ in kind, a has the
 * literal. */
static bool route_beats(const route *a, const route *b)
{
    for (size_t i = 0; i < a->nseg; i++)
        if (a->param[i] != b->param[i])
            return !a->param[i];
    return false;
}

int cstl_http_route(cstl_http_server *server,
                    const char *method,
                    const char *pattern,
                    cstl_http_handler handler,
                    void *ud,
                    cstl_error *err)
{
    if (server->state != STATE_NEW)
        return cstl_error_set(err, CSTL_EINVAL, "routes must be added before the server starts");
    if (!cstl_http_token_valid(method) || handler == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "invalid method \"%s\" or missing handler",
                              method ? method : "");
    for (const char *p = method; *p; p++)
        if (islower((unsigned char)*p))
            return cstl_error_set(err, CSTL_EINVAL, "method \"%s\" must be upper case", method);
    route r = {0};
    r.pattern = cstl_xstrdup(pattern ? pattern : "");
    char *copy = cstl_xstrdup(r.pattern);
    char *seg[CSTL_HTTP_MAX_SEGMENTS];
    int n = split_path(copy, seg);
    bool ok = n >= 0;
    for (int i = 0; ok && i < n; i++) {
        size_t len = strlen(seg[i]);
        r.param[i] = len > 2 && seg[i][0] == '{' && seg[i][len - 1] == '}';
        r.seg[i] = r.param[i] ? cstl_xstrndup(seg[i] + 1, len - 2) : cstl_xstrdup(seg[i]);
        ok = len > 0 && strpbrk(r.seg[i], "{}") == NULL;
        for (int j = 0; ok && r.param[i] && j < i; j++)
            ok = !(r.param[j] && strcmp(r.seg[j], r.seg[i]) == 0);
        r.nseg = (size_t)i + 1;
    }
    free(copy);
    for (size_t i = 0; ok && i < server->nroutes; i++) {
        const route *o = &server->routes[i];
        bool same = strcmp(o->method, method) == 0 && o->nseg == r.nseg;
        for (size_t k = 0; same && k < r.nseg; k++)
            same = o->param[k] == r.param[k] && (r.param[k] || strcmp(o->seg[k], r.seg[k]) == 0);
        if (same) {
            for (size_t k = 0; k < r.nseg; k++)
                free(r.seg[k]);
            cstl_error_set(err, CSTL_EEXISTS, "route %s \"%s\" is already registered", method,
                           r.pattern);
            free(r.pattern);
            return CSTL_EEXISTS;
        }
    }
    if (!ok) {
        for (size_t k = 0; k < r.nseg; k++)
            free(r.seg[k]);
        cstl_error_set(err, CSTL_EINVAL, "invalid route pattern \"%s\"", r.pattern);
        free(r.pattern);
        return CSTL_EINVAL;
    }
    r.method = cstl_xstrdup(method);
    r.handler = handler;
    r.ud = ud;
    if (server->nroutes == server->cap) {
        server->cap = server->cap ? server->cap * 2 : 16;
        server->routes = cstl_xrealloc(server->routes, server->cap * sizeof(*server->routes));
    }
    server->routes[server->nroutes++] = r;
    return 0;
}

/* Finds the route for req; on a miss answers 404 or 405 (with Allow). Returns true on a match. */
static bool match_route(cstl_http_request *req)
{
    cstl_http_server *s = req->server;
    char *copy = cstl_http_pool_strdup(req, req->path);
    char *seg[CSTL_HTTP_MAX_SEGMENTS];
    int n = split_path(copy, seg);
    const char *want = strcmp(req->method, "HEAD") == 0 ? "GET" : req->method;
    const route *best = NULL;
    char allow[256] = "";
    size_t allow_len = 0;
    for (size_t i = 0; n >= 0 && i < s->nroutes; i++) {
        const route *r = &s->routes[i];
        if (!route_matches(r, seg, (size_t)n))
            continue;
        if (strcmp(r->method, want) == 0 && (best == NULL || route_beats(r, best)))
            best = r;
        const char *methods[2] = {r->method, strcmp(r->method, "GET") == 0 ? "HEAD" : NULL};
        for (int m = 0; m < 2 && methods[m] != NULL; m++) {
            char token[64];
            snprintf(token, sizeof(token), "%s%s", allow_len ? ", " : "", methods[m]);
            bool dup = strstr(allow, methods[m]) != NULL; /* methods are whole upper-case tokens */
            if (!dup && allow_len + strlen(token) < sizeof(allow)) {
                memcpy(allow + allow_len, token, strlen(token) + 1);
                allow_len += strlen(token);
            }
        }
    }
    if (best != NULL) {
        req->route = best;
        for (size_t i = 0; i < best->nseg; i++) {
            if (best->param[i]) {
                req->param_name[req->nparams] = best->seg[i];
                req->param_value[req->nparams++] = seg[i];
            }
        }
        return true;
    }
    if (allow_len > 0) {
        cstl_http_set_header(req, "Allow", allow);
        char detail[352];
        snprintf(detail, sizeof(detail), "method \"%.32s\" is not allowed here; allowed: %s",
                 req->method, allow);
        cstl_http_respond_problem(req, 405, "method-not-allowed", "method not allowed", detail,
                                  NULL);
    } else {
        cstl_http_respond_problem(req, 404, "not-found", "not found", "no route for this path",
                                  NULL);
    }
    return false;
}

/* Limits checked on the headers, before routing. */

typedef struct limit_walk {
    size_t bytes;
    unsigned count;
    bool too_long;
} limit_walk;

static enum MHD_Result
sum_headers(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    limit_walk *w = cls;
    w->bytes += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

static enum MHD_Result
check_query(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    limit_walk *w = cls;
    w->count++;
    if (strlen(key) > CSTL_HTTP_MAX_QUERY_VALUE ||
        (value != NULL && strlen(value) > CSTL_HTTP_MAX_QUERY_VALUE))
        w->too_long = true;
    return MHD_YES;
}

/* Returns true when the request may go on; else it has been answered. */
static bool check_request(cstl_http_request *req, const char *url)
{
    cstl_http_server *s = req->server;
    char detail[160];
    limit_walk headers = {0}, query = {0};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, sum_headers, &headers);
    if (strlen(url) > s->max_header) {
        snprintf(detail, sizeof(detail), "the request target is over %zu bytes", s->max_header);
        cstl_http_respond_problem(req, 414, "uri-too-long", "uri too long", detail, NULL);
        return false;
    }
    if (headers.bytes + strlen(url) > s->max_header) {
        snprintf(detail, sizeof(detail), "request headers are over %zu bytes", s->max_header);
        cstl_http_respond_problem(req, 431, "headers-too-large", "request headers too large",
                                  detail, NULL);
        return false;
    }
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, check_query, &query);
    if (query.count > s->max_query || query.too_long) {
        if (query.too_long)
            snprintf(detail, sizeof(detail), "a query parameter is over %d bytes",
                     CSTL_HTTP_MAX_QUERY_VALUE);
        else
            snprintf(detail, sizeof(detail), "more than %u query parameters", s->max_query);
        cstl_http_respond_problem(req, 400, "query-too-large", "query too large", detail, NULL);
        return false;
    }
    const char *cl = cstl_http_request_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = cstl_http_request_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    req->has_body = te != NULL || (cl != NULL && strcmp(cl, "0") != 0);
    if (cl != NULL && strtoull(cl, NULL, 10) > s->max_body) {
        snprintf(detail, sizeof(detail), "the request body is over %zu bytes", s->max_body);
        cstl_http_respond_problem(req, 413, "too-large", "request too large", detail, NULL);
        return false;
    }
    return match_route(req);
}

static cstl_http_request *
request_new(cstl_http_server *s, struct MHD_Connection *conn, const char *url, const char *method)
{
    cstl_http_request *req = cstl_xcalloc(1, sizeof(*req));
    clock_gettime(CLOCK_MONOTONIC, &req->start);
    req->server = s;
    req->conn = conn;
    req->method = cstl_http_pool_strdup(req, method);
    req->path = cstl_http_pool_strdup(req, url);
    const char *rid = cstl_http_request_header(req, "X-Request-Id");
    if (request_id_valid(rid))
        snprintf(req->id, sizeof(req->id), "%s", rid);
    else
        cstl_uuid_v7_string(req->id);
    const char *tp = cstl_http_request_header(req, "traceparent");
    if (cstl_http_traceparent_valid(tp))
        req->traceparent = tp;
    pthread_mutex_lock(&s->lock);
    s->inflight++;
    pthread_mutex_unlock(&s->lock);
    return req;
}

static void run_handler(cstl_http_request *req)
{
    if (req->too_big) {
        char detail[96];
        snprintf(detail, sizeof(detail), "the request body is over %zu bytes",
                 req->server->max_body);
        cstl_http_respond_problem(req, 413, "too-large", "request too large", detail, NULL);
        return;
    }
    /* A handler that failed after responding keeps its response; one that never responded gets a
     * generic 500 whatever it returned. */
    (void)req->route->handler(req, req->route->ud);
    /* A deferred request is answered through its handle, possibly by another thread already. */
    if (req->deferred == NULL && !req->responded)
        cstl_http_respond_internal(req);
}

static enum MHD_Result access_handler(void *cls,
                                      struct MHD_Connection *conn,
                                      const char *url,
                                      const char *method,
                                      const char *version,
                                      const char *upload,
                                      size_t *upload_size,
                                      void **con_cls)
{
    (void)version;
    cstl_http_server *s = cls;
    cstl_http_request *req = *con_cls;
    if (req == NULL) {
        req = request_new(s, conn, url, method);
        *con_cls = req;
        if (cstl_http_cors_preflight(req) || !check_request(req, url))
            return queue_response(req);
        return MHD_YES;
    }
    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (req->queued || req->too_big || req->body_len + n > s->max_body) {
            req->too_big = !req->queued;
            req->drained += n;
            return req->drained > DRAIN_MAX ? MHD_NO : MHD_YES;
        }
        if (req->body_len + n + 1 > req->body_cap) {
            size_t cap = req->body_cap ? req->body_cap : 1024;
            while (cap < req->body_len + n + 1)
                cap *= 2;
            req->body = cstl_xrealloc(req->body, cap);
            req->body_cap = cap;
        }
        memcpy(req->body + req->body_len, upload, n);
        req->body_len += n;
        req->body[req->body_len] = '\0';
        return MHD_YES;
    }
    req->body_read = true;
    if (req->queued)
        return MHD_YES;
    if (req->deferred != NULL) /* resumed: the answer has been given */
        return cstl_http_deferred_ready(req) ? queue_response(req) : MHD_YES;
    run_handler(req);
    if (req->deferred != NULL && cstl_http_deferred_park(req))
        return MHD_YES;
    return queue_response(req);
}

static const char *method_label(const char *m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(known); i++)
        if (strcmp(m, known[i]) == 0)
            return known[i];
    return "other";
}

static void request_completed(void *cls,
                              struct MHD_Connection *conn,
                              void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    cstl_http_server *s = cls;
    cstl_http_request *req = *con_cls;
    if (req == NULL)
        return;
    *con_cls = NULL;
    cstl_http_stream_request_done(req);
    cstl_http_deferred_request_done(req);
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    double secs =
        (double)(end.tv_sec - req->start.tv_sec) + (double)(end.tv_nsec - req->start.tv_nsec) / 1e9;
    const char *rlabel = req->route ? req->route->pattern : "unmatched";
    int status = req->queued ? req->status : 0;
    /* The access log first: once a request is counted, its log line has been written. */
    if (s->access_log != NULL) {
        cstl_http_access a = {
            .service = s->service,
            .method = req->method,
            .path = req->path,
            .route = rlabel,
            .request_id = req->id,
            .traceparent = req->traceparent,
            .status = status,
            .body_bytes = req->body_len + req->drained,
            .response_bytes = req->resp_len,
            .duration_seconds = secs,
            .completed = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK,
        };
        s->access_log(s->access_log_ud, &a);
    }
    if (status != 0) {
        char code[8];
        snprintf(code, sizeof(code), "%d", status);
        const char *labels[] = {method_label(req->method), rlabel, code};
        cstl_metrics_histogram_observe(cstl_metrics_child(s->m_duration, &rlabel), secs);
        cstl_metrics_counter_inc(cstl_metrics_child(s->m_requests, labels));
    }
    cstl_http_request_free(req);
    pthread_mutex_lock(&s->lock);
    if (--s->inflight == 0)
        pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
}

/* Built-in routes. */

static int handle_healthz(cstl_http_request *req, void *ud)
{
    (void)ud;
    return cstl_http_respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static int handle_readyz(cstl_http_request *req, void *ud)
{
    (void)ud;
    cstl_http_server *s = req->server;
    cstl_error why = {0};
    if (s->ready == NULL || s->ready(s->ready_ud, &why) == 0)
        return cstl_http_respond_json(req, 200, json_pack("{s:s}", "status", "ready"));
    return cstl_http_respond_problem(req, 503, "not-ready", "not ready",
                                     why.message[0] ? why.message : "not ready", NULL);
}

static int handle_metrics(cstl_http_request *req, void *ud)
{
    (void)ud;
    char *text = NULL;
    size_t len = 0;
    cstl_metrics_render(req->server->metrics, &text, &len);
    int rc = cstl_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
    return rc;
}

/* Lifecycle. */

static int bind_listener(cstl_http_server *s, cstl_error *err)
{
    char port[16];
    snprintf(port, sizeof(port), "%u", s->port);
    bool v6 = strchr(s->host, ':') != NULL;
    char where[300];
    snprintf(where, sizeof(where), v6 ? "[%s]:%u" : "%s:%u", s->host, s->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(s->host, port, &hints, &ai);
    if (gai != 0)
        return cstl_error_set(err, CSTL_ECONFIG, "cannot resolve listen address \"%s\": %s",
                              s->host, gai_strerror(gai));
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    int one = 1, e = 0;
    struct sockaddr_storage addr = {0};
    socklen_t alen = sizeof(addr);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &alen) != 0) {
        e = errno;
        if (e == 0)
            e = EIO;
    }
    s->family = ai->ai_family;
    freeaddrinfo(ai);
    if (e != 0) {
        if (fd >= 0)
            close(fd);
        char reason[128];
        snprintf(reason, sizeof(reason), "%s", strerror(e));
        reason[0] = (char)tolower((unsigned char)reason[0]);
        cstl_error_set(err, CSTL_EIO, "cannot listen on \"%s\": %s", where, reason);
        err != NULL ? (void)(err->origin = CSTL_ORIGIN_OS, err->origin_code = e) : (void)0;
        return CSTL_EIO;
    }
    in_port_t bound = 0;
    if (addr.ss_family == AF_INET6) {
        struct sockaddr_in6 in6;
        memcpy(&in6, &addr, sizeof(in6));
        bound = in6.sin6_port;
    } else {
        struct sockaddr_in in4;
        memcpy(&in4, &addr, sizeof(in4));
        bound = in4.sin_port;
    }
    s->port = ntohs(bound);
    s->listen_fd = fd;
    return 0;
}

cstl_http_server *cstl_http_server_new(const cstl_http_options *opts, cstl_error *err)
{
    cstl_http_options o = opts != NULL ? *opts : (cstl_http_options){0};
    if (o.port > 65535) {
        cstl_error_set(err, CSTL_ECONFIG, "invalid port \"%u\"", o.port);
        return NULL;
    }
    if (o.threads > 1024 || o.max_header_bytes > (size_t)1024 * 1024) {
        cstl_error_set(err, CSTL_ECONFIG, "invalid thread count \"%u\" or header cap \"%zu\"",
                       o.threads, o.max_header_bytes);
        return NULL;
    }
    cstl_http_server *s = cstl_xcalloc(1, sizeof(*s));
    s->host = cstl_xstrdup(o.host && *o.host ? o.host : CSTL_HTTP_DEFAULT_HOST);
    s->service = cstl_xstrdup(o.service && *o.service ? o.service : "constellation");
    s->problem_base =
        cstl_xstrdup(o.problem_base ? o.problem_base : CSTL_HTTP_DEFAULT_PROBLEM_BASE);
    s->port = o.port;
    s->threads = o.threads ? o.threads : CSTL_HTTP_DEFAULT_THREADS;
    s->max_body = o.max_body_bytes ? o.max_body_bytes : CSTL_HTTP_DEFAULT_MAX_BODY;
    s->max_header = o.max_header_bytes ? o.max_header_bytes : CSTL_HTTP_DEFAULT_MAX_HEADER;
    s->max_query = o.max_query_params ? o.max_query_params : CSTL_HTTP_DEFAULT_MAX_QUERY;
    s->timeout = o.timeout_seconds ? o.timeout_seconds : CSTL_HTTP_DEFAULT_TIMEOUT;
    s->ready = o.ready;
    s->ready_ud = o.ready_ud;
    s->access_log = o.access_log;
    s->access_log_ud = o.access_log_ud;
    s->metrics = o.metrics ? o.metrics : cstl_metrics_default();
    s->listen_fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->m_requests = cstl_metrics_counter(
        s->metrics, "http_requests_total", "HTTP requests answered, by method, route and status.",
        (const char *const[]){"method", "route", "status", NULL}, err);
    s->m_duration =
        s->m_requests == NULL
            ? NULL
            : cstl_metrics_histogram(s->metrics, "http_request_duration_seconds",
                                     "HTTP request duration in seconds, by route.",
                                     (const char *const[]){"route", NULL}, NULL, 0, err);
    s->etag = o.etag != 0;
    if (s->m_duration == NULL || cstl_http_cors_init(s, o.cors_origins, err) != 0 ||
        bind_listener(s, err) != 0 ||
        cstl_http_route(s, "GET", "/healthz", handle_healthz, NULL, err) != 0 ||
        cstl_http_route(s, "GET", "/readyz", handle_readyz, NULL, err) != 0 ||
        cstl_http_route(s, "GET", "/metrics", handle_metrics, NULL, err) != 0) {
        cstl_http_server_free(s);
        return NULL;
    }
    return s;
}

unsigned cstl_http_server_port(const cstl_http_server *server)
{
    return server->port;
}

int cstl_http_server_start(cstl_http_server *server, cstl_error *err)
{
    if (server->state != STATE_NEW)
        return cstl_error_set(err, CSTL_EINVAL, "the server was already started");
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME;
    if (server->family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* MHD keeps the request line and headers, plus its own bookkeeping and the response header
     * buffer, in the connection'server pool: twice the header cap plus 16 KiB covers it, and
     * check_request enforces the exact cap. */
    size_t memory = server->max_header * 2 + (size_t)16 * 1024;
    server->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, access_handler, server, MHD_OPTION_LISTEN_SOCKET, server->listen_fd,
        MHD_OPTION_THREAD_POOL_SIZE, server->threads, MHD_OPTION_CONNECTION_TIMEOUT,
        server->timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT, memory, MHD_OPTION_NOTIFY_COMPLETED,
        request_completed, server, MHD_OPTION_END);
    if (server->daemon == NULL)
        return cstl_error_set(err, CSTL_EIO, "cannot start the http server on port \"%u\"",
                              server->port);
    server->state = STATE_STARTED;
    return 0;
}

/* Waits up to ms for no request to be in flight. Returns 0, or CSTL_ETIMEDOUT. */
static int wait_idle(cstl_http_server *server, unsigned ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&server->lock);
    while (server->inflight > 0) {
        if (pthread_cond_timedwait(&server->idle, &server->lock, &deadline) == ETIMEDOUT) {
            rc = server->inflight > 0 ? CSTL_ETIMEDOUT : 0;
            break;
        }
    }
    pthread_mutex_unlock(&server->lock);
    return rc;
}

int cstl_http_server_stop(cstl_http_server *server, unsigned grace_ms)
{
    if (server == NULL || server->state == STATE_STOPPED)
        return 0;
    int rc = 0;
    if (server->state == STATE_STARTED) {
        atomic_store(&server->stopping, true);
        cstl_http_stream_stop_all(server);
        bool quiesced = MHD_quiesce_daemon(server->daemon) != MHD_INVALID_SOCKET;
        rc = wait_idle(server, grace_ms);
        /* MHD cannot stop with a suspended connection: answer what still waits (503), and give
         * those answers a moment to be written before the connections are closed. */
        if (cstl_http_deferred_stop_all(server) > 0)
            wait_idle(server, DEFERRED_FLUSH_MS);
        MHD_stop_daemon(server->daemon);
        server->daemon = NULL;
        /* After a quiesce the listening socket is ours to close; otherwise MHD closed it. */
        if (!quiesced)
            server->listen_fd = -1;
    }
    if (server->listen_fd >= 0)
        close(server->listen_fd);
    server->listen_fd = -1;
    server->state = STATE_STOPPED;
    return rc;
}

void cstl_http_server_free(cstl_http_server *server)
{
    if (server == NULL)
        return;
    cstl_http_server_stop(server, 0);
    for (size_t i = 0; i < server->nroutes; i++) {
        for (size_t k = 0; k < server->routes[i].nseg; k++)
            free(server->routes[i].seg[k]);
        free(server->routes[i].method);
        free(server->routes[i].pattern);
    }
    free(server->routes);
    cstl_http_cors_free(server);
    pthread_cond_destroy(&server->idle);
    pthread_mutex_destroy(&server->lock);
    free(server->problem_base);
    free(server->service);
    free(server->host);
    free(server);
}
