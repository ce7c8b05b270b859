/*
 * bench_submit.c - POST /v1/jobs at increasing rates, next to the raw limit of the same broker.
 *
 * 1. The anchor: a librdkafka producer with idempotence and acks=all sends records of the size of
 *    a SubmitJob command envelope to a scratch topic as fast as it can (no HTTP, no handler).
 * 2. Warm-up: 3 s of closed-loop load, not reported. A fresh service's first transaction on each
 *    partition registers the partition with the transaction coordinator (about 0.9 s here), which
 *    would otherwise be charged to the first step.
 * 3. Closed loop: C connections each send the next request when the previous answer arrives; the
 *    201s per second is the service's sustained maximum at that many requests in flight. Measured
 *    at 32 and at 256 connections (one request in flight each): at 32 the rate is bounded by
 *    32 / latency, not by the service.
 * 4. Open loop at fixed rates, over the larger connection count: every request has a scheduled
 *    send time (start + i / rate), and its latency is measured from that time, so a stalled server
 *    is charged for the requests it delayed (no coordinated omission). Reports achieved 201/s, p50
 *    and p99. 1,000/s (the latency target's rate) is always measured; higher rates while they are
 *    within 1.3 times the closed loop's maximum.
 *
 * Needs: CSTL_BENCH_ADDR (host:port of `constellation commands`), CSTL_BENCH_TOKEN (an API key of
 * a member or admin), CONSTELLATION_KAFKA_BROKERS. CSTL_BENCH_CONNS replaces the two connection
 * counts by one (at most 1024). bench/run.sh sets them up. Loopback only; every phase is bounded in
 * time.
 */
#include "load.h"

#include "platform/kafka.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char job_body[] =
    "{\"name\":\"resnet50-finetune\",\"gpu_count\":4,\"min_gpu_memory_mib\":40960,"
    "\"priority\":60,\"runtime_limit_seconds\":7200,\"retry_limit\":3,"
    "\"labels\":{\"team\":\"vision\",\"project\":\"imagenet\"},"
    "\"parameters\":{\"command\":[\"python\",\"train.py\",\"--epochs\",\"90\"],"
    "\"environment\":{\"NCCL_DEBUG\":\"WARN\"}}}";

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
    double t0 = bench_now_s();
    while (bench_now_s() - t0 < seconds) {
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
    double elapsed = bench_now_s() - t0;
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
    bench_load_opts l = {.duration = 5, .conns = 32};
    int conn_counts[2] = {32, 256}, n_counts = 2;
    const char *conns = getenv("CSTL_BENCH_CONNS");
    if (conns != NULL) {
        long n = strtol(conns, NULL, 10);
        if (n < 1 || n > BENCH_LOAD_MAX_CONNS) {
            fprintf(stderr, "bench_submit: CSTL_BENCH_CONNS must be 1 to %d, got \"%s\"\n",
                    BENCH_LOAD_MAX_CONNS, conns);
            return 2;
        }
        conn_counts[0] = (int)n;
        n_counts = 1;
    }
    if (bench_load_addr(addr, &l.addr) != 0) {
        fprintf(stderr, "bench_submit: CSTL_BENCH_ADDR \"%s\" is not IPv4 host:port\n", addr);
        return 1;
    }
    char req[2048];
    int req_len = snprintf(req, sizeof(req),
                           "POST /v1/jobs HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n"
                           "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                           token, strlen(job_body), job_body);
    if (req_len < 0 || (size_t)req_len >= sizeof(req)) {
        fprintf(stderr, "bench_submit: the token is too long\n");
        return 1;
    }
    l.request = req;
    l.request_len = (size_t)req_len;

    /* Size of a SubmitJob envelope for this body, measured once on the wire by the handler: the
     * body above encodes to about 420 bytes of Avro; the anchor uses the same size. */
    size_t record_size = 420;
    double raw = raw_produce_rate(brokers, record_size, 5);

    l.rate = 0;
    l.duration = 3;
    l.conns = conn_counts[n_counts - 1];
    bench_load_run(&l); /* warm-up */
    l.duration = 5;
    printf("POST /v1/jobs, %.0f s per step after a 3 s warm-up; broker, service and load on this "
           "machine\n",
           l.duration);
    printf("%-34s %12s %9s %9s %8s\n", "step", "201/s", "p50 ms", "p99 ms", "errors");
    printf("%-34s %12.0f %9s %9s %8s\n", "raw produce (idempotent, acks=all)", raw, "-", "-", "-");
    double best = 0;
    for (int c = 0; c < n_counts; c++) {
        l.conns = conn_counts[c];
        bench_load_result closed = bench_load_run(&l);
        char name[48];
        snprintf(name, sizeof(name), "closed loop, %d connections", l.conns);
        printf("%-34s %12.0f %9.2f %9.2f %8ld\n", name, closed.ok_per_s, closed.p50_ms,
               closed.p99_ms, closed.errors);
        if (closed.ok_per_s > best)
            best = closed.ok_per_s;
    }
    static const double rates[] = {1000, 2500, 5000, 10000, 15000};
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        if (i > 0 && rates[i] > best * 1.3)
            break; /* far past the maximum: the queue only grows */
        l.rate = rates[i];
        bench_load_result r = bench_load_run(&l);
        char name[48];
        snprintf(name, sizeof(name), "open loop at %.0f/s, %d conns", rates[i], l.conns);
        printf("%-34s %12.0f %9.2f %9.2f %8ld\n", name, r.ok_per_s, r.p50_ms, r.p99_ms, r.errors);
    }
    printf(
        "sustained (best closed loop) / raw produce rate: %.1f %%; targets: >= 10000/s, >= 25 %%, "
        "p99 <= 25 ms at 1000/s\n",
        raw > 0 ? 100.0 * best / raw : 0);
    return 0;
}
