/*
 * internal.h - shared by the files of the query API (the .c files of queries/); not for use
 * elsewhere.
 */
#ifndef CSTL_QUERIES_INTERNAL_H
#define CSTL_QUERIES_INTERNAL_H

#include "platform/auth.h"
#include "queries/query.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define KEY_CACHE_SLOTS 4096

typedef struct key_slot {
    char key_id[37];
    long long checked_ms; /* monotonic ms of the last PostgreSQL lookup */
} key_slot;

typedef struct query_hub query_hub;
typedef struct query_logs query_logs;

struct cstl_query_api {
    const cstl_config *cfg;
    cstl_pg_pool *pg;
    cstl_auth *auth;
    pthread_mutex_t keys_lock;
    key_slot keys[KEY_CACHE_SLOTS];
    query_hub *hub;   /* the event stream (stream.c); NULL until started */
    query_logs *logs; /* the job log streams (logs.c); NULL until started */
    char jobs_topic[256];
    char fleet_topic[256];
    char logs_topic[256]; /* "" when the hub reads no logs topic */
};

/*
 * Authenticates req and checks that the caller may read. On success fills *who and returns 0;
 * else answers req (401/403/503 problem) and returns a negative code. conn is the thread's
 * connection, used to look API keys up.
 */
int query_authenticate(cstl_query_api *api, cstl_http_request *req, cstl_principal *who);

/*
 * Runs the prepared function call name/sql on the calling thread's connection (one retry when the
 * connection was lost) and stores in *text the single text value of the first row (borrowed from
 * the result, which is released with the request; NULL for SQL NULL). On failure answers req
 * (500/503/504 problem) and returns a negative code.
 */
int query_call(cstl_query_api *api,
               cstl_http_request *req,
               const char *name,
               const char *sql,
               int nparams,
               const char *const *params,
               const char **text);

/*
 * Runs the prepared statement name/sql on the calling thread's connection (one retry when the
 * connection was lost), for callers outside a request. Returns 0 with *res (the caller's), or a
 * code with err filled.
 */
int query_call_raw(cstl_query_api *api,
                   const char *name,
                   const char *sql,
                   int nparams,
                   const char *const *params,
                   PGresult **res,
                   cstl_error *err);

/*
 * As query_call, for a function with several result columns: stores in *res the result (borrowed,
 * released with the request), whose first row holds them. On failure answers req and returns a
 * negative code.
 */
int query_call_result(cstl_query_api *api,
                      cstl_http_request *req,
                      const char *name,
                      const char *sql,
                      int nparams,
                      const char *const *params,
                      PGresult **res);

/* Answers 400 invalid-parameter naming the parameter and its value. Returns CSTL_EINVAL. */
int query_bad_param(cstl_http_request *req, const char *name, const char *value, const char *why);

/* Answers 400 when req has a query parameter outside known (or one repeated). Returns 0 when all
 * are fine. */
int query_check_params(cstl_http_request *req, const char *const *known);

/* Routes of jobs.c, stream.c and logs.c. */
int query_routes_jobs(cstl_query_api *api, cstl_http_server *http, cstl_error *err);
int query_stream_start(cstl_query_api *api, cstl_http_server *http, cstl_error *err);
void query_stream_stop(cstl_query_api *api);
int query_logs_start(cstl_query_api *api, cstl_http_server *http, cstl_error *err);
void query_logs_stop(cstl_query_api *api);

/*
 * What the stream hub knows, for the log streams. tag: 'j' the jobs events topic, 'l' the logs
 * topic. query_hub_partitions: the topic's partition count, 0 until the hub found it.
 * query_hub_seen: 1 + the offset of the last record the hub read on that partition, -1 when it
 * read none since it started. query_hub_ready: the hub is consuming. Thread-safe; hub may be
 * NULL (nothing known).
 */
int32_t query_hub_partitions(query_hub *hub, char tag);
int64_t query_hub_seen(query_hub *hub, char tag, int32_t partition);
bool query_hub_ready(query_hub *hub);

/*
 * Called by the hub thread for every record it reads on the jobs events ('j') or logs ('l')
 * topic: next is 1 + its offset, key its key (a job id, len bytes, borrowed). The log streams of
 * that job read again, and know the read models must reach next to be up to date.
 */
void query_logs_hint(
    cstl_query_api *api, char tag, int32_t partition, int64_t next, const char *key, size_t len);

/* Monotonic milliseconds. */
long long query_now_ms(void);

#endif
