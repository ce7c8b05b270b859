/*
 * logs.c - GET /v1/jobs/{id}/logs: a job's output lines as Server-Sent Events, read from the
 * job_logs read model (query.job_logs), following the job while it runs and ending, with an
 * "end" event, once it finished and every line of it was sent.
 *
 * Each line's event id is its position (the offset of its record on constellation.jobs.logs;
 * all of a job's lines are on one partition and become visible in that order), so a client
 * resumes after the last id it saw. The handler reads the first page itself (404, errors), then
 * a reader thread reads the next pages of every stream: when the hub (stream.c) reads a record of
 * the job on the jobs events or logs topic, the stream is marked to read again, with the hub's
 * position on that partition as what the read models must have applied before the stream can
 * tell it is up to date (query.job_logs returns the projectors' offsets in the same snapshot as
 * the lines). While they are behind, the stream reads again after a short backoff; a finished
 * job whose lines are still missing is read again until they arrive or the wait
 * (CONSTELLATION_JOB_LOGS_END_WAIT_MS after the job finished) runs out.
 *
 * A stream holds at most one page of frames: the next page is read once the client has taken
 * the previous one, so a slow client only slows itself.
 *
 * Threads: HTTP threads run the handler and the producer (log_read); the hub thread calls
 * query_logs_hint; one reader thread makes every later read on its own connection. logs->lock
 * guards the client list and every client's state; wakes happen outside it.
 */
#include "platform/kafka.h"
#include "platform/log.h"
#include "queries/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOGS_PAGE        256     /* lines per read */
#define LOGS_PAGE_BYTES  1048576 /* and bytes of line text per read, beyond its first line */
#define LOGS_ID_MAX      128     /* bytes of a job id */
#define BACKOFF_MIN_MS   25      /* the read models are behind the hub: read again after this, */
#define BACKOFF_MAX_MS   1000    /* doubling up to this */
#define FINISHED_POLL_MS 250     /* a finished job whose output is incomplete */
#define SAFETY_MS        5000    /* a following stream reads at least this often */
#define READ_SQL                                                                                   \
    "SELECT state, frames, lines, last_id, more, complete, expired, end_data, jobs_applied, "      \
    "logs_applied FROM query.job_logs($1, $2, $3::bigint, $4::int, $5::int, $6::int, $7, "         \
    "$8::int, $9, $10::int)"
#define HELLO "retry: 2000\n: connected\n\n"

typedef struct log_client log_client;

struct query_logs {
    cstl_query_api *api;
    cstl_http_server *http;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* the reader waits on it */
    pthread_t thread;
    bool thread_started;
    bool stop;
    log_client *clients;
};

struct log_client {
    query_logs *logs;
    char tenant[37];
    char job_id[LOGS_ID_MAX + 1];
    bool follow;
    int32_t jobs_part, logs_part; /* the job's partitions; -1 unknown */
    int64_t want_jobs, want_logs; /* hub positions the projectors must reach; -1 none */
    int64_t after;                /* position of the last line sent; -1 none */
    int backoff_ms;
    char *buf; /* frames not yet sent: buf[off..len) */
    size_t len, off;
    bool dirty;       /* read again once the frames are sent */
    long long due_ms; /* or at this time; 0 none */
    long long out_ms; /* last output, for heartbeats */
    bool reading;     /* the reader holds it */
    bool ended;       /* the end event is in buf (or the stream failed): end once sent */
    bool done;        /* the server is finished with the stream */
    int refs;
    cstl_http_stream *stream;
    log_client *prev, *next;
};

int cstl_query_log_position_parse(const char *text, int64_t *out)
{
    if (text == NULL || text[0] < '0' || text[0] > '9' || strlen(text) > 19)
        return CSTL_EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < 0)
        return CSTL_EINVAL;
    *out = v;
    return 0;
}

cstl_query_logs_step
cstl_query_logs_next(const cstl_query_log_read *r, int *backoff_ms, int *delay_ms)
{
    *delay_ms = 0;
    if (r->lines > 0 || *backoff_ms < BACKOFF_MIN_MS)
        *backoff_ms = BACKOFF_MIN_MS; /* progress: the next wait starts short again */
    if (r->more)
        return CSTL_QUERY_LOGS_READ_NOW;
    if (!r->follow || r->complete || r->expired)
        return CSTL_QUERY_LOGS_END;
    bool behind = (r->want_jobs >= 0 && r->jobs_applied < r->want_jobs) ||
                  (r->want_logs >= 0 && r->logs_applied < r->want_logs);
    if (behind) {
        *delay_ms = *backoff_ms;
        *backoff_ms = *backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff_ms * 2;
        return CSTL_QUERY_LOGS_READ_LATER;
    }
    *delay_ms = r->terminal ? FINISHED_POLL_MS : SAFETY_MS;
    return CSTL_QUERY_LOGS_READ_LATER;
}

static bool terminal_state(const char *state)
{
    static const char *const done[] = {"succeeded", "failed", "cancelled", "timed_out", "rejected"};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(done); i++)
        if (strcmp(state, done[i]) == 0)
            return true;
    return false;
}

static void append(log_client *c, const char *text, size_t n)
{
    if (c->off == c->len)
        c->off = c->len = 0;
    c->buf = cstl_xrealloc(c->buf, c->len + n + 1);
    memcpy(c->buf + c->len, text, n);
    c->len += n;
    c->buf[c->len] = '\0';
}

static void append_end(log_client *c, const char *data)
{
    append(c, "event: end\ndata: ", 17);
    append(c, data, strlen(data));
    append(c, "\n\n", 2);
    c->ended = true;
}

static int64_t value_i64(PGresult *res, int col)
{
    return PQgetisnull(res, 0, col) ? -1 : strtoll(PQgetvalue(res, 0, col), NULL, 10);
}

/*
 * Applies the outcome of a read (res: one row of query.job_logs) to c: the frames, the end, or
 * when to read next. Returns false when the job is not there (another tenant's, or gone).
 * logs->lock held, or c not shared yet.
 */
static bool take_read(log_client *c, PGresult *res)
{
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
        return false;
    const char *state = PQgetvalue(res, 0, 0);
    cstl_query_log_read r = {
        .lines = (int)strtol(PQgetvalue(res, 0, 2), NULL, 10),
        .more = PQgetvalue(res, 0, 4)[0] == 't',
        .follow = c->follow,
        .terminal = terminal_state(state),
        .complete = PQgetvalue(res, 0, 5)[0] == 't',
        .expired = PQgetvalue(res, 0, 6)[0] == 't',
        .want_jobs = c->want_jobs,
        .want_logs = c->want_logs,
        .jobs_applied = value_i64(res, 8),
        .logs_applied = value_i64(res, 9),
    };
    if (r.lines > 0) {
        append(c, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1));
        c->after = value_i64(res, 3);
    }
    int delay = 0;
    switch (cstl_query_logs_next(&r, &c->backoff_ms, &delay)) {
    case CSTL_QUERY_LOGS_END:
        append_end(c, PQgetvalue(res, 0, 7));
        break;
    case CSTL_QUERY_LOGS_READ_NOW:
        c->dirty = true;
        break;
    case CSTL_QUERY_LOGS_READ_LATER:
        c->due_ms = query_now_ms() + delay;
        break;
    }
    return true;
}

/*
 * One read of c's next page on the calling thread's connection. With req (the handler's first
 * read) a failure answers req and the result is released with it; without, the caller owns *res
 * and err says what failed. Returns 0 with *res, or a negative code.
 */
static int read_page(cstl_query_api *api,
                     const log_client *c,
                     cstl_http_request *req,
                     PGresult **res,
                     cstl_error *err)
{
    char after[24], page[16], bytes[16], wait[16], jpart[16], lpart[16];
    snprintf(after, sizeof(after), "%" PRId64, c->after);
    snprintf(page, sizeof(page), "%d", LOGS_PAGE);
    snprintf(bytes, sizeof(bytes), "%d", LOGS_PAGE_BYTES);
    snprintf(wait, sizeof(wait), "%d", api->cfg->job_logs_end_wait_ms);
    snprintf(jpart, sizeof(jpart), "%d", (int)c->jobs_part);
    snprintf(lpart, sizeof(lpart), "%d", (int)c->logs_part);
    const char *params[] = {c->tenant,       c->job_id, after,           page, bytes, wait,
                            api->jobs_topic, jpart,     api->logs_topic, lpart};
    if (req != NULL)
        return query_call_result(api, req, "query_job_logs", READ_SQL, 10, params, res);
    return query_call_raw(api, "query_job_logs", READ_SQL, 10, params, res, err);
}

static void client_free(log_client *c)
{
    free(c->buf);
    cstl_http_stream_release(c->stream);
    free(c);
}

static void client_unref(log_client *c)
{
    query_logs *logs = c->logs;
    pthread_mutex_lock(&logs->lock);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&logs->lock);
    if (last)
        client_free(c);
}

/* The stream producer: the buffered frames; the end once they are sent. HTTP thread. */
static long log_read(void *ud, char *out, size_t max)
{
    log_client *c = ud;
    query_logs *logs = c->logs;
    pthread_mutex_lock(&logs->lock);
    long n = 0;
    if (c->off < c->len) {
        size_t take = c->len - c->off < max ? c->len - c->off : max;
        memcpy(out, c->buf + c->off, take);
        c->off += take;
        n = (long)take;
        if (c->off == c->len) { /* a page can be large: hold no memory between pages */
            free(c->buf);
            c->buf = NULL;
            c->off = c->len = 0;
        }
    } else if (c->ended) {
        n = CSTL_HTTP_STREAM_END;
    } else if (!c->reading && (c->dirty || (c->due_ms > 0 && c->due_ms <= query_now_ms()))) {
        pthread_cond_signal(&logs->cond); /* the frames are sent: the reader may go on */
    }
    pthread_mutex_unlock(&logs->lock);
    return n;
}

/* The server is finished with the stream: unlink the client. */
static void log_done(void *ud)
{
    log_client *c = ud;
    query_logs *logs = c->logs;
    pthread_mutex_lock(&logs->lock);
    c->done = true;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (logs->clients == c)
        logs->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    pthread_mutex_unlock(&logs->lock);
    client_unref(c);
}

void query_logs_hint(
    cstl_query_api *api, char tag, int32_t partition, int64_t next, const char *key, size_t len)
{
    query_logs *logs = api->logs;
    if (logs == NULL || key == NULL || len == 0 || len > LOGS_ID_MAX)
        return;
    bool any = false;
    pthread_mutex_lock(&logs->lock);
    for (log_client *c = logs->clients; c != NULL; c = c->next) {
        if (c->ended || strncmp(c->job_id, key, len) != 0 || c->job_id[len] != '\0')
            continue;
        if (tag == 'j' && partition == c->jobs_part && next > c->want_jobs)
            c->want_jobs = next;
        else if (tag == 'l' && partition == c->logs_part && next > c->want_logs)
            c->want_logs = next;
        c->dirty = true;
        any = true;
    }
    if (any)
        pthread_cond_signal(&logs->cond);
    pthread_mutex_unlock(&logs->lock);
}

/* A client the reader should read now (a reference taken, marked reading), or NULL; *wait_ms
 * receives how long until the next one is due. Adds heartbeats to idle streams (collected in
 * wake). logs->lock held. */
static log_client *
next_due_locked(query_logs *logs, long long *wait_ms, log_client ***wake, size_t *nwake)
{
    long long now = query_now_ms();
    long long every = (long long)logs->api->cfg->sse_heartbeat_s * 1000;
    long long soonest = SAFETY_MS;
    log_client *pick = NULL;
    for (log_client *c = logs->clients; c != NULL; c = c->next) {
        if (c->ended || c->done || c->reading)
            continue;
        if (c->off != c->len)
            continue; /* the client has not taken its frames yet: log_read signals */
        if (now - c->out_ms >= every) {
            append(c, ": heartbeat\n\n", 13);
            c->out_ms = now;
            c->refs++;
            *wake = cstl_xrealloc(*wake, (*nwake + 1) * sizeof(log_client *));
            (*wake)[(*nwake)++] = c;
            continue;
        }
        if (c->out_ms + every - now < soonest)
            soonest = c->out_ms + every - now;
        if (pick == NULL && (c->dirty || (c->due_ms > 0 && c->due_ms <= now))) {
            pick = c;
            continue;
        }
        if (c->due_ms > 0 && c->due_ms - now < soonest)
            soonest = c->due_ms - now;
    }
    if (pick != NULL) {
        /* round robin: the picked client goes last */
        if (pick->next != NULL) {
            if (pick->prev != NULL)
                pick->prev->next = pick->next;
            else
                logs->clients = pick->next;
            pick->next->prev = pick->prev;
            log_client *last = pick->next;
            while (last->next != NULL)
                last = last->next;
            last->next = pick;
            pick->prev = last;
            pick->next = NULL;
        }
        pick->reading = true;
        pick->dirty = false;
        pick->due_ms = 0;
        pick->refs++;
    }
    *wait_ms = soonest < 1 ? 1 : soonest;
    return pick;
}

static void wake_and_unref(log_client **wake, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cstl_http_stream_wake(wake[i]->stream);
        client_unref(wake[i]);
    }
}

static void *reader_main(void *arg)
{
    query_logs *logs = arg;
    log_client **wake = NULL;
    size_t nwake = 0;
    pthread_mutex_lock(&logs->lock);
    while (!logs->stop) {
        long long wait_ms = 0;
        log_client *c = next_due_locked(logs, &wait_ms, &wake, &nwake);
        if (nwake > 0) {
            pthread_mutex_unlock(&logs->lock);
            wake_and_unref(wake, nwake);
            nwake = 0;
            pthread_mutex_lock(&logs->lock);
        }
        if (c == NULL) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += wait_ms / 1000;
            until.tv_nsec += (wait_ms % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&logs->cond, &logs->lock, &until);
            continue;
        }
        /* what the read uses only changes under reading, which this thread holds */
        pthread_mutex_unlock(&logs->lock);
        PGresult *res = NULL;
        cstl_error err;
        int rc = read_page(logs->api, c, NULL, &res, &err);
        pthread_mutex_lock(&logs->lock);
        c->reading = false;
        if (rc != 0) {
            cstl_log(CSTL_LOG_WARN, "queries", "reading the logs of job %s failed: %s", c->job_id,
                     err.message);
            c->due_ms = query_now_ms() + BACKOFF_MAX_MS; /* the stream stays; read again */
        } else if (!take_read(c, res)) {
            c->ended = true; /* the job is gone: end the stream */
        }
        PQclear(res);
        if (c->off < c->len || c->ended)
            c->out_ms = query_now_ms();
        pthread_mutex_unlock(&logs->lock);
        cstl_http_stream_wake(c->stream);
        client_unref(c);
        pthread_mutex_lock(&logs->lock);
    }
    pthread_mutex_unlock(&logs->lock);
    free(wake);
    cstl_pg_pool_release(logs->api->pg);
    return NULL;
}

static int not_found(cstl_http_request *req, const char *id)
{
    char detail[200];
    snprintf(detail, sizeof(detail), "no job \"%.128s\"", id);
    return cstl_http_respond_problem(req, 404, "not-found", "not found", detail, NULL);
}

static int handle_logs(cstl_http_request *req, void *ud)
{
    static const char *const known[] = {"follow", "last_event_id", NULL};
    cstl_query_api *api = ud;
    query_logs *logs = api->logs;
    cstl_principal who;
    if (query_authenticate(api, req, &who) != 0 || query_check_params(req, known) != 0)
        return 0;
    const char *id = cstl_http_request_param(req, "id");
    bool follow = true;
    const char *v = cstl_http_request_query(req, "follow");
    if (v != NULL && strcmp(v, "true") != 0 && strcmp(v, "false") != 0)
        return query_bad_param(req, "follow", v, "expected true or false");
    if (v != NULL)
        follow = strcmp(v, "true") == 0;
    int64_t after = -1;
    const char *last = cstl_http_request_header(req, "Last-Event-ID");
    const char *from = "Last-Event-ID";
    if (last == NULL || last[0] == '\0') {
        last = cstl_http_request_query(req, "last_event_id");
        from = "last_event_id";
    }
    if (last != NULL && last[0] != '\0' && cstl_query_log_position_parse(last, &after) != 0)
        return query_bad_param(req, from, last,
                               "expected the id of a line of this stream (an integer from 0)");
    size_t idlen = strlen(id);
    bool plausible = idlen > 0 && idlen <= LOGS_ID_MAX;
    for (size_t i = 0; plausible && i < idlen; i++)
        plausible = id[i] > ' ' && id[i] <= '~';
    if (!plausible)
        return not_found(req, id);

    log_client *c = cstl_xcalloc(1, sizeof(*c));
    c->logs = logs;
    c->follow = follow;
    c->after = after;
    c->jobs_part = c->logs_part = -1;
    c->want_jobs = c->want_logs = -1;
    c->backoff_ms = 0;
    c->refs = 1;
    snprintf(c->tenant, sizeof(c->tenant), "%s", who.tenant_id);
    snprintf(c->job_id, sizeof(c->job_id), "%s", id);
    int32_t njobs = query_hub_partitions(api->hub, 'j');
    int32_t nlogs = query_hub_partitions(api->hub, 'l');
    if (njobs > 0)
        c->jobs_part = cstl_kafka_partition_for_key(id, idlen, njobs);
    if (nlogs > 0)
        c->logs_part = cstl_kafka_partition_for_key(id, idlen, nlogs);
    /* What the hub has read before this read: the projectors must have applied it before the
     * stream can tell it has every line so far. */
    c->want_jobs = c->jobs_part >= 0 ? query_hub_seen(api->hub, 'j', c->jobs_part) : -1;
    c->want_logs = c->logs_part >= 0 ? query_hub_seen(api->hub, 'l', c->logs_part) : -1;
    /* Linked before the first read, so that no record the hub reads from now on goes unnoticed;
     * marked reading, so that the reader leaves it alone until the stream is there. */
    c->reading = true;
    pthread_mutex_lock(&logs->lock);
    c->next = logs->clients;
    if (logs->clients != NULL)
        logs->clients->prev = c;
    logs->clients = c;
    pthread_mutex_unlock(&logs->lock);

    enum { OPEN, ANSWERED, NOT_FOUND, NOT_READY, TOO_MANY } outcome = OPEN;
    PGresult *res = NULL;
    if (read_page(api, c, req, &res, NULL) != 0)
        outcome = ANSWERED;
    else if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
        outcome = NOT_FOUND;
    else if (follow && !query_hub_ready(api->hub))
        outcome = NOT_READY;
    else if (cstl_http_stream_count(logs->http) >= (size_t)api->cfg->sse_max_streams)
        outcome = TOO_MANY;
    if (outcome != OPEN)
        log_done(c); /* unlinks it and drops the handler's reference */
    switch (outcome) {
    case OPEN:
        break;
    case ANSWERED:
        return 0;
    case NOT_FOUND:
        return not_found(req, id);
    case NOT_READY:
        cstl_http_set_header(req, "Retry-After", "2");
        return cstl_http_respond_problem(req, 503, "unavailable", "service unavailable",
                                         "following a job's output is not ready yet (Kafka); "
                                         "follow=false reads what is stored",
                                         NULL);
    case TOO_MANY:
        cstl_http_set_header(req, "Retry-After", "5");
        return cstl_http_respond_problem(req, 503, "too-many-streams", "too many streams",
                                         "the server has as many event streams open as it allows",
                                         NULL);
    }
    pthread_mutex_lock(&logs->lock);
    append(c, HELLO, sizeof(HELLO) - 1);
    take_read(c, res);
    c->out_ms = query_now_ms();
    c->refs++; /* the stream's, dropped by log_done */
    pthread_mutex_unlock(&logs->lock);
    cstl_http_set_header(req, "Cache-Control", "no-cache");
    cstl_http_set_header(req, "X-Accel-Buffering", "no");
    /* Cannot fail: the request has not been answered. The stream is read only once the handler
     * has returned. */
    cstl_http_respond_stream(req, 200, "text/event-stream", log_read, c, log_done, &c->stream);
    if (cstl_http_request_set_send_buffer(req, api->cfg->sse_send_buffer_bytes) != 0)
        cstl_log(CSTL_LOG_WARN, "queries", "cannot bound an event stream's send buffer to %d bytes",
                 api->cfg->sse_send_buffer_bytes);
    pthread_mutex_lock(&logs->lock);
    c->reading = false;
    pthread_cond_signal(&logs->cond);
    pthread_mutex_unlock(&logs->lock);
    client_unref(c);
    return 0;
}

int query_logs_start(cstl_query_api *api, cstl_http_server *http, cstl_error *err)
{
    query_logs *logs = cstl_xcalloc(1, sizeof(*logs));
    logs->api = api;
    logs->http = http;
    pthread_mutex_init(&logs->lock, NULL);
    pthread_cond_init(&logs->cond, NULL);
    api->logs = logs;
    int rc = cstl_http_route(http, "GET", "/v1/jobs/{id}/logs", handle_logs, api, err);
    if (rc != 0)
        return rc;
    if (pthread_create(&logs->thread, NULL, reader_main, logs) != 0)
        return cstl_error_set(err, CSTL_EINTERNAL, "cannot start the job logs reader thread");
    logs->thread_started = true;
    return 0;
}

void query_logs_stop(cstl_query_api *api)
{
    query_logs *logs = api->logs;
    if (logs == NULL)
        return;
    pthread_mutex_lock(&logs->lock);
    logs->stop = true;
    pthread_cond_signal(&logs->cond);
    pthread_mutex_unlock(&logs->lock);
    if (logs->thread_started)
        pthread_join(logs->thread, NULL);
    /* The HTTP server has stopped, so every stream is done and unlinked. */
    pthread_cond_destroy(&logs->cond);
    pthread_mutex_destroy(&logs->lock);
    free(logs);
    api->logs = NULL;
}
