/*
 * api.c - the query API's life cycle and what every handler shares: authentication (JWT, or API
 * keys looked up in PostgreSQL on a miss and trusted for a while), the one-round-trip call of a
 * query function on the thread's connection, and parameter errors.
 *
 * Threads: handlers call in from the HTTP server's threads. The key cache is a fixed table of
 * recently checked key ids under a mutex; the key store itself is platform/auth's (thread-safe).
 */
#include "platform/log.h"
#include "queries/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

long long query_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

cstl_query_api *cstl_query_api_new(const cstl_config *cfg, cstl_pg_pool *pg, cstl_error *err)
{
    cstl_auth *auth = cstl_auth_new_from_config(cfg, err);
    if (auth == NULL)
        return NULL;
    cstl_query_api *api = cstl_xcalloc(1, sizeof(*api));
    api->cfg = cfg;
    api->pg = pg;
    api->auth = auth;
    pthread_mutex_init(&api->keys_lock, NULL);
    cstl_query_api_set_topics(api, "constellation.jobs.events", "constellation.fleet.events",
                              "constellation.jobs.logs");
    return api;
}

void cstl_query_api_set_topics(cstl_query_api *api,
                               const char *jobs,
                               const char *fleet,
                               const char *logs)
{
    snprintf(api->jobs_topic, sizeof(api->jobs_topic), "%s", jobs);
    snprintf(api->fleet_topic, sizeof(api->fleet_topic), "%s", fleet);
    snprintf(api->logs_topic, sizeof(api->logs_topic), "%s", logs != NULL ? logs : "");
}

int cstl_query_api_start(cstl_query_api *api, cstl_http_server *http, cstl_error *err)
{
    int rc = query_routes_jobs(api, http, err);
    if (rc == 0)
        rc = query_logs_start(api, http, err);
    if (rc == 0)
        rc = query_stream_start(api, http, err);
    return rc;
}

void cstl_query_api_free(cstl_query_api *api)
{
    if (api == NULL)
        return;
    query_stream_stop(api); /* no more hints for the log streams */
    query_logs_stop(api);
    cstl_auth_free(api->auth);
    pthread_mutex_destroy(&api->keys_lock);
    free(api);
}

static void clear_result(void *res)
{
    PQclear(res);
}

static int pg_failed(cstl_http_request *req, const char *what, const cstl_error *err)
{
    cstl_log(CSTL_LOG_WARN, "queries", "%s failed (request %s): %s", what,
             cstl_http_request_id(req), err->message);
    int code = err->code == CSTL_ETIMEDOUT                                 ? CSTL_ETIMEDOUT
               : err->code == CSTL_EPG_CONN || err->code == CSTL_EPG_RETRY ? CSTL_EUNAVAILABLE
                                                                           : CSTL_EINTERNAL;
    if (code == CSTL_EUNAVAILABLE)
        cstl_http_set_header(req, "Retry-After", "1");
    cstl_error e = {.code = code};
    cstl_http_respond_error(req, &e);
    return code;
}

int query_call_raw(cstl_query_api *api,
                   const char *name,
                   const char *sql,
                   int nparams,
                   const char *const *params,
                   PGresult **res,
                   cstl_error *err)
{
    int rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        cstl_pg_conn *conn = NULL;
        rc = cstl_pg_pool_get(api->pg, &conn, err);
        if (rc == 0)
            rc = cstl_pg_exec_prepared(conn, name, sql, nparams, params, res, err);
        if (rc != CSTL_EPG_CONN)
            break;
    }
    return rc;
}

int query_call_result(cstl_query_api *api,
                      cstl_http_request *req,
                      const char *name,
                      const char *sql,
                      int nparams,
                      const char *const *params,
                      PGresult **res)
{
    cstl_error err;
    *res = NULL;
    int rc = query_call_raw(api, name, sql, nparams, params, res, &err);
    if (rc != 0 && strncmp(err.origin_sqlstate, "22", 2) == 0) {
        /* a data exception: a parameter value PostgreSQL refuses (a date out of its range) */
        cstl_http_respond_problem(req, 400, "invalid-parameter", "invalid query parameter",
                                  "a query parameter value is out of range", NULL);
        return CSTL_EINVAL;
    }
    if (rc != 0)
        return pg_failed(req, name, &err);
    cstl_http_request_defer(req, clear_result, *res);
    return 0;
}

int query_call(cstl_query_api *api,
               cstl_http_request *req,
               const char *name,
               const char *sql,
               int nparams,
               const char *const *params,
               const char **text)
{
    PGresult *res = NULL;
    int rc = query_call_result(api, req, name, sql, nparams, params, &res);
    if (rc != 0)
        return rc;
    *text = PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) ? PQgetvalue(res, 0, 0) : NULL;
    return 0;
}

/* Refreshes the key store's record of key_id from PostgreSQL unless it was checked within the
 * cache time. Failures leave the store as it is (authentication then decides). */
static void refresh_key(cstl_query_api *api, const char *key_id)
{
    unsigned long h = 5381;
    for (const char *p = key_id; *p; p++)
        h = h * 33 + (unsigned char)*p;
    key_slot *slot = &api->keys[h % KEY_CACHE_SLOTS];
    long long now = query_now_ms();
    long long ttl = (long long)api->cfg->api_key_cache_s * 1000;
    pthread_mutex_lock(&api->keys_lock);
    bool fresh = strcmp(slot->key_id, key_id) == 0 && now - slot->checked_ms < ttl;
    pthread_mutex_unlock(&api->keys_lock);
    if (fresh)
        return;
    static const char sql[] =
        "SELECT tenant_id, key_hash, role, "
        "coalesce(extract(epoch FROM expires_at)::bigint, 0), revoked_at IS NOT NULL "
        "FROM read.api_key_by_id($1)";
    const char *params[] = {key_id};
    PGresult *res = NULL;
    cstl_error err;
    if (query_call_raw(api, "query_api_key", sql, 1, params, &res, &err) != 0)
        return; /* the key store answers from what it has */
    if (PQntuples(res) == 1) {
        cstl_role role;
        if (strcmp(PQgetvalue(res, 0, 4), "t") == 0)
            cstl_auth_key_revoke(api->auth, key_id);
        else if (cstl_role_parse(PQgetvalue(res, 0, 2), &role) == 0)
            cstl_auth_key_put(api->auth, key_id, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), role,
                              strtoll(PQgetvalue(res, 0, 3), NULL, 10));
    }
    PQclear(res);
    pthread_mutex_lock(&api->keys_lock);
    snprintf(slot->key_id, sizeof(slot->key_id), "%s", key_id);
    slot->checked_ms = now;
    pthread_mutex_unlock(&api->keys_lock);
}

int query_authenticate(cstl_query_api *api, cstl_http_request *req, cstl_principal *who)
{
    const char *authz = cstl_http_request_header(req, "Authorization");
    cstl_error err = {0};
    if (authz != NULL && strncasecmp(authz, "bearer ", 7) == 0) {
        const char *token = authz + 7;
        while (*token == ' ')
            token++;
        char key_id[37];
        const char *secret;
        if (strncmp(token, "cstl_", 5) == 0 && cstl_api_key_parse(token, key_id, &secret) == 0)
            refresh_key(api, key_id);
    }
    int rc = cstl_auth_authenticate(api->auth, authz, (int64_t)time(NULL), who, &err);
    if (rc != 0) {
        cstl_log(CSTL_LOG_DEBUG, "queries", "authentication failed (request %s): %s",
                 cstl_http_request_id(req), err.detail);
        err.detail[0] = '\0';
        cstl_http_respond_error(req, &err);
        return rc;
    }
    if (!cstl_principal_can(who, CSTL_PERM_READ)) {
        cstl_error_set(&err, CSTL_EFORBIDDEN, "role \"%s\" may not read",
                       cstl_role_name(who->role));
        cstl_http_respond_error(req, &err);
        return CSTL_EFORBIDDEN;
    }
    return 0;
}

int query_bad_param(cstl_http_request *req, const char *name, const char *value, const char *why)
{
    char detail[512];
    snprintf(detail, sizeof(detail), "invalid query parameter \"%s\" value \"%.200s\": %s", name,
             value != NULL ? value : "", why);
    json_t *ext = json_pack("{s:s,s:s}", "parameter", name, "value", value != NULL ? value : "");
    cstl_http_respond_problem(req, 400, "invalid-parameter", "invalid query parameter", detail,
                              ext);
    return CSTL_EINVAL;
}

int query_check_params(cstl_http_request *req, const char *const *known)
{
    const char *bad = cstl_http_request_query_unknown(req, known);
    if (bad == NULL)
        return 0;
    char detail[300];
    snprintf(detail, sizeof(detail), "unknown or repeated query parameter \"%.200s\"", bad);
    cstl_http_respond_problem(req, 400, "invalid-parameter", "invalid query parameter", detail,
                              json_pack("{s:s}", "parameter", bad));
    return CSTL_EINVAL;
}
