/*
 * bench_commands - end-to-end command throughput and latency on the real broker: one handler
 * (in this process, serving jobs) and one client; T threads each send SubmitJob commands and wait
 * for their replies (after 60 unmeasured warm-up commands). Reports commands per second, reply
 * latency percentiles, the handler's mean batch size and mean commit time; BENCH_METRICS=1 also
 * prints the handler's metrics.
 *
 *   bench_commands [threads (16)] [commands per thread (200)]
 *
 * Reads CONSTELLATION_KAFKA_BROKERS; needs the topics (constellation topics create) and no other
 * member in the group "constellation-commands-bench".
 */
#include "commands/client.h"
#include "commands/handler.h"
#include "platform/id.h"
#include "platform/log.h"
#include "platform/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static cstl_cmd_client *client;
static cstl_cmd_handler *handler;
static char tenant[37];
static int per_thread = 200;
static double *lat;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run_handler(void *arg)
{
    (void)arg;
    cstl_error err;
    if (cstl_cmd_handler_run(handler, &err) != 0)
        fprintf(stderr, "handler: %s\n", err.message);
    return NULL;
}

static void send_one(int slot);

static void *sender(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < per_thread; i++)
        send_one(t * per_thread + i);
    return NULL;
}

/* Sends one SubmitJob and records its reply latency in lat[slot] (-1: none); slot -1: not kept. */
static void send_one(int slot)
{
    {
        char job[37], id[37];
        cstl_uuid_v7_string(job);
        cstl_uuid_v7_string(id);
        json_t *payload =
            json_pack("{s:s,s:s,s:i,s:I,s:i,s:I,s:i,s:{s:[s],s:{}}}", "job_id", job, "tenant_id",
                      tenant, "gpu_count", 1, "min_gpu_memory_mib", (json_int_t)1024, "priority", 0,
                      "runtime_limit_seconds", (json_int_t)60, "retry_limit", 0, "parameters",
                      "command", "true", "environment");
        cstl_cmd_request req = {.context = "jobs",
                                .command_type = "SubmitJob",
                                .command_id = id,
                                .tenant_id = tenant,
                                .aggregate_id = job,
                                .expected_version = -1,
                                .issued_by = "bench",
                                .payload = payload,
                                .want_reply = 1};
        cstl_cmd_reply r;
        cstl_error err;
        double t0 = now_s();
        int rc = cstl_cmd_client_send(client, &req, 30000, &r, &err);
        if (slot >= 0)
            lat[slot] = rc == 0 && r.outcome == CSTL_CMD_ACCEPTED ? now_s() - t0 : -1;
        json_decref(payload);
    }
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 16;
    per_thread = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 200;
    if (threads < 1 || threads > 256 || per_thread < 1) {
        fprintf(stderr, "usage: bench_commands [threads 1-256] [commands per thread]\n");
        return 2;
    }
    const char *brokers = getenv("CONSTELLATION_KAFKA_BROKERS");
    if (brokers == NULL || *brokers == '\0')
        brokers = "127.0.0.1:9092";
    cstl_log_set_level(CSTL_LOG_WARN);
    cstl_uuid_v7_string(tenant);
    cstl_metrics *reg = cstl_metrics_new();
    const cstl_aggregate_type *types[] = {&cstl_job_aggregate};
    cstl_cmd_handler_options ho = {.brokers = brokers,
                                   .instance_id = "bench",
                                   .contexts = types,
                                   .n_contexts = 1,
                                   .group_id = "constellation-commands-bench",
                                   .metrics = reg};
    cstl_error err;
    handler = cstl_cmd_handler_new(&ho, &err);
    if (handler == NULL) {
        fprintf(stderr, "bench_commands: %s\n", err.message);
        return 1;
    }
    char id[37], instance[64];
    snprintf(instance, sizeof(instance), "bench-%s", cstl_uuid_v7_string(id));
    cstl_cmd_client_options co = {.brokers = brokers, .instance_id = instance};
    client = cstl_cmd_client_new(&co, &err);
    if (client == NULL) {
        fprintf(stderr, "bench_commands: %s\n", err.message);
        return 1;
    }
    pthread_t ht;
    pthread_create(&ht, NULL, run_handler, NULL);
    for (int i = 0; i < 600 && cstl_cmd_handler_ready_partitions(handler) < 6; i++)
        usleep(100 * 1000);
    /* Warm-up, not measured: each partition's first transaction registers the producer with the
     * partitions it writes and is much slower than the steady state. */
    for (int i = 0; i < 60; i++)
        send_one(-1);
    int n = threads * per_thread;
    lat = calloc((size_t)n, sizeof(double));
    pthread_t *ts = calloc((size_t)threads, sizeof(pthread_t));
    double t0 = now_s();
    for (int t = 0; t < threads; t++)
        pthread_create(&ts[t], NULL, sender, (void *)(intptr_t)t);
    for (int t = 0; t < threads; t++)
        pthread_join(ts[t], NULL);
    double elapsed = now_s() - t0;
    int ok = 0;
    for (int i = 0; i < n; i++)
        if (lat[i] >= 0)
            lat[ok++] = lat[i];
    qsort(lat, (size_t)ok, sizeof(double), cmp);
    char *text = NULL;
    size_t len = 0;
    cstl_metrics_render(reg, &text, &len);
    double bsum = 0, bcount = 0;
    const char *s = strstr(text, "command_batch_size_sum ");
    if (s != NULL)
        bsum = strtod(s + strlen("command_batch_size_sum "), NULL);
    s = strstr(text, "command_batch_size_count ");
    if (s != NULL)
        bcount = strtod(s + strlen("command_batch_size_count "), NULL);
    double csum = 0, ccount = 0;
    s = strstr(text, "command_commit_seconds_sum ");
    if (s != NULL)
        csum = strtod(s + strlen("command_commit_seconds_sum "), NULL);
    s = strstr(text, "command_commit_seconds_count ");
    if (s != NULL)
        ccount = strtod(s + strlen("command_commit_seconds_count "), NULL);
    printf("handler: %.0f transactions, mean commit %.1f ms\n", ccount,
           ccount > 0 ? csum / ccount * 1e3 : 0);
    printf("commands: %d threads x %d = %d, %d accepted in %.2f s: %.0f commands/s; reply latency "
           "p50 %.1f ms, p99 %.1f ms; mean batch %.1f commands\n",
           threads, per_thread, n, ok, elapsed, ok / elapsed, ok ? lat[ok / 2] * 1e3 : 0,
           ok ? lat[(int)(ok * 0.99)] * 1e3 : 0, bcount > 0 ? bsum / bcount : 0);
    if (getenv("BENCH_METRICS") != NULL)
        fputs(text, stdout);
    free(text);
    cstl_cmd_handler_stop(handler);
    pthread_join(ht, NULL);
    cstl_cmd_handler_free(handler);
    cstl_cmd_client_free(client);
    cstl_metrics_free(reg);
    free(lat);
    free(ts);
    return ok == n ? 0 : 1;
}
