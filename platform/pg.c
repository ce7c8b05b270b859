/*
 * pg.c - PostgreSQL connections, queries, transactions and the per-thread pool (see pg.h).
 *
 * Invariants: a cstl_pg_conn owns its PGconn, a copy of its dsn and policy, and a cache of the
 * statements prepared on the current server connection; the cache is emptied whenever the PGconn
 * is replaced. A connection that returned a connection-class error is marked broken and is only
 * reused after a reconnect. Messages pass through the password redaction before they reach a
 * cstl_error. A connection is used by one thread at a time; the pool's entry list is guarded by
 * its mutex, and each entry's connection is touched only by the thread it belongs to.
 */
#include "platform/pg.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_ATTEMPTS       5
#define DEFAULT_BACKOFF_MS     100
#define DEFAULT_MAX_BACKOFF_MS 2000
#define DEFAULT_MAX_TOTAL_MS   15000
#define DEFAULT_CONNECT_TO_S   5
#define DEFAULT_APP_NAME       "constellation"
#define TX_BACKOFF_MS          10
#define TX_MAX_BACKOFF_MS      1000
#define SQL_SNIPPET_MAX        60

typedef struct prepared_stmt {
    char *name;
    char *sql;
} prepared_stmt;

struct cstl_pg_conn {
    PGconn *pg;
    bool broken;
    char *dsn;
    char *app_name;
    cstl_pg_retry policy; /* resolved: no zero fields; application_name points to app_name */
    prepared_stmt *stmts;
    size_t nstmts, cap_stmts;
};

typedef struct pool_entry {
    pthread_t thread;
    cstl_pg_conn *conn;
    struct pool_entry *next;
} pool_entry;

struct cstl_pg_pool {
    char *dsn;
    char *app_name;
    cstl_pg_retry policy;
    pthread_mutex_t mu;
    pool_entry *entries;
    size_t n;
};

/* ---- small helpers ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A value in [ms/2, ms], so that many clients retrying together spread out. */
static int jitter(int ms)
{
    static _Thread_local uint64_t state;
    if (state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&state;
        if (state == 0)
            state = 0x9e3779b97f4a7c15u;
    }
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    if (ms <= 1)
        return ms;
    int half = ms / 2;
    return half + (int)(state % (uint64_t)(ms - half + 1));
}

static cstl_pg_retry policy_resolve(const cstl_pg_retry *p)
{
    cstl_pg_retry r = {0};
    if (p != NULL)
        r = *p;
    if (r.max_attempts <= 0)
        r.max_attempts = DEFAULT_ATTEMPTS;
    if (r.initial_backoff_ms <= 0)
        r.initial_backoff_ms = DEFAULT_BACKOFF_MS;
    if (r.max_backoff_ms <= 0)
        r.max_backoff_ms = DEFAULT_MAX_BACKOFF_MS;
    if (r.max_total_ms <= 0)
        r.max_total_ms = DEFAULT_MAX_TOTAL_MS;
    if (r.connect_timeout_s <= 0)
        r.connect_timeout_s = DEFAULT_CONNECT_TO_S;
    if (r.application_name == NULL || r.application_name[0] == '\0')
        r.application_name = DEFAULT_APP_NAME;
    if (r.statement_timeout_ms < 0)
        r.statement_timeout_ms = 0;
    return r;
}

int cstl_pg_backoff_ms(const cstl_pg_retry *policy, int attempt)
{
    cstl_pg_retry p = policy_resolve(policy);
    if (attempt < 1)
        attempt = 1;
    int64_t ms = p.initial_backoff_ms;
    for (int i = 1; i < attempt && ms < p.max_backoff_ms; i++)
        ms *= 2;
    return ms > p.max_backoff_ms ? p.max_backoff_ms : (int)ms;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_uri(const char *dsn)
{
    return has_prefix(dsn, "postgresql://") || has_prefix(dsn, "postgres://");
}

/* ---- password redaction ---- */

typedef struct span {
    size_t start, len;
} span;

/* Finds the spans of dsn that hold a password (raw text, as written). Returns how many. */
static size_t find_password_spans(const char *dsn, span *spans, size_t max)
{
    size_t n = 0, len = strlen(dsn);
    if (is_uri(dsn)) {
        size_t i = strstr(dsn, "://") - dsn + 3;
        size_t auth_end = i + strcspn(dsn + i, "/?#");
        const char *at = memrchr(dsn + i, '@', auth_end - i);
        if (at != NULL) {
            const char *colon = memchr(dsn + i, ':', (size_t)(at - (dsn + i)));
            if (colon != NULL && colon + 1 < at && n < max)
                spans[n++] = (span){(size_t)(colon + 1 - dsn), (size_t)(at - colon - 1)};
        }
        const char *q = strchr(dsn, '?');
        while (q != NULL && *q != '\0') {
            q++;
            if (has_prefix(q, "password=")) {
                size_t s = (size_t)(q - dsn) + 9;
                size_t l = strcspn(dsn + s, "&#");
                if (l > 0 && n < max)
                    spans[n++] = (span){s, l};
            }
            q = strchr(q, '&');
        }
        return n;
    }
    size_t i = 0;
    while (i < len) {
        while (i < len && isspace((unsigned char)dsn[i]))
            i++;
        size_t kstart = i;
        while (i < len && dsn[i] != '=' && !isspace((unsigned char)dsn[i]))
            i++;
        size_t klen = i - kstart;
        while (i < len && isspace((unsigned char)dsn[i]))
            i++;
        if (i >= len || dsn[i] != '=') {
            if (klen == 0)
                i++;
            continue;
        }
        i++;
        while (i < len && isspace((unsigned char)dsn[i]))
            i++;
        size_t vstart = i;
        if (i < len && dsn[i] == '\'') {
            i++;
            while (i < len && dsn[i] != '\'') {
                if (dsn[i] == '\\' && i + 1 < len)
                    i++;
                i++;
            }
            if (i < len)
                i++;
        } else {
            while (i < len && !isspace((unsigned char)dsn[i]))
                i++;
        }
        bool is_pw = klen == 8 && strncmp(dsn + kstart, "password", 8) == 0;
        if (is_pw && i > vstart && n < max) {
            span s = {vstart, i - vstart};
            /* The quoted form's secret is what is inside the quotes. */
            if (dsn[vstart] == '\'' && s.len >= 2) {
                s.start++;
                s.len -= dsn[i - 1] == '\'' ? 2 : 1;
            }
            if (s.len > 0)
                spans[n++] = s;
        }
    }
    return n;
}

void cstl_pg_dsn_redact(const char *dsn, char *out, size_t n)
{
    if (n == 0)
        return;
    out[0] = '\0';
    if (dsn == NULL)
        return;
    span spans[8];
    size_t ns = find_password_spans(dsn, spans, CSTL_ARRAY_LEN(spans));
    size_t o = 0, i = 0, len = strlen(dsn);
    while (i < len && o + 1 < n) {
        bool replaced = false;
        for (size_t k = 0; k < ns; k++) {
            if (spans[k].start == i) {
                for (const char *r = "***"; *r != '\0' && o + 1 < n; r++)
                    out[o++] = *r;
                i += spans[k].len;
                replaced = true;
                break;
            }
        }
        if (!replaced)
            out[o++] = dsn[i++];
    }
    out[o] = '\0';
}

/* Replaces each occurrence of secret (length slen > 0) in buf (capacity n) by "***", in place,
 * truncating what no longer fits. */
static void scrub(char *buf, size_t n, const char *secret, size_t slen)
{
    if (slen == 0 || n == 0)
        return;
    char *tmp = cstl_xmalloc(n);
    size_t o = 0;
    const char *p = buf;
    while (*p != '\0' && o + 1 < n) {
        if (strncmp(p, secret, slen) == 0) {
            for (const char *r = "***"; *r != '\0' && o + 1 < n; r++)
                tmp[o++] = *r;
            p += slen;
        } else {
            tmp[o++] = *p++;
        }
    }
    tmp[o] = '\0';
    memcpy(buf, tmp, o + 1);
    free(tmp);
}

void cstl_pg_message_redact(const char *dsn, const char *msg, char *out, size_t n)
{
    if (n == 0)
        return;
    out[0] = '\0';
    if (msg == NULL)
        return;
    while (isspace((unsigned char)*msg))
        msg++;
    size_t len = strcspn(msg, "\r\n");
    while (len > 0 && isspace((unsigned char)msg[len - 1]))
        len--;
    if (n < 4) /* too small to hold even the replacement */
        return;
    snprintf(out, n, "%.*s", (int)len, msg);
    if (dsn == NULL)
        return;
    span spans[8];
    size_t ns = find_password_spans(dsn, spans, CSTL_ARRAY_LEN(spans));
    for (size_t k = 0; k < ns; k++)
        scrub(out, n, dsn + spans[k].start, spans[k].len);
    /* libpq reports the decoded value, which differs from the raw text when quoted or escaped. */
    PQconninfoOption *opts = PQconninfoParse(dsn, NULL);
    if (opts != NULL) {
        for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
            if (strcmp(o->keyword, "password") == 0 && o->val != NULL)
                scrub(out, n, o->val, strlen(o->val));
        PQconninfoFree(opts);
    }
}

/* ---- error mapping ---- */

int cstl_pg_sqlstate_code(const char *sqlstate)
{
    if (sqlstate == NULL || strlen(sqlstate) != 5)
        return CSTL_EPG;
    if (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0)
        return CSTL_EPG_RETRY;
    if (has_prefix(sqlstate, "08") || strcmp(sqlstate, "57P01") == 0 ||
        strcmp(sqlstate, "57P02") == 0 || strcmp(sqlstate, "57P03") == 0)
        return CSTL_EPG_CONN;
    if (strcmp(sqlstate, "23505") == 0)
        return CSTL_EEXISTS;
    if (strcmp(sqlstate, "57014") == 0)
        return CSTL_ETIMEDOUT;
    return CSTL_EPG;
}

static void first_line(const char *msg, char *out, size_t n)
{
    cstl_pg_message_redact(NULL, msg, out, n);
}

int cstl_pg_result_error(const PGconn *pg, const PGresult *res, const char *what, cstl_error *err)
{
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char line[CSTL_ERROR_MESSAGE_MAX];
    if (primary != NULL)
        first_line(primary, line, sizeof(line));
    else if (res != NULL && PQresultErrorMessage(res)[0] != '\0')
        first_line(PQresultErrorMessage(res), line, sizeof(line));
    else if (pg != NULL && PQerrorMessage(pg)[0] != '\0')
        first_line(PQerrorMessage(pg), line, sizeof(line));
    else
        snprintf(line, sizeof(line), "%s",
                 res ? PQresStatus(PQresultStatus(res)) : "no result from the server");
    int code = cstl_pg_sqlstate_code(sqlstate);
    if (pg == NULL || PQstatus(pg) == CONNECTION_BAD)
        code = CSTL_EPG_CONN;
    cstl_error_set(err, code, "%s failed: %s", what ? what : "statement", line);
    if (err != NULL) {
        err->origin = CSTL_ORIGIN_PG;
        if (sqlstate != NULL)
            snprintf(err->origin_sqlstate, sizeof(err->origin_sqlstate), "%s", sqlstate);
        const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
        if (detail == NULL && res != NULL)
            detail = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
        if (detail != NULL)
            cstl_error_detail(err, "%s", detail);
    }
    return code;
}

int cstl_pg_connect_failure_retriable(const char *msg)
{
    if (msg == NULL)
        return 1;
    static const char *const permanent[] = {
        "password authentication failed",
        "authentication failed",
        "no password supplied",
        "no pg_hba.conf entry",
        "pg_hba.conf rejects",
        "does not exist", /* database or role */
        "permission denied for database",
        "invalid connection option",
        "invalid port number",
        "invalid integer value",
        "invalid sslmode value",
        "is not a valid",
    };
    for (size_t i = 0; i < CSTL_ARRAY_LEN(permanent); i++)
        if (strcasestr(msg, permanent[i]) != NULL)
            return 0;
    return 1;
}

/* ---- connections ---- */

static void notice_discard(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static void stmts_clear(cstl_pg_conn *conn)
{
    for (size_t i = 0; i < conn->nstmts; i++) {
        free(conn->stmts[i].name);
        free(conn->stmts[i].sql);
    }
    conn->nstmts = 0;
}

static void describe_sql(const char *sql, char *out, size_t n)
{
    size_t o = 0;
    bool space = false;
    for (const char *p = sql; *p != '\0' && o + 4 < n; p++) {
        if (isspace((unsigned char)*p)) {
            space = o > 0;
            continue;
        }
        if (space)
            out[o++] = ' ';
        space = false;
        if (o >= SQL_SNIPPET_MAX) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        out[o++] = *p;
    }
    out[o] = '\0';
}

static int
exec_checked(cstl_pg_conn *conn, PGresult *res, const char *what, PGresult **out, cstl_error *err)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
        if (out != NULL)
            *out = res;
        else
            PQclear(res);
        return 0;
    }
    int rc = cstl_pg_result_error(conn->pg, res, what, err);
    if (rc == CSTL_EPG_CONN)
        conn->broken = true;
    PQclear(res);
    return rc;
}

static int not_connected(cstl_error *err)
{
    cstl_error_set(err, CSTL_EPG_CONN, "not connected to postgresql");
    if (err != NULL)
        err->origin = CSTL_ORIGIN_PG;
    return CSTL_EPG_CONN;
}

static int apply_statement_timeout(cstl_pg_conn *conn, cstl_error *err)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "SET statement_timeout = %d", conn->policy.statement_timeout_ms);
    return exec_checked(conn, PQexec(conn->pg, sql), "setting statement_timeout", NULL, err);
}

/* Opens conn->pg with retry; conn->pg is NULL on entry. */
static int open_pg(cstl_pg_conn *conn, cstl_error *err)
{
    const cstl_pg_retry *p = &conn->policy;
    char timeout[16];
    snprintf(timeout, sizeof(timeout), "%d", p->connect_timeout_s);
    /* Later keywords win, so the dsn overrides connect_timeout; application_name is a fallback. */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {timeout, p->application_name, conn->dsn, NULL};
    char line[CSTL_ERROR_MESSAGE_MAX - 128];
    int64_t start = now_ms();
    int rc = CSTL_EPG_CONN;
    for (int attempt = 1;; attempt++) {
        PGconn *pg = PQconnectdbParams(keys, vals, 1);
        if (pg == NULL)
            cstl_panic("out of memory opening a postgresql connection");
        if (PQstatus(pg) == CONNECTION_OK) {
            PQsetNoticeProcessor(pg, notice_discard, NULL);
            conn->pg = pg;
            conn->broken = false;
            if (p->statement_timeout_ms > 0) {
                rc = apply_statement_timeout(conn, err);
                if (rc != 0) {
                    PQfinish(conn->pg);
                    conn->pg = NULL;
                    return rc;
                }
            }
            return 0;
        }
        cstl_pg_message_redact(conn->dsn, PQerrorMessage(pg), line, sizeof(line));
        bool retriable = cstl_pg_connect_failure_retriable(line) && !PQconnectionNeedsPassword(pg);
        PQfinish(pg);
        if (!retriable) {
            rc = cstl_error_set(err, CSTL_ECONFIG, "postgresql refused the connection: %s", line);
            break;
        }
        int wait = jitter(cstl_pg_backoff_ms(p, attempt));
        if (attempt >= p->max_attempts || now_ms() - start + wait > p->max_total_ms) {
            rc = cstl_error_set(err, CSTL_EPG_CONN,
                                "cannot connect to postgresql after %d attempt%s: %s", attempt,
                                attempt == 1 ? "" : "s", line);
            break;
        }
        sleep_ms(wait);
    }
    if (err != NULL) {
        char redacted[CSTL_ERROR_DETAIL_MAX - 16];
        cstl_pg_dsn_redact(conn->dsn, redacted, sizeof(redacted));
        cstl_error_detail(err, "dsn '%s'", redacted);
        err->origin = CSTL_ORIGIN_PG;
    }
    return rc;
}

/* Checks that dsn parses; fills err without echoing the password. */
static int dsn_check(const char *dsn, cstl_error *err)
{
    if (dsn == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "no postgresql connection string given");
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &msg);
    if (opts == NULL) {
        char line[256];
        cstl_pg_message_redact(dsn, msg ? msg : "out of memory", line, sizeof(line));
        PQfreemem(msg);
        char redacted[256];
        cstl_pg_dsn_redact(dsn, redacted, sizeof(redacted));
        cstl_error_set(err, CSTL_ECONFIG, "invalid postgresql connection string '%s': %s", redacted,
                       line);
        return CSTL_ECONFIG;
    }
    PQconninfoFree(opts);
    return 0;
}

static void policy_copy(cstl_pg_retry *dst, char **app_name, const cstl_pg_retry *src)
{
    *dst = policy_resolve(src);
    *app_name = cstl_xstrdup(dst->application_name);
    dst->application_name = *app_name;
}

cstl_pg_conn *cstl_pg_connect(const char *dsn, const cstl_pg_retry *policy, cstl_error *err)
{
    if (dsn_check(dsn, err) != 0)
        return NULL;
    cstl_pg_conn *conn = cstl_xcalloc(1, sizeof(*conn));
    conn->dsn = cstl_xstrdup(dsn);
    policy_copy(&conn->policy, &conn->app_name, policy);
    if (open_pg(conn, err) != 0) {
        cstl_pg_close(conn);
        return NULL;
    }
    return conn;
}

void cstl_pg_close(cstl_pg_conn *conn)
{
    if (conn == NULL)
        return;
    if (conn->pg != NULL)
        PQfinish(conn->pg);
    stmts_clear(conn);
    free(conn->stmts);
    free(conn->dsn);
    free(conn->app_name);
    free(conn);
}

int cstl_pg_reconnect(cstl_pg_conn *conn, cstl_error *err)
{
    if (conn == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "no connection given");
    if (conn->pg != NULL)
        PQfinish(conn->pg);
    conn->pg = NULL;
    conn->broken = true;
    stmts_clear(conn);
    return open_pg(conn, err);
}

int cstl_pg_ok(const cstl_pg_conn *conn)
{
    return conn != NULL && conn->pg != NULL && !conn->broken && PQstatus(conn->pg) == CONNECTION_OK;
}

PGconn *cstl_pg_raw(cstl_pg_conn *conn)
{
    return conn ? conn->pg : NULL;
}

int cstl_pg_backend_pid(const cstl_pg_conn *conn)
{
    return conn && conn->pg ? PQbackendPID(conn->pg) : 0;
}

int cstl_pg_set_statement_timeout(cstl_pg_conn *conn, int ms, cstl_error *err)
{
    if (conn == NULL || ms < 0)
        return cstl_error_set(err, CSTL_EINVAL, "invalid statement timeout %d ms", ms);
    conn->policy.statement_timeout_ms = ms;
    if (conn->pg == NULL)
        return not_connected(err);
    return apply_statement_timeout(conn, err);
}

/* ---- queries ---- */

int cstl_pg_exec(cstl_pg_conn *conn,
                 const char *sql,
                 int nparams,
                 const char *const *params,
                 PGresult **out,
                 cstl_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (conn == NULL || sql == NULL || nparams < 0 || (nparams > 0 && params == NULL))
        return cstl_error_set(err, CSTL_EINVAL, "invalid query arguments");
    if (conn->pg == NULL || conn->broken)
        return not_connected(err);
    char what[SQL_SNIPPET_MAX + 32], snippet[SQL_SNIPPET_MAX + 8];
    describe_sql(sql, snippet, sizeof(snippet));
    snprintf(what, sizeof(what), "query \"%s\"", snippet);
    PGresult *res = PQexecParams(conn->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    return exec_checked(conn, res, what, out, err);
}

int cstl_pg_exec_prepared(cstl_pg_conn *conn,
                          const char *name,
                          const char *sql,
                          int nparams,
                          const char *const *params,
                          PGresult **out,
                          cstl_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (conn == NULL || name == NULL || name[0] == '\0' || sql == NULL || nparams < 0 ||
        (nparams > 0 && params == NULL))
        return cstl_error_set(err, CSTL_EINVAL, "invalid prepared statement arguments");
    if (conn->pg == NULL || conn->broken)
        return not_connected(err);
    char what[128];
    snprintf(what, sizeof(what), "statement \"%.100s\"", name);
    prepared_stmt *found = NULL;
    for (size_t i = 0; i < conn->nstmts; i++)
        if (strcmp(conn->stmts[i].name, name) == 0)
            found = &conn->stmts[i];
    if (found != NULL && strcmp(found->sql, sql) != 0)
        return cstl_error_set(err, CSTL_EINVAL,
                              "prepared statement \"%.100s\" already exists with other sql", name);
    if (found == NULL) {
        int rc = exec_checked(conn, PQprepare(conn->pg, name, sql, nparams, NULL), what, NULL, err);
        if (rc != 0)
            return rc;
        if (conn->nstmts == conn->cap_stmts) {
            conn->cap_stmts = conn->cap_stmts ? conn->cap_stmts * 2 : 8;
            conn->stmts = cstl_xrealloc(conn->stmts, conn->cap_stmts * sizeof(*conn->stmts));
        }
        conn->stmts[conn->nstmts++] = (prepared_stmt){cstl_xstrdup(name), cstl_xstrdup(sql)};
    }
    PGresult *res = PQexecPrepared(conn->pg, name, nparams, params, NULL, NULL, 0);
    return exec_checked(conn, res, what, out, err);
}

/* Statements per pipeline chunk: small enough that the results of a chunk fit in the socket
 * buffers while the chunk is still being sent (no deadlock in blocking mode). */
#define PIPELINE_CHUNK 256

static int pipeline_lost(cstl_pg_conn *conn, cstl_error *err)
{
    conn->broken = true;
    cstl_error_set(err, CSTL_EPG_CONN, "connection to postgresql lost in a pipeline: %s",
                   conn->pg ? PQerrorMessage(conn->pg) : "");
    if (err != NULL)
        err->origin = CSTL_ORIGIN_PG;
    return CSTL_EPG_CONN;
}

static int pipeline_chunk(cstl_pg_conn *conn, cstl_pg_piped *s, size_t n, cstl_error *err)
{
    PGconn *pg = conn->pg;
    if (!PQenterPipelineMode(pg))
        return pipeline_lost(conn, err);
    int binary[CSTL_PG_PIPED_MAX_PARAMS];
    for (int i = 0; i < CSTL_PG_PIPED_MAX_PARAMS; i++)
        binary[i] = 1;
    size_t sent = 0;
    while (sent < n && PQsendQueryPrepared(pg, s[sent].name, s[sent].nparams, s[sent].params,
                                           s[sent].binary ? s[sent].lengths : NULL,
                                           s[sent].binary ? binary : NULL, 0))
        sent++;
    if (sent < n || !PQpipelineSync(pg))
        return pipeline_lost(conn, err);
    int rc = 0;
    for (size_t i = 0; i < sent; i++) {
        PGresult *res = PQgetResult(pg);
        if (res == NULL)
            return pipeline_lost(conn, err);
        ExecStatusType st = PQresultStatus(res);
        s[i].count = 0;
        if (st == PGRES_TUPLES_OK && PQntuples(res) > 0 && PQnfields(res) > 0)
            s[i].count = strtol(PQgetvalue(res, 0, 0), NULL, 10);
        if (rc == 0 && st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            char what[128];
            snprintf(what, sizeof(what), "statement \"%.100s\"", s[i].name);
            rc = exec_checked(conn, res, what, NULL, err);
            res = NULL;
            if (rc == CSTL_EPG_CONN)
                return rc;
        }
        PQclear(res);
        res = PQgetResult(pg); /* the NULL that ends each statement's results */
        if (res != NULL)
            PQclear(res);
        if (PQstatus(pg) == CONNECTION_BAD)
            return pipeline_lost(conn, err);
    }
    for (;;) {
        PGresult *res = PQgetResult(pg);
        if (res == NULL) {
            if (PQstatus(pg) == CONNECTION_BAD)
                return pipeline_lost(conn, err);
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        PQclear(res);
        if (st == PGRES_PIPELINE_SYNC)
            break;
    }
    if (!PQexitPipelineMode(pg))
        return pipeline_lost(conn, err);
    return rc;
}

/* Prepares name (sql) on conn unless it already is. */
static int
ensure_prepared(cstl_pg_conn *conn, const char *name, const char *sql, int nparams, cstl_error *err)
{
    for (size_t i = 0; i < conn->nstmts; i++) {
        if (strcmp(conn->stmts[i].name, name) != 0)
            continue;
        if (strcmp(conn->stmts[i].sql, sql) != 0)
            return cstl_error_set(err, CSTL_EINVAL,
                                  "prepared statement \"%.100s\" already exists with other sql",
                                  name);
        return 0;
    }
    char what[128];
    snprintf(what, sizeof(what), "statement \"%.100s\"", name);
    int rc = exec_checked(conn, PQprepare(conn->pg, name, sql, nparams, NULL), what, NULL, err);
    if (rc != 0)
        return rc;
    if (conn->nstmts == conn->cap_stmts) {
        conn->cap_stmts = conn->cap_stmts ? conn->cap_stmts * 2 : 8;
        conn->stmts = cstl_xrealloc(conn->stmts, conn->cap_stmts * sizeof(*conn->stmts));
    }
    conn->stmts[conn->nstmts++] = (prepared_stmt){cstl_xstrdup(name), cstl_xstrdup(sql)};
    return 0;
}

int cstl_pg_param_types(cstl_pg_conn *conn,
                        const char *name,
                        const char *sql,
                        int nparams,
                        char **types,
                        cstl_error *err)
{
    if (conn == NULL || name == NULL || sql == NULL || nparams < 1 || types == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "invalid parameter type arguments");
    if (conn->pg == NULL || conn->broken)
        return not_connected(err);
    int rc = ensure_prepared(conn, name, sql, nparams, err);
    if (rc != 0)
        return rc;
    PGresult *res = NULL;
    rc =
        exec_checked(conn, PQdescribePrepared(conn->pg, name), "describing a statement", &res, err);
    if (rc != 0)
        return rc;
    if (PQnparams(res) != nparams) {
        PQclear(res);
        return cstl_error_set(err, CSTL_EINVAL, "statement \"%.100s\" has %d parameters, not %d",
                              name, PQnparams(res), nparams);
    }
    char *oids = cstl_xmalloc((size_t)nparams * 12 + 3);
    size_t o = 0;
    oids[o++] = '{';
    for (int i = 0; i < nparams; i++)
        o += (size_t)snprintf(oids + o, 13, "%s%u", i ? "," : "", PQparamtype(res, i));
    snprintf(oids + o, 2, "}");
    PQclear(res);
    const char *params[] = {oids};
    rc = cstl_pg_exec(conn,
                      "SELECT format_type(t, NULL) FROM unnest($1::oid[]) WITH ORDINALITY AS "
                      "x(t, i) ORDER BY i",
                      1, params, &res, err);
    free(oids);
    if (rc != 0)
        return rc;
    for (int i = 0; i < nparams; i++)
        types[i] = cstl_xstrdup(i < PQntuples(res) ? PQgetvalue(res, i, 0) : "text");
    PQclear(res);
    return 0;
}

int cstl_pg_pipeline(cstl_pg_conn *conn, cstl_pg_piped *stmts, size_t n, cstl_error *err)
{
    if (conn == NULL || (n > 0 && stmts == NULL))
        return cstl_error_set(err, CSTL_EINVAL, "invalid pipeline arguments");
    if (conn->pg == NULL || conn->broken)
        return not_connected(err);
    for (size_t k = 0; k < n; k++) {
        if (stmts[k].binary &&
            (stmts[k].nparams > CSTL_PG_PIPED_MAX_PARAMS || stmts[k].lengths == NULL))
            return cstl_error_set(err, CSTL_EINVAL,
                                  "statement \"%.100s\": binary parameters need their lengths, "
                                  "and at most %d of them",
                                  stmts[k].name, CSTL_PG_PIPED_MAX_PARAMS);
        int rc = ensure_prepared(conn, stmts[k].name, stmts[k].sql, stmts[k].nparams, err);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < n; i += PIPELINE_CHUNK) {
        int rc =
            pipeline_chunk(conn, stmts + i, n - i < PIPELINE_CHUNK ? n - i : PIPELINE_CHUNK, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int cstl_pg_exec_script(cstl_pg_conn *conn, const char *sql, cstl_error *err)
{
    if (conn == NULL || sql == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "invalid script arguments");
    if (conn->pg == NULL || conn->broken)
        return not_connected(err);
    if (!PQsendQuery(conn->pg, sql))
        return exec_checked(conn, NULL, "script", NULL, err);
    /* Drain every result so the connection is ready again; keep the first error. */
    int rc = 0;
    PGresult *res;
    while ((res = PQgetResult(conn->pg)) != NULL) {
        if (rc == 0) {
            char what[SQL_SNIPPET_MAX + 32], snippet[SQL_SNIPPET_MAX + 8];
            describe_sql(sql, snippet, sizeof(snippet));
            snprintf(what, sizeof(what), "script \"%s\"", snippet);
            rc = exec_checked(conn, res, what, NULL, err);
        } else {
            PQclear(res);
        }
        if (PQstatus(conn->pg) == CONNECTION_BAD)
            break;
    }
    if (rc == 0 && PQstatus(conn->pg) == CONNECTION_BAD) {
        conn->broken = true;
        rc = cstl_pg_result_error(conn->pg, NULL, "script", err);
    }
    return rc;
}

/* ---- transactions ---- */

static const char *const begin_sql[] = {
    "BEGIN ISOLATION LEVEL READ COMMITTED",
    "BEGIN ISOLATION LEVEL REPEATABLE READ",
    "BEGIN ISOLATION LEVEL SERIALIZABLE",
};

static void rollback_quietly(cstl_pg_conn *conn)
{
    if (!cstl_pg_ok(conn) || PQtransactionStatus(conn->pg) == PQTRANS_IDLE)
        return;
    cstl_error ignored;
    cstl_pg_exec(conn, "ROLLBACK", 0, NULL, NULL, &ignored);
}

static void prefix_message(cstl_error *e, const char *prefix)
{
    size_t plen = strlen(prefix) + 2, n = sizeof(e->message);
    if (plen >= n)
        return;
    size_t keep = strnlen(e->message, n - 1);
    if (keep > n - 1 - plen)
        keep = n - 1 - plen;
    memmove(e->message + plen, e->message, keep);
    e->message[plen + keep] = '\0';
    memcpy(e->message, prefix, plen - 2);
    memcpy(e->message + plen - 2, ": ", 2);
}

int cstl_pg_tx_isolated(cstl_pg_conn *conn,
                        cstl_pg_isolation iso,
                        cstl_pg_tx_fn fn,
                        void *ud,
                        int max_attempts,
                        cstl_error *err)
{
    if (conn == NULL || fn == NULL || max_attempts < 1 || (int)iso < 0 ||
        (size_t)iso >= CSTL_ARRAY_LEN(begin_sql))
        return cstl_error_set(err, CSTL_EINVAL, "invalid transaction arguments");
    cstl_error e;
    int rc = 0, attempt;
    for (attempt = 1; attempt <= max_attempts; attempt++) {
        cstl_error_clear(&e);
        if (attempt > 1) {
            /* Back off a little so that transactions that collided do not collide again. */
            int wait = TX_BACKOFF_MS << (attempt - 2 < 7 ? attempt - 2 : 7);
            sleep_ms(jitter(wait < TX_MAX_BACKOFF_MS ? wait : TX_MAX_BACKOFF_MS));
        }
        if (!cstl_pg_ok(conn)) {
            rc = cstl_pg_reconnect(conn, &e);
            if (rc != 0)
                break; /* the reconnect has already retried as the policy says */
        }
        if (PQtransactionStatus(conn->pg) != PQTRANS_IDLE) {
            rc =
                cstl_error_set(&e, CSTL_EINVAL, "a transaction is already open on this connection");
            break;
        }
        rc = cstl_pg_exec(conn, begin_sql[iso], 0, NULL, NULL, &e);
        if (rc == 0) {
            rc = fn(conn, ud, &e);
            if (rc != 0) {
                if (rc > 0)
                    rc = CSTL_EINTERNAL;
                if (e.code == 0)
                    cstl_error_set(&e, rc, "transaction body failed");
                rollback_quietly(conn);
            } else {
                PGresult *res = NULL;
                rc = cstl_pg_exec(conn, "COMMIT", 0, NULL, &res, &e);
                if (rc == 0) {
                    bool rolled_back = strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
                    PQclear(res);
                    if (!rolled_back) {
                        cstl_error_clear(err);
                        return 0;
                    }
                    rc = cstl_error_set(&e, CSTL_EPG,
                                        "transaction was rolled back at commit "
                                        "because a statement in it had failed");
                    e.origin = CSTL_ORIGIN_PG;
                    break;
                }
                if (rc == CSTL_EPG_CONN) {
                    prefix_message(&e, "connection lost during commit, the transaction may or "
                                       "may not have been committed");
                    break;
                }
            }
        }
        if (rc != CSTL_EPG_RETRY && rc != CSTL_EPG_CONN)
            break;
    }
    if (attempt > max_attempts && max_attempts > 1) {
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "gave up after %d attempts", max_attempts);
        prefix_message(&e, prefix);
    }
    if (err != NULL)
        *err = e;
    return rc;
}

int cstl_pg_tx(cstl_pg_conn *conn, cstl_pg_tx_fn fn, void *ud, int max_attempts, cstl_error *err)
{
    return cstl_pg_tx_isolated(conn, CSTL_PG_READ_COMMITTED, fn, ud, max_attempts, err);
}

/* ---- pool ---- */

cstl_pg_pool *cstl_pg_pool_new(const char *dsn, const cstl_pg_retry *policy, cstl_error *err)
{
    if (dsn_check(dsn, err) != 0)
        return NULL;
    cstl_pg_pool *pool = cstl_xcalloc(1, sizeof(*pool));
    pool->dsn = cstl_xstrdup(dsn);
    policy_copy(&pool->policy, &pool->app_name, policy);
    if (pthread_mutex_init(&pool->mu, NULL) != 0)
        cstl_panic("cannot initialise a mutex");
    return pool;
}

int cstl_pg_pool_get(cstl_pg_pool *pool, cstl_pg_conn **out, cstl_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (pool == NULL || out == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "invalid pool arguments");
    pthread_t self = pthread_self();
    pthread_mutex_lock(&pool->mu);
    pool_entry *e = pool->entries;
    while (e != NULL && !pthread_equal(e->thread, self))
        e = e->next;
    if (e == NULL) {
        e = cstl_xcalloc(1, sizeof(*e));
        e->thread = self;
        e->next = pool->entries;
        pool->entries = e;
        pool->n++;
    }
    pthread_mutex_unlock(&pool->mu);
    /* Only this thread touches e->conn, so connecting needs no lock (and may take seconds). */
    if (e->conn == NULL) {
        e->conn = cstl_pg_connect(pool->dsn, &pool->policy, err);
        if (e->conn == NULL)
            return err != NULL ? err->code : CSTL_EPG_CONN;
    } else if (!cstl_pg_ok(e->conn)) {
        int rc = cstl_pg_reconnect(e->conn, err);
        if (rc != 0)
            return rc;
    }
    *out = e->conn;
    return 0;
}

void cstl_pg_pool_release(cstl_pg_pool *pool)
{
    if (pool == NULL)
        return;
    pthread_t self = pthread_self();
    pool_entry *found = NULL;
    pthread_mutex_lock(&pool->mu);
    for (pool_entry **pp = &pool->entries; *pp != NULL; pp = &(*pp)->next) {
        if (pthread_equal((*pp)->thread, self)) {
            found = *pp;
            *pp = found->next;
            pool->n--;
            break;
        }
    }
    pthread_mutex_unlock(&pool->mu);
    if (found != NULL) {
        cstl_pg_close(found->conn);
        free(found);
    }
}

size_t cstl_pg_pool_size(cstl_pg_pool *pool)
{
    if (pool == NULL)
        return 0;
    pthread_mutex_lock(&pool->mu);
    size_t n = pool->n;
    pthread_mutex_unlock(&pool->mu);
    return n;
}

void cstl_pg_pool_free(cstl_pg_pool *pool)
{
    if (pool == NULL)
        return;
    pool_entry *e = pool->entries;
    while (e != NULL) {
        pool_entry *next = e->next;
        cstl_pg_close(e->conn);
        free(e);
        e = next;
    }
    pthread_mutex_destroy(&pool->mu);
    free(pool->dsn);
    free(pool->app_name);
    free(pool);
}
