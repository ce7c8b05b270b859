/*
 * bench_codec.c - JobSubmitted encode and decode throughput on one core, Avro single-object
 * encoding (our codec) next to jansson encoding and parsing the same event as JSON (what a
 * JSON-on-Kafka design would pay). Each figure runs for about BENCH_SECONDS.
 */
#include "platform/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_SECONDS 1.5

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char event_json[] =
    "{\"job_id\":\"0190f5a2-7c1e-7b3a-8e4f-1a2b3c4d5e6f\","
    "\"tenant_id\":\"0190f5a2-7c1e-7b3a-8e4f-000000000001\",\"name\":\"resnet50-finetune\","
    "\"gpu_count\":4,\"min_gpu_memory_mib\":40960,\"gpu_model\":\"NVIDIA H100 80GB HBM3\","
    "\"priority\":10,\"runtime_limit_seconds\":7200,\"retry_limit\":3,"
    "\"labels\":{\"team\":\"vision\",\"project\":\"imagenet\"},"
    "\"parameters\":{\"command\":[\"python\",\"train.py\",\"--epochs\",\"90\",\"--batch-size\","
    "\"256\"],"
    "\"environment\":{\"NCCL_DEBUG\":\"WARN\",\"OMP_NUM_THREADS\":\"8\"}},"
    "\"submitted_by\":\"0190f5a2-7c1e-7b3a-8e4f-000000000002\",\"at\":1732000000123456}";

typedef struct result {
    double per_sec;
    size_t bytes;
} result;

#define RUN(res, body)                                                                             \
    do {                                                                                           \
        long n_ = 0;                                                                               \
        double t0_ = now(), t_;                                                                    \
        do {                                                                                       \
            for (int k_ = 0; k_ < 1000; k_++) {                                                    \
                body;                                                                              \
            }                                                                                      \
            n_ += 1000;                                                                            \
        } while ((t_ = now()) - t0_ < BENCH_SECONDS);                                              \
        (res).per_sec = (double)n_ / (t_ - t0_);                                                   \
    } while (0)

int main(void)
{
    const cstl_schema_entry *e =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), "jobs.JobSubmitted");
    json_t *event = json_loads(event_json, 0, NULL);
    avro_value_t value, out;
    cstl_error err;
    if (!e || !event || cstl_codec_value_new(e, &value) != 0 ||
        cstl_codec_value_new(e, &out) != 0 ||
        cstl_codec_value_from_json(cstl_avro_schema_root(e->schema), event, &value, &err) != 0) {
        fprintf(stderr, "bench_codec: cannot build the event\n");
        return 1;
    }
    cstl_codec_buf buf = {0};
    if (cstl_codec_encode(e, &value, &buf, &err) != 0 ||
        cstl_codec_decode(buf.data, buf.len, e, &out, NULL, &err) != 0) {
        fprintf(stderr, "bench_codec: %s\n", err.message);
        return 1;
    }
    result avro_enc, avro_dec, json_enc, json_dec;
    int failures = 0;
    RUN(avro_enc, failures += cstl_codec_encode(e, &value, &buf, NULL) != 0);
    avro_enc.bytes = buf.len;
    RUN(avro_dec, failures += cstl_codec_decode(buf.data, buf.len, e, &out, NULL, NULL) != 0);
    avro_dec.bytes = buf.len;
    char *text = json_dumps(event, JSON_COMPACT);
    json_enc.bytes = json_dec.bytes = strlen(text);
    RUN(json_enc, {
        char *s = json_dumps(event, JSON_COMPACT);
        failures += s == NULL;
        free(s);
    });
    RUN(json_dec, {
        json_t *j = json_loads(text, 0, NULL);
        failures += j == NULL;
        json_decref(j);
    });
    printf("JobSubmitted, one core, %.1f s per figure\n", BENCH_SECONDS);
    printf("%-8s %-22s %14s %8s\n", "", "format", "events/s", "bytes");
    printf("%-8s %-22s %14.0f %8zu\n", "encode", "avro single-object", avro_enc.per_sec,
           avro_enc.bytes);
    printf("%-8s %-22s %14.0f %8zu\n", "encode", "json (jansson)", json_enc.per_sec,
           json_enc.bytes);
    printf("%-8s %-22s %14.0f %8zu\n", "decode", "avro single-object", avro_dec.per_sec,
           avro_dec.bytes);
    printf("%-8s %-22s %14.0f %8zu\n", "decode", "json (jansson)", json_dec.per_sec,
           json_dec.bytes);
    printf("avro/json: encode %.2fx, decode %.2fx; target >= 500000/s both ways and faster than "
           "json\n",
           avro_enc.per_sec / json_enc.per_sec, avro_dec.per_sec / json_dec.per_sec);
    free(text);
    json_decref(event);
    avro_value_decref(&value);
    avro_value_decref(&out);
    cstl_codec_buf_free(&buf);
    return failures ? 1 : 0;
}
