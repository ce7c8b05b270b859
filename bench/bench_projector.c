/*
 * bench_projector.c - the jobs projector next to the limit of the same PostgreSQL.
 *
 * Works in its own scratch database (cstl_test_<pid>_<random>, dropped at the end) and its own
 * scratch topics, so it never disturbs real data (tests/support/proj_env.h).
 *
 * 1. A recorded stream: CSTL_BENCH_JOBS jobs (20000) with 10 lifecycle events each (submitted,
 *    admitted, assigned, started, failed run, requeued, assigned, started, finished, succeeded),
 *    interleaved over a window of 1000 live jobs, generated from a fixed seed and produced
 *    transactionally (1000 events per transaction) before anything consumes it.
 * 2. Catch-up: the projector runtime (cstl_projector, the service's code path) consumes the stream
 *    from offset 0; events/s from its first committed batch to the last event applied.
 * 3. Anchor: the final rows of jobs, runs and job_history are copied with COPY (PQputCopyData)
 *    into empty copies of the tables (same columns, indexes and constraints) in one transaction;
 *    the anchor rate is the stream's events divided by that time.
 * 4. Lag: with the projector caught up, new jobs' events are produced at 1000 events/s for
 *    CSTL_BENCH_LAG_S seconds (10), 50 events per transaction every 50 ms; a poller sees each
 *    history row appear (an index on job_history(at) is added for it after step 2); lag = row
 *    seen - transaction committed. p50 and p99.
 *
 * CSTL_BENCH_BATCH_MAX and CSTL_BENCH_BATCH_MS set the projector's batch bounds (default: the
 * service's defaults).
 *
 * Needs CONSTELLATION_KAFKA_BROKERS and CONSTELLATION_PG_DSN (bench/run.sh sets them up).
 */
#include "../tests/support/job_stream.h"
#include "../tests/support/proj_env.h"

#include "projections/projector.h"

#include <pthread.h>
#include <stdatomic.h>

/* ---- lag poller ---------------------------------------------------------------------------- */

typedef struct lag_ev {
    int64_t at;        /* the event's time field, unique and increasing */
    int64_t committed; /* realtime us the transaction's commit returned */
    int64_t seen;      /* realtime us the poller saw the history row */
} lag_ev;

static lag_ev *lag;
static atomic_long nlag, nseen;
static atomic_int poll_stop;

static void *poller(void *arg)
{
    (void)arg;
    cstl_error err;
    cstl_pg_conn *c = cstl_pg_connect(pe.dsn, &pe_policy, &err);
    if (c == NULL)
        return NULL;
    long lo = 0; /* every event below lo was seen */
    while (!atomic_load(&poll_stop)) {
        long n = atomic_load(&nlag);
        while (lo < n && lag[lo].seen != 0)
            lo++;
        if (lo >= n) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        /* from the oldest unseen event on: batches of different partitions commit out of order */
        char since[32];
        snprintf(since, sizeof(since), "%" PRId64, lag[lo].at - 1);
        const char *params[] = {since};
        PGresult *res = NULL;
        if (cstl_pg_exec(c,
                         "SELECT (extract(epoch FROM at) * 1000000)::bigint AS us FROM "
                         "jobs_v1.job_history WHERE at > cstl_ts($1::bigint)",
                         1, params, &res, &err) != 0)
            break;
        int64_t now = js_real_us();
        for (int i = 0; i < PQntuples(res); i++) {
            int64_t us = strtoll(PQgetvalue(res, i, 0), NULL, 10);
            long a = lo, b = n - 1;
            while (a <= b) {
                long mid = (a + b) / 2;
                if (lag[mid].at == us) {
                    if (lag[mid].seen == 0) {
                        lag[mid].seen = now;
                        atomic_fetch_add(&nseen, 1);
                    }
                    break;
                }
                if (lag[mid].at < us)
                    a = mid + 1;
                else
                    b = mid - 1;
            }
        }
        PQclear(res);
        struct timespec ts = {0, 2 * 1000000L};
        nanosleep(&ts, NULL);
    }
    cstl_pg_close(c);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* ---- COPY anchor --------------------------------------------------------------------------- */

static double copy_tables(void)
{
    static const char *const tables[] = {"jobs", "runs", "job_history"};
    char sql[512];
    for (size_t i = 0; i < CSTL_ARRAY_LEN(tables); i++) {
        snprintf(sql, sizeof(sql),
                 "CREATE SCHEMA IF NOT EXISTS bench_copy; CREATE TABLE bench_copy.%s "
                 "(LIKE jobs_v1.%s INCLUDING ALL)",
                 tables[i], tables[i]);
        if (pe_sql(pe.pg, sql) != 0)
            return -1;
    }
    /* read the rows out first (text COPY format), so only the load is timed */
    PGconn *pg = cstl_pg_raw(pe.pg);
    char *data[3] = {0};
    size_t len[3] = {0}, rows = 0;
    for (size_t i = 0; i < CSTL_ARRAY_LEN(tables); i++) {
        snprintf(sql, sizeof(sql), "COPY jobs_v1.%s TO STDOUT", tables[i]);
        PGresult *res = PQexec(pg, sql);
        if (PQresultStatus(res) != PGRES_COPY_OUT) {
            fprintf(stderr, "bench_projector: %s", PQerrorMessage(pg));
            PQclear(res);
            return -1;
        }
        PQclear(res);
        size_t cap = 1 << 20;
        data[i] = cstl_xmalloc(cap);
        char *buf;
        int n;
        while ((n = PQgetCopyData(pg, &buf, 0)) > 0) {
            if (len[i] + (size_t)n > cap) {
                cap = (len[i] + (size_t)n) * 2;
                data[i] = cstl_xrealloc(data[i], cap);
            }
            memcpy(data[i] + len[i], buf, (size_t)n);
            len[i] += (size_t)n;
            rows++;
            PQfreemem(buf);
        }
        PQclear(PQgetResult(pg));
    }
    int64_t t0 = pe_now_ms();
    PQclear(PQexec(pg, "BEGIN"));
    for (size_t i = 0; i < CSTL_ARRAY_LEN(tables); i++) {
        snprintf(sql, sizeof(sql), "COPY bench_copy.%s FROM STDIN", tables[i]);
        PGresult *res = PQexec(pg, sql);
        int ok = PQresultStatus(res) == PGRES_COPY_IN;
        PQclear(res);
        for (size_t o = 0; ok && o < len[i]; o += 65536)
            ok =
                PQputCopyData(pg, data[i] + o, (int)(len[i] - o < 65536 ? len[i] - o : 65536)) == 1;
        ok = ok && PQputCopyEnd(pg, NULL) == 1;
        res = PQgetResult(pg);
        ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (!ok) {
            fprintf(stderr, "bench_projector: copy into %s: %s", tables[i], PQerrorMessage(pg));
            return -1;
        }
    }
    PQclear(PQexec(pg, "COMMIT"));
    double s = (double)(pe_now_ms() - t0) / 1000.0;
    for (int i = 0; i < 3; i++)
        free(data[i]);
    printf("  copy: %zu rows (jobs, runs, job_history) in %.2f s = %.0f rows/s\n", rows, s,
           (double)rows / s);
    return s;
}

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? strtol(v, NULL, 10) : def;
}

/* Phase 2: catch-up from offset 0; returns events/s, or -1. */
static double catch_up(cstl_projector **out, long total)
{
    cstl_projector_options o = {.projection = "jobs",
                                .brokers = pe.brokers,
                                .pg_dsn = pe.dsn,
                                .topic_prefix = pe.prefix,
                                .group_prefix = pe.prefix,
                                .batch_max = (int)env_long("CSTL_BENCH_BATCH_MAX", 0),
                                .batch_ms = (int)env_long("CSTL_BENCH_BATCH_MS", 0)};
    cstl_error err;
    cstl_projector *p = *out = cstl_projector_new(&o, &err);
    if (p == NULL || cstl_projector_start(p, &err) != 0) {
        fprintf(stderr, "bench_projector: %s\n", err.message);
        return -1;
    }
    int64_t first = 0, deadline = pe_now_ms() + 600000;
    uint64_t at_first = 0;
    while (cstl_projector_applied(p) < (uint64_t)total && pe_now_ms() < deadline) {
        if (first == 0 && cstl_projector_batches(p) > 0) {
            first = pe_now_ms();
            at_first = cstl_projector_applied(p);
        }
        usleep(1000);
    }
    int64_t last = pe_now_ms();
    if (cstl_projector_applied(p) < (uint64_t)total || first == 0 || last <= first) {
        fprintf(stderr, "bench_projector: the projector applied %" PRIu64 " of %ld events\n",
                cstl_projector_applied(p), total);
        return -1;
    }
    double rate = (double)((uint64_t)total - at_first) / ((double)(last - first) / 1000.0);
    printf("  projector: %ld events in %.2f s (after the first batch) = %.0f events/s, %" PRIu64
           " batches\n",
           total, (double)(last - first) / 1000.0, rate, cstl_projector_batches(p));
    return rate;
}

/* Phase 4: steady production at 1000 events/s for lag_s seconds; p50/p99 in ms, or -1. */
static int measure_lag(js_gen *g, int lag_s, double *p50, double *p99)
{
    if (pe_sql(pe.pg, "CREATE INDEX ON jobs_v1.job_history (at)") != 0)
        return -1;
    pe_events_clear();
    lag = cstl_xcalloc((size_t)lag_s * 1000 + 100, sizeof(lag_ev));
    pthread_t th;
    pthread_create(&th, NULL, poller, NULL);
    memset(g, 0, sizeof(*g));
    g->limit = 1L << 30;
    int64_t start = pe_now_ms();
    int rc = 0;
    for (long tick = 0; rc == 0 && tick < (long)lag_s * 20; tick++) {
        int64_t due = start + tick * 50, now = pe_now_ms();
        if (due > now)
            usleep((useconds_t)(due - now) * 1000);
        size_t from = pe.nevents;
        pe.clock_us = js_real_us();
        for (int k = 0; k < 50; k++)
            js_gen_one(g);
        for (size_t i = from; i < pe.nevents; i++) {
            json_t *a = json_object_get(pe.events[i].data, "at");
            if (a == NULL)
                a = json_object_get(pe.events[i].data, "started_at");
            if (a == NULL)
                a = json_object_get(pe.events[i].data, "finished_at");
            lag[i].at = a ? json_integer_value(a) : 0;
        }
        rc = pe_produce(from, pe.nevents, 50);
        int64_t c = js_real_us();
        for (size_t i = from; i < pe.nevents; i++)
            lag[i].committed = c;
        atomic_store(&nlag, (long)pe.nevents);
    }
    double produce_s = (double)(pe_now_ms() - start) / 1000.0;
    int64_t wait_until = pe_now_ms() + 30000;
    while (rc == 0 && atomic_load(&nseen) < atomic_load(&nlag) && pe_now_ms() < wait_until)
        usleep(10000);
    atomic_store(&poll_stop, 1);
    pthread_join(th, NULL);
    long n = atomic_load(&nlag), seen = 0;
    int64_t *lags = cstl_xcalloc((size_t)n + 1, sizeof(int64_t));
    for (long i = 0; i < n; i++)
        if (lag[i].seen > 0)
            lags[seen++] = lag[i].seen > lag[i].committed ? lag[i].seen - lag[i].committed : 0;
    qsort(lags, (size_t)seen, sizeof(int64_t), cmp_i64);
    long i50 = seen / 2, i99 = seen * 99 / 100, imax = seen - 1;
    *p50 = seen ? (double)lags[i50] / 1000.0 : -1;
    *p99 = seen ? (double)lags[i99] / 1000.0 : -1;
    printf("  lag: %ld events at %.0f events/s, %ld seen; p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
           n, (double)n / produce_s, seen, *p50, *p99, seen ? (double)lags[imax] / 1000.0 : -1);
    free(lags);
    if (seen != n)
        fprintf(stderr, "bench_projector: %ld of %ld lag events never appeared\n", n - seen, n);
    return rc == 0 && seen == n ? 0 : -1;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    long njobs = env_long("CSTL_BENCH_JOBS", 20000);
    long lag_s = env_long("CSTL_BENCH_LAG_S", 10);
    if (njobs < 100 || lag_s < 1 || lag_s > 600) {
        fprintf(stderr, "bench_projector: CSTL_BENCH_JOBS >= 100, 1 <= CSTL_BENCH_LAG_S <= 600\n");
        return 2;
    }
    if (pe_setup() != 0) {
        fprintf(stderr, "bench_projector: cannot set up the scratch database and topics\n");
        pe_teardown();
        return 1;
    }
    int status = 1;
    cstl_projector *p = NULL;
    js_init(20261122);

    /* 1. the recorded stream */
    js_gen *g = cstl_xcalloc(1, sizeof(*g));
    g->limit = njobs;
    while (g->nlive > 0 || g->started < g->limit)
        js_gen_one(g);
    long total = (long)pe.nevents;
    int64_t t0 = pe_now_ms();
    if (pe_produce(0, pe.nevents, 1000) != 0)
        goto out;
    printf("  stream: %ld events of %ld jobs produced in %.1f s (transactions of 1000)\n", total,
           njobs, (double)(pe_now_ms() - t0) / 1000.0);

    /* each timed phase starts right after a checkpoint, so neither pays for the other's dirty
     * pages or meets a checkpoint the other's WAL started */
    if (pe_sql(pe.pg, "CHECKPOINT") != 0)
        goto out;
    double rate = catch_up(&p, total); /* 2 */
    if (rate <= 0)
        goto out;
    /* the projection's tables vacuumed now rather than by autovacuum during the COPY */
    if (pe_sql(pe.pg, "VACUUM (ANALYZE) jobs_v1.jobs, jobs_v1.runs, jobs_v1.job_history") != 0 ||
        pe_sql(pe.pg, "CHECKPOINT") != 0)
        goto out;
    double copy_s = copy_tables(); /* 3 */
    if (copy_s <= 0)
        goto out;
    double copy_rate = (double)total / copy_s;
    double p50 = -1, p99 = -1;
    status = measure_lag(g, (int)lag_s, &p50, &p99) == 0 ? 0 : 1; /* 4 */

    printf("\n  %-34s %14s %14s\n", "", "measured", "target");
    printf("  %-34s %14.0f %14s\n", "projector catch-up (events/s)", rate, ">= 50000");
    printf("  %-34s %14.0f %14s\n", "COPY of the same rows (events/s)", copy_rate, "anchor");
    printf("  %-34s %13.0f%% %14s\n", "projector / COPY", 100.0 * rate / copy_rate, ">= 40%");
    printf("  %-34s %14.1f %14s\n", "lag p50 (ms)", p50, "");
    printf("  %-34s %14.1f %14s\n", "lag p99 (ms)", p99, "<= 100");
out:
    cstl_projector_free(p);
    free(g);
    free(lag);
    pe_teardown();
    return status;
}
