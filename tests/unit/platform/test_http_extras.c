/* Unit tests for platform/http_extras.c and platform/http_stream.c on a real server (ephemeral
 * port): CORS preflight and headers, strong ETags with If-None-Match, the OpenAPI routes, unknown
 * query parameters, and streamed responses that sleep until woken and end when the server stops. */
#include "platform/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static cstl_http_server *srv;
static unsigned port;

/* The stream under test: a counter of chunks to send, guarded by a mutex. */
static pthread_mutex_t st_lock = PTHREAD_MUTEX_INITIALIZER;
static int st_pending;
static bool st_end;
static atomic_int st_done;
static cstl_http_stream *st_handle;

static long st_read(void *ud, char *buf, size_t max)
{
    (void)ud;
    pthread_mutex_lock(&st_lock);
    long n = 0;
    if (st_pending > 0 && max >= 8) {
        st_pending--;
        snprintf(buf, max, "%s", "chunk!\n\n");
        n = 8;
    } else if (st_end) {
        n = CSTL_HTTP_STREAM_END;
    }
    pthread_mutex_unlock(&st_lock);
    return n;
}

static void st_finished(void *ud)
{
    (void)ud;
    atomic_fetch_add(&st_done, 1);
}

static int h_stream(cstl_http_request *req, void *ud)
{
    (void)ud;
    cstl_http_stream *s = NULL;
    int rc =
        cstl_http_respond_stream(req, 200, "text/event-stream", st_read, NULL, st_finished, &s);
    pthread_mutex_lock(&st_lock);
    st_handle = s;
    pthread_mutex_unlock(&st_lock);
    return rc;
}

static int h_hello(cstl_http_request *req, void *ud)
{
    (void)ud;
    static const char *const known[] = {"a", "b", NULL};
    const char *bad = cstl_http_request_query_unknown(req, known);
    if (bad != NULL)
        return cstl_http_respond_problem(req, 400, "bad", "bad", bad, NULL);
    return cstl_http_respond(req, 200, "text/plain", "hello", 5);
}

static int setup(void **state)
{
    (void)state;
    cstl_http_options o = {.cors_origins = "https://ui.example.com, http://localhost:5173",
                           .etag = 1,
                           .metrics = NULL};
    cstl_error err;
    srv = cstl_http_server_new(&o, &err);
    if (srv == NULL || cstl_http_route(srv, "GET", "/hello", h_hello, NULL, &err) != 0 ||
        cstl_http_route(srv, "GET", "/stream", h_stream, NULL, &err) != 0 ||
        cstl_http_route_openapi(srv, &err) != 0 || cstl_http_server_start(srv, &err) != 0)
        return -1;
    port = cstl_http_server_port(srv);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cstl_http_server_free(srv);
    return 0;
}

static int open_conn(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

/* Reads into buf until needle shows up, the peer closes, or timeout_ms passes. */
static size_t read_until(int fd, char *buf, size_t cap, size_t len, const char *needle, int ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (needle == NULL || strstr(buf, needle) == NULL) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        int left = ms - (int)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || len + 1 >= cap || poll(&p, 1, left) <= 0)
            break;
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
    }
    return len;
}

/* One request on a new connection, answer read until the server closes. */
static void request(const char *head, char *out, size_t cap)
{
    int fd = open_conn();
    char req[1024];
    int n = snprintf(req, sizeof(req), "%sConnection: close\r\n\r\n", head);
    assert_int_equal(send(fd, req, (size_t)n, 0), n);
    out[0] = '\0';
    read_until(fd, out, cap, 0, NULL, 5000);
    close(fd);
}

static void test_cors(void **state)
{
    (void)state;
    char r[8192];
    request("OPTIONS /hello HTTP/1.1\r\nHost: x\r\nOrigin: https://ui.example.com\r\n"
            "Access-Control-Request-Method: GET\r\n",
            r, sizeof(r));
    assert_non_null(strstr(r, "HTTP/1.1 204"));
    assert_non_null(strstr(r, "Access-Control-Allow-Origin: https://ui.example.com"));
    assert_non_null(strstr(r, "Access-Control-Max-Age: 600"));
    assert_non_null(strstr(r, "Access-Control-Allow-Headers: Authorization"));
    request("OPTIONS /hello HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n"
            "Access-Control-Request-Method: GET\r\n",
            r, sizeof(r));
    assert_non_null(strstr(r, "HTTP/1.1 403"));
    assert_null(strstr(r, "Access-Control-Allow-Origin"));
    request("GET /hello HTTP/1.1\r\nHost: x\r\nOrigin: http://localhost:5173\r\n", r, sizeof(r));
    assert_non_null(strstr(r, "Access-Control-Allow-Origin: http://localhost:5173"));
    assert_non_null(strstr(r, "Vary: Origin"));
    request("GET /hello HTTP/1.1\r\nHost: x\r\nOrigin: http://localhost:5174\r\n", r, sizeof(r));
    assert_null(strstr(r, "Access-Control-Allow-Origin"));
    /* an OPTIONS without the preflight headers goes to routing */
    request("OPTIONS /hello HTTP/1.1\r\nHost: x\r\n", r, sizeof(r));
    assert_non_null(strstr(r, "HTTP/1.1 405"));
}

static void test_cors_origins_validated(void **state)
{
    (void)state;
    cstl_error err;
    cstl_http_options o = {.cors_origins = "https://ok.example,ftp://bad"};
    assert_null(cstl_http_server_new(&o, &err));
    assert_int_equal(err.code, CSTL_ECONFIG);
    assert_non_null(strstr(err.message, "ftp://bad"));
    o.cors_origins = "https://a.example/path";
    assert_null(cstl_http_server_new(&o, &err));
}

static void test_etag(void **state)
{
    (void)state;
    char r[8192];
    request("GET /hello HTTP/1.1\r\nHost: x\r\n", r, sizeof(r));
    const char *e = strstr(r, "ETag: \"");
    assert_non_null(e);
    char tag[64];
    snprintf(tag, sizeof(tag), "%.34s", e + 6);
    char head[256];
    snprintf(head, sizeof(head), "GET /hello HTTP/1.1\r\nHost: x\r\nIf-None-Match: %s\r\n", tag);
    request(head, r, sizeof(r));
    assert_non_null(strstr(r, "HTTP/1.1 304"));
    assert_null(strstr(r, "hello"));
    snprintf(head, sizeof(head), "GET /hello HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"x\", W/%s\r\n",
             tag);
    request(head, r, sizeof(r));
    assert_non_null(strstr(r, "HTTP/1.1 304"));
    request("GET /hello HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"x\"\r\n", r, sizeof(r));
    assert_non_null(strstr(r, "HTTP/1.1 200"));
    /* errors carry no ETag */
    request("GET /nope HTTP/1.1\r\nHost: x\r\n", r, sizeof(r));
    assert_null(strstr(r, "ETag"));
}

static void test_openapi_and_query_names(void **state)
{
    (void)state;
    static char r[200000];
    request("GET /openapi.json HTTP/1.1\r\nHost: x\r\n", r, sizeof(r));
    assert_non_null(strstr(r, "HTTP/1.1 200"));
    assert_non_null(strstr(r, "\"openapi\": \"3.1.0\""));
    request("GET /docs HTTP/1.1\r\nHost: x\r\n", r, sizeof(r));
    assert_non_null(strstr(r, "text/html"));
    request("GET /hello?a=1&b=2 HTTP/1.1\r\nHost: x\r\n", r, sizeof(r));
    assert_non_null(strstr(r, "HTTP/1.1 200"));
    request("GET /hello?a=1&c=2 HTTP/1.1\r\nHost: x\r\n", r, sizeof(r));
    assert_non_null(strstr(r, "HTTP/1.1 400"));
    request("GET /hello?a=1&a=2 HTTP/1.1\r\nHost: x\r\n", r, sizeof(r));
    assert_non_null(strstr(r, "HTTP/1.1 400"));
}

static int occurrences(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* Reads until needle occurs want times. */
static size_t read_count(int fd, char *buf, size_t cap, size_t len, const char *needle, int want)
{
    for (int i = 0; i < 300 && occurrences(buf, needle) < want; i++)
        len = read_until(fd, buf, cap, len, "\x01", 10);
    return len;
}

static void wake_with(int chunks)
{
    pthread_mutex_lock(&st_lock);
    st_pending += chunks;
    cstl_http_stream *s = st_handle;
    pthread_mutex_unlock(&st_lock);
    cstl_http_stream_wake(s);
}

static void test_stream(void **state)
{
    (void)state;
    int fd = open_conn();
    const char *req = "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    char buf[8192] = "";
    size_t len = read_until(fd, buf, sizeof(buf), 0, "\r\n\r\n", 3000);
    assert_non_null(strstr(buf, "HTTP/1.1 200"));
    assert_non_null(strstr(buf, "text/event-stream"));
    for (int i = 0; i < 50 && cstl_http_stream_count(srv) == 0; i++)
        usleep(10000);
    assert_int_equal(cstl_http_stream_count(srv), 1);
    /* nothing to send: the connection sleeps; a wake sends what is there */
    usleep(100000);
    wake_with(2);
    len = read_count(fd, buf, sizeof(buf), len, "chunk!", 2);
    assert_int_equal(occurrences(buf, "chunk!"), 2);
    wake_with(1);
    len = read_count(fd, buf, sizeof(buf), len, "chunk!", 3);
    assert_int_equal(occurrences(buf, "chunk!"), 3);
    /* the producer ends the stream: chunked encoding's last chunk, then done is called */
    pthread_mutex_lock(&st_lock);
    st_end = true;
    pthread_mutex_unlock(&st_lock);
    wake_with(0);
    read_until(fd, buf, sizeof(buf), len, "\r\n0\r\n", 3000);
    assert_non_null(strstr(buf, "\r\n0\r\n"));
    close(fd);
    for (int i = 0; i < 100 && atomic_load(&st_done) == 0; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&st_done), 1);
    cstl_http_stream_release(st_handle);
    /* a second stream left sleeping is ended by the server's stop */
    pthread_mutex_lock(&st_lock);
    st_end = false;
    st_handle = NULL;
    pthread_mutex_unlock(&st_lock);
    fd = open_conn();
    assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
    buf[0] = '\0';
    read_until(fd, buf, sizeof(buf), 0, "\r\n\r\n", 3000);
    for (int i = 0; i < 50 && cstl_http_stream_count(srv) == 0; i++)
        usleep(10000);
    assert_int_equal(cstl_http_server_stop(srv, 2000), 0);
    assert_int_equal(atomic_load(&st_done), 2);
    cstl_http_stream_release(st_handle);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cors),   cmocka_unit_test(test_cors_origins_validated),
        cmocka_unit_test(test_etag),   cmocka_unit_test(test_openapi_and_query_names),
        cmocka_unit_test(test_stream), /* last: it stops the server */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
