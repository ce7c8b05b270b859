/*
 * load.c - the HTTP load generator of the service benchmarks (see load.h).
 */
#include "load.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES (2L * 1000 * 1000)

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
    double d = t - bench_now_s();
    if (d <= 0)
        return;
    struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
    nanosleep(&ts, NULL);
}

int bench_load_addr(const char *hostport, struct sockaddr_in *out)
{
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || colon - hostport >= 64)
        return -1;
    char host[64];
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535)
        return -1;
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

typedef struct load {
    const bench_load_opts *o;
    atomic_long sent, ok, errors;
    double *lat; /* latencies (s) of the 201s */
    atomic_long nlat;
} load;

typedef struct conn_arg {
    load *l;
    int index;
} conn_arg;

static int conn_open(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends one request and reads one response on a keep-alive connection into buf (NUL-terminated;
 * *body and *body_len locate its body). Returns the status, or -1 when the connection broke (the
 * caller reconnects). */
static int exchange(int fd,
                    const char *req,
                    size_t req_len,
                    char *buf,
                    size_t cap,
                    const char **body_out,
                    size_t *body_len)
{
    size_t off = 0;
    while (off < req_len) {
        ssize_t w = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    size_t have = 0;
    long content_length = -1;
    char *body = NULL;
    for (;;) {
        ssize_t r = recv(fd, buf + have, cap - 1 - have, 0);
        if (r <= 0)
            return -1;
        have += (size_t)r;
        buf[have] = '\0';
        if (body == NULL) {
            char *end = strstr(buf, "\r\n\r\n");
            if (end == NULL) {
                if (have >= cap - 1)
                    return -1;
                continue;
            }
            body = end + 4;
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            content_length = cl ? strtol(cl + 17, NULL, 10) : 0;
        }
        if ((long)(have - (size_t)(body - buf)) >= content_length)
            break;
        if (have >= cap - 1)
            return -1;
    }
    *body_out = body;
    *body_len = have - (size_t)(body - buf);
    return (int)strtol(buf + 9, NULL, 10);
}

static void *conn_main(void *arg)
{
    conn_arg *ca = arg;
    load *l = ca->l;
    const bench_load_opts *o = l->o;
    char buf[8192];
    int fd = conn_open(&o->addr);
    double start = bench_now_s();
    double per_conn = o->rate > 0 ? o->rate / o->conns : 0;
    /* stagger the connections' schedules evenly */
    double next = start + (per_conn > 0 ? (double)ca->index / o->rate : 0);
    while (bench_now_s() - start < o->duration) {
        if (per_conn > 0) {
            sleep_until(next);
            if (next - start >= o->duration)
                break;
        }
        if (o->max_requests > 0 && atomic_fetch_add(&l->sent, 1) >= o->max_requests)
            break;
        double scheduled = per_conn > 0 ? next : bench_now_s();
        if (fd < 0 && (fd = conn_open(&o->addr)) < 0) {
            atomic_fetch_add(&l->errors, 1);
            usleep(10000);
        } else {
            const char *body = NULL;
            size_t body_len = 0;
            int status =
                exchange(fd, o->request, o->request_len, buf, sizeof(buf), &body, &body_len);
            if (status == 201) {
                double done = bench_now_s();
                atomic_fetch_add(&l->ok, 1);
                long i = atomic_fetch_add(&l->nlat, 1);
                if (i < MAX_SAMPLES)
                    l->lat[i] = done - scheduled;
                if (o->on_created != NULL)
                    o->on_created(o->ud, body, body_len, scheduled, done);
            } else {
                atomic_fetch_add(&l->errors, 1);
                if (status < 0) {
                    close(fd);
                    fd = -1;
                }
            }
        }
        if (per_conn > 0)
            next += 1.0 / per_conn;
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

bench_load_result bench_load_run(const bench_load_opts *o)
{
    bench_load_result r = {0};
    load l = {.o = o, .lat = malloc(sizeof(double) * (size_t)MAX_SAMPLES)};
    if (l.lat == NULL || o->conns < 1 || o->conns > BENCH_LOAD_MAX_CONNS) {
        free(l.lat);
        return r;
    }
    pthread_t t[BENCH_LOAD_MAX_CONNS];
    conn_arg args[BENCH_LOAD_MAX_CONNS];
    double t0 = bench_now_s();
    int started = 0;
    for (int i = 0; i < o->conns; i++) {
        args[i] = (conn_arg){&l, i};
        if (pthread_create(&t[i], NULL, conn_main, &args[i]) != 0)
            break;
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    r.elapsed_s = bench_now_s() - t0;
    long n = atomic_load(&l.nlat);
    if (n > MAX_SAMPLES)
        n = MAX_SAMPLES;
    qsort(l.lat, (size_t)n, sizeof(double), cmp_double);
    r.ok = atomic_load(&l.ok);
    r.errors = atomic_load(&l.errors);
    r.ok_per_s = (double)r.ok / r.elapsed_s;
    if (n > 0) {
        r.p50_ms = l.lat[n / 2] * 1000;
        r.p99_ms = l.lat[(long)((double)n * 0.99)] * 1000;
    }
    free(l.lat);
    return r;
}
