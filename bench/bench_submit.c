/*
 * bench_submit.c - POST /v1/jobs at increasing rates, next to the raw limit of the same broker.
 *
 * 1. The anchor: a librdkafka producer with idempotence and acks=all sends records of the size of
 *    a SubmitJob command envelope to a scratch topic as fast as it can (no HTTP, no handler).
 * 2. Closed loop: C connections each send the next request when the previous answer arrives; the
 *    201s per second is the service's sustained maximum.
 * 3. Open loop at fixed rates: every request has a scheduled send time (start + i / rate), and its
 *    latency is measured from that time, so a stalled server is charged for the requests it delayed
 *    (no coordinated omission). Reports achieved 201/s, p50 and p99.
 *
 * Needs: CSTL_BENCH_ADDR (host:port of `constellation commands`), CSTL_BENCH_TOKEN (an API key of
 * a member or admin), CONSTELLATION_KAFKA_BROKERS. CSTL_BENCH_CONNS sets the connection count
 * (default 32, at most 1024): with one request in flight per connection, the closed loop's rate is
 * at most connections / latency. bench/run.sh sets them up. Loopback only;
 * every phase is bounded in time.
 */
#include "platform/kafka.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS   1024
#define MAX_SAMPLES (2L * 1000 * 1000)

static const char job_body[] =
    "{\"name\":\"resnet50-finetune\",\"gpu_count\":4,\"min_gpu_memory_mib\":40960,"
    "\"priority\":60,\"runtime_limit_seconds\":7200,\"retry_limit\":3,"
    "\"labels\":{\"team\":\"vision\",\"project\":\"imagenet\"},"
    "\"parameters\":{\"command\":[\"python\",\"train.py\",\"--epochs\",\"90\"],"
    "\"environment\":{\"NCCL_DEBUG\":\"WARN\"}}}";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
    double d = t - now_s();
    if (d <= 0)
        return;
    struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
    nanosleep(&ts, NULL);
}

/* ---- HTTP load ---------------------------------------------------------------------------- */

typedef struct load {
    struct sockaddr_in addr;
    const char *token;
    double rate;     /* requests/s over all connections; 0 = closed loop */
    double duration; /* seconds */
    int conns;
    atomic_long ok, errors;
    double *lat; /* latencies (s) of the 201s */
    atomic_long nlat;
} load;

typedef struct conn_arg {
    load *l;
    int index;
} conn_arg;

static int conn_open(const load *l)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (const struct sockaddr *)&l->addr, sizeof(l->addr)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends one request and reads one response on a keep-alive connection. Returns the status, or
 * -1 when the connection broke (the caller reconnects). */
static int exchange(int fd, const char *req, size_t req_len)
{
    size_t off = 0;
    while (off < req_len) {
        ssize_t w = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    char buf[8192];
    size_t have = 0;
    long content_length = -1;
    char *body = NULL;
    for (;;) {
        ssize_t r = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
        if (r <= 0)
            return -1;
        have += (size_t)r;
        buf[have] = '\0';
        if (body == NULL) {
            char *end = strstr(buf, "\r\n\r\n");
            if (end == NULL) {
                if (have >= sizeof(buf) - 1)
                    return -1;
                continue;
            }
            body = end + 4;
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            content_length = cl ? strtol(cl + 17, NULL, 10) : 0;
        }
        if ((long)(have - (size_t)(body - buf)) >= content_length)
            break;
        if (have >= sizeof(buf) - 1)
            return -1;
    }
    return (int)strtol(buf + 9, NULL, 10);
}

static void *conn_main(void *arg)
{
    conn_arg *ca = arg;
    load *l = ca->l;
    char req[2048];
    int req_len = snprintf(req, sizeof(req),
                           "POST /v1/jobs HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n"
                           "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                           l->token, strlen(job_body), job_body);
    int fd = conn_open(l);
    double start = now_s();
    double per_conn = l->rate > 0 ? l->rate / l->conns : 0;
    /* stagger the connections' schedules evenly */
    double next = start + (per_conn > 0 ? (double)ca->index / l->rate : 0);
    while (now_s() - start < l->duration) {
        if (per_conn > 0) {
            sleep_until(next);
            if (next - start >= l->duration)
                break;
        }
        double scheduled = per_conn > 0 ? next : now_s();
        if (fd < 0 && (fd = conn_open(l)) < 0) {
            atomic_fetch_add(&l->errors, 1);
            usleep(10000);
        } else {
            int status = exchange(fd, req, (size_t)req_len);
            if (status == 201) {
                atomic_fetch_add(&l->ok, 1);
                long i = atomic_fetch_add(&l->nlat, 1);
                if (i < MAX_SAMPLES)
                    l->lat[i] = now_s() - scheduled;
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

typedef struct load_result {
    double ok_per_s, p50_ms, p99_ms;
    long errors;
} load_result;

static load_result run_load(load *l)
{
    atomic_store(&l->ok, 0);
    atomic_store(&l->errors, 0);
    atomic_store(&l->nlat, 0);
    pthread_t t[MAX_CONNS];
    conn_arg args[MAX_CONNS];
    double t0 = now_s();
    for (int i = 0; i < l->conns; i++) {
        args[i] = (conn_arg){l, i};
        pthread_create(&t[i], NULL, conn_main, &args[i]);
    }
    for (int i = 0; i < l->conns; i++)
        pthread_join(t[i], NULL);
    double elapsed = now_s() - t0;
    long n = atomic_load(&l->nlat);
    if (n > MAX_SAMPLES)
        n = MAX_SAMPLES;
    qsort(l->lat, (size_t)n, sizeof(double), cmp_double);
    load_result r = {(double)atomic_load(&l->ok) / elapsed, 0, 0, atomic_load(&l->errors)};
    if (n > 0) {
        r.p50_ms = l->lat[n / 2] * 1000;
        r.p99_ms = l->lat[(long)((double)n * 0.99)] * 1000;
    }
    return r;
}

/* ---- raw producer anchor -------------------------------------------------------------------- */

typedef struct raw_state {
    atomic_long delivered, failed;
} raw_state;

static void raw_delivered(void *opaque, const cstl_kafka_delivery *d)
{
    raw_state *s = opaque;
    if (d->code == 0)
        atomic_fetch_add(&s->delivered, 1);
    else
        atomic_fetch_add(&s->failed, 1);
}

static double raw_produce_rate(const char *brokers, size_t record_size, double seconds)
{
    cstl_error err;
    char topic[64];
    snprintf(topic, sizeof(topic), "constellation.bench.raw.%d", (int)getpid());
    cstl_kafka_conf *conf = cstl_kafka_conf_new(brokers, "bench-raw", &err);
    if (conf == NULL) {
        fprintf(stderr, "bench_submit: %s\n", err.message);
        return 0;
    }
    cstl_kafka_admin *admin = cstl_kafka_admin_new(conf, &err);
    static const char *const topic_conf[] = {"retention.ms", "600000", NULL};
    cstl_kafka_topic_spec spec = {topic, 6, 1, topic_conf};
    size_t created = 0, existing = 0;
    if (admin == NULL ||
        cstl_kafka_admin_create_topics(admin, &spec, 1, 10000, &created, &existing, &err) != 0) {
        fprintf(stderr, "bench_submit: cannot create %s: %s\n", topic, err.message);
        cstl_kafka_admin_free(admin);
        cstl_kafka_conf_free(conf);
        return 0;
    }
    cstl_kafka_conf_set(conf, "linger.ms", "5", NULL);
    cstl_kafka_producer *p = cstl_kafka_producer_new(conf, &err);
    raw_state st = {0};
    char *value = malloc(record_size);
    memset(value, 'x', record_size);
    char key[40];
    long sent = 0;
    double t0 = now_s();
    while (now_s() - t0 < seconds) {
        for (int i = 0; i < 1000; i++) {
            snprintf(key, sizeof(key), "job-%ld", sent);
            while (cstl_kafka_producer_send(p, topic, -1, key, strlen(key), value, record_size,
                                            NULL, raw_delivered, &st, &err) != 0)
                cstl_kafka_producer_poll(p, 1); /* queue full: let deliveries drain */
            sent++;
        }
        cstl_kafka_producer_poll(p, 0);
    }
    cstl_kafka_producer_flush(p, 30000, &err);
    double elapsed = now_s() - t0;
    long ok = atomic_load(&st.delivered);
    const char *names[] = {topic};
    cstl_kafka_admin_delete_topics(admin, names, 1, 10000, &err);
    cstl_kafka_producer_free(p);
    cstl_kafka_admin_free(admin);
    cstl_kafka_conf_free(conf);
    free(value);
    if (atomic_load(&st.failed) > 0)
        fprintf(stderr, "bench_submit: %ld raw records failed\n", atomic_load(&st.failed));
    return (double)ok / elapsed;
}

int main(void)
{
    const char *addr = getenv("CSTL_BENCH_ADDR");
    const char *token = getenv("CSTL_BENCH_TOKEN");
    const char *brokers = getenv("CONSTELLATION_KAFKA_BROKERS");
    if (addr == NULL || token == NULL || brokers == NULL) {
        printf("bench_submit: skipped (needs CSTL_BENCH_ADDR, CSTL_BENCH_TOKEN and "
               "CONSTELLATION_KAFKA_BROKERS: run it through make bench)\n");
        return 0;
    }
    load l = {.token = token, .duration = 5, .conns = 32};
    /* More connections measure how far the service scales with requests in flight (each
     * connection has one at a time). */
    const char *conns = getenv("CSTL_BENCH_CONNS");
    if (conns != NULL) {
        long n = strtol(conns, NULL, 10);
        l.conns = n >= 1 && n <= MAX_CONNS ? (int)n : l.conns;
    }
    const char *colon = strrchr(addr, ':');
    l.addr.sin_family = AF_INET;
    l.addr.sin_port = htons((uint16_t)strtol(colon ? colon + 1 : "8080", NULL, 10));
    inet_pton(AF_INET, "127.0.0.1", &l.addr.sin_addr);
    l.lat = malloc(sizeof(double) * (size_t)MAX_SAMPLES);

    /* Size of a SubmitJob envelope for this body, measured once on the wire by the handler: the
     * body above encodes to about 420 bytes of Avro; the anchor uses the same size. */
    size_t record_size = 420;
    double raw = raw_produce_rate(brokers, record_size, 5);

    l.rate = 0;
    load_result closed = run_load(&l);
    printf("POST /v1/jobs, %d connections, %.0f s per step; broker, service and load on this "
           "machine\n",
           l.conns, l.duration);
    printf("%-34s %12s %9s %9s %8s\n", "step", "201/s", "p50 ms", "p99 ms", "errors");
    printf("%-34s %12.0f %9s %9s %8s\n", "raw produce (idempotent, acks=all)", raw, "-", "-", "-");
    printf("%-34s %12.0f %9.2f %9.2f %8ld\n", "closed loop (max sustained)", closed.ok_per_s,
           closed.p50_ms, closed.p99_ms, closed.errors);
    static const double rates[] = {1000, 2500, 5000, 10000, 15000};
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        if (rates[i] > closed.ok_per_s * 1.3)
            break; /* far past the maximum: the queue only grows */
        l.rate = rates[i];
        load_result r = run_load(&l);
        char name[40];
        snprintf(name, sizeof(name), "open loop at %.0f/s", rates[i]);
        printf("%-34s %12.0f %9.2f %9.2f %8ld\n", name, r.ok_per_s, r.p50_ms, r.p99_ms, r.errors);
    }
    printf("sustained / raw produce rate: %.1f %%; targets: >= 10000/s, >= 25 %%, p99 <= 25 ms at "
           "1000/s\n",
           raw > 0 ? 100.0 * closed.ok_per_s / raw : 0);
    free(l.lat);
    return 0;
}
