/*
 * projection.h - the projections (read models) and what they share: the registry of projections,
 * the apply contract, and helpers to bind event fields to prepared statements.
 *
 * A projection consumes the events topics of some contexts, and possibly further topics: topics
 * of records that carry the headers of events (the scheduler's pending reasons) and telemetry
 * topics, whose records are not domain events (job output lines). It applies each record to its
 * tables in PostgreSQL. Its tables live in the schema <name>_v<N> (projections/migrations/0002);
 * the caller sets search_path to that schema, so the SQL here uses unqualified table names.
 *
 * Apply contract: apply(conn, headers, type, data, err) runs inside the caller's transaction (the
 * projector's batch, or a SAVEPOINT of it), after the projection's batch_begin for the batch's
 * records and before its batch_end, when it has them. type is the event's short name
 * ("JobSubmitted"), data its decoded JSON (platform/codec.h: unions as plain values, enums as
 * strings, timestamps as microseconds). Applying an event twice leaves the same rows as applying it
 * once: every change is guarded by the aggregate version (cstl_version) or keyed by ids. Unknown
 * types are ignored (returns 0). Returns 0, a retriable code (CSTL_EPG_CONN, CSTL_EPG_RETRY,
 * CSTL_ETIMEDOUT: redo the batch), or another code when the event itself cannot be applied (a
 * missing field, an unknown aggregate, a constraint violation): the projector dead-letters it.
 *
 * A record without a value (a tombstone of a compacted telemetry topic: the key's earlier records
 * are void) is passed with type CSTL_PROJ_TOMBSTONE, data {"key": <record key>} and headers all
 * empty but the subject, the key. It carries no version: what it removes must not depend on the
 * order in which the records of different topics are read.
 *
 * Records of a telemetry topic (constellation.jobs.logs) carry no CloudEvents headers: only their
 * value is required. Their headers are filled with what the record has: type (ce_type), tenant
 * (cstl_tenant) when given, subject (the key), time_us (the record's timestamp), and as version
 * the record's offset, a position that grows with every record of a key (all of a key's records
 * are on one partition) as an aggregate version grows with its events.
 *
 * Threads: apply functions keep no state; a connection is used by one thread at a time.
 */
#ifndef CSTL_PROJECTIONS_PROJECTION_H
#define CSTL_PROJECTIONS_PROJECTION_H

#include "platform/error.h"
#include "platform/events.h"
#include "platform/pg.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdint.h>

typedef int (*cstl_projection_apply_fn)(cstl_pg_conn *conn,
                                        const cstl_event_headers *h,
                                        const char *type,
                                        const json_t *data,
                                        cstl_error *err);

/*
 * Rewrites the statement sql of an apply function (n parameters of the given SQL types) into one
 * that applies many events at once, each to a different aggregate: parameter i becomes a text[]
 * (sent in binary), one element per event, each element its event's parameter i as text, which
 * the statement casts to types[i] (the input function of the type, as for the single statement's
 * text parameter); it returns the number of events applied (the single statement's count,
 * summed). Returns a new string, or NULL when sql cannot be rewritten (its events are then
 * applied one by one).
 */
typedef char *(*cstl_projection_set_sql_fn)(const char *sql, const char *const *types, int n);

/*
 * Called in each batch's transaction once the search path names the projection's version: begin
 * before the batch's first statement, with the decoded data of the n records the batch applies
 * (a tombstone's is {"key": ...}), end after its last. Either may be NULL.
 */
typedef int (*cstl_projection_batch_begin_fn)(cstl_pg_conn *conn,
                                              const json_t *const *data,
                                              size_t n,
                                              cstl_error *err);
typedef int (*cstl_projection_batch_end_fn)(cstl_pg_conn *conn, cstl_error *err);

typedef struct cstl_projection {
    const char *name;            /* "jobs": also the schema prefix and the group suffix */
    const char *const *contexts; /* contexts whose events topics it consumes, NULL-ended */
    cstl_projection_apply_fn apply;
    cstl_projection_set_sql_fn set_sql; /* may be NULL: events of distinct aggregates are
                                           independent, so a batch may be applied in waves */
    const char *const *topics;    /* further topics it consumes, without the "constellation." prefix
                                     ("jobs.waiting"), NULL-ended; may be NULL */
    const char *const *telemetry; /* NULL, or telemetry topics it consumes, without the topic
                                     prefix ("jobs.logs"), NULL-ended */
    bool one_wave; /* the set form takes a whole batch's records of one kind, several of one key
                      included, and orders them itself: no waves */
    cstl_projection_batch_begin_fn batch_begin;
    cstl_projection_batch_end_fn batch_end;
} cstl_projection;

/* The type a tombstone is applied with (see the apply contract). */
#define CSTL_PROJ_TOMBSTONE "Tombstone"

/* The projections, in a fixed order; *n receives their count. Static. */
const cstl_projection *const *cstl_projections_all(size_t *n);

/* The projection called name, or NULL. Static. */
const cstl_projection *cstl_projection_find(const char *name);

/* True when code means "redo the batch later" rather than "this event cannot be applied". */
bool cstl_projection_error_retriable(int code);

/* The projections' apply functions (projections/tenants.c, jobs.c, fleet.c). */
int cstl_projection_tenants_apply(cstl_pg_conn *conn,
                                  const cstl_event_headers *h,
                                  const char *type,
                                  const json_t *data,
                                  cstl_error *err);
int cstl_projection_jobs_apply(cstl_pg_conn *conn,
                               const cstl_event_headers *h,
                               const char *type,
                               const json_t *data,
                               cstl_error *err);
char *cstl_projection_jobs_set_sql(const char *sql, const char *const *types, int n);
int cstl_projection_jobs_batch_begin(cstl_pg_conn *conn,
                                     const json_t *const *data,
                                     size_t n,
                                     cstl_error *err);
int cstl_projection_jobs_batch_end(cstl_pg_conn *conn, cstl_error *err);
int cstl_projection_fleet_apply(cstl_pg_conn *conn,
                                const cstl_event_headers *h,
                                const char *type,
                                const json_t *data,
                                cstl_error *err);
int cstl_projection_job_logs_apply(cstl_pg_conn *conn,
                                   const cstl_event_headers *h,
                                   const char *type,
                                   const json_t *data,
                                   cstl_error *err);
char *cstl_projection_job_logs_set_sql(const char *sql, const char *const *types, int n);

/* The longest line job_logs accepts, in bytes (the worker splits longer ones); a longer one is
 * dead-lettered. */
#define CSTL_JOB_LOG_LINE_MAX 16384

/* ---- statement parameters from event fields (projections/projection.c) -------------------- */

#define CSTL_PROJ_MAX_PARAMS 24

/*
 * Text parameters of one statement, built from an event's fields. A required field that is
 * missing or of the wrong type marks the whole set bad (the first such field is remembered), so a
 * caller adds every parameter and checks once with cstl_proj_params_check. Zero-initialize; free
 * with cstl_proj_params_free.
 */
typedef struct cstl_proj_params {
    const char *v[CSTL_PROJ_MAX_PARAMS];
    char num[CSTL_PROJ_MAX_PARAMS][24];
    char *owned[CSTL_PROJ_MAX_PARAMS];
    int n;
    const char *bad; /* the first missing or mistyped field, or NULL */
} cstl_proj_params;

void cstl_proj_text(cstl_proj_params *p, const char *value); /* borrowed; NULL is SQL NULL */
void cstl_proj_i64(cstl_proj_params *p, int64_t value);
/* data[key] as a string (required) or string-or-null (nullable). */
void cstl_proj_str(cstl_proj_params *p, const json_t *data, const char *key, bool nullable);
/* data[key] as an integer (required) or integer-or-null. */
void cstl_proj_int(cstl_proj_params *p, const json_t *data, const char *key, bool nullable);
/* data[key] serialized as JSON (required; key NULL: data itself). */
void cstl_proj_json(cstl_proj_params *p, const json_t *data, const char *key);
/* data[key] as a lower-case string (enums: "NONZERO_EXIT" -> "nonzero_exit"). */
void cstl_proj_lower(cstl_proj_params *p, const json_t *data, const char *key, bool nullable);
/* Returns 0, or CSTL_EINVAL naming the bad field of event type. */
int cstl_proj_params_check(const cstl_proj_params *p, const char *type, cstl_error *err);
void cstl_proj_params_free(cstl_proj_params *p);

/* The n texts v as a one-dimensional text[] in PostgreSQL's binary format (NULL elements stay
 * NULL), to pass as one binary parameter: no quoting for the client, no array literal for the
 * server to parse. *len receives its length in bytes. New buffer. */
char *cstl_proj_text_array_binary(const char *const *v, size_t n, int *len);

/* A PostgreSQL array literal of the n texts v ("{\"a\",NULL}": NULL elements stay NULL, quotes
 * and backslashes escaped), to pass as one text parameter cast to an array type. New string. */
char *cstl_proj_array_literal(const char *const *v, size_t n);

/*
 * Runs the prepared statement name (sql) and stores in *count the integer in the first column of
 * its single row (statements end in SELECT count(*) FROM <guarded update>). When *count is 0 and
 * exists_sql is given, runs it with the first parameter: no row means the aggregate is unknown,
 * which is CSTL_ENOTFOUND naming what and the id (the event cannot be applied); a row means the
 * event was applied before (a replay) and 0 is returned.
 */
int cstl_proj_guarded(cstl_pg_conn *conn,
                      const char *name,
                      const char *sql,
                      const cstl_proj_params *p,
                      const char *exists_name,
                      const char *exists_sql,
                      const char *what,
                      cstl_error *err);

/*
 * Deferred statements. While a sink is installed on the calling thread, cstl_proj_guarded records
 * its statement (name and parameters copied, sql borrowed: projections pass static strings) and
 * returns 0 instead of running it; the projector then runs a whole batch's statements in one
 * pipeline (cstl_pg_pipeline). A recorded statement whose count comes back 0 and that has an
 * existence check must be decided by running the batch again one event at a time. With a sink
 * installed, an apply function must reach PostgreSQL only through cstl_proj_guarded: the projector
 * records a batch's statements ahead of its transaction on another thread, passing a NULL
 * connection.
 */
typedef struct cstl_proj_stmt {
    char name[64];
    const char *sql;
    int n;
    char *v[CSTL_PROJ_MAX_PARAMS];
    bool check_exists;
} cstl_proj_stmt;

typedef struct cstl_proj_sink {
    cstl_proj_stmt *stmts;
    size_t n, cap;
} cstl_proj_sink;

/* Installs sink for the calling thread (NULL: statements run at once again). Borrowed. */
void cstl_proj_sink_install(cstl_proj_sink *sink);
/* Forgets the recorded statements (keeps the capacity); cstl_proj_sink_free also frees it. */
void cstl_proj_sink_clear(cstl_proj_sink *sink);
void cstl_proj_sink_free(cstl_proj_sink *sink);

#endif
