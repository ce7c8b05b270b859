/*
 * test_query_stream.c - GET /v1/stream against the real local Kafka and PostgreSQL: the query API
 * runs in-process on throwaway topics and a throwaway database (tests/support/proj_env.h); events
 * are produced transactionally like the command handler does, and read back through a plain
 * socket. Checks: a tenant sees its job events and the fleet's (without job ids) but not another
 * tenant's; a dropped connection resumed with Last-Event-ID gets exactly the missed events and
 * then the live ones; heartbeats; a bad Last-Event-ID is 400; the stream limit answers 503.
 */
#include "platform/auth.h"
#include "platform/config.h"
#include "platform/http.h"
#include "queries/query.h"
#include "tests/support/proj_env.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>

#include <cmocka.h>

static const char *tenant_a = "01890a5d-ac96-774b-bcce-b302099a8057";
static const char *tenant_b = "01890a5d-ac96-774b-bcce-b302099a8058";
static const char *fleet_tenant = "01890a5d-ac96-774b-bcce-b302099a8050";

static struct {
    cstl_config cfg;
    cstl_pg_pool *pool;
    cstl_http_server *http;
    cstl_query_api *api;
    char key[CSTL_API_KEY_LEN + 1];
    unsigned port;
} q;

typedef struct conn {
    int fd;
    char buf[1 << 16];
    size_t len;
} conn;

/* Opens a stream. HTTP/1.0 (http10) gets the body unchunked, ended by the server closing. */
static int conn_open_buf(conn *c, const char *last_id, int rcvbuf, bool http10)
{
    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)q.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        return -1;
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET /v1/stream HTTP/1.%c\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s%s%s"
                     "Accept: text/event-stream\r\n\r\n",
                     http10 ? '0' : '1', q.key, last_id ? "Last-Event-ID: " : "",
                     last_id ? last_id : "", last_id ? "\r\n" : "");
    return send(c->fd, req, (size_t)n, 0) == n ? 0 : -1;
}

static int conn_open(conn *c, const char *last_id)
{
    return conn_open_buf(c, last_id, 0, false);
}

/* Reads until needle appears in the buffer or timeout_ms passes; returns 1 when found. */
static int conn_wait(conn *c, const char *needle, int timeout_ms)
{
    int64_t deadline = pe_now_ms() + timeout_ms;
    while (strstr(c->buf, needle) == NULL) {
        int64_t left = deadline - pe_now_ms();
        if (left <= 0 || c->len + 1 >= sizeof(c->buf))
            return 0;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
        if (n <= 0)
            return strstr(c->buf, needle) != NULL;
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
    }
    return 1;
}

/*
 * Reads a long stream without keeping it: counts the occurrences of needle, and returns 1 once
 * stop has been read (stop NULL: once needle was counted want times), 0 on timeout or end.
 */
static int
conn_scan(conn *c, const char *needle, const char *stop, int want, int *seen, int timeout_ms)
{
    size_t nlen = strlen(needle), slen = stop != NULL ? strlen(stop) : 0;
    size_t keep = (nlen > slen ? nlen : slen) - 1;
    int64_t deadline = pe_now_ms() + timeout_ms;
    *seen = 0;
    c->len = 0;
    c->buf[0] = '\0';
    for (;;) {
        size_t kept = c->len < keep ? c->len : keep;
        memmove(c->buf, c->buf + c->len - kept, kept);
        c->len = kept;
        c->buf[c->len] = '\0';
        int64_t left = deadline - pe_now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
        if (n <= 0)
            return 0;
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
        /* an occurrence ending inside the kept bytes was counted by the previous round */
        for (const char *h = strstr(c->buf, needle); h != NULL; h = strstr(h + 1, needle))
            if (h + nlen > c->buf + kept)
                (*seen)++;
        if (stop != NULL ? strstr(c->buf, stop) != NULL : *seen >= want)
            return 1;
    }
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* The id of the last event in the buffer that contains marker. */
static void last_id_before(const conn *c, const char *marker, char *out, size_t n)
{
    const char *m = strstr(c->buf, marker);
    assert_non_null(m);
    const char *id = NULL;
    for (const char *p = strstr(c->buf, "id: "); p && p < m; p = strstr(p + 1, "id: "))
        id = p + 4;
    if (id == NULL) {
        fail_msg("no event id before \"%s\"", marker);
        return;
    }
    size_t len = strcspn(id, "\r\n");
    assert_true(len < n);
    memcpy(out, id, len);
    out[len] = '\0';
}

/* 1 when needle occurs in c's buffer before marker. */
static int seen_before(const conn *c, const char *needle, const char *marker)
{
    const char *n = strstr(c->buf, needle), *m = strstr(c->buf, marker);
    return n != NULL && m != NULL && n < m;
}

static void submit(const char *job, const char *tenant, const char *name)
{
    json_t *data = json_pack(
        "{s:s,s:s,s:s,s:i,s:i,s:n,s:i,s:i,s:i,s:{},s:{s:[s],s:{}},s:s,s:I}", "job_id", job,
        "tenant_id", tenant, "name", name, "gpu_count", 1, "min_gpu_memory_mib", 0, "gpu_model",
        "priority", 0, "runtime_limit_seconds", 60, "retry_limit", 0, "labels", "parameters",
        "command", "true", "environment", "submitted_by", "a", "at", (json_int_t)2000000);
    pe_emit("jobs", "JobSubmitted", job, tenant, 1, data);
}

static void produce_new(size_t *from)
{
    assert_int_equal(pe_produce(*from, pe.nevents, 10), 0);
    *from = pe.nevents;
}

static int setup(void **state)
{
    (void)state;
    if (pe_setup() != 0)
        return -1;
    cstl_config_defaults(&q.cfg);
    snprintf(q.cfg.kafka_brokers, sizeof(q.cfg.kafka_brokers), "%s", pe.brokers);
    q.cfg.sse_heartbeat_s = 1;
    q.cfg.sse_max_streams = 3;
    char dsn[1300];
    snprintf(dsn, sizeof(dsn), "%s user=constellation_query", pe.dsn);
    cstl_error err;
    q.pool = cstl_pg_pool_new(dsn, NULL, &err);
    char key_id[37], hash[65], sql[512];
    assert_int_equal(cstl_api_key_generate(q.key, sizeof(q.key), key_id, hash), 0);
    snprintf(sql, sizeof(sql),
             "INSERT INTO read.api_keys (key_id, tenant_id, key_hash, role, issued_at) VALUES "
             "('%s', '%s', '%s', 'viewer', now())",
             key_id, tenant_a, hash);
    assert_int_equal(pe_sql(pe.pg, sql), 0);
    q.http = cstl_http_server_new(NULL, &err);
    q.api = cstl_query_api_new(&q.cfg, q.pool, &err);
    assert_non_null(q.http);
    assert_non_null(q.api);
    char jobs[200], fleet[200];
    snprintf(jobs, sizeof(jobs), "%sjobs.events", pe.prefix);
    snprintf(fleet, sizeof(fleet), "%sfleet.events", pe.prefix);
    cstl_query_api_set_topics(q.api, jobs, fleet, NULL);
    assert_int_equal(cstl_query_api_start(q.api, q.http, &err), 0);
    assert_int_equal(cstl_http_server_start(q.http, &err), 0);
    q.port = cstl_http_server_port(q.http);
    /* wait for the hub to be assigned */
    for (int i = 0; i < 300; i++) {
        conn c;
        assert_int_equal(conn_open(&c, NULL), 0);
        int ok = conn_wait(&c, "\r\n\r\n", 2000) && strstr(c.buf, " 200 ") != NULL;
        close(c.fd);
        if (ok)
            return 0;
        usleep(100000);
    }
    return -1;
}

static int teardown(void **state)
{
    (void)state;
    cstl_http_server_stop(q.http, 1000);
    cstl_http_server_free(q.http);
    cstl_query_api_free(q.api);
    cstl_pg_pool_free(q.pool);
    pe_teardown();
    return 0;
}

static void test_live_resume_heartbeat(void **state)
{
    (void)state;
    size_t from = pe.nevents;
    conn a;
    assert_int_equal(conn_open(&a, NULL), 0);
    assert_true(conn_wait(&a, ": connected", 5000));
    submit("job-a1", tenant_a, "first");
    submit("job-b1", tenant_b, "secret-of-b");
    pe_emit("fleet", "GpusReserved", "worker-1", fleet_tenant, 1,
            json_pack("{s:s,s:s,s:[s],s:I}", "worker_id", "worker-1", "job_id", "job-b1",
                      "gpu_uuids", "GPU-1", "at", (json_int_t)1));
    submit("job-a2", tenant_a, "second");
    produce_new(&from);
    assert_true(conn_wait(&a, "\"second\"", 15000));
    assert_true(conn_wait(&a, "fleet.GpusReserved", 5000));
    assert_non_null(strstr(a.buf, "event: jobs.JobSubmitted"));
    assert_null(strstr(a.buf, "secret-of-b"));
    assert_null(strstr(a.buf, "job-b1")); /* neither the job event nor the fleet event's job id */
    /* drop the connection, then resume from the id of the event carrying "first" (its id line
     * precedes its data line) */
    char last[2048];
    last_id_before(&a, "\"first\"", last, sizeof(last));
    close(a.fd);
    submit("job-a3", tenant_a, "missed");
    produce_new(&from);
    usleep(300000);
    conn r;
    assert_int_equal(conn_open(&r, last), 0);
    assert_true(conn_wait(&r, "\"missed\"", 15000));
    submit("job-a4", tenant_a, "after-resume");
    produce_new(&from);
    assert_true(conn_wait(&r, "\"after-resume\"", 15000));
    /* resumed right after "first": second, the fleet event, missed, after-resume, each once */
    assert_int_equal(count(r.buf, "\"first\""), 0);
    /* events on other partitions may have come before "first": each is seen exactly once */
    assert_int_equal(count(r.buf, "event: fleet.GpusReserved") +
                         seen_before(&a, "event: fleet.GpusReserved", "\"first\""),
                     1);
    assert_int_equal(count(r.buf, "\"second\"") + seen_before(&a, "\"second\"", "\"first\""), 1);
    assert_int_equal(count(r.buf, "\"missed\""), 1);
    assert_int_equal(count(r.buf, "\"after-resume\""), 1);
    assert_null(strstr(r.buf, "secret-of-b"));
    assert_true(conn_wait(&r, ": heartbeat", 5000));
    close(r.fd);
}

static void test_bad_id_and_limit(void **state)
{
    (void)state;
    conn c;
    assert_int_equal(conn_open(&c, "v1.x9-1"), 0);
    assert_true(conn_wait(&c, "\r\n\r\n", 5000));
    assert_non_null(strstr(c.buf, " 400 "));
    close(c.fd);
    /* closed streams are noticed at the next heartbeat (1 s) */
    for (int i = 0; i < 50 && cstl_http_stream_count(q.http) > 0; i++)
        usleep(100000);
    conn s[4];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(conn_open(&s[i], NULL), 0);
        assert_true(conn_wait(&s[i], ": connected", 5000));
    }
    assert_int_equal(conn_open(&s[3], NULL), 0);
    assert_true(conn_wait(&s[3], "\r\n\r\n", 5000));
    assert_non_null(strstr(s[3].buf, " 503 "));
    for (int i = 0; i < 4; i++)
        close(s[i].fd);
}

/* A client that stops reading falls behind by more than its buffer: it gets "event: resume" and
 * the stream ends, while the server carries on. The server's send buffer of the slow stream is
 * bounded (CONSTELLATION_SSE_SEND_BUFFER_BYTES) and the slow client reads only after a second,
 * reading client has seen the last event, so that the hub has offered every event to the slow
 * stream while nobody drained it, however fast the server runs. */
static void test_slow_client(void **state)
{
    (void)state;
    enum { EVENTS = 1500 }; /* ~1.6 MB: far more than 16 events plus both bounded socket buffers */
    q.cfg.sse_buffer_events = 16;
    q.cfg.sse_send_buffer_bytes = 16384;
    conn slow;
    assert_int_equal(conn_open_buf(&slow, NULL, 2048, true), 0);
    assert_true(conn_wait(&slow, ": connected", 5000));
    q.cfg.sse_buffer_events = 1024 + EVENTS;
    q.cfg.sse_send_buffer_bytes = 0;
    conn probe; /* unchunked, so that no chunk header splits what it counts */
    assert_int_equal(conn_open_buf(&probe, NULL, 0, true), 0);
    assert_true(conn_wait(&probe, ": connected", 5000));
    q.cfg.sse_buffer_events = 1024;
    size_t from = pe.nevents;
    char name[1100], job[64];
    for (int i = 0; i < EVENTS; i++) {
        snprintf(job, sizeof(job), "job-slow-%d", i);
        snprintf(name, sizeof(name), "slow-%d-%01000d", i, 0);
        submit(job, tenant_a, name);
    }
    assert_int_equal(pe_produce(from, pe.nevents, 500), 0);
    /* the hub has dispatched every event (to both streams) once the probe has read them all */
    int seen = 0;
    assert_true(conn_scan(&probe, "\"slow-", NULL, EVENTS, &seen, 60000));
    assert_int_equal(seen, EVENTS);
    close(probe.fd);
    /* now read the slow stream: what was buffered, then the resume event; it was cut short */
    int got = conn_scan(&slow, "\"slow-", "event: resume", 0, &seen, 30000);
    if (!got)
        fprintf(stderr, "slow stream: %d events, no resume event; tail: %.300s\n", seen,
                slow.buf + (slow.len > 300 ? slow.len - 300 : 0));
    assert_true(got);
    assert_true(seen < EVENTS);
    /* and the server ends the stream after it */
    char rest[4096];
    int64_t until = pe_now_ms() + 10000;
    ssize_t r = 1;
    while (r > 0 && pe_now_ms() < until) {
        struct pollfd p = {.fd = slow.fd, .events = POLLIN};
        if (poll(&p, 1, 1000) > 0)
            r = recv(slow.fd, rest, sizeof(rest), 0);
    }
    assert_int_equal(r, 0);
    close(slow.fd);
    conn ok;
    assert_int_equal(conn_open(&ok, NULL), 0);
    assert_true(conn_wait(&ok, ": connected", 5000));
    close(ok.fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_live_resume_heartbeat),
        cmocka_unit_test(test_slow_client),
        cmocka_unit_test(test_bad_id_and_limit),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
