/*
 * End-to-end tests of the projector runtime against the real Kafka and PostgreSQL: a random
 * stream of job, fleet and tenant lifecycle events (CSTL_TEST_EVENTS, default 12000, about 1500
 * jobs; CSTL_TEST_EVENTS=50000 for the long run, which does not fit the 90 s budget), with the
 * scheduler's pending reasons on their own topic (some late, some followed by a tombstone),
 * produced transactionally while the projectors run and their PostgreSQL connections are killed;
 * the incrementally built read models must equal, row for row, both the models rebuilt from offset
 * 0 by the rebuild and the models built by applying the stream directly. Then the live projectors
 * must follow the switch to the rebuilt version, a poison record must land in the DLQ with its
 * reason headers while later events apply, and row-level security must hide other tenants' rows.
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

#define NPROJ 3
static const char *const names[NPROJ] = {"tenants", "jobs", "fleet"};
static cstl_projector *projectors[NPROJ];
static char tenants[8][CSTL_UUID_STRLEN + 1];

typedef struct gen_job {
    char id[CSTL_UUID_STRLEN + 1];
    char run[CSTL_UUID_STRLEN + 1];
    int tenant, worker, state, version, attempts;
    bool published; /* has a pending reason on the waiting topic */
} gen_job;

typedef struct gen_worker {
    char id[CSTL_UUID_STRLEN + 1];
    int version;
} gen_worker;

static unsigned seed = 12345;
static int rnd(int n)
{
    seed = seed * 1103515245u + 12345u;
    return (int)((seed >> 8) % (unsigned)n);
}

static json_t *at_now(void)
{
    pe.clock_us += 1000;
    return json_integer(pe.clock_us);
}

static const char *const wait_reasons[] = {"GPU_MODEL_ABSENT", "WAITING_FOR_GPUS",
                                           "HIGHER_PRIORITY_AHEAD", "TENANT_AT_FAIR_SHARE"};

/* A pending reason of j's current stay in the queue, as the scheduler publishes it. */
static void waiting(gen_job *j)
{
    char message[64];
    snprintf(message, sizeof(message), "%d GPUs free", rnd(4));
    pe.clock_us += 1000;
    pe_emit_waiting(j->id, tenants[j->tenant], j->version, j->attempts, wait_reasons[rnd(4)],
                    message, pe.clock_us);
    j->published = true;
}

/* Appends about n random lifecycle events to pe.events. */
static void generate(size_t n)
{
    gen_worker workers[8];
    for (int t = 0; t < 8; t++) {
        cstl_uuid_v7_string(tenants[t]);
        pe_emit("tenants", "TenantCreated", tenants[t], tenants[t], 1,
                json_pack("{s:s,s:s,s:s,s:o}", "tenant_id", tenants[t], "name", "t",
                          "contact_email", "a@b.c", "at", at_now()));
        char key[CSTL_UUID_STRLEN + 1];
        cstl_uuid_v7_string(key);
        pe_emit("tenants", "ApiKeyIssued", tenants[t], tenants[t], 2,
                json_pack("{s:s,s:s,s:s,s:s,s:n,s:o}", "tenant_id", tenants[t], "key_id", key,
                          "key_hash", "h", "role", "member", "expires_at", "at", at_now()));
    }
    for (int w = 0; w < 8; w++) {
        cstl_uuid_v7_string(workers[w].id);
        json_t *gpus = json_array();
        for (int g = 0; g < 4; g++) {
            char uuid[64];
            snprintf(uuid, sizeof(uuid), "GPU-%.36s-%d", workers[w].id, g);
            json_array_append_new(gpus,
                                  json_pack("{s:s,s:s,s:i,s:s}", "uuid", uuid, "model", "H100",
                                            "memory_mib", 81920, "compute_capability", "9.0"));
        }
        workers[w].version = 1;
        pe_emit("fleet", "WorkerRegistered", workers[w].id, tenants[0], 1,
                json_pack("{s:s,s:s,s:o,s:{},s:o}", "worker_id", workers[w].id, "hostname", "h",
                          "gpus", gpus, "labels", "at", at_now()));
    }
    size_t njobs = n / 8 + 1, live = 0;
    gen_job *jobs = cstl_xcalloc(njobs, sizeof(gen_job));
    while (pe.nevents < n) {
        gen_job *j;
        if (live < njobs && (live < 50 || rnd(8) == 0)) {
            j = &jobs[live++];
            cstl_uuid_v7_string(j->id);
            j->tenant = rnd(8);
            j->version = 1;
            pe_emit("jobs", "JobSubmitted", j->id, tenants[j->tenant], 1,
                    json_pack("{s:s,s:s,s:n,s:i,s:i,s:n,s:i,s:i,s:i,s:{s:s},s:{s:[s],s:{}},"
                              "s:s,s:o}",
                              "job_id", j->id, "tenant_id", tenants[j->tenant], "name", "gpu_count",
                              1, "min_gpu_memory_mib", 0, "gpu_model", "priority", rnd(3),
                              "runtime_limit_seconds", 60, "retry_limit", 1, "labels", "k", "v",
                              "parameters", "command", "x", "environment", "submitted_by", "u",
                              "at", at_now()));
            continue;
        }
        j = &jobs[rnd((int)live)];
        const char *jt = tenants[j->tenant];
        gen_worker *w = &workers[j->worker];
        char gpu[64];
        snprintf(gpu, sizeof(gpu), "GPU-%.36s-%d", w->id, rnd(4));
        switch (j->state) {
        case 0: /* submitted */
            if (rnd(10) == 0) {
                pe_emit("jobs", "JobRejected", j->id, jt, ++j->version,
                        json_pack("{s:s,s:s,s:n,s:o}", "job_id", j->id, "reason",
                                  "INSUFFICIENT_CREDITS", "message", "at", at_now()));
                j->state = 9;
            } else {
                pe_emit("jobs", "JobAdmitted", j->id, jt, ++j->version,
                        json_pack("{s:s,s:s,s:o}", "job_id", j->id, "reservation_id", "r", "at",
                                  at_now()));
                j->state = 1;
            }
            break;
        case 1: /* queued */
            if (rnd(3) == 0) {
                waiting(j);
                break;
            }
            if (rnd(4) == 0) {
                pe_emit("jobs", "JobPriorityChanged", j->id, jt, ++j->version,
                        json_pack("{s:s,s:i,s:i,s:o}", "job_id", j->id, "old_priority", 0,
                                  "priority", rnd(5), "at", at_now()));
                break;
            }
            j->worker = rnd(8);
            w = &workers[j->worker];
            snprintf(gpu, sizeof(gpu), "GPU-%.36s-%d", w->id, rnd(4));
            cstl_uuid_v7_string(j->run);
            pe_emit("fleet", "GpusReserved", w->id, tenants[0], ++w->version,
                    json_pack("{s:s,s:s,s:[s],s:o}", "worker_id", w->id, "job_id", j->id,
                              "gpu_uuids", gpu, "at", at_now()));
            pe_emit("jobs", "JobAssigned", j->id, jt, ++j->version,
                    json_pack("{s:s,s:s,s:s,s:[s],s:o}", "job_id", j->id, "worker_id", w->id,
                              "run_id", j->run, "gpu_uuids", gpu, "at", at_now()));
            j->attempts++;
            j->state = 2;
            /* a scheduler that decided before it read the JobAssigned; then the tombstone */
            if (j->published && rnd(4) == 0) {
                j->attempts--;
                waiting(j);
                j->attempts++;
            }
            if (j->published && rnd(3) != 0) {
                pe_emit_tombstone(j->id);
                j->published = false;
            }
            break;
        case 2: /* assigned */
            pe_emit("jobs", "RunStarted", j->id, jt, ++j->version,
                    json_pack("{s:s,s:s,s:s,s:o}", "job_id", j->id, "run_id", j->run, "worker_id",
                              w->id, "started_at", at_now()));
            j->state = 3;
            break;
        case 3: { /* running */
            int ok = rnd(3) != 0;
            pe_emit("jobs", "RunFinished", j->id, jt, ++j->version,
                    json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:o,s:i,s:i}", "job_id", j->id, "run_id",
                              j->run, "worker_id", w->id, "outcome", ok ? "SUCCEEDED" : "FAILED",
                              "exit_code", ok ? 0 : 1, "failure_reason", "NONZERO_EXIT",
                              "finished_at", at_now(), "gpu_seconds", rnd(1000), "log_lines",
                              ok ? 120 : 3));
            pe_emit("fleet", "GpusReleased", w->id, tenants[0], ++w->version,
                    json_pack("{s:s,s:s,s:[s],s:o}", "worker_id", w->id, "job_id", j->id,
                              "gpu_uuids", gpu, "at", at_now()));
            if (ok) {
                pe_emit(
                    "jobs", "JobSucceeded", j->id, jt, ++j->version,
                    json_pack("{s:s,s:s,s:o}", "job_id", j->id, "run_id", j->run, "at", at_now()));
                j->state = 9;
            } else if (j->attempts < 2) {
                pe_emit("jobs", "JobRequeued", j->id, jt, ++j->version,
                        json_pack("{s:s,s:s,s:s,s:i,s:o}", "job_id", j->id, "run_id", j->run,
                                  "reason", "nonzero_exit", "retries_left", 0, "at", at_now()));
                j->state = 1;
            } else {
                pe_emit("jobs", "JobFailed", j->id, jt, ++j->version,
                        json_pack("{s:s,s:s,s:s,s:s,s:i,s:o}", "job_id", j->id, "run_id", j->run,
                                  "reason", "NONZERO_EXIT", "message", "exit 1", "attempts",
                                  j->attempts, "at", at_now()));
                j->state = 9;
            }
            break;
        }
        default:
            if (rnd(20) == 0)
                pe_emit("fleet", "GpuDrained", w->id, tenants[0], ++w->version,
                        json_pack("{s:s,s:s,s:s,s:o}", "worker_id", w->id, "gpu_uuid", gpu,
                                  "reason", "maintenance", "at", at_now()));
            break;
        }
    }
    free(jobs);
}

static cstl_projector *start_projector(const char *name)
{
    cstl_projector_options o = {.projection = name,
                                .brokers = pe.brokers,
                                .pg_dsn = pe.dsn,
                                .topic_prefix = pe.prefix,
                                .group_prefix = pe.prefix,
                                .batch_max = 1000,
                                .batch_ms = 50};
    cstl_error err;
    cstl_projector *p = cstl_projector_new(&o, &err);
    if (p == NULL || cstl_projector_start(p, &err) != 0)
        fail_msg("cannot start projector %s: %s", name, err.message);
    return p;
}

/* Sum of the end offsets of a projection's topics. */
static int64_t end_offsets(const char *name)
{
    const cstl_projection *proj = cstl_projection_find(name);
    cstl_error err;
    cstl_kafka_consumer *c =
        cstl_kafka_consumer_new(pe.conf, "cstl-test-watermarks", NULL, NULL, &err);
    assert_non_null(c);
    int64_t sum = 0;
    for (const char *const *ctx = proj->contexts; *ctx; ctx++) {
        char topic[160];
        snprintf(topic, sizeof(topic), "%s%s.events", pe.prefix, *ctx);
        for (int p = 0; p < PE_PARTITIONS; p++) {
            int64_t lo, hi;
            assert_int_equal(cstl_kafka_consumer_watermarks(c, topic, p, &lo, &hi, 10000, &err), 0);
            sum += hi;
        }
    }
    cstl_kafka_consumer_close(c, NULL);
    return sum;
}

/* Waits until every live projector reports no lag twice in a row on version v. */
static void wait_caught_up(int v, int timeout_ms)
{
    int64_t deadline = pe_now_ms() + timeout_ms;
    for (int i = 0; i < NPROJ; i++) {
        int zero = 0;
        while (zero < 3 && pe_now_ms() < deadline) {
            usleep(200 * 1000);
            zero = cstl_projector_lag(projectors[i]) == 0 ? zero + 1 : 0;
        }
        if (zero < 3)
            fail_msg("projection %s_v%d still lags by %" PRId64, names[i], v,
                     cstl_projector_lag(projectors[i]));
        (void)end_offsets;
    }
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

static void test_incremental_equals_rebuilt_and_direct(void **state)
{
    (void)state;
    const char *env = getenv("CSTL_TEST_EVENTS");
    size_t n = env ? (size_t)strtoul(env, NULL, 10) : 12000;
    generate(n);
    int64_t t0 = pe_now_ms();
    for (int i = 0; i < NPROJ; i++)
        projectors[i] = start_projector(names[i]);
    /* produce in slices, killing the projectors' connections now and then */
    size_t slice = pe.nevents / 5 + 1;
    for (size_t from = 0; from < pe.nevents; from += slice) {
        size_t to = from + slice < pe.nevents ? from + slice : pe.nevents;
        assert_int_equal(pe_produce(from, to, 500), 0);
        pe_sql(pe.admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                         "application_name = 'constellation-projector'");
    }
    int64_t t1 = pe_now_ms();
    wait_caught_up(1, 90000);
    int64_t t2 = pe_now_ms();
    fprintf(stderr, "%zu events: produced in %" PRId64 " ms, caught up %" PRId64 " ms later\n",
            pe.nevents, t1 - t0, t2 - t1);
    long jobs = pe_long(pe.pg, "SELECT count(*) FROM jobs_v1.jobs");
    long submitted = 0;
    for (size_t i = 0; i < pe.nevents; i++)
        submitted += strcmp(pe.events[i].type, "JobSubmitted") == 0;
    assert_int_equal(jobs, submitted);
    /* queue positions as read.jobs counts them are the window definition's, per tenant */
    assert_int_equal(pe_long(pe.pg, "SELECT count(*) FROM read.jobs j LEFT JOIN (SELECT job_id, "
                                    "row_number() OVER (PARTITION BY tenant_id ORDER BY priority "
                                    "DESC, submitted_at, job_id) AS pos FROM jobs_v1.jobs WHERE "
                                    "state = 'queued') q USING (job_id) "
                                    "WHERE j.queue_position IS DISTINCT FROM q.pos"),
                     0);
    /* a queued job has the pending reason kept for its stay in the queue, or its event's */
    assert_int_equal(pe_long(pe.pg, "SELECT count(*) FROM jobs_v1.jobs j LEFT JOIN "
                                    "jobs_v1.job_waiting w ON w.job_id = j.job_id AND "
                                    "w.attempts = j.attempts WHERE j.state = 'queued' AND "
                                    "j.reason IS DISTINCT FROM coalesce(w.reason, CASE WHEN "
                                    "j.attempts = 0 THEN 'waiting_for_gpus' ELSE 'requeued' END)"),
                     0);
    assert_true(pe_long(pe.pg, "SELECT count(*) FROM jobs_v1.jobs j JOIN jobs_v1.job_waiting w "
                               "USING (job_id) WHERE j.state = 'queued' AND "
                               "j.attempts = w.attempts") > 10);
    /* and no job out of the queue has one */
    assert_int_equal(pe_long(pe.pg, "SELECT count(*) FROM jobs_v1.jobs WHERE state <> 'queued' "
                                    "AND reason IN ('gpu_model_absent', 'waiting_for_gpus', "
                                    "'higher_priority_ahead', 'tenant_at_fair_share')"),
                     0);
    /* and the queued jobs per tenant and priority that they sum are exact */
    assert_int_equal(pe_long(pe.pg, "SELECT count(*) FROM ((SELECT tenant_id, priority, count(*) "
                                    "FROM jobs_v1.jobs WHERE state = 'queued' GROUP BY 1, 2) "
                                    "EXCEPT ALL SELECT * FROM jobs_v1.jobs_queue_counts) x"),
                     0);
    assert_int_equal(pe_long(pe.pg, "SELECT count(*) FROM (SELECT * FROM jobs_v1.jobs_queue_counts "
                                    "EXCEPT ALL SELECT tenant_id, priority, count(*) FROM "
                                    "jobs_v1.jobs WHERE state = 'queued' GROUP BY 1, 2) x"),
                     0);

    /* rebuild each projection into v2 while the live projectors run, then compare */
    for (int i = 0; i < NPROJ; i++) {
        cstl_rebuild_options o = {.projection = names[i],
                                  .brokers = pe.brokers,
                                  .pg_dsn = pe.dsn,
                                  .topic_prefix = pe.prefix};
        cstl_rebuild_report rep;
        cstl_error err;
        int64_t r0 = pe_now_ms();
        if (cstl_projection_rebuild(&o, &rep, &err) != 0)
            fail_msg("rebuild %s: %s", names[i], err.message);
        assert_int_equal(rep.new_version, 2);
        char v1[32], v2[32], v3[32], sql[128];
        snprintf(v1, sizeof(v1), "%s_v1", names[i]);
        snprintf(v2, sizeof(v2), "%s_v2", names[i]);
        snprintf(v3, sizeof(v3), "%s_v9", names[i]);
        int64_t r1 = pe_now_ms();
        assert_same(v1, v2);
        int64_t r2 = pe_now_ms();
        /* and applied directly, in the generated order, in one transaction */
        snprintf(sql, sizeof(sql), "SELECT projection_create_version('%s', 9)", names[i]);
        assert_int_equal(pe_sql(pe.pg, sql), 0);
        assert_int_equal(pe_apply_direct(v3, 0, pe.nevents), 0);
        int64_t r3 = pe_now_ms();
        assert_same(v1, v3);
        fprintf(stderr,
                "%s: rebuilt in %" PRId64 " ms, compared in %" PRId64 " ms, applied directly in "
                "%" PRId64 " ms, compared in %" PRId64 " ms\n",
                names[i], r1 - r0, r2 - r1, r3 - r2, pe_now_ms() - r3);
    }
}

static void test_projectors_follow_the_switch(void **state)
{
    (void)state;
    size_t from = pe.nevents;
    char job[CSTL_UUID_STRLEN + 1];
    cstl_uuid_v7_string(job);
    pe_emit("jobs", "JobSubmitted", job, tenants[1], 1,
            json_pack("{s:s,s:s,s:n,s:i,s:i,s:n,s:i,s:i,s:i,s:{},s:{s:[],s:{}},s:s,s:o}", "job_id",
                      job, "tenant_id", tenants[1], "name", "gpu_count", 1, "min_gpu_memory_mib", 0,
                      "gpu_model", "priority", 0, "runtime_limit_seconds", 60, "retry_limit", 0,
                      "labels", "parameters", "command", "environment", "submitted_by", "u", "at",
                      at_now()));
    assert_int_equal(pe_produce(from, pe.nevents, 10), 0);
    wait_caught_up(2, 60000);
    char sql[200];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM read.jobs WHERE job_id = '%s'", job);
    assert_int_equal(pe_long(pe.pg, sql), 1);
}

static void test_poison_record_goes_to_the_dlq(void **state)
{
    (void)state;
    char topic[160], dlq[160];
    snprintf(topic, sizeof(topic), "%sjobs.events", pe.prefix);
    snprintf(dlq, sizeof(dlq), "%sdlq", pe.prefix);
    cstl_error err;
    assert_int_equal(cstl_kafka_producer_begin(pe.txn, &err), 0);
    assert_int_equal(
        cstl_kafka_producer_send(pe.txn, topic, 0, "k", 1, "garbage", 7, NULL, NULL, NULL, &err),
        0);
    assert_int_equal(cstl_kafka_producer_commit(pe.txn, 30000, &err), 0);
    /* an event for a job nobody submitted: decodes, but cannot be applied */
    size_t from = pe.nevents;
    char ghost[CSTL_UUID_STRLEN + 1], job[CSTL_UUID_STRLEN + 1];
    cstl_uuid_v7_string(ghost);
    cstl_uuid_v7_string(job);
    pe_emit("jobs", "JobAdmitted", ghost, tenants[2], 2,
            json_pack("{s:s,s:s,s:o}", "job_id", ghost, "reservation_id", "r", "at", at_now()));
    pe_emit("jobs", "JobSubmitted", job, tenants[2], 1,
            json_pack("{s:s,s:s,s:n,s:i,s:i,s:n,s:i,s:i,s:i,s:{},s:{s:[],s:{}},s:s,s:o}", "job_id",
                      job, "tenant_id", tenants[2], "name", "gpu_count", 1, "min_gpu_memory_mib", 0,
                      "gpu_model", "priority", 0, "runtime_limit_seconds", 60, "retry_limit", 0,
                      "labels", "parameters", "command", "environment", "submitted_by", "u", "at",
                      at_now()));
    assert_int_equal(pe_produce(from, pe.nevents, 10), 0);
    wait_caught_up(2, 60000);
    char sql[200];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM read.jobs WHERE job_id = '%s'", job);
    assert_int_equal(pe_long(pe.pg, sql), 1);

    cstl_kafka_consumer *c = cstl_kafka_consumer_new(pe.conf, "cstl-test-dlq", NULL, NULL, &err);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, dlq, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(cstl_kafka_consumer_assign(c, l, &err), 0);
    rd_kafka_topic_partition_list_destroy(l);
    int garbage = 0, ghosts = 0;
    int64_t deadline = pe_now_ms() + 20000;
    while ((garbage == 0 || ghosts == 0) && pe_now_ms() < deadline) {
        rd_kafka_message_t *m = NULL;
        cstl_kafka_consumer_poll(c, 200, &m, &err);
        if (m == NULL)
            continue;
        rd_kafka_headers_t *h = NULL;
        const void *v;
        size_t len;
        assert_int_equal(rd_kafka_message_headers(m, &h), 0);
        assert_int_equal(rd_kafka_header_get_last(h, "cstl_dlq_reason", &v, &len), 0);
        char reason[1200];
        snprintf(reason, sizeof(reason), "%.*s", (int)len, (const char *)v);
        assert_int_equal(rd_kafka_header_get_last(h, "cstl_dlq_topic", &v, &len), 0);
        assert_memory_equal(v, topic, strlen(topic));
        assert_int_equal(rd_kafka_header_get_last(h, "cstl_dlq_projection", &v, &len), 0);
        assert_int_equal(rd_kafka_header_get_last(h, "cstl_dlq_partition", &v, &len), 0);
        assert_int_equal(rd_kafka_header_get_last(h, "cstl_dlq_offset", &v, &len), 0);
        if (m->len == 7 && memcmp(m->payload, "garbage", 7) == 0)
            garbage++;
        else if (strstr(reason, ghost) != NULL)
            ghosts++;
        rd_kafka_message_destroy(m);
    }
    cstl_kafka_consumer_close(c, NULL);
    assert_true(garbage >= 1);
    assert_true(ghosts >= 1);
    assert_true(cstl_projector_dead_lettered(projectors[1]) >= 2);
}

static void test_rls_hides_other_tenants(void **state)
{
    (void)state;
    static const char *const tables[] = {"tenants", "api_keys",    "jobs",
                                         "runs",    "job_history", "gpu_assignments"};
    char sql[512];
    snprintf(sql, sizeof(sql),
             "BEGIN; SET LOCAL ROLE constellation_query; "
             "SET LOCAL constellation.tenant_id = '%s'",
             tenants[3]);
    assert_int_equal(pe_sql(pe.pg, sql), 0);
    for (size_t i = 0; i < CSTL_ARRAY_LEN(tables); i++) {
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FILTER (WHERE tenant_id <> '%s') * 1000000 "
                 "+ count(*) FROM read.%s",
                 tenants[3], tables[i]);
        long v = pe_long(pe.pg, sql);
        if (v < 1 || v >= 1000000)
            fail_msg("read.%s through constellation_query: %ld", tables[i], v);
    }
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM read.gpu_state WHERE job_id IS NOT NULL "
             "AND NOT held_by_tenant");
    assert_int_equal(pe_long(pe.pg, sql), 0);
    assert_true(pe_long(pe.pg, "SELECT count(*) FROM read.gpu_state") > 0);
    assert_int_equal(pe_sql(pe.pg, "SET LOCAL constellation.tenant_id = ''"), 0);
    assert_int_equal(pe_long(pe.pg, "SELECT count(*) FROM read.jobs"), 0);
    assert_int_equal(pe_sql(pe.pg, "ROLLBACK"), 0);
}

static int setup(void **state)
{
    (void)state;
    return pe_setup();
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NPROJ; i++)
        cstl_projector_free(projectors[i]);
    pe_teardown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_incremental_equals_rebuilt_and_direct),
        cmocka_unit_test(test_projectors_follow_the_switch),
        cmocka_unit_test(test_poison_record_goes_to_the_dlq),
        cmocka_unit_test(test_rls_hides_other_tenants),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
