/*
 * jobs.c - the REST reads of the query API: GET /v1/jobs (filters, keyset cursor pagination),
 * /v1/jobs/{id} (with runs, reason and queue position), /v1/jobs/{id}/history, /v1/queue,
 * /v1/workers and /v1/gpus.
 *
 * Each handler validates every query parameter (unknown or repeated ones are refused), then makes
 * one call of a function of schema "query" (migration 0003) that binds the caller's tenant and
 * returns the response document as JSON text, which is passed through (lists are reshaped to drop
 * the look-ahead row and add the next cursor). Runs on the HTTP server's threads.
 */
#include "platform/events.h"
#include "queries/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT_LIMIT  50
#define LIST_MAX_LIMIT      200
#define QUEUE_DEFAULT_LIMIT 100
#define QUEUE_MAX_LIMIT     1000
#define ID_MAX              128
#define PREFIX_MAX          256
#define MAX_LABELS          16

static const char *const states[] = {"submitted", "queued",    "assigned",  "running", "succeeded",
                                     "failed",    "cancelled", "timed_out", "rejected"};

static int respond_text(cstl_http_request *req, const char *text)
{
    cstl_http_set_header(req, "Cache-Control", "private, no-cache");
    return cstl_http_respond(req, 200, "application/json", text, strlen(text));
}

static int not_found(cstl_http_request *req, const char *id)
{
    char detail[200];
    snprintf(detail, sizeof(detail), "no job \"%.128s\"", id);
    return cstl_http_respond_problem(req, 404, "not-found", "not found", detail, NULL);
}

/* Ids are printable ASCII: anything else cannot name a job. */
static int id_plausible(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (id[i] <= ' ' || id[i] > '~')
            return 0;
    return 1;
}

static int utf8_valid(const char *s)
{
    json_t *j = json_string(s); /* jansson checks UTF-8 */
    int ok = j != NULL;
    json_decref(j);
    return ok;
}

static int parse_int(const char *text, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == ' ' || text[0] == '+' || v < lo ||
        v > hi)
        return -1;
    *out = v;
    return 0;
}

static unsigned long long fnv(unsigned long long h, const char *s)
{
    for (const char *p = s != NULL ? s : "\x01"; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL;
}

typedef struct list_params {
    char states[160]; /* "{a,b}" or "" */
    char *labels;     /* jsonb text or NULL */
    const char *priority, *min_priority, *max_priority, *after, *before, *prefix;
    int ascending;
    long limit;
    cstl_query_cursor cursor;
    int has_cursor;
    unsigned long long filters;
} list_params;

static void free_str(void *p)
{
    free(p);
}

static int parse_states(cstl_http_request *req, const char *text, list_params *lp)
{
    char copy[160];
    if (strlen(text) >= sizeof(copy))
        return query_bad_param(req, "state", text, "too long");
    snprintf(copy, sizeof(copy), "%s", text);
    size_t o = 0;
    lp->states[o++] = '{';
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int ok = 0;
        for (size_t i = 0; i < CSTL_ARRAY_LEN(states) && !ok; i++)
            ok = strcmp(states[i], tok) == 0;
        if (!ok)
            return query_bad_param(req, "state", text,
                                   "expected comma-separated states among submitted, queued, "
                                   "assigned, running, succeeded, failed, cancelled, timed_out, "
                                   "rejected");
        o +=
            (size_t)snprintf(lp->states + o, sizeof(lp->states) - o, "%s%s", o > 1 ? "," : "", tok);
    }
    if (o == 1)
        return query_bad_param(req, "state", text, "no state given");
    snprintf(lp->states + o, sizeof(lp->states) - o, "}");
    return 0;
}

static int parse_labels(cstl_http_request *req, const char *text, list_params *lp)
{
    if (strlen(text) > 1024 || !utf8_valid(text))
        return query_bad_param(req, "label", text, "too long or not utf-8");
    char *copy = cstl_xstrdup(text);
    json_t *obj = json_object();
    int n = 0, rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        if (colon == NULL || colon == tok || ++n > MAX_LABELS) {
            rc = query_bad_param(req, "label", text,
                                 "expected comma-separated key:value pairs, at most 16");
            break;
        }
        *colon = '\0';
        json_object_set_new(obj, tok, json_string(colon + 1));
    }
    free(copy);
    if (rc == 0 && n == 0)
        rc = query_bad_param(req, "label", text, "no label given");
    if (rc == 0) {
        lp->labels = json_dumps(obj, JSON_COMPACT);
        cstl_http_request_defer(req, free_str, lp->labels);
    }
    json_decref(obj);
    return rc;
}

static int parse_list(cstl_http_request *req, list_params *lp)
{
    static const char *const known[] = {"state",
                                        "label",
                                        "priority",
                                        "min_priority",
                                        "max_priority",
                                        "submitted_after",
                                        "submitted_before",
                                        "name_prefix",
                                        "sort",
                                        "cursor",
                                        "limit",
                                        NULL};
    if (query_check_params(req, known) != 0)
        return CSTL_EINVAL;
    const char *v;
    long n;
    if ((v = cstl_http_request_query(req, "state")) != NULL && parse_states(req, v, lp) != 0)
        return CSTL_EINVAL;
    if ((v = cstl_http_request_query(req, "label")) != NULL && parse_labels(req, v, lp) != 0)
        return CSTL_EINVAL;
    static const char *const ints[] = {"priority", "min_priority", "max_priority"};
    const char **dst[] = {&lp->priority, &lp->min_priority, &lp->max_priority};
    for (size_t i = 0; i < 3; i++) {
        if ((v = cstl_http_request_query(req, ints[i])) == NULL)
            continue;
        if (parse_int(v, -1000000, 1000000, &n) != 0)
            return query_bad_param(req, ints[i], v, "expected an integer from -1000000 to 1000000");
        *dst[i] = v;
    }
    static const char *const times[] = {"submitted_after", "submitted_before"};
    const char **tdst[] = {&lp->after, &lp->before};
    for (size_t i = 0; i < 2; i++) {
        if ((v = cstl_http_request_query(req, times[i])) == NULL)
            continue;
        if (!cstl_query_rfc3339_valid(v))
            return query_bad_param(req, times[i], v,
                                   "expected an RFC 3339 date-time such as "
                                   "\"2026-11-21T23:41:03Z\"");
        *tdst[i] = v;
    }
    if ((v = cstl_http_request_query(req, "name_prefix")) != NULL) {
        if (*v == '\0' || strlen(v) > PREFIX_MAX || !utf8_valid(v))
            return query_bad_param(req, "name_prefix", v, "expected 1 to 256 bytes of utf-8");
        lp->prefix = v;
    }
    if ((v = cstl_http_request_query(req, "sort")) != NULL) {
        if (strcmp(v, "submitted_at") != 0 && strcmp(v, "-submitted_at") != 0)
            return query_bad_param(req, "sort", v,
                                   "expected \"submitted_at\" or \"-submitted_at\"");
        lp->ascending = strcmp(v, "submitted_at") == 0;
    }
    lp->limit = LIST_DEFAULT_LIMIT;
    if ((v = cstl_http_request_query(req, "limit")) != NULL &&
        parse_int(v, 1, LIST_MAX_LIMIT, &lp->limit) != 0)
        return query_bad_param(req, "limit", v, "expected an integer from 1 to 200");
    unsigned long long h = 14695981039346656037ULL;
    const char *parts[] = {lp->states,       lp->labels,       lp->priority,
                           lp->min_priority, lp->max_priority, lp->after,
                           lp->before,       lp->prefix,       lp->ascending ? "asc" : "desc"};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(parts); i++)
        h = fnv(h, parts[i]);
    lp->filters = h;
    if ((v = cstl_http_request_query(req, "cursor")) != NULL) {
        if (cstl_query_cursor_decode(v, &lp->cursor) != 0)
            return query_bad_param(req, "cursor", v, "not a cursor this api issued");
        if (lp->cursor.filters != h || lp->cursor.ascending != lp->ascending)
            return query_bad_param(req, "cursor", v,
                                   "the cursor belongs to a listing with other filters or sort");
        lp->has_cursor = 1;
    }
    return 0;
}

static int handle_list(cstl_http_request *req, void *ud)
{
    cstl_query_api *api = ud;
    cstl_principal who;
    list_params lp = {0};
    if (query_authenticate(api, req, &who) != 0 || parse_list(req, &lp) != 0)
        return 0;
    char limit[16], after_ts[CSTL_EVENT_TIME_STRLEN + 1];
    snprintf(limit, sizeof(limit), "%ld", lp.limit);
    if (lp.has_cursor && cstl_event_time_format(lp.cursor.at_us, after_ts) != 0)
        return query_bad_param(req, "cursor", cstl_http_request_query(req, "cursor"),
                               "not a cursor this api issued");
    const char *params[] = {who.tenant_id,
                            lp.states[0] ? lp.states : NULL,
                            lp.labels,
                            lp.priority,
                            lp.min_priority,
                            lp.max_priority,
                            lp.after,
                            lp.before,
                            lp.prefix,
                            lp.ascending ? "t" : "f",
                            lp.has_cursor ? after_ts : NULL,
                            lp.has_cursor ? lp.cursor.job_id : NULL,
                            limit};
    static const char sql[] =
        "SELECT items, next_us, next_id FROM query.jobs_page($1, $2::text[], $3::jsonb, $4::int, "
        "$5::int, $6::int, $7::timestamptz, $8::timestamptz, $9, $10::boolean, $11::timestamptz, "
        "$12, $13::int)";
    PGresult *res = NULL;
    if (query_call_result(api, req, "query_jobs_page", sql, 13, params, &res) != 0)
        return 0;
    if (PQntuples(res) != 1 || PQnfields(res) != 3 || PQgetisnull(res, 0, 0))
        return -1;
    /* The page is passed through as PostgreSQL wrote it; only the cursor is made here. */
    char next[512] = "null";
    if (!PQgetisnull(res, 0, 1) && !PQgetisnull(res, 0, 2)) {
        cstl_query_cursor c = {.ascending = lp.ascending, .filters = lp.filters};
        c.at_us = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
        snprintf(c.job_id, sizeof(c.job_id), "%s", PQgetvalue(res, 0, 2));
        char enc[400];
        cstl_query_cursor_encode(&c, enc, sizeof(enc));
        snprintf(next, sizeof(next), "\"%s\"", enc); /* base64url: nothing to escape */
    }
    const char *items = PQgetvalue(res, 0, 0);
    size_t cap = strlen(items) + strlen(next) + 64;
    char *body = cstl_xmalloc(cap);
    int len = snprintf(body, cap, "{\"items\":%s,\"next_cursor\":%s,\"limit\":%ld}", items, next,
                       lp.limit);
    cstl_http_set_header(req, "Cache-Control", "private, no-cache");
    int rc = cstl_http_respond(req, 200, "application/json", body, (size_t)len);
    free(body);
    return rc;
}

static int handle_one(cstl_http_request *req, void *ud, const char *name, const char *sql)
{
    static const char *const none[] = {NULL};
    cstl_query_api *api = ud;
    cstl_principal who;
    if (query_authenticate(api, req, &who) != 0 || query_check_params(req, none) != 0)
        return 0;
    const char *id = cstl_http_request_param(req, "id");
    if (!id_plausible(id))
        return not_found(req, id);
    const char *params[] = {who.tenant_id, id};
    const char *text = NULL;
    if (query_call(api, req, name, sql, 2, params, &text) != 0)
        return 0;
    return text == NULL ? not_found(req, id) : respond_text(req, text);
}

static int handle_get(cstl_http_request *req, void *ud)
{
    return handle_one(req, ud, "query_job_get", "SELECT query.job_get($1, $2)");
}

static int handle_history(cstl_http_request *req, void *ud)
{
    return handle_one(req, ud, "query_job_history", "SELECT query.job_history($1, $2)");
}

static int handle_queue(cstl_http_request *req, void *ud)
{
    static const char *const known[] = {"limit", NULL};
    cstl_query_api *api = ud;
    cstl_principal who;
    if (query_authenticate(api, req, &who) != 0 || query_check_params(req, known) != 0)
        return 0;
    long limit = QUEUE_DEFAULT_LIMIT;
    const char *v = cstl_http_request_query(req, "limit");
    if (v != NULL && parse_int(v, 1, QUEUE_MAX_LIMIT, &limit) != 0)
        return query_bad_param(req, "limit", v, "expected an integer from 1 to 1000");
    char lim[16];
    snprintf(lim, sizeof(lim), "%ld", limit);
    const char *params[] = {who.tenant_id, lim};
    const char *text = NULL;
    if (query_call(api, req, "query_queue", "SELECT query.queue($1, $2::int)", 2, params, &text) !=
        0)
        return 0;
    return respond_text(req, text != NULL ? text : "{\"items\":[]}");
}

static int handle_fleet(cstl_http_request *req, void *ud, const char *name, const char *sql)
{
    static const char *const none[] = {NULL};
    cstl_query_api *api = ud;
    cstl_principal who;
    if (query_authenticate(api, req, &who) != 0 || query_check_params(req, none) != 0)
        return 0;
    const char *params[] = {who.tenant_id};
    const char *text = NULL;
    if (query_call(api, req, name, sql, 1, params, &text) != 0)
        return 0;
    return respond_text(req, text != NULL ? text : "{\"items\":[]}");
}

static int handle_workers(cstl_http_request *req, void *ud)
{
    return handle_fleet(req, ud, "query_workers", "SELECT query.workers($1)");
}

static int handle_gpus(cstl_http_request *req, void *ud)
{
    return handle_fleet(req, ud, "query_gpus", "SELECT query.gpus($1)");
}

int query_routes_jobs(cstl_query_api *api, cstl_http_server *http, cstl_error *err)
{
    static const struct {
        const char *pattern;
        cstl_http_handler fn;
    } routes[] = {
        {"/v1/jobs", handle_list},
        {"/v1/jobs/{id}", handle_get},
        {"/v1/jobs/{id}/history", handle_history},
        {"/v1/queue", handle_queue},
        {"/v1/workers", handle_workers},
        {"/v1/gpus", handle_gpus},
    };
    for (size_t i = 0; i < CSTL_ARRAY_LEN(routes); i++) {
        int rc = cstl_http_route(http, "GET", routes[i].pattern, routes[i].fn, api, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}
