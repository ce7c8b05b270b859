/* Unit tests for platform/http.c: a real server on 127.0.0.1 (ephemeral port) spoken to with a
 * small blocking HTTP/1.1 client: routing, limits, request ids, problems, built-in routes,
 * metrics, graceful stop and concurrent clients. */
#include "platform/error.h"
#include "platform/http.h"
#include "platform/id.h"
#include "platform/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* The client. */

#define MAX_HEADERS 32

typedef struct response {
    int status;
    char *raw; /* everything read, headers NUL-split in place */
    size_t nheaders;
    const char *name[MAX_HEADERS];
    const char *value[MAX_HEADERS];
    const char *body; /* NUL-terminated */
    size_t body_len;
    bool closed; /* the server closed the connection without any response */
} response;

static void response_free(response *r)
{
    free(r->raw);
    memset(r, 0, sizeof(*r));
}

static const char *header_of(const response *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->name[i], name) == 0)
            return r->value[i];
    return NULL;
}

static int client_connect(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        data += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads one response from fd (no body when head is true). */
static void read_response(int fd, bool head, response *r)
{
    memset(r, 0, sizeof(*r));
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    char *end = NULL;
    size_t need = 0;
    for (;;) {
        if (end != NULL && len >= need)
            break;
        if (len + 4096 + 1 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (end == NULL && (end = strstr(buf, "\r\n\r\n")) != NULL) {
            size_t header_len = (size_t)(end - buf) + 4;
            const char *cl = strcasestr(buf, "\r\ncontent-length:");
            size_t body = cl != NULL && cl < end && !head ? strtoul(cl + 17, NULL, 10) : 0;
            need = header_len + body;
        }
    }
    buf[len] = '\0';
    r->raw = buf;
    if (end == NULL) {
        r->closed = true;
        return;
    }
    *end = '\0';
    r->body = end + 4;
    r->body_len = len - (size_t)(end + 4 - buf);
    assert_int_equal(strncmp(buf, "HTTP/1.1 ", 9), 0);
    char *status_end = NULL;
    r->status = (int)strtol(buf + 9, &status_end, 10);
    assert_true(status_end > buf + 9);
    char *save = NULL;
    strtok_r(buf, "\r\n", &save); /* the status line */
    for (char *line = strtok_r(NULL, "\r\n", &save); line != NULL && r->nheaders < MAX_HEADERS;
         line = strtok_r(NULL, "\r\n", &save)) {
        char *colon = strchr(line, ':');
        if (colon == NULL)
            continue;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ')
            v++;
        r->name[r->nheaders] = line;
        r->value[r->nheaders++] = v;
    }
}

/* Sends raw on a new connection and reads one response. */
static void exchange(unsigned port, const char *raw, size_t len, response *r)
{
    int fd = client_connect(port);
    assert_true(fd >= 0);
    send_all(fd, raw, len);
    read_response(fd, strncmp(raw, "HEAD ", 5) == 0, r);
    close(fd);
}

/* GET path with extra header lines ("" for none), Connection: close. */
static void get(unsigned port, const char *path, const char *extra, response *r)
{
    char raw[8192];
    int n = snprintf(raw, sizeof(raw), "GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n",
                     path, extra);
    exchange(port, raw, (size_t)n, r);
}

static json_t *body_json(const response *r)
{
    json_error_t jerr;
    json_t *doc = json_loadb(r->body, r->body_len, 0, &jerr);
    if (doc == NULL)
        fail_msg("response body is not json: %s (%.*s)", jerr.text, (int)r->body_len, r->body);
    return doc;
}

/* Checks the RFC 9457 shape and returns the document (caller decrefs). */
static json_t *assert_problem(const response *r, int status, const char *type, const char *path)
{
    assert_int_equal(r->status, status);
    assert_string_equal(header_of(r, "Content-Type"), "application/problem+json");
    json_t *doc = body_json(r);
    assert_string_equal(json_string_value(json_object_get(doc, "type")), type);
    assert_non_null(json_string_value(json_object_get(doc, "title")));
    assert_int_equal(json_integer_value(json_object_get(doc, "status")), status);
    assert_string_equal(json_string_value(json_object_get(doc, "instance")), path);
    assert_string_equal(json_string_value(json_object_get(doc, "request_id")),
                        header_of(r, "X-Request-Id"));
    return doc;
}

/* The fixture: a started server with test routes. */

typedef struct fixture {
    cstl_http_server *server;
    cstl_metrics *metrics;
    unsigned port;
    atomic_int drain_calls;
    atomic_int slow_entered;
    atomic_int not_ready;
    atomic_int deferred;
    pthread_mutex_t log_lock;
    int log_count;
    int last_status;
    char last_route[64];
} fixture;

static int h_job(cstl_http_request *req, void *ud)
{
    (void)ud;
    const char *tp = cstl_http_request_traceparent(req);
    const char *q = cstl_http_request_query(req, "q");
    const char *h = cstl_http_request_header(req, "x-custom");
    return cstl_http_respond_json(req, 200,
                                  json_pack("{s:s, s:s, s:s*, s:s*, s:s*, s:s}", "id",
                                            cstl_http_request_param(req, "id"), "method",
                                            cstl_http_request_method(req), "q", q, "hdr", h, "tp",
                                            tp, "route", cstl_http_request_route(req)));
}

static int h_queue(cstl_http_request *req, void *ud)
{
    (void)ud;
    return cstl_http_respond_json(req, 200, json_pack("{s:b}", "queue", 1));
}

static int h_delete(cstl_http_request *req, void *ud)
{
    (void)ud;
    return cstl_http_respond(req, 204, NULL, NULL, 0);
}

static int h_options(cstl_http_request *req, void *ud)
{
    (void)ud;
    cstl_http_set_header(req, "Allow", "GET, OPTIONS");
    return cstl_http_respond(req, 204, NULL, NULL, 0);
}

static int h_drain(cstl_http_request *req, void *ud)
{
    fixture *f = ud;
    atomic_fetch_add(&f->drain_calls, 1);
    size_t len = 0;
    const char *body = cstl_http_request_body(req, &len);
    assert_int_equal(strlen(body), len);
    assert_int_equal(cstl_http_set_header(req, "X-Bad", "a\r\nInjected: 1"), CSTL_EINVAL);
    assert_int_equal(cstl_http_set_header(req, "Bad Name", "x"), CSTL_EINVAL);
    assert_int_equal(cstl_http_set_header(req, "X-Drained", "old"), 0);
    assert_int_equal(cstl_http_set_header(req, "x-drained", "yes"), 0);
    assert_int_equal(
        cstl_http_respond_json(req, 202,
                               json_pack("{s:s, s:I}", "uuid", cstl_http_request_param(req, "uuid"),
                                         "bytes", (json_int_t)len)),
        0);
    /* A second answer is refused. */
    assert_int_equal(cstl_http_respond(req, 200, "text/plain", "x", 1), CSTL_EINVAL);
    return 0;
}

static int h_fail(cstl_http_request *req, void *ud)
{
    (void)req;
    (void)ud;
    return CSTL_EPG; /* no response: the server answers a generic 500 */
}

static int h_error(cstl_http_request *req, void *ud)
{
    (void)ud;
    cstl_error err;
    int code = (int)strtol(cstl_http_request_param(req, "code"), NULL, 10);
    cstl_error_set(&err, code, "job \"%s\" secret internal detail", "j-1");
    cstl_error_detail(&err, "check the id");
    return cstl_http_respond_error(req, &err);
}

static void count_deferred(void *p)
{
    fixture *f = p;
    atomic_fetch_add(&f->deferred, 1);
}

static int h_defer(cstl_http_request *req, void *ud)
{
    json_t *doc = json_pack("{s:s}", "kept", "until completion");
    cstl_http_request_defer(req, (void (*)(void *))json_decref, doc);
    cstl_http_request_defer(req, count_deferred, ud);
    char *scratch = cstl_http_request_alloc(req, 10000);
    assert_int_equal(scratch[9999], 0);
    return cstl_http_respond_json(req, 200, json_incref(doc));
}

static int h_slow(cstl_http_request *req, void *ud)
{
    fixture *f = ud;
    atomic_store(&f->slow_entered, 1);
    struct timespec ts = {.tv_nsec = 400 * 1000000L};
    nanosleep(&ts, NULL);
    return cstl_http_respond(req, 200, "text/plain", "slow done", 9);
}

static int ready_cb(void *ud, cstl_error *why)
{
    fixture *f = ud;
    if (atomic_load(&f->not_ready))
        return cstl_error_set(why, CSTL_EUNAVAILABLE, "kafka consumer has no assignment yet");
    return 0;
}

static void access_cb(void *ud, const cstl_http_access *a)
{
    fixture *f = ud;
    pthread_mutex_lock(&f->log_lock);
    f->log_count++;
    f->last_status = a->status;
    snprintf(f->last_route, sizeof(f->last_route), "%s", a->route);
    pthread_mutex_unlock(&f->log_lock);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    pthread_mutex_init(&f->log_lock, NULL);
    f->metrics = cstl_metrics_new();
    cstl_http_options o = {
        .port = 0,
        .threads = 4,
        .max_body_bytes = (size_t)64 * 1024,
        .service = "test",
        .metrics = f->metrics,
        .ready = ready_cb,
        .ready_ud = f,
        .access_log = access_cb,
        .access_log_ud = f,
    };
    cstl_error err;
    f->server = cstl_http_server_new(&o, &err);
    assert_non_null(f->server);
    cstl_http_server *s = f->server;
    assert_int_equal(cstl_http_route(s, "GET", "/v1/jobs/{id}", h_job, f, &err), 0);
    assert_int_equal(cstl_http_route(s, "GET", "/v1/jobs/queue", h_queue, f, &err), 0);
    assert_int_equal(cstl_http_route(s, "DELETE", "/v1/jobs/{id}", h_delete, f, &err), 0);
    assert_int_equal(cstl_http_route(s, "OPTIONS", "/v1/jobs", h_options, f, &err), 0);
    assert_int_equal(cstl_http_route(s, "POST", "/v1/gpus/{uuid}/drain", h_drain, f, &err), 0);
    assert_int_equal(cstl_http_route(s, "GET", "/v1/fail", h_fail, f, &err), 0);
    assert_int_equal(cstl_http_route(s, "GET", "/v1/error/{code}", h_error, f, &err), 0);
    assert_int_equal(cstl_http_route(s, "GET", "/v1/defer", h_defer, f, &err), 0);
    assert_int_equal(cstl_http_route(s, "GET", "/v1/slow", h_slow, f, &err), 0);
    assert_int_equal(cstl_http_server_start(s, &err), 0);
    f->port = cstl_http_server_port(s);
    assert_true(f->port > 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    cstl_http_server_free(f->server);
    cstl_metrics_free(f->metrics);
    pthread_mutex_destroy(&f->log_lock);
    free(f);
    return 0;
}

/* Tests. */

static void test_routing_and_params(void **state)
{
    fixture *f = *state;
    response r;
    get(f->port, "/v1/jobs/j%2D42?q=a%20b&x=1", "X-Custom: hello\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header_of(&r, "Content-Type"), "application/json");
    json_t *doc = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(doc, "id")), "j-42");
    assert_string_equal(json_string_value(json_object_get(doc, "q")), "a b");
    assert_string_equal(json_string_value(json_object_get(doc, "hdr")), "hello");
    assert_string_equal(json_string_value(json_object_get(doc, "route")), "/v1/jobs/{id}");
    json_decref(doc);
    response_free(&r);

    get(f->port, "/v1/jobs/queue", "", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"queue\":true"));
    response_free(&r);

    const char *del = "DELETE /v1/jobs/7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    exchange(f->port, del, strlen(del), &r);
    assert_int_equal(r.status, 204);
    response_free(&r);

    const char *opt = "OPTIONS /v1/jobs HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    exchange(f->port, opt, strlen(opt), &r);
    assert_int_equal(r.status, 204);
    assert_string_equal(header_of(&r, "Allow"), "GET, OPTIONS");
    response_free(&r);

    const char *post = "POST /v1/gpus/GPU-1/drain HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n"
                       "Connection: close\r\n\r\nhello world";
    exchange(f->port, post, strlen(post), &r);
    assert_int_equal(r.status, 202);
    assert_string_equal(header_of(&r, "X-Drained"), "yes");
    assert_null(header_of(&r, "X-Bad"));
    doc = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(doc, "uuid")), "GPU-1");
    assert_int_equal(json_integer_value(json_object_get(doc, "bytes")), 11);
    json_decref(doc);
    response_free(&r);
    assert_int_equal(atomic_load(&f->drain_calls), 1);
}

static void test_not_found_and_method_not_allowed(void **state)
{
    fixture *f = *state;
    response r;
    get(f->port, "/nope/x", "", &r);
    json_t *doc = assert_problem(&r, 404, "/problems/not-found", "/nope/x");
    json_decref(doc);
    response_free(&r);

    get(f->port, "/v1/jobs/", "", &r); /* an empty segment is not a parameter */
    assert_int_equal(r.status, 404);
    response_free(&r);

    const char *put = "PUT /v1/jobs/9 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    exchange(f->port, put, strlen(put), &r);
    doc = assert_problem(&r, 405, "/problems/method-not-allowed", "/v1/jobs/9");
    assert_string_equal(header_of(&r, "Allow"), "GET, HEAD, DELETE");
    json_decref(doc);
    response_free(&r);
}

static void test_head_for_get(void **state)
{
    fixture *f = *state;
    response r;
    const char *head = "HEAD /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    exchange(f->port, head, strlen(head), &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header_of(&r, "Content-Length"), "15");
    assert_int_equal(r.body_len, 0);
    response_free(&r);
}

static void test_body_too_big_declared(void **state)
{
    fixture *f = *state;
    response r;
    /* Only the headers are sent: the answer must come without the body being read. */
    const char *post = "POST /v1/gpus/g/drain HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n"
                       "\r\n";
    exchange(f->port, post, strlen(post), &r);
    json_t *doc = assert_problem(&r, 413, "/problems/too-large", "/v1/gpus/g/drain");
    json_decref(doc);
    assert_string_equal(header_of(&r, "Connection"), "close");
    response_free(&r);
    assert_int_equal(atomic_load(&f->drain_calls), 0);
}

static void test_body_too_big_chunked(void **state)
{
    fixture *f = *state;
    int fd = client_connect(f->port);
    const char *head = "POST /v1/gpus/g/drain HTTP/1.1\r\nHost: t\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    assert_true(send_all(fd, head, strlen(head)));
    char chunk[8192 + 16];
    memset(chunk, 'x', sizeof(chunk));
    int n = snprintf(chunk, 16, "2000\r\n");
    memset(chunk + n, 'y', 8192);
    memcpy(chunk + n + 8192, "\r\n", 3);
    for (int i = 0; i < 16; i++) /* 128 KiB > 64 KiB cap */
        assert_true(send_all(fd, chunk, (size_t)n + 8192 + 2));
    assert_true(send_all(fd, "0\r\n\r\n", 5));
    response r;
    read_response(fd, false, &r);
    close(fd);
    json_t *doc = assert_problem(&r, 413, "/problems/too-large", "/v1/gpus/g/drain");
    json_decref(doc);
    response_free(&r);
    assert_int_equal(atomic_load(&f->drain_calls), 0);
}

static void test_body_at_limit_accepted(void **state)
{
    fixture *f = *state;
    size_t body = (size_t)64 * 1024;
    char *raw = malloc(body + 256);
    int n = snprintf(raw, 256,
                     "POST /v1/gpus/g/drain HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     body);
    memset(raw + n, 'z', body);
    response r;
    exchange(f->port, raw, (size_t)n + body, &r);
    free(raw);
    assert_int_equal(r.status, 202);
    assert_non_null(strstr(r.body, "\"bytes\":65536"));
    response_free(&r);
}

static void test_header_limit(void **state)
{
    fixture *f = *state;
    size_t big = (size_t)20 * 1024;
    char *extra = malloc(big + 32);
    int k = snprintf(extra, 8, "X-Big: ");
    memset(extra + k, 'b', big);
    snprintf(extra + k + big, 3, "\r\n");
    char *raw = malloc(big + 256);
    int n = snprintf(raw, big + 256,
                     "GET /healthz HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n", extra);
    response r;
    exchange(f->port, raw, (size_t)n, &r);
    json_t *doc = assert_problem(&r, 431, "/problems/headers-too-large", "/healthz");
    json_decref(doc);
    response_free(&r);
    free(raw);
    free(extra);

    /* Far over MHD's connection memory: refused by MHD itself, never served. */
    big = (size_t)256 * 1024;
    raw = malloc(big + 128);
    n = snprintf(raw, 128, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Huge: ");
    memset(raw + n, 'h', big);
    memcpy(raw + n + big, "\r\n\r\n", 5);
    exchange(f->port, raw, (size_t)n + big + 4, &r);
    assert_true(r.closed || r.status == 431 || r.status == 413 || r.status == 400);
    response_free(&r);
    free(raw);
}

static void test_query_limits(void **state)
{
    fixture *f = *state;
    char path[4096] = "/v1/jobs/1?";
    for (int i = 0; i < 65; i++)
        snprintf(path + strlen(path), sizeof(path) - strlen(path), "p%d=1&", i);
    response r;
    get(f->port, path, "", &r);
    json_t *doc = assert_problem(&r, 400, "/problems/query-too-large", "/v1/jobs/1");
    json_decref(doc);
    response_free(&r);

    char longq[3000] = "/v1/jobs/1?q=";
    memset(longq + strlen(longq), 'v', 2100);
    get(f->port, longq, "", &r);
    assert_int_equal(r.status, 400);
    response_free(&r);
}

static void test_request_id(void **state)
{
    fixture *f = *state;
    response r;
    get(f->port, "/healthz", "X-Request-Id: abc-123.X_y\r\n", &r);
    assert_string_equal(header_of(&r, "X-Request-Id"), "abc-123.X_y");
    response_free(&r);

    static const char *const bad[] = {
        "X-Request-Id: has space\r\n",
        "X-Request-Id: semi;colon\r\n",
        "X-Request-Id: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        "",
    };
    for (size_t i = 0; i < CSTL_ARRAY_LEN(bad); i++) {
        get(f->port, "/healthz", bad[i], &r);
        const char *id = header_of(&r, "X-Request-Id");
        assert_non_null(id);
        cstl_uuid u;
        assert_int_equal(cstl_uuid_parse(id, &u), 0);
        assert_int_equal(cstl_uuid_version(&u), 7);
        response_free(&r);
    }
}

static void test_traceparent(void **state)
{
    fixture *f = *state;
    const char *good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_true(cstl_http_traceparent_valid(good));
    assert_true(cstl_http_traceparent_valid(
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
    static const char *const bad[] = {
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "",
    };
    for (size_t i = 0; i < CSTL_ARRAY_LEN(bad); i++)
        assert_false(cstl_http_traceparent_valid(bad[i]));
    assert_false(cstl_http_traceparent_valid(NULL));

    response r;
    char extra[128];
    snprintf(extra, sizeof(extra), "traceparent: %s\r\n", good);
    get(f->port, "/v1/jobs/1", extra, &r);
    json_t *doc = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(doc, "tp")), good);
    json_decref(doc);
    response_free(&r);
    get(f->port, "/v1/jobs/1", "traceparent: garbage\r\n", &r);
    doc = body_json(&r);
    assert_null(json_object_get(doc, "tp"));
    json_decref(doc);
    response_free(&r);
}

static void test_status_table(void **state)
{
    (void)state;
    assert_int_equal(cstl_http_status_for_error(CSTL_EPARSE), 400);
    assert_int_equal(cstl_http_status_for_error(CSTL_EDECODE), 400);
    assert_int_equal(cstl_http_status_for_error(CSTL_EINVAL), 422);
    assert_int_equal(cstl_http_status_for_error(CSTL_EAUTH), 401);
    assert_int_equal(cstl_http_status_for_error(CSTL_EFORBIDDEN), 403);
    assert_int_equal(cstl_http_status_for_error(CSTL_ENOTFOUND), 404);
    assert_int_equal(cstl_http_status_for_error(CSTL_ECONFLICT), 409);
    assert_int_equal(cstl_http_status_for_error(CSTL_EEXISTS), 409);
    assert_int_equal(cstl_http_status_for_error(CSTL_EPRECONDITION), 412);
    assert_int_equal(cstl_http_status_for_error(CSTL_ETOOBIG), 413);
    assert_int_equal(cstl_http_status_for_error(CSTL_EUNAVAILABLE), 503);
    assert_int_equal(cstl_http_status_for_error(CSTL_ESHUTDOWN), 503);
    assert_int_equal(cstl_http_status_for_error(CSTL_ETIMEDOUT), 504);
    assert_int_equal(cstl_http_status_for_error(CSTL_EPG), 500);
    assert_int_equal(cstl_http_status_for_error(CSTL_EKAFKA), 500);
    assert_int_equal(cstl_http_status_for_error(12345), 500);
}

static void test_respond_error(void **state)
{
    fixture *f = *state;
    response r;
    char path[64];
    snprintf(path, sizeof(path), "/v1/error/%d", CSTL_ENOTFOUND);
    get(f->port, path, "", &r);
    json_t *doc = assert_problem(&r, 404, "/problems/not-found", path);
    assert_string_equal(json_string_value(json_object_get(doc, "detail")),
                        "job \"j-1\" secret internal detail");
    assert_string_equal(json_string_value(json_object_get(doc, "hint")), "check the id");
    json_decref(doc);
    response_free(&r);

    snprintf(path, sizeof(path), "/v1/error/%d", CSTL_EAUTH);
    get(f->port, path, "", &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(header_of(&r, "WWW-Authenticate"), "Bearer");
    response_free(&r);

    /* 5xx never carry the message. */
    snprintf(path, sizeof(path), "/v1/error/%d", CSTL_EPG);
    get(f->port, path, "", &r);
    doc = assert_problem(&r, 500, "/problems/internal", path);
    assert_null(json_object_get(doc, "detail"));
    assert_null(strstr(r.body, "secret"));
    json_decref(doc);
    response_free(&r);

    get(f->port, "/v1/fail", "", &r);
    doc = assert_problem(&r, 500, "/problems/internal", "/v1/fail");
    assert_null(json_object_get(doc, "detail"));
    json_decref(doc);
    response_free(&r);
}

static void test_healthz_readyz(void **state)
{
    fixture *f = *state;
    response r;
    get(f->port, "/healthz", "", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    response_free(&r);

    get(f->port, "/readyz", "", &r);
    assert_int_equal(r.status, 200);
    response_free(&r);

    atomic_store(&f->not_ready, 1);
    get(f->port, "/readyz", "", &r);
    json_t *doc = assert_problem(&r, 503, "/problems/not-ready", "/readyz");
    assert_string_equal(json_string_value(json_object_get(doc, "detail")),
                        "kafka consumer has no assignment yet");
    json_decref(doc);
    response_free(&r);
}

/* Requests are counted at completion, which can trail the client's receipt by a moment: waits
 * (up to 2 s) until the counter of (method, route, status) reaches want. */
static void
wait_count(fixture *f, const char *method, const char *route, const char *status, double want)
{
    cstl_metric_family *fam =
        cstl_metrics_counter(f->metrics, "http_requests_total", NULL,
                             (const char *const[]){"method", "route", "status", NULL}, NULL);
    cstl_metric *c = cstl_metrics_child(fam, (const char *const[]){method, route, status});
    for (int i = 0; i < 200 && cstl_metrics_value(c) < want; i++)
        usleep(10000);
    assert_true(cstl_metrics_value(c) == want);
}

static void test_metrics_endpoint(void **state)
{
    fixture *f = *state;
    response r;
    get(f->port, "/healthz", "", &r);
    response_free(&r);
    get(f->port, "/healthz", "", &r);
    response_free(&r);
    get(f->port, "/missing", "", &r);
    response_free(&r);
    wait_count(f, "GET", "/healthz", "200", 2);
    wait_count(f, "GET", "unmatched", "404", 1);
    get(f->port, "/metrics", "", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header_of(&r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null(strstr(
        r.body, "http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2\n"));
    assert_non_null(strstr(
        r.body, "http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1\n"));
    assert_non_null(strstr(r.body, "http_request_duration_seconds_count{route=\"/healthz\"} 2\n"));
    response_free(&r);
    pthread_mutex_lock(&f->log_lock);
    assert_true(f->log_count >= 3);
    pthread_mutex_unlock(&f->log_lock);
}

static void test_keep_alive_and_defer(void **state)
{
    fixture *f = *state;
    int fd = client_connect(f->port);
    const char *req = "GET /v1/defer HTTP/1.1\r\nHost: t\r\n\r\n";
    for (int i = 0; i < 3; i++) {
        assert_true(send_all(fd, req, strlen(req)));
        response r;
        read_response(fd, false, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "{\"kept\":\"until completion\"}");
        response_free(&r);
    }
    close(fd);
    /* Cleanups run at completion, which follows the send; allow the server a moment. */
    for (int i = 0; i < 100 && atomic_load(&f->deferred) < 3; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&f->deferred), 3);
    pthread_mutex_lock(&f->log_lock);
    assert_string_equal(f->last_route, "/v1/defer");
    assert_int_equal(f->last_status, 200);
    pthread_mutex_unlock(&f->log_lock);
}

static void *slow_client(void *arg)
{
    fixture *f = arg;
    response *r = calloc(1, sizeof(*r));
    get(f->port, "/v1/slow", "", r);
    return r;
}

static void test_graceful_stop(void **state)
{
    fixture *f = *state;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_client, f), 0);
    while (!atomic_load(&f->slow_entered))
        usleep(1000);
    assert_int_equal(cstl_http_server_stop(f->server, 5000), 0);
    response *r = NULL;
    pthread_join(t, (void **)&r);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "slow done");
    response_free(r);
    free(r);
    /* No longer accepting. */
    int fd = client_connect(f->port);
    assert_int_equal(fd, -1);
    assert_int_equal(cstl_http_server_stop(f->server, 0), 0);
}

static void test_stop_grace_expires(void **state)
{
    fixture *f = *state;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_client, f), 0);
    while (!atomic_load(&f->slow_entered))
        usleep(1000);
    assert_int_equal(cstl_http_server_stop(f->server, 10), CSTL_ETIMEDOUT);
    response *r = NULL;
    pthread_join(t, (void **)&r);
    response_free(r);
    free(r);
}

enum { CLIENTS = 8, PER_CLIENT = 40 };

static void *busy_client(void *arg)
{
    fixture *f = arg;
    long ok = 0;
    for (int i = 0; i < PER_CLIENT; i++) {
        response r;
        char path[64];
        snprintf(path, sizeof(path), "/v1/jobs/%d", i);
        get(f->port, path, "", &r);
        if (r.status == 200 && strstr(r.body, path + 9) != NULL)
            ok++;
        response_free(&r);
    }
    return (void *)ok;
}

static void test_concurrent_clients(void **state)
{
    fixture *f = *state;
    pthread_t t[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, busy_client, f), 0);
    long total = 0;
    for (int i = 0; i < CLIENTS; i++) {
        void *ok = NULL;
        pthread_join(t[i], &ok);
        total += (long)ok;
    }
    assert_int_equal(total, CLIENTS * PER_CLIENT);
    wait_count(f, "GET", "/v1/jobs/{id}", "200", CLIENTS * PER_CLIENT);
}

static void test_route_registration(void **state)
{
    (void)state;
    cstl_metrics *m = cstl_metrics_new();
    cstl_http_options o = {.metrics = m};
    cstl_error err;
    cstl_http_server *s = cstl_http_server_new(&o, &err);
    assert_non_null(s);
    assert_int_equal(cstl_http_route(s, "GET", "/a/{x}", h_queue, NULL, &err), 0);
    assert_int_equal(cstl_http_route(s, "GET", "/a/{y}", h_queue, NULL, &err), CSTL_EEXISTS);
    assert_string_equal(err.message, "route GET \"/a/{y}\" is already registered");
    assert_int_equal(cstl_http_route(s, "GET", "/healthz", h_queue, NULL, &err), CSTL_EEXISTS);
    assert_int_equal(cstl_http_route(s, "POST", "/a/{x}", h_queue, NULL, &err), 0);
    assert_int_equal(cstl_http_route(s, "GET", "relative", h_queue, NULL, &err), CSTL_EINVAL);
    assert_string_equal(err.message, "invalid route pattern \"relative\"");
    assert_int_equal(cstl_http_route(s, "GET", "/a//b", h_queue, NULL, &err), CSTL_EINVAL);
    assert_int_equal(cstl_http_route(s, "GET", "/a/{x}/{x}", h_queue, NULL, &err), CSTL_EINVAL);
    assert_int_equal(cstl_http_route(s, "GET", "/a/b{", h_queue, NULL, &err), CSTL_EINVAL);
    assert_int_equal(cstl_http_route(s, "get", "/b", h_queue, NULL, &err), CSTL_EINVAL);
    assert_int_equal(cstl_http_route(s, "GET", "/b", NULL, NULL, &err), CSTL_EINVAL);
    assert_int_equal(cstl_http_route(s, "GET", NULL, h_queue, NULL, &err), CSTL_EINVAL);
    assert_int_equal(cstl_http_server_start(s, &err), 0);
    assert_int_equal(cstl_http_route(s, "GET", "/late", h_queue, NULL, &err), CSTL_EINVAL);
    assert_int_equal(cstl_http_server_start(s, &err), CSTL_EINVAL);
    cstl_http_server_free(s);
    /* Never started. */
    s = cstl_http_server_new(&o, &err);
    assert_non_null(s);
    cstl_http_server_free(s);
    cstl_http_server_free(NULL);
    cstl_metrics_free(m);
}

static void test_port_in_use(void **state)
{
    fixture *f = *state;
    cstl_metrics *m = cstl_metrics_new();
    cstl_http_options o = {.port = f->port, .metrics = m};
    cstl_error err;
    assert_null(cstl_http_server_new(&o, &err));
    assert_int_equal(err.code, CSTL_EIO);
    char expected[128];
    snprintf(expected, sizeof(expected),
             "cannot listen on \"127.0.0.1:%u\": address already in use", f->port);
    assert_string_equal(err.message, expected);

    o.port = 0;
    o.host = "no-such-host.invalid";
    assert_null(cstl_http_server_new(&o, &err));
    assert_int_equal(err.code, CSTL_ECONFIG);
    o.host = NULL;
    o.port = 70000;
    assert_null(cstl_http_server_new(&o, &err));
    assert_int_equal(err.code, CSTL_ECONFIG);
    cstl_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_routing_and_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found_and_method_not_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_for_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_too_big_declared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_too_big_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_at_limit_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_traceparent, setup, teardown),
        cmocka_unit_test(test_status_table),
        cmocka_unit_test_setup_teardown(test_respond_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_healthz_readyz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_and_defer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_graceful_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_grace_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_clients, setup, teardown),
        cmocka_unit_test(test_route_registration),
        cmocka_unit_test_setup_teardown(test_port_in_use, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
