/* Unit tests for platform/http_deferred.c on a real server (ephemeral port, loopback): answers
 * given later from another thread, answers given before the handler returned, many more requests
 * waiting at once than the server has threads, a client that goes away while its request waits, and
 * server stop with requests still waiting (503, later answers refused, nothing leaked). */
#include "platform/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
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

#define MAX_WAITING 256

static cstl_http_server *srv;
static unsigned port;

/* Handles of the requests deferred by h_later, answered by the test. */
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static cstl_http_deferred *queue[MAX_WAITING];
static char queue_tag[MAX_WAITING][32];
static int nqueue;

static int h_later(cstl_http_request *req, void *ud)
{
    (void)ud;
    /* what the answer needs is copied before deferring */
    const char *tag = cstl_http_request_header(req, "X-Tag");
    char copy[32];
    snprintf(copy, sizeof(copy), "%s", tag != NULL ? tag : "");
    cstl_http_deferred *d = cstl_http_defer(req);
    assert_non_null(d);
    pthread_mutex_lock(&q_lock);
    assert_true(nqueue < MAX_WAITING);
    snprintf(queue_tag[nqueue], sizeof(queue_tag[nqueue]), "%s", copy);
    queue[nqueue++] = d;
    pthread_mutex_unlock(&q_lock);
    return 0;
}

/* Answers before returning, from the handler's own thread. */
static int h_now(cstl_http_request *req, void *ud)
{
    (void)ud;
    cstl_http_deferred *d = cstl_http_defer(req);
    assert_non_null(d);
    assert_null(cstl_http_defer(req)); /* once only */
    return cstl_http_deferred_respond_problem(d, 409, "conflict", "conflict", "said at once");
}

static void answer_tagged(cstl_http_request *req, void *ud)
{
    const char *tag = ud;
    cstl_http_set_header(req, "Location", "/things/1");
    cstl_http_respond_json(req, 201, json_pack("{s:s}", "tag", tag));
}

static void start_server(unsigned threads)
{
    cstl_http_options o = {.threads = threads};
    cstl_error err;
    srv = cstl_http_server_new(&o, &err);
    assert_non_null(srv);
    assert_int_equal(cstl_http_route(srv, "POST", "/later", h_later, NULL, &err), 0);
    assert_int_equal(cstl_http_route(srv, "POST", "/now", h_now, NULL, &err), 0);
    assert_int_equal(cstl_http_server_start(srv, &err), 0);
    port = cstl_http_server_port(srv);
    nqueue = 0;
}

static int open_conn(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static void send_request(int fd, const char *path, const char *tag)
{
    char req[256];
    int n = snprintf(req, sizeof(req),
                     "POST %s HTTP/1.1\r\nHost: x\r\nX-Tag: %s\r\nContent-Length: 2\r\n\r\n{}",
                     path, tag);
    assert_int_equal(send(fd, req, (size_t)n, 0), n);
}

/* Reads into buf until the whole answer (headers and Content-Length bytes) is there, the peer
 * closes, or ms pass. Returns the length read. */
static size_t read_answer(int fd, char *buf, size_t cap, int ms)
{
    size_t len = 0;
    buf[0] = '\0';
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        const char *end = strstr(buf, "\r\n\r\n");
        const char *cl = strstr(buf, "Content-Length: ");
        if (end != NULL && cl != NULL &&
            len >= (size_t)(end + 4 - buf) + strtoul(cl + 16, NULL, 10))
            break;
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

static void wait_queue(int n)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&q_lock);
        int have = nqueue;
        pthread_mutex_unlock(&q_lock);
        if (have >= n)
            return;
        usleep(10000);
    }
    fail_msg("only %d of %d requests were deferred", nqueue, n);
}

static void wait_count(size_t n)
{
    for (int i = 0; i < 500 && cstl_http_deferred_count(srv) != n; i++)
        usleep(10000);
    assert_int_equal(cstl_http_deferred_count(srv), n);
}

static void test_answer_later(void **state)
{
    (void)state;
    start_server(2);
    int fd = open_conn();
    send_request(fd, "/later", "first");
    wait_queue(1);
    /* nothing is sent until the answer */
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 100), 0);
    assert_int_equal(cstl_http_deferred_complete(queue[0], answer_tagged, queue_tag[0]), 0);
    char buf[4096];
    read_answer(fd, buf, sizeof(buf), 3000);
    assert_non_null(strstr(buf, "HTTP/1.1 201"));
    assert_non_null(strstr(buf, "Location: /things/1"));
    assert_non_null(strstr(buf, "X-Request-Id: "));
    assert_non_null(strstr(buf, "{\"tag\":\"first\"}"));
    /* the connection is kept alive and serves the next request, answered at once this time */
    send_request(fd, "/now", "second");
    read_answer(fd, buf, sizeof(buf), 3000);
    assert_non_null(strstr(buf, "HTTP/1.1 409"));
    assert_non_null(strstr(buf, "said at once"));
    close(fd);
    wait_count(0);
    assert_int_equal(cstl_http_server_stop(srv, 1000), 0);
    cstl_http_server_free(srv);
}

/* Far more requests wait at once than the server has threads, and each gets its own answer. */
static void test_more_waiting_than_threads(void **state)
{
    (void)state;
    enum { N = 64 };
    start_server(2);
    int fds[N];
    for (int i = 0; i < N; i++) {
        char tag[16];
        snprintf(tag, sizeof(tag), "r%d", i);
        fds[i] = open_conn();
        send_request(fds[i], "/later", tag);
    }
    wait_queue(N);
    assert_int_equal(cstl_http_deferred_count(srv), N);
    /* answered in reverse order, from this thread */
    for (int i = N - 1; i >= 0; i--)
        assert_int_equal(cstl_http_deferred_complete(queue[i], answer_tagged, queue_tag[i]), 0);
    for (int i = 0; i < N; i++) {
        char buf[4096], want[32];
        read_answer(fds[i], buf, sizeof(buf), 3000);
        snprintf(want, sizeof(want), "{\"tag\":\"r%d\"}", i);
        assert_non_null(strstr(buf, "HTTP/1.1 201"));
        assert_non_null(strstr(buf, want));
        close(fds[i]);
    }
    wait_count(0);
    cstl_http_server_free(srv);
}

/* A client that went away: the answer is accepted, goes nowhere, and the request is freed. */
static void test_client_gone(void **state)
{
    (void)state;
    start_server(2);
    int fd = open_conn();
    send_request(fd, "/later", "gone");
    wait_queue(1);
    close(fd);
    usleep(50000);
    int rc = cstl_http_deferred_respond_json(queue[0], 200, json_pack("{s:b}", "late", 1));
    assert_true(rc == 0 || rc == CSTL_ESHUTDOWN);
    wait_count(0);
    /* the server still serves */
    fd = open_conn();
    send_request(fd, "/now", "after");
    char buf[4096];
    read_answer(fd, buf, sizeof(buf), 3000);
    assert_non_null(strstr(buf, "HTTP/1.1 409"));
    close(fd);
    cstl_http_server_free(srv);
}

/* Stop with requests still waiting: each is answered 503 when the grace runs out, and the
 * owners' later answers are refused without touching freed memory. */
static void test_stop_while_waiting(void **state)
{
    (void)state;
    enum { N = 4 };
    start_server(2);
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = open_conn();
        send_request(fds[i], "/later", "stopping");
    }
    wait_queue(N);
    /* one is answered within the grace period */
    assert_int_equal(cstl_http_deferred_complete(queue[0], answer_tagged, queue_tag[0]), 0);
    assert_int_equal(cstl_http_server_stop(srv, 100), CSTL_ETIMEDOUT);
    char buf[4096];
    read_answer(fds[0], buf, sizeof(buf), 3000);
    assert_non_null(strstr(buf, "HTTP/1.1 201"));
    for (int i = 1; i < N; i++) {
        read_answer(fds[i], buf, sizeof(buf), 3000);
        assert_non_null(strstr(buf, "HTTP/1.1 503"));
        assert_non_null(strstr(buf, "Retry-After: 1"));
        assert_non_null(strstr(buf, "application/problem+json"));
    }
    assert_int_equal(cstl_http_deferred_count(srv), 0);
    for (int i = 1; i < N; i++)
        assert_int_equal(cstl_http_deferred_complete(queue[i], answer_tagged, queue_tag[i]),
                         CSTL_ESHUTDOWN);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    cstl_http_server_free(srv);
}

/* Stop right away (no grace), answers arriving from another thread meanwhile. */
typedef struct racer {
    int n;
    int ok, refused;
} racer;

static void *answer_all(void *arg)
{
    racer *r = arg;
    for (int i = 0; i < r->n; i++) {
        int rc = cstl_http_deferred_respond_json(queue[i], 200, json_pack("{s:i}", "i", i));
        if (rc == 0)
            r->ok++;
        else if (rc == CSTL_ESHUTDOWN)
            r->refused++;
        if (i % 4 == 0)
            usleep(1000);
    }
    return NULL;
}

static void test_stop_races_answers(void **state)
{
    (void)state;
    enum { N = 32 };
    start_server(2);
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = open_conn();
        send_request(fds[i], "/later", "race");
    }
    wait_queue(N);
    racer r = {.n = N};
    pthread_t t;
    pthread_create(&t, NULL, answer_all, &r);
    usleep(2000);
    cstl_http_server_free(srv);
    pthread_join(t, NULL);
    assert_int_equal(r.ok + r.refused, N);
    for (int i = 0; i < N; i++)
        close(fds[i]);
}

static void test_misuse(void **state)
{
    (void)state;
    assert_null(cstl_http_defer(NULL));
    assert_int_equal(cstl_http_deferred_complete(NULL, answer_tagged, NULL), CSTL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answer_later),       cmocka_unit_test(test_more_waiting_than_threads),
        cmocka_unit_test(test_client_gone),        cmocka_unit_test(test_stop_while_waiting),
        cmocka_unit_test(test_stop_races_answers), cmocka_unit_test(test_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
