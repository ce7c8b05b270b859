/*
 * query.h - the query API (`constellation queries`): REST over the read models and a stream of
 * the tenant's changes as Server-Sent Events. See docs/query-api.md.
 *
 * Every request is authenticated (JWT or API key; API keys are looked up in PostgreSQL through
 * read.api_key_by_id and trusted for CONSTELLATION_API_KEY_CACHE_S) and runs in exactly one
 * tenant: each read is one call of a function of schema "query" that binds the tenant for its
 * transaction, on the calling server thread's own connection (role constellation_query).
 *
 * Threads: created and freed by the service's main thread; handlers run on the HTTP server's
 * threads; the stream hub runs one consumer thread of its own.
 */
#ifndef CSTL_QUERIES_QUERY_H
#define CSTL_QUERIES_QUERY_H

#include "platform/config.h"
#include "platform/error.h"
#include "platform/http.h"
#include "platform/pg.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct cstl_query_api cstl_query_api;

/*
 * A new query API reading through pg (borrowed: it must outlive the API) with the settings of cfg
 * (borrowed likewise). Starts nothing. Returns NULL with err filled when the authentication
 * settings are invalid. Free with cstl_query_api_free.
 */
cstl_query_api *cstl_query_api_new(const cstl_config *cfg, cstl_pg_pool *pg, cstl_error *err);

/* Registers the routes of the API on http (before it starts) and starts the event stream's
 * consumer. Returns 0 or fills err. */
int cstl_query_api_start(cstl_query_api *api, cstl_http_server *http, cstl_error *err);

/* Stops the stream consumer (after the HTTP server stopped) and frees api. NULL is a no-op. */
void cstl_query_api_free(cstl_query_api *api);

/* ---- exposed for tests ----------------------------------------------------------------- */

/* Streams these events topics instead of constellation.jobs.events and .fleet.events, and
 * learns of new job output lines from logs instead of constellation.jobs.logs (NULL: from no
 * topic; log streams then read again only on jobs events and timers). Copied. Before
 * cstl_query_api_start. */
void cstl_query_api_set_topics(cstl_query_api *api,
                               const char *jobs,
                               const char *fleet,
                               const char *logs);

/* base64url without padding of len bytes into out (size >= 4 * ceil(len / 3) + 1). */
void cstl_query_b64url_encode(const void *data, size_t len, char *out);

/* Decodes base64url without padding; returns the byte count or -1 (bad input, over cap). */
long cstl_query_b64url_decode(const char *text, unsigned char *out, size_t cap);

/* A list cursor: position after which the next page starts, bound to the filters it came with. */
typedef struct cstl_query_cursor {
    int ascending;
    long long at_us; /* submitted_at of the last job shown, microseconds since the epoch */
    char job_id[128];
    unsigned long long filters; /* fingerprint of the filters and sort */
} cstl_query_cursor;

/* Encodes c as an opaque string into out (size >= 256). */
void cstl_query_cursor_encode(const cstl_query_cursor *c, char *out, size_t size);

/* Decodes an opaque cursor. Returns 0 or CSTL_EINVAL. */
int cstl_query_cursor_decode(const char *text, cstl_query_cursor *c);

/* True when text is an RFC 3339 date-time ("2026-11-21T23:41:03Z", fraction and offset allowed). */
int cstl_query_rfc3339_valid(const char *t);

/* A job log stream's resume position (Last-Event-ID, last_event_id): a decimal integer from 0 to
 * INT64_MAX without sign or spaces. Returns 0 with *out, or CSTL_EINVAL. */
int cstl_query_log_position_parse(const char *text, int64_t *out);

/* What a job log stream learnt from one read of its next page (query.job_logs). */
typedef struct cstl_query_log_read {
    int lines;     /* lines read */
    bool more;     /* more lines follow them */
    bool follow;   /* follow=true */
    bool terminal; /* the job finished */
    bool complete; /* and every line of it arrived */
    bool expired;  /* the wait for its missing lines ran out */
    /* hub positions the projectors must reach (-1 none), and where they are (-1 nothing) */
    int64_t want_jobs, want_logs;
    int64_t jobs_applied, logs_applied;
} cstl_query_log_read;

typedef enum cstl_query_logs_step {
    CSTL_QUERY_LOGS_READ_NOW,   /* more lines wait: read them once these are sent */
    CSTL_QUERY_LOGS_READ_LATER, /* after *delay_ms, or when the hub sees a record of the job */
    CSTL_QUERY_LOGS_END,        /* send the end event and end the stream */
} cstl_query_logs_step;

/*
 * The next step of a job log stream after a read. *backoff_ms carries the wait while the read
 * models are behind the hub from one read to the next (25 ms doubling to 1 s; reset by progress).
 * A finished job whose lines are incomplete is read every 250 ms until they are there or the
 * wait expired; a running job every 5 s at least. Pure.
 */
cstl_query_logs_step
cstl_query_logs_next(const cstl_query_log_read *r, int *backoff_ms, int *delay_ms);

#endif
