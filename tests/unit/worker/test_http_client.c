/*
 * test_http_client.c - the worker's HTTP client against the platform's HTTP server and against a
 * raw socket server that answers canned bytes (chunked bodies, caps, malformed heads, silence).
 */
#include "platform/http.h"
#include "platform/metrics.h"
#include "worker/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- a raw server: one connection, canned answer ----------------------------------------- */

typedef struct raw_server {
    int fd;
    int port;
    const char *answer; /* NULL: accept and stay silent until closed */
    size_t answer_len;
    pthread_t thread;
} raw_server;

static void *raw_main(void *arg)
{
    raw_server *s = arg;
    int c = accept(s->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    char buf[4096];
    ssize_t n = recv(c, buf, sizeof(buf), 0); /* the request (small) */
    (void)n;
    if (s->answer != NULL) {
        size_t off = 0;
        while (off < s->answer_len) {
            ssize_t w = send(c, s->answer + off, s->answer_len - off, MSG_NOSIGNAL);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    } else {
        struct timespec ts = {0, 800L * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    close(c);
    return NULL;
}

static void raw_start(raw_server *s, const char *answer, size_t len)
{
    s->answer = answer;
    s->answer_len = len;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len_a = sizeof(a);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &len_a), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(listen(s->fd, 4), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, raw_main, s), 0);
}

static void raw_stop(raw_server *s)
{
    pthread_join(s->thread, NULL);
    close(s->fd);
}

static int raw_request(raw_server *s, int timeout_ms, cstl_http_response *resp, cstl_error *err)
{
    char text[64];
    snprintf(text, sizeof(text), "http://127.0.0.1:%d", s->port);
    cstl_http_url url;
    assert_int_equal(cstl_http_url_parse(text, &url, err), 0);
    return cstl_http_client_request(&url, "GET", "/x", NULL, 0, NULL, timeout_ms, resp, err);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_url_parse(void **state)
{
    (void)state;
    cstl_http_url u;
    cstl_error err;
    assert_int_equal(cstl_http_url_parse("http://127.0.0.1:8080", &u, &err), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_string_equal(u.port, "8080");
    assert_string_equal(u.prefix, "");
    assert_int_equal(cstl_http_url_parse("http://api.example/base/", &u, &err), 0);
    assert_string_equal(u.host, "api.example");
    assert_string_equal(u.port, "80");
    assert_string_equal(u.prefix, "/base");
    assert_int_equal(cstl_http_url_parse("https://x", &u, &err), CSTL_ECONFIG);
    assert_int_equal(cstl_http_url_parse("http://", &u, &err), CSTL_ECONFIG);
    assert_int_equal(cstl_http_url_parse("http://h:0", &u, &err), CSTL_ECONFIG);
    assert_int_equal(cstl_http_url_parse("http://h:65536", &u, &err), CSTL_ECONFIG);
    assert_int_equal(cstl_http_url_parse("http://h:8x", &u, &err), CSTL_ECONFIG);
    assert_non_null(strstr(err.message, "http://h:8x"));
}

static int h_echo(cstl_http_request *req, void *ud)
{
    (void)ud;
    size_t len = 0;
    const char *body = cstl_http_request_body(req, &len);
    const char *auth = cstl_http_request_header(req, "Authorization");
    cstl_http_set_header(req, "Retry-After", "3");
    return cstl_http_respond_json(req, 201,
                                  json_pack("{s:s%,s:s,s:s}", "body", body ? body : "", len, "auth",
                                            auth ? auth : "", "path", cstl_http_request_path(req)));
}

static void test_against_platform_server(void **state)
{
    (void)state;
    cstl_metrics *metrics = cstl_metrics_new();
    cstl_http_options o = {.port = 0, .threads = 2, .service = "test", .metrics = metrics};
    cstl_error err;
    cstl_http_server *s = cstl_http_server_new(&o, &err);
    assert_non_null(s);
    assert_int_equal(cstl_http_route(s, "POST", "/base/v1/echo", h_echo, NULL, &err), 0);
    assert_int_equal(cstl_http_server_start(s, &err), 0);
    char text[64];
    snprintf(text, sizeof(text), "http://127.0.0.1:%u/base", cstl_http_server_port(s));
    cstl_http_url url;
    assert_int_equal(cstl_http_url_parse(text, &url, &err), 0);
    cstl_http_header h[] = {{"Authorization", "Bearer k"}, {"Idempotency-Key", "start:1"}};
    cstl_http_response r;
    assert_int_equal(
        cstl_http_client_request(&url, "POST", "/v1/echo", h, 2, "{\"a\":1}", 2000, &r, &err), 0);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.retry_after_s, 3);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "body")), "{\"a\":1}");
    assert_string_equal(json_string_value(json_object_get(j, "auth")), "Bearer k");
    json_decref(j);
    cstl_http_response_free(&r);
    /* an unknown route: 404 problem, still a response */
    assert_int_equal(cstl_http_client_request(&url, "GET", "/nope", NULL, 0, NULL, 2000, &r, &err),
                     0);
    assert_int_equal(r.status, 404);
    assert_int_equal(r.retry_after_s, -1);
    assert_true(r.body_len > 0);
    cstl_http_response_free(&r);
    cstl_http_server_free(s);
    cstl_metrics_free(metrics);
}

static void test_chunked(void **state)
{
    (void)state;
    static const char answer[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\n";
    raw_server s;
    raw_start(&s, answer, sizeof(answer) - 1);
    cstl_http_response r;
    cstl_error err;
    assert_int_equal(raw_request(&s, 2000, &r, &err), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello, world");
    cstl_http_response_free(&r);
    raw_stop(&s);
}

static void test_body_to_close_and_interim(void **state)
{
    (void)state;
    static const char answer[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 503 Unavailable\r\n"
                                 "Retry-After: 1\r\n\r\nbye";
    raw_server s;
    raw_start(&s, answer, sizeof(answer) - 1);
    cstl_http_response r;
    cstl_error err;
    assert_int_equal(raw_request(&s, 2000, &r, &err), 0);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.retry_after_s, 1);
    assert_string_equal(r.body, "bye");
    cstl_http_response_free(&r);
    raw_stop(&s);
}

static void test_caps_and_malformed(void **state)
{
    (void)state;
    cstl_http_response r;
    cstl_error err;
    raw_server s;
    static const char big[] = "HTTP/1.1 200 OK\r\nContent-Length: 1048577\r\n\r\n";
    raw_start(&s, big, sizeof(big) - 1);
    assert_int_equal(raw_request(&s, 2000, &r, &err), CSTL_ETOOBIG);
    assert_null(r.body);
    raw_stop(&s);

    static const char huge_chunk[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     "FFFFFFFF\r\n";
    raw_start(&s, huge_chunk, sizeof(huge_chunk) - 1);
    assert_int_equal(raw_request(&s, 2000, &r, &err), CSTL_ETOOBIG);
    raw_stop(&s);

    size_t n = 20000;
    char *long_head = malloc(n + 64);
    int k = snprintf(long_head, n + 64, "HTTP/1.1 200 OK\r\nX-Long: ");
    memset(long_head + k, 'a', n);
    snprintf(long_head + k + n, 64, "\r\n\r\n");
    raw_start(&s, long_head, (size_t)k + n + 4);
    assert_int_equal(raw_request(&s, 2000, &r, &err), CSTL_ETOOBIG);
    raw_stop(&s);
    free(long_head);

    static const char bad[] = "HTTX/1.1 200 OK\r\n\r\n";
    raw_start(&s, bad, sizeof(bad) - 1);
    assert_int_equal(raw_request(&s, 2000, &r, &err), CSTL_EPARSE);
    assert_non_null(strstr(err.message, "malformed status line"));
    raw_stop(&s);

    static const char short_body[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    raw_start(&s, short_body, sizeof(short_body) - 1);
    assert_int_equal(raw_request(&s, 2000, &r, &err), CSTL_EIO);
    raw_stop(&s);
}

static void test_timeout_and_refused(void **state)
{
    (void)state;
    cstl_http_response r;
    cstl_error err;
    raw_server s;
    raw_start(&s, NULL, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(raw_request(&s, 300, &r, &err), CSTL_ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000L + (t1.tv_nsec - t0.tv_nsec) / 1000000L;
    assert_true(ms >= 250 && ms < 1500);
    raw_stop(&s);
    /* the port is closed now: refused */
    assert_int_equal(raw_request(&s, 1000, &r, &err), CSTL_EUNAVAILABLE);
    assert_non_null(strstr(err.message, "cannot connect"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_against_platform_server),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_body_to_close_and_interim),
        cmocka_unit_test(test_caps_and_malformed),
        cmocka_unit_test(test_timeout_and_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
