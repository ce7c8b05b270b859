/*
 * The job_logs projection on a throwaway database and topics: JobLogLine records (duplicates, a
 * line without tenant_id whose tenant is in its header, runs over the per-run limits, poison
 * records) produced to a scratch constellation.jobs.logs and applied by a real projector in small
 * batches. The read model must hold each line once (the first record of it), the limits must
 * keep a prefix of each run, the poison records must be in the DLQ, and the model must equal,
 * row for row, both a rebuild from offset 0 and the records applied one by one through the
 * single-line statement. Then query.job_logs, as the query role: pages, tenant isolation, and
 * when a finished job's output is complete.
 */
#include "../support/proj_env.h"

#include "projections/projector.h"
#include "projections/rebuild.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

// clang-format off
#include <cmocka.h>
// clang-format on

#define MAX_RECS 1024

typedef struct rec {
    char job[40], run[40];
    char tenant[40];        /* the tenant_id field; "" null */
    char header_tenant[40]; /* the cstl_tenant header; "" none */
    int64_t seq;
    char *line;
    const char *stream;
    bool garbage; /* not a JobLogLine at all */
    int32_t partition;
    int64_t offset;
} rec;

static rec recs[MAX_RECS];
static size_t nrecs;
static char logs_topic[160];
static char t1[CSTL_UUID_STRLEN + 1], t2[CSTL_UUID_STRLEN + 1];
static char j1[CSTL_UUID_STRLEN + 1], j2[CSTL_UUID_STRLEN + 1], j3[CSTL_UUID_STRLEN + 1],
    j4[CSTL_UUID_STRLEN + 1], j5[CSTL_UUID_STRLEN + 1];
static cstl_projector *projector;

static rec *add(const char *job, const char *run, const char *tenant, int64_t seq, const char *line)
{
    assert_true(nrecs < MAX_RECS);
    rec *r = &recs[nrecs++];
    memset(r, 0, sizeof(*r));
    snprintf(r->job, sizeof(r->job), "%s", job);
    snprintf(r->run, sizeof(r->run), "%s", run);
    snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
    snprintf(r->header_tenant, sizeof(r->header_tenant), "%s", tenant);
    r->seq = seq;
    r->line = cstl_xstrdup(line);
    r->stream = seq % 7 == 3 ? "stderr" : "stdout";
    r->offset = -1;
    return r;
}

/* Lines from..to-1 of a run, each exactly width bytes. */
static void lines(const char *job, const char *run, const char *tenant, int from, int to, int width)
{
    for (int i = from; i < to; i++) {
        char head[32], text[128];
        snprintf(head, sizeof(head), "%s %d", run, i);
        snprintf(text, sizeof(text), "%-*s", width, head);
        add(job, run, tenant, i, text);
    }
}

static void delivered(void *opaque, const cstl_kafka_delivery *d)
{
    rec *r = opaque;
    assert_int_equal(d->code, 0);
    r->partition = d->partition;
    r->offset = d->offset;
}

static void produce_all(void)
{
    cstl_error err;
    cstl_kafka_producer *p = cstl_kafka_producer_new(pe.conf, &err);
    assert_non_null(p);
    const cstl_schema_entry *e =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), "jobs.JobLogLine");
    cstl_codec_buf buf = {0};
    for (size_t i = 0; i < nrecs; i++) {
        rec *r = &recs[i];
        const void *value = "garbage";
        size_t len = 7;
        if (!r->garbage) {
            json_t *j = json_pack("{s:s,s:s,s:s,s:I,s:s,s:I,s:s?}", "job_id", r->job, "run_id",
                                  r->run, "stream", r->stream, "seq", (json_int_t)r->seq, "line",
                                  r->line, "at", (json_int_t)(1790000000000000LL + (int64_t)i),
                                  "tenant_id", r->tenant[0] ? r->tenant : NULL);
            if (cstl_codec_encode_json(e, j, &buf, &err) != 0)
                fail_msg("encode: %s", err.message);
            json_decref(j);
            value = buf.data;
            len = buf.len;
        }
        rd_kafka_headers_t *h = rd_kafka_headers_new(3);
        rd_kafka_header_add(h, "content-type", -1, CSTL_EVENT_CONTENT_TYPE, -1);
        if (r->header_tenant[0])
            rd_kafka_header_add(h, "cstl_tenant", -1, r->header_tenant, -1);
        int rc;
        while ((rc = cstl_kafka_producer_send(p, logs_topic, CSTL_KAFKA_PARTITION_UA, r->job,
                                              strlen(r->job), value, len, h, delivered, r, &err)) ==
               CSTL_EKAFKA)
            cstl_kafka_producer_poll(p, 10);
        assert_int_equal(rc, 0);
    }
    assert_int_equal(cstl_kafka_producer_flush(p, 30000, &err), 0);
    cstl_kafka_producer_free(p);
    cstl_codec_buf_free(&buf);
    for (size_t i = 0; i < nrecs; i++)
        assert_true(recs[i].offset >= 0);
}

static void wait_caught_up(int timeout_ms)
{
    int64_t deadline = pe_now_ms() + timeout_ms;
    int zero = 0;
    while (zero < 3 && pe_now_ms() < deadline) {
        usleep(200 * 1000);
        zero = cstl_projector_lag(projector) == 0 ? zero + 1 : 0;
    }
    if (zero < 3)
        fail_msg("job_logs still lags by %" PRId64, cstl_projector_lag(projector));
}

static void assert_same(const char *a, const char *b)
{
    char *da = pe_dump(a), *db = pe_dump(b);
    assert_non_null(da);
    assert_non_null(db);
    if (strcmp(da, db) != 0) {
        size_t k = 0;
        while (da[k] && da[k] == db[k])
            k++;
        fail_msg("%s and %s differ at byte %zu: \"%.200s\" vs \"%.200s\"", a, b, k, da + k, db + k);
    }
    assert_true(strlen(da) > 1000);
    free(da), free(db);
}

static long count(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static long count(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return pe_long(pe.pg, sql);
}

/* The runs' counters as "run:lines:bytes:next_seq:truncated" lines, sorted. */
static char *runs_of(const char *schema, const char *job)
{
    char sql[512];
    snprintf(
        sql, sizeof(sql),
        "SELECT string_agg(run_id || ':' || lines || ':' || bytes || ':' || next_seq || ':' || "
        "truncated, ' ' ORDER BY run_id) FROM %s.job_log_runs WHERE job_id = '%s'",
        schema, job);
    return pe_value(pe.pg, sql);
}

static void test_projected_once_within_limits(void **state)
{
    (void)state;
    /* J1 (tenant 1): run a of 70 lines, seq 10..19 sent again after 35 (with other text), then
     * run b of 40; J2 (tenant 2): 70 lines; all of 30 bytes */
    lines(j1, "a", t1, 0, 35, 30);
    for (int i = 10; i < 20; i++)
        add(j1, "a", t1, i, "a duplicate that must not be stored");
    lines(j1, "a", t1, 35, 70, 30);
    lines(j1, "b", t1, 0, 40, 30);
    lines(j2, "c", t2, 0, 70, 30);
    /* J3 (tenant 1), over the limits set below (80 lines, 4000 bytes per run): run d of 60-byte
     * lines stops at 66 lines by bytes, and its tiny line 70 is not stored either (a prefix is
     * kept); run e of 10-byte lines stops at 80 by count */
    for (int i = 0; i < 100; i++) {
        char text[64];
        snprintf(text, sizeof(text), "%-60d", i);
        add(j3, "d", t1, i, i == 70 ? "x" : text);
    }
    lines(j3, "e", t1, 0, 100, 10);
    /* J4: lines written before tenant_id existed, the tenant only in the header */
    for (int i = 0; i < 20; i++) {
        char text[32];
        snprintf(text, sizeof(text), "old %d", i);
        rec *r = add(j4, "f", "", i, text);
        snprintf(r->header_tenant, sizeof(r->header_tenant), "%s", t1);
    }
    /* poison: no tenant at all, a line over 16384 bytes, a negative seq, not a JobLogLine */
    rec *r = add(j5, "g", "", 0, "nobody's");
    r->header_tenant[0] = '\0';
    char *long_line = cstl_xmalloc(CSTL_JOB_LOG_LINE_MAX + 2);
    memset(long_line, 'L', CSTL_JOB_LOG_LINE_MAX + 1);
    long_line[CSTL_JOB_LOG_LINE_MAX + 1] = '\0';
    add(j5, "g", t1, 1, long_line);
    free(long_line);
    add(j5, "g", t1, -1, "negative");
    add(j5, "g", t1, 2, "")->garbage = true;
    add(j5, "g", t1, 3, "after the poison");

    assert_int_equal(pe_sql(pe.pg, "UPDATE job_logs_v1.job_log_limits SET max_lines_per_run = 80, "
                                   "max_bytes_per_run = 4000"),
                     0);
    produce_all();
    cstl_projector_options o = {.projection = "job_logs",
                                .brokers = pe.brokers,
                                .pg_dsn = pe.dsn,
                                .topic_prefix = pe.prefix,
                                .group_prefix = pe.prefix,
                                .batch_max = 37, /* duplicates and limits across batches */
                                .batch_ms = 50};
    cstl_error err;
    projector = cstl_projector_new(&o, &err);
    if (projector == NULL || cstl_projector_start(projector, &err) != 0)
        fail_msg("cannot start the projector: %s", err.message);
    wait_caught_up(60000);

    /* each line once, the first record of it */
    assert_int_equal(
        count("SELECT count(*) FROM job_logs_v1.job_log_lines WHERE job_id = '%s'", j1), 110);
    assert_int_equal(count("SELECT count(*) FROM job_logs_v1.job_log_lines WHERE job_id = '%s' "
                           "AND line LIKE 'a duplicate%%'",
                           j1),
                     0);
    assert_int_equal(count("SELECT count(DISTINCT pos) FROM job_logs_v1.job_log_lines WHERE "
                           "job_id = '%s'",
                           j1),
                     110);
    char *runs = runs_of("job_logs_v1", j1);
    assert_string_equal(runs, "a:70:2100:70:false b:40:1200:40:false");
    free(runs);
    runs = runs_of("job_logs_v1", j3);
    assert_string_equal(runs, "d:66:3960:100:true e:80:800:100:true");
    free(runs);
    assert_int_equal(count("SELECT max(seq) FROM job_logs_v1.job_log_lines WHERE job_id = '%s' "
                           "AND run_id = 'd'",
                           j3),
                     65);
    /* the header's tenant for the old lines, the record's own otherwise */
    assert_int_equal(count("SELECT count(*) FROM job_logs_v1.job_log_lines WHERE job_id = '%s' "
                           "AND tenant_id = '%s'",
                           j4, t1),
                     20);
    assert_int_equal(count("SELECT count(*) FROM job_logs_v1.job_log_lines WHERE job_id = '%s' "
                           "AND tenant_id = '%s'",
                           j2, t2),
                     70);
    /* the poison went to the DLQ and the line after it was applied */
    assert_int_equal(cstl_projector_dead_lettered(projector), 4);
    assert_int_equal(
        count("SELECT count(*) FROM job_logs_v1.job_log_lines WHERE job_id = '%s'", j5), 1);
    /* offsets are ids: ordered like the records of the job */
    for (size_t i = 1; i < nrecs; i++)
        if (strcmp(recs[i].job, recs[i - 1].job) == 0)
            assert_true(recs[i].offset > recs[i - 1].offset);
    assert_int_equal(count("SELECT count(*) FROM job_logs_v1.job_log_lines WHERE job_id = '%s' "
                           "AND run_id = 'a' AND seq = 15 AND pos = %" PRId64,
                           j1, recs[15].offset),
                     1);
}

static void test_rebuilt_and_direct_are_the_same(void **state)
{
    (void)state;
    /* rebuilt from offset 0 in batches of its own */
    cstl_rebuild_options o = {.projection = "job_logs",
                              .brokers = pe.brokers,
                              .pg_dsn = pe.dsn,
                              .topic_prefix = pe.prefix,
                              .batch_max = 100};
    cstl_rebuild_report rep;
    cstl_error err;
    if (cstl_projection_rebuild(&o, &rep, &err) != 0)
        fail_msg("rebuild: %s", err.message);
    assert_int_equal(rep.new_version, 2);
    assert_same("job_logs_v1", "job_logs_v2");
    /* and one record at a time through the single-line statement, in one transaction */
    assert_int_equal(pe_sql(pe.pg, "SELECT projection_create_version('job_logs', 9)"), 0);
    assert_int_equal(pe_sql(pe.pg, "BEGIN; SET LOCAL search_path TO job_logs_v9, public"), 0);
    int dead = 0;
    for (size_t i = 0; i < nrecs; i++) {
        rec *r = &recs[i];
        if (r->garbage) {
            dead++;
            continue;
        }
        cstl_event_headers h = {.version = r->offset};
        snprintf(h.tenant, sizeof(h.tenant), "%.36s", r->header_tenant);
        json_t *data = json_pack("{s:s,s:s,s:s,s:I,s:s,s:I,s:s?}", "job_id", r->job, "run_id",
                                 r->run, "stream", r->stream, "seq", (json_int_t)r->seq, "line",
                                 r->line, "at", (json_int_t)(1790000000000000LL + (int64_t)i),
                                 "tenant_id", r->tenant[0] ? r->tenant : NULL);
        if (cstl_projection_job_logs_apply(pe.pg, &h, "JobLogLine", data, &err) != 0)
            dead++;
        json_decref(data);
    }
    assert_int_equal(pe_sql(pe.pg, "COMMIT"), 0);
    assert_int_equal(dead, 4);
    assert_same("job_logs_v1", "job_logs_v9");
}

/* query.job_logs as the query role for tenant, into one row: state 0, frames 1, lines 2, last_id
 * 3, more 4, complete 5, expired 6, end_data 7, jobs_applied 8, logs_applied 9. The caller
 * frees the result. */
static PGresult *job_logs_bytes(
    const char *tenant, const char *job, int64_t after, int limit, int max_bytes, int wait_ms)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT state, frames, lines, last_id, more, complete, expired, end_data, "
             "jobs_applied, logs_applied FROM query.job_logs('%s', '%s', %" PRId64
             ", %d, %d, %d, 'none', 0, '%s', %d)",
             tenant, job, after, limit, max_bytes, wait_ms, logs_topic,
             cstl_kafka_partition_for_key(job, strlen(job), PE_PARTITIONS));
    assert_int_equal(pe_sql(pe.pg, "BEGIN; SET LOCAL ROLE constellation_query"), 0);
    PGresult *res = NULL;
    cstl_error err;
    if (cstl_pg_exec(pe.pg, sql, 0, NULL, &res, &err) != 0)
        fail_msg("query.job_logs: %s", err.message);
    assert_int_equal(pe_sql(pe.pg, "COMMIT"), 0);
    assert_int_equal(PQntuples(res), 1);
    return res;
}

static PGresult *
job_logs(const char *tenant, const char *job, int64_t after, int limit, int wait_ms)
{
    return job_logs_bytes(tenant, job, after, limit, 1 << 20, wait_ms);
}

static void test_query_pages_and_completeness(void **state)
{
    (void)state;
    /* the jobs read model, as the jobs projector would have it: J1 succeeded with both runs'
     * counts; J2 failed with more lines reported (150) than received (70), long ago; J3 succeeded,
     * its runs complete though truncated; J4 still running */
    char sql[4096];
    snprintf(sql, sizeof(sql),
             "INSERT INTO jobs_v1.jobs (job_id, tenant_id, state, reason, priority, gpu_count, "
             "min_gpu_memory_mib, runtime_limit_seconds, retry_limit, labels, parameters, "
             "submitted_by, submitted_at, updated_at, version, finished_at) VALUES "
             "('%s', '%s', 'succeeded', 'completed', 0, 1, 0, 60, 0, '{}', '{}', 'u', now(), "
             "now(), 9, now()), "
             "('%s', '%s', 'failed', 'nonzero_exit', 0, 1, 0, 60, 0, '{}', '{}', 'u', now(), "
             "now(), 9, now() - interval '1 hour'), "
             "('%s', '%s', 'succeeded', 'completed', 0, 1, 0, 60, 0, '{}', '{}', 'u', now(), "
             "now(), 9, now()), "
             "('%s', '%s', 'running', 'running', 0, 1, 0, 60, 0, '{}', '{}', 'u', now(), now(), "
             "4, NULL);"
             "INSERT INTO jobs_v1.runs (run_id, job_id, tenant_id, worker_id, gpu_uuids, "
             "assigned_at, finished_at, log_lines) VALUES "
             "('a', '%s', '%s', 'w', '{}', now() - interval '2 min', now(), 70), "
             "('b', '%s', '%s', 'w', '{}', now() - interval '1 min', now(), 40), "
             "('c', '%s', '%s', 'w', '{}', now(), now(), 150), "
             "('d', '%s', '%s', 'w', '{}', now() - interval '1 min', now(), 100), "
             "('e', '%s', '%s', 'w', '{}', now(), now(), 100), "
             "('f', '%s', '%s', 'w', '{}', now(), NULL, NULL)",
             j1, t1, j2, t2, j3, t1, j4, t1, j1, t1, j1, t1, j2, t2, j3, t1, j3, t1, j4, t1);
    assert_int_equal(pe_sql(pe.pg, sql), 0);

    /* a page: the first 50 lines of J1 as events, ids its positions */
    PGresult *res = job_logs(t1, j1, -1, 50, 10000);
    assert_string_equal(PQgetvalue(res, 0, 0), "succeeded");
    assert_string_equal(PQgetvalue(res, 0, 2), "50");
    char want[512];
    snprintf(want, sizeof(want),
             "id: %" PRId64 "\nevent: line\ndata: {\"run_id\" : \"a\", \"stream\" : \"stdout\", "
             "\"seq\" : 0, \"line\" : \"%s\", \"at\" : \"2026-09-21T",
             recs[0].offset, recs[0].line);
    assert_memory_equal(PQgetvalue(res, 0, 1), want, strlen(want));
    int64_t last = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    assert_true(strstr(PQgetvalue(res, 0, 1), "\"seq\" : 49,") != NULL);
    assert_string_equal(PQgetvalue(res, 0, 4), "t"); /* more follow */
    assert_string_equal(PQgetvalue(res, 0, 5), "t"); /* every line of it was received */
    assert_true(PQgetisnull(res, 0, 8));             /* no jobs offsets for topic "none" */
    assert_false(PQgetisnull(res, 0, 9));
    PQclear(res);
    /* a page stops once the text before a line reaches the byte bound: 4 lines of 30 bytes */
    res = job_logs_bytes(t1, j1, -1, 50, 100, 10000);
    assert_string_equal(PQgetvalue(res, 0, 2), "4");
    assert_string_equal(PQgetvalue(res, 0, 4), "t");
    PQclear(res);
    res = job_logs_bytes(t1, j1, -1, 50, 1, 10000); /* always at least one line */
    assert_string_equal(PQgetvalue(res, 0, 2), "1");
    PQclear(res);
    /* the rest after the last id: 60 lines, none twice, nothing after them */
    res = job_logs(t1, j1, last, 1000, 10000);
    assert_string_equal(PQgetvalue(res, 0, 2), "60");
    assert_null(strstr(PQgetvalue(res, 0, 1), "\"seq\" : 49,"));
    assert_string_equal(PQgetvalue(res, 0, 4), "f");
    assert_string_equal(
        PQgetvalue(res, 0, 7),
        "{\"state\" : \"succeeded\", \"reason\" : \"completed\", \"complete\" : true}");
    PQclear(res);
    /* another tenant's job is not there at all */
    res = job_logs(t2, j1, -1, 10, 10000);
    assert_true(PQgetisnull(res, 0, 0));
    PQclear(res);
    /* J2: 150 lines reported, 70 received: incomplete; it finished an hour ago, so expired */
    res = job_logs(t2, j2, -1, 1000, 10000);
    assert_string_equal(PQgetvalue(res, 0, 2), "70");
    assert_string_equal(PQgetvalue(res, 0, 5), "f");
    assert_string_equal(PQgetvalue(res, 0, 6), "t");
    PQclear(res);
    /* ... which a wait of two hours is not */
    res = job_logs(t2, j2, -1, 1000, 7200000);
    assert_string_equal(PQgetvalue(res, 0, 6), "f");
    PQclear(res);
    /* J3: truncated runs are complete (the refused lines were received) */
    res = job_logs(t1, j3, -1, 1000, 10000);
    assert_string_equal(PQgetvalue(res, 0, 2), "146");
    assert_string_equal(PQgetvalue(res, 0, 5), "t");
    PQclear(res);
    /* J4 runs: never complete nor expired */
    res = job_logs(t1, j4, -1, 1000, 0);
    assert_string_equal(PQgetvalue(res, 0, 0), "running");
    assert_string_equal(PQgetvalue(res, 0, 5), "f");
    assert_string_equal(PQgetvalue(res, 0, 6), "f");
    PQclear(res);
    /* and row-level security on the read models themselves */
    snprintf(sql, sizeof(sql),
             "BEGIN; SET LOCAL ROLE constellation_query; "
             "SET LOCAL constellation.tenant_id = '%s'",
             t2);
    assert_int_equal(pe_sql(pe.pg, sql), 0);
    assert_int_equal(count("SELECT count(*) FROM read.job_log_lines"), 70);
    assert_int_equal(count("SELECT count(*) FROM read.job_log_runs"), 1);
    assert_int_equal(count("SELECT count(*) FROM read.job_log_lines WHERE tenant_id <> '%s'", t2),
                     0);
    assert_int_equal(pe_sql(pe.pg, "ROLLBACK"), 0);
}

static int setup(void **state)
{
    (void)state;
    if (pe_setup() != 0)
        return -1;
    snprintf(logs_topic, sizeof(logs_topic), "%sjobs.logs", pe.prefix);
    cstl_kafka_topic_spec spec = {logs_topic, PE_PARTITIONS, 1, NULL};
    cstl_error err;
    if (cstl_kafka_admin_create_topics(pe.kadmin, &spec, 1, 30000, NULL, NULL, &err) != 0) {
        fprintf(stderr, "cannot create %s: %s\n", logs_topic, err.message);
        return -1;
    }
    cstl_uuid_v7_string(t1);
    cstl_uuid_v7_string(t2);
    cstl_uuid_v7_string(j1);
    cstl_uuid_v7_string(j2);
    cstl_uuid_v7_string(j3);
    cstl_uuid_v7_string(j4);
    cstl_uuid_v7_string(j5);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cstl_projector_free(projector);
    for (size_t i = 0; i < nrecs; i++)
        free(recs[i].line);
    if (pe.kadmin != NULL) {
        const char *topics[] = {logs_topic};
        cstl_kafka_admin_delete_topics(pe.kadmin, topics, 1, 30000, NULL);
    }
    pe_teardown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_projected_once_within_limits),
        cmocka_unit_test(test_rebuilt_and_direct_are_the_same),
        cmocka_unit_test(test_query_pages_and_completeness),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
