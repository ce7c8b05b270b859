/*
 * pg.h - PostgreSQL connections (libpq): bounded connect retry, one connection per worker thread,
 * query helpers with SQLSTATE-classified errors, and a retrying transaction helper.
 *
 * Thread rules. A cstl_pg_conn is used by one thread at a time (libpq's rule); nothing here locks
 * it. A cstl_pg_pool is thread-safe: each calling thread gets its own connection, opened lazily on
 * its first cstl_pg_pool_get() and reopened when it is found bad. The pool must outlive every use
 * of the connections it handed out; cstl_pg_pool_free() closes them all. Connections are keyed by
 * pthread_self(): a thread that exits without cstl_pg_pool_release() leaves its connection in the
 * pool until it is freed (or until a new thread that gets the same id inherits it).
 *
 * Errors. Every function that talks to the server returns 0 or a negative CSTL_E* code and fills
 * an optional cstl_error whose origin is CSTL_ORIGIN_PG and origin_sqlstate the server's SQLSTATE
 * (empty when the failure was not reported by the server). Codes (cstl_pg_sqlstate_code):
 *   40001, 40P01                         -> CSTL_EPG_RETRY (retry the whole transaction)
 *   class 08, 57P01..57P03, lost socket  -> CSTL_EPG_CONN  (reconnect, then retry)
 *   23505 unique violation               -> CSTL_EEXISTS
 *   57014 statement timeout / cancel     -> CSTL_ETIMEDOUT
 *   anything else                        -> CSTL_EPG
 * Messages never contain the connection password.
 */
#ifndef CSTL_PLATFORM_PG_H
#define CSTL_PLATFORM_PG_H

#include "platform/error.h"

#include <libpq-fe.h>

#include <stdbool.h>
#include <stddef.h>

typedef struct cstl_pg_conn cstl_pg_conn;
typedef struct cstl_pg_pool cstl_pg_pool;

/*
 * How to connect and how hard to try. Zero fields take the default shown. The connect is
 * attempted up to max_attempts times; between attempts it sleeps initial_backoff_ms, doubling each
 * time up to max_backoff_ms (with jitter down to half the value), and it never starts a sleep that
 * would end after max_total_ms since the first attempt. Only failures to reach the server are
 * retried: a malformed connection string, a refused login and a missing database are not.
 */
typedef struct cstl_pg_retry {
    int max_attempts;       /* 5 */
    int initial_backoff_ms; /* 100 */
    int max_backoff_ms;     /* 2000: the longest single wait */
    int max_total_ms;       /* 15000: no retry starts after this much time */
    int connect_timeout_s;  /* 5: libpq's connect_timeout per attempt, unless the dsn sets it */
    const char *application_name; /* "constellation", unless the dsn sets application_name */
    int statement_timeout_ms;     /* 0: the server's default; else SET on every (re)connect */
} cstl_pg_retry;

/* Transaction isolation levels for cstl_pg_tx_isolated. */
typedef enum cstl_pg_isolation {
    CSTL_PG_READ_COMMITTED = 0,
    CSTL_PG_REPEATABLE_READ,
    CSTL_PG_SERIALIZABLE,
} cstl_pg_isolation;

/*
 * Opens a connection to dsn (a libpq keyword/value or URI connection string), retrying as policy
 * (NULL: defaults) says. The dsn and policy are copied, so they may be freed after the call.
 * Returns a new connection (close with cstl_pg_close) or NULL with err filled:
 *   CSTL_ECONFIG   the dsn is malformed, the login was refused or the database does not exist;
 *   CSTL_EPG_CONN  the server could not be reached in max_attempts attempts (libpq's message,
 *                  first line, in err->message).
 * Notices from the server are discarded (libraries never log). Any thread.
 */
cstl_pg_conn *cstl_pg_connect(const char *dsn, const cstl_pg_retry *policy, cstl_error *err);

/* Closes conn and frees everything it owns. NULL is a no-op. */
void cstl_pg_close(cstl_pg_conn *conn);

/*
 * Drops conn's server connection (if any) and opens a new one with the original dsn and policy.
 * The prepared-statement cache is emptied and the statement timeout re-applied. On failure conn
 * stays usable only for another reconnect or close. Returns 0, CSTL_EPG_CONN or CSTL_ECONFIG.
 */
int cstl_pg_reconnect(cstl_pg_conn *conn, cstl_error *err);

/* True when conn has a server connection that has not been found broken. */
int cstl_pg_ok(const cstl_pg_conn *conn);

/* The underlying libpq connection, borrowed until the next reconnect or close; NULL when there is
 * none. For libpq calls not wrapped here; do not PQfinish it. */
PGconn *cstl_pg_raw(cstl_pg_conn *conn);

/* Process id of the server backend serving conn, 0 when not connected. */
int cstl_pg_backend_pid(const cstl_pg_conn *conn);

/* Sets statement_timeout (milliseconds, 0 = none) now and on every later reconnect. */
int cstl_pg_set_statement_timeout(cstl_pg_conn *conn, int ms, cstl_error *err);

/*
 * Runs one SQL statement with nparams text-format parameters ($1..$n; a NULL entry is SQL NULL).
 * On success returns 0 and, when out is not NULL, stores a new PGresult in *out that the caller
 * frees with PQclear (when out is NULL the result is freed here). On failure returns a negative
 * code (see the top of this file), sets *out to NULL and names the statement in err->message.
 */
int cstl_pg_exec(cstl_pg_conn *conn,
                 const char *sql,
                 int nparams,
                 const char *const *params,
                 PGresult **out,
                 cstl_error *err);

/*
 * Like cstl_pg_exec, through a statement prepared once per connection under name and cached
 * until the connection is closed or reconnected. Calling it again with the same name and different
 * sql is CSTL_EINVAL. name and sql are copied.
 */
int cstl_pg_exec_prepared(cstl_pg_conn *conn,
                          const char *name,
                          const char *sql,
                          int nparams,
                          const char *const *params,
                          PGresult **out,
                          cstl_error *err);

/* Most binary parameters of one statement of cstl_pg_pipeline. */
#define CSTL_PG_PIPED_MAX_PARAMS 64

/* One statement of cstl_pg_pipeline: a prepared statement (name, sql as for
 * cstl_pg_exec_prepared) with its parameters, text unless binary is set: then parameter i is
 * lengths[i] bytes in PostgreSQL's binary format of its type. count receives the integer in the
 * first column of its first row (0 when it returns no row). */
typedef struct cstl_pg_piped {
    const char *name;
    const char *sql;
    int nparams;
    const char *const *params;
    const int *lengths; /* with binary */
    bool binary;
    long count;
} cstl_pg_piped;

/*
 * Runs n prepared statements in libpq pipeline mode: statements not yet prepared on this
 * connection are prepared first, then they are sent in chunks (one round trip per chunk instead of
 * one per statement) and their results read. Meant for use inside a transaction: a failing
 * statement makes the server skip the rest, and the transaction is then aborted. Returns 0 with
 * every count filled, or the error of the first failing statement (CSTL_EPG_CONN when the
 * connection was lost: reconnect). Borrowed arguments.
 */
int cstl_pg_pipeline(cstl_pg_conn *conn, cstl_pg_piped *stmts, size_t n, cstl_error *err);

/*
 * The types PostgreSQL inferred for the nparams parameters of the statement name (sql, prepared
 * here unless it already is), as SQL type names ("uuid", "bigint"): types[i] receives a new string
 * each (free them). Returns 0 or the error.
 */
int cstl_pg_param_types(cstl_pg_conn *conn,
                        const char *name,
                        const char *sql,
                        int nparams,
                        char **types,
                        cstl_error *err);

/* Runs a script of one or more statements (simple query protocol, no parameters), discarding
 * the results. Returns 0 or the first statement error. */
int cstl_pg_exec_script(cstl_pg_conn *conn, const char *sql, cstl_error *err);

/* The body of a transaction: returns 0 to commit, or a negative code (with err filled) to roll
 * back. It is called again on a retry, so it must not keep effects outside the database from a
 * failed attempt. err is never NULL. */
typedef int (*cstl_pg_tx_fn)(cstl_pg_conn *conn, void *ud, cstl_error *err);

/*
 * Runs fn inside BEGIN ... COMMIT at READ COMMITTED; see cstl_pg_tx_isolated.
 */
int cstl_pg_tx(cstl_pg_conn *conn, cstl_pg_tx_fn fn, void *ud, int max_attempts, cstl_error *err);

/*
 * Runs fn inside a transaction at isolation level iso, up to max_attempts (>= 1) times:
 *   - fn fails: ROLLBACK; when its code is CSTL_EPG_RETRY (serialization failure, deadlock) or
 *     CSTL_EPG_CONN (connection lost; reconnected before the next attempt), try again after a short
 *     backoff; any other code is returned as is.
 *   - COMMIT fails with CSTL_EPG_RETRY: try again.
 *   - the connection is lost during COMMIT: the outcome is unknown, so it is NOT retried; returns
 *     CSTL_EPG_CONN saying so (the caller re-reads its state, e.g. a projector its offsets).
 *   - fn returns 0 but a statement in it had failed (the server answers COMMIT with ROLLBACK):
 *     CSTL_EPG.
 * A connection found bad before an attempt is reconnected first. When the attempts run out the
 * last error is returned, its message prefixed with the number of attempts. conn must not be in a
 * transaction already (CSTL_EINVAL). Thread: conn's thread.
 */
int cstl_pg_tx_isolated(cstl_pg_conn *conn,
                        cstl_pg_isolation iso,
                        cstl_pg_tx_fn fn,
                        void *ud,
                        int max_attempts,
                        cstl_error *err);

/*
 * A pool that hands each calling thread its own connection to dsn. dsn and policy (NULL:
 * defaults) are copied. No connection is opened here. Returns NULL (CSTL_EINVAL/CSTL_ECONFIG) when
 * dsn is NULL or malformed. Free with cstl_pg_pool_free.
 */
cstl_pg_pool *cstl_pg_pool_new(const char *dsn, const cstl_pg_retry *policy, cstl_error *err);

/*
 * Stores in *out the calling thread's connection, opening it on first use and reopening it when it
 * was found bad. The connection is borrowed: use it only from this thread, never close it, and
 * not after cstl_pg_pool_release (from this thread) or cstl_pg_pool_free. Thread-safe.
 */
int cstl_pg_pool_get(cstl_pg_pool *pool, cstl_pg_conn **out, cstl_error *err);

/* Closes the calling thread's connection, if any; call it before a worker thread exits. */
void cstl_pg_pool_release(cstl_pg_pool *pool);

/* Number of connections currently held by the pool (open or not). Thread-safe. */
size_t cstl_pg_pool_size(cstl_pg_pool *pool);

/* Closes every connection and frees the pool. No thread may be using it. NULL is a no-op. */
void cstl_pg_pool_free(cstl_pg_pool *pool);

/* --- exposed for tests and for callers that build their own errors --- */

/* The code for a SQLSTATE (5 characters; NULL or empty -> CSTL_EPG). See the top of this file. */
int cstl_pg_sqlstate_code(const char *sqlstate);

/* Fills err from a failed result (res may be NULL when libpq returned none), naming what failed
 * ("query \"select 1\"", "statement \"name\""). Returns the code. */
int cstl_pg_result_error(const PGconn *pg, const PGresult *res, const char *what, cstl_error *err);

/* Copies dsn into out (size n, always NUL-terminated when n > 0) with the password replaced by
 * "***", for keyword/value strings (password=..., quoted or not) and URIs (user:secret@host,
 * ?password=...). Works on malformed strings too. */
void cstl_pg_dsn_redact(const char *dsn, char *out, size_t n);

/* Copies the first line of msg into out (size n), trimmed, with every occurrence of dsn's password
 * replaced by "***". */
void cstl_pg_message_redact(const char *dsn, const char *msg, char *out, size_t n);

/* True when a connection failure with libpq message msg may succeed on a later attempt (the
 * server was unreachable, starting up or full), false when it was refused for good (bad login,
 * missing database or role, no pg_hba.conf entry). */
int cstl_pg_connect_failure_retriable(const char *msg);

/* The wait before retry number attempt (1 = after the first failure), before jitter:
 * initial_backoff_ms * 2^(attempt-1), capped at max_backoff_ms. policy NULL: defaults. */
int cstl_pg_backoff_ms(const cstl_pg_retry *policy, int attempt);

#endif
