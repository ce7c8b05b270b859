/*
 * projection.c - the registry of projections and the helpers that bind event fields to statement
 * parameters (see projection.h). Pure helpers, thread-safe; connections are the caller's.
 */
#include "projections/projection.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const tenants_contexts[] = {"tenants", NULL};
static const char *const jobs_contexts[] = {"jobs", NULL};
/* the scheduler's pending reasons (JobWaiting, tombstones) */
static const char *const jobs_topics[] = {"jobs.waiting", NULL};
/* fleet reads JobSubmitted too, to know the tenant of the job holding a GPU */
static const char *const fleet_contexts[] = {"fleet", "jobs", NULL};

static const char *const no_contexts[] = {NULL};
static const char *const job_logs_telemetry[] = {"jobs.logs", NULL};

static const cstl_projection tenants = {
    .name = "tenants", .contexts = tenants_contexts, .apply = cstl_projection_tenants_apply};
static const cstl_projection jobs = {.name = "jobs",
                                     .contexts = jobs_contexts,
                                     .apply = cstl_projection_jobs_apply,
                                     .set_sql = cstl_projection_jobs_set_sql,
                                     .batch_begin = cstl_projection_jobs_batch_begin,
                                     .batch_end = cstl_projection_jobs_batch_end,
                                     .topics = jobs_topics};
static const cstl_projection fleet = {
    .name = "fleet", .contexts = fleet_contexts, .apply = cstl_projection_fleet_apply};
/* job output lines from the workers' telemetry topic (projections/job_logs.c) */
static const cstl_projection job_logs = {.name = "job_logs",
                                         .contexts = no_contexts,
                                         .apply = cstl_projection_job_logs_apply,
                                         .set_sql = cstl_projection_job_logs_set_sql,
                                         .telemetry = job_logs_telemetry,
                                         .one_wave = true};

static const cstl_projection *const all[] = {&tenants, &jobs, &fleet, &job_logs};

const cstl_projection *const *cstl_projections_all(size_t *n)
{
    *n = CSTL_ARRAY_LEN(all);
    return all;
}

const cstl_projection *cstl_projection_find(const char *name)
{
    for (size_t i = 0; i < CSTL_ARRAY_LEN(all); i++)
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    return NULL;
}

bool cstl_projection_error_retriable(int code)
{
    return code == CSTL_EPG_CONN || code == CSTL_EPG_RETRY || code == CSTL_ETIMEDOUT ||
           code == CSTL_ENOMEM || code == CSTL_EKAFKA || code == CSTL_EUNAVAILABLE;
}

static int slot(cstl_proj_params *p)
{
    CSTL_ASSERT(p->n < CSTL_PROJ_MAX_PARAMS);
    return p->n++;
}

void cstl_proj_text(cstl_proj_params *p, const char *value)
{
    p->v[slot(p)] = value;
}

void cstl_proj_i64(cstl_proj_params *p, int64_t value)
{
    int i = slot(p);
    snprintf(p->num[i], sizeof(p->num[i]), "%" PRId64, value);
    p->v[i] = p->num[i];
}

static const json_t *field(cstl_proj_params *p, const json_t *data, const char *key, bool nullable)
{
    const json_t *v = json_object_get(data, key);
    if ((v == NULL || json_is_null(v)) && !nullable && p->bad == NULL)
        p->bad = key;
    return v != NULL && !json_is_null(v) ? v : NULL;
}

void cstl_proj_str(cstl_proj_params *p, const json_t *data, const char *key, bool nullable)
{
    const json_t *v = field(p, data, key, nullable);
    if (v != NULL && !json_is_string(v) && p->bad == NULL)
        p->bad = key;
    cstl_proj_text(p, json_is_string(v) ? json_string_value(v) : NULL);
}

void cstl_proj_int(cstl_proj_params *p, const json_t *data, const char *key, bool nullable)
{
    const json_t *v = field(p, data, key, nullable);
    if (v != NULL && !json_is_integer(v) && p->bad == NULL)
        p->bad = key;
    if (json_is_integer(v))
        cstl_proj_i64(p, (int64_t)json_integer_value(v));
    else
        cstl_proj_text(p, NULL);
}

void cstl_proj_json(cstl_proj_params *p, const json_t *data, const char *key)
{
    const json_t *v = key == NULL ? data : field(p, data, key, false);
    int i = slot(p);
    p->v[i] = NULL;
    if (v == NULL)
        return;
    p->owned[i] = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (p->owned[i] == NULL)
        cstl_panic("out of memory serializing an event field");
    p->v[i] = p->owned[i];
}

void cstl_proj_lower(cstl_proj_params *p, const json_t *data, const char *key, bool nullable)
{
    const json_t *v = field(p, data, key, nullable);
    int i = slot(p);
    p->v[i] = NULL;
    if (v == NULL)
        return;
    if (!json_is_string(v)) {
        if (p->bad == NULL)
            p->bad = key;
        return;
    }
    p->owned[i] = cstl_xstrdup(json_string_value(v));
    for (char *c = p->owned[i]; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    p->v[i] = p->owned[i];
}

int cstl_proj_params_check(const cstl_proj_params *p, const char *type, cstl_error *err)
{
    if (p->bad == NULL)
        return 0;
    return cstl_error_set(err, CSTL_EINVAL, "event \"%s\" lacks a valid field \"%s\"", type,
                          p->bad);
}

void cstl_proj_params_free(cstl_proj_params *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->owned[i]);
    memset(p, 0, sizeof(*p));
}

static _Thread_local cstl_proj_sink *defer_sink;

void cstl_proj_sink_install(cstl_proj_sink *sink)
{
    defer_sink = sink;
}

/* Appends the 32-bit big-endian value x at out + *at. */
static void put_be32(char *out, size_t *at, uint32_t x)
{
    unsigned char b[4] = {(unsigned char)(x >> 24), (unsigned char)(x >> 16),
                          (unsigned char)(x >> 8), (unsigned char)x};
    memcpy(out + *at, b, 4);
    *at += 4;
}

char *cstl_proj_text_array_binary(const char *const *v, size_t n, int *len)
{
    /* array_recv: ndim, has-null flag, element type, then per dimension its size and lower
     * bound, then each element as its length (-1: NULL) and bytes; all integers big-endian */
    enum { TEXT_OID = 25 };
    size_t cap = 20 + 4 * n;
    bool nulls = false;
    for (size_t i = 0; i < n; i++) {
        if (v[i] != NULL)
            cap += strlen(v[i]);
        else
            nulls = true;
    }
    char *out = cstl_xmalloc(cap);
    size_t at = 0;
    put_be32(out, &at, n > 0 ? 1 : 0);
    put_be32(out, &at, nulls ? 1 : 0);
    put_be32(out, &at, TEXT_OID);
    if (n > 0) {
        put_be32(out, &at, (uint32_t)n);
        put_be32(out, &at, 1);
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i] == NULL) {
            put_be32(out, &at, UINT32_MAX); /* -1 */
            continue;
        }
        size_t l = strlen(v[i]);
        put_be32(out, &at, (uint32_t)l);
        memcpy(out + at, v[i], l);
        at += l;
    }
    *len = (int)at;
    return out;
}

char *cstl_proj_array_literal(const char *const *v, size_t n)
{
    size_t cap = 3;
    for (size_t i = 0; i < n; i++)
        cap += 3 + (v[i] != NULL ? 2 * strlen(v[i]) : 4);
    char *out = cstl_xmalloc(cap);
    size_t len = 0;
    out[len++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            out[len++] = ',';
        if (v[i] == NULL) {
            memcpy(out + len, "NULL", 4);
            len += 4;
            continue;
        }
        out[len++] = '"';
        for (const char *c = v[i]; *c != '\0'; c++) {
            if (*c == '"' || *c == '\\')
                out[len++] = '\\';
            out[len++] = *c;
        }
        out[len++] = '"';
    }
    out[len++] = '}';
    out[len] = '\0';
    return out;
}

void cstl_proj_sink_clear(cstl_proj_sink *sink)
{
    for (size_t i = 0; i < sink->n; i++)
        for (int k = 0; k < sink->stmts[i].n; k++)
            free(sink->stmts[i].v[k]);
    sink->n = 0;
}

void cstl_proj_sink_free(cstl_proj_sink *sink)
{
    if (sink == NULL)
        return;
    cstl_proj_sink_clear(sink);
    free(sink->stmts);
    sink->stmts = NULL;
    sink->cap = 0;
}

int cstl_proj_guarded(cstl_pg_conn *conn,
                      const char *name,
                      const char *sql,
                      const cstl_proj_params *p,
                      const char *exists_name,
                      const char *exists_sql,
                      const char *what,
                      cstl_error *err)
{
    if (defer_sink != NULL) {
        cstl_proj_sink *k = defer_sink;
        if (k->n == k->cap) {
            k->cap = k->cap ? k->cap * 2 : 256;
            k->stmts = cstl_xrealloc(k->stmts, k->cap * sizeof(cstl_proj_stmt));
        }
        cstl_proj_stmt *st = &k->stmts[k->n++];
        snprintf(st->name, sizeof(st->name), "%s", name);
        st->sql = sql;
        st->n = p->n;
        st->check_exists = exists_sql != NULL;
        for (int i = 0; i < p->n; i++)
            st->v[i] = p->v[i] ? cstl_xstrdup(p->v[i]) : NULL;
        return 0;
    }
    PGresult *res = NULL;
    int rc = cstl_pg_exec_prepared(conn, name, sql, p->n, p->v, &res, err);
    if (rc != 0)
        return rc;
    long count = PQntuples(res) == 1 ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    if (count > 0 || exists_sql == NULL)
        return 0;
    rc = cstl_pg_exec_prepared(conn, exists_name, exists_sql, 1, p->v, &res, err);
    if (rc != 0)
        return rc;
    int found = PQntuples(res) > 0;
    PQclear(res);
    if (found)
        return 0; /* applied before: the version guard skipped it */
    return cstl_error_set(err, CSTL_ENOTFOUND, "%s \"%s\" is unknown", what,
                          p->v[0] ? p->v[0] : "");
}
