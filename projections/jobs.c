/*
 * jobs.c - the jobs projection: jobs (state, reason, queue position), runs and job_history, from
 * constellation.jobs.events, and the scheduler's pending reasons from constellation.jobs.waiting.
 *
 * Invariants: every change of a job by an event is guarded by its version (cstl_version): an
 * event applies only when it is newer than the row, so a replay changes nothing. A history row
 * (keyed by (job_id, version)) and a run's row are inserted only from the rows the guarded change
 * returned (u), in the same transaction, so they need no ON CONFLICT of their own: a replay
 * inserts neither, and a duplicate would be a contradiction of the log that fails loudly (the
 * record is dead-lettered). Each event is one statement (data-modifying CTEs), one round trip.
 * A batch's statements change pg_temp.jobs_work, a copy of the batch's jobs rows made by
 * cstl_projection_jobs_batch_begin and written back by cstl_projection_jobs_batch_end (one row
 * version per job per batch instead of one per event: migration 0010); runs, job_history and
 * job_waiting are changed directly.
 * Queue positions are not stored: read.jobs counts them when read (migration 0005).
 * A pending reason (JobWaiting) is kept in job_waiting, the last one per job (a tombstone removes
 * it), and copied to the job while it is queued in the stay the record names (its attempts);
 * JobAdmitted and JobRequeued take the kept one of their stay if it was read first (migration
 * 0007). Either order gives the same rows.
 * Called from the projector's thread inside its batch transaction.
 */
#include "projections/projection.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A batch's statements change jobs through pg_temp.jobs_work (migration 0010), named "jobs" in
 * them. */
#define WORK "pg_temp.jobs_work AS jobs"
/* $1 job_id, $2 version, $3 time (us), $4 event id, $5 event type, $6 data; specific from $7 */
#define HEAD "WITH u AS (UPDATE " WORK " SET updated_at = cstl_ts($3), version = $2"
#define TAIL " WHERE job_id = $1 AND version < $2 RETURNING tenant_id)"
#define HISTORY                                                                                    \
    ", h AS (INSERT INTO job_history (tenant_id, job_id, version, event_id, event_type, at, "      \
    "data) SELECT u.tenant_id, $1, $2, $4, $5, cstl_ts($3), $6::jsonb FROM u "                     \
    ")"
#define COUNT " SELECT count(*) FROM u"
/* A column of the pending reason kept for the stay in the queue that the job starts (its attempts
 * do not change on queueing), NULL when none was read yet. */
#define KEPT(column)                                                                               \
    "(SELECT w." column " FROM job_waiting w WHERE w.job_id = $1 AND w.attempts = jobs.attempts)"

typedef enum field_kind { STR, STR_NULL, INT, INT_NULL, JSON, LOWER, LOWER_NULL } field_kind;

typedef struct field_spec {
    const char *key;
    field_kind kind;
} field_spec;

typedef struct event_spec {
    const char *type;
    const char *time_key; /* the event's time field */
    const char *sql;
    field_spec fields[12]; /* parameters from $7 on, ended by a NULL key */
} event_spec;

static const event_spec specs[] = {
    {"JobSubmitted",
     "at",
     "WITH u AS (INSERT INTO " WORK
     " (job_id, tenant_id, name, state, reason, priority, gpu_count, "
     "min_gpu_memory_mib, gpu_model, runtime_limit_seconds, retry_limit, labels, parameters, "
     "submitted_by, submitted_at, updated_at, version) VALUES ($1, $7, $8, 'submitted', "
     "'awaiting_admission', $9::int, $10::int, $11::bigint, $12, $13::bigint, $14::int, "
     "$15::jsonb, $16::jsonb, $17, cstl_ts($3), cstl_ts($3), $2) ON CONFLICT (job_id) DO NOTHING "
     "RETURNING tenant_id)" HISTORY COUNT,
     {{"tenant_id", STR},
      {"name", STR_NULL},
      {"priority", INT},
      {"gpu_count", INT},
      {"min_gpu_memory_mib", INT},
      {"gpu_model", STR_NULL},
      {"runtime_limit_seconds", INT},
      {"retry_limit", INT},
      {"labels", JSON},
      {"parameters", JSON},
      {"submitted_by", STR}}},
    {"JobAdmitted",
     "at",
     HEAD ", state = 'queued', reason = coalesce(" KEPT(
         "reason") ", 'waiting_for_gpus'), "
                   "reason_message = " KEPT("message") ", reservation_id = $7" TAIL HISTORY COUNT,
     {{"reservation_id", STR}}},
    {"JobRejected",
     "at",
     HEAD ", state = 'rejected', reason = $7, reason_message = $8, finished_at = cstl_ts($3)" TAIL
         HISTORY COUNT,
     {{"reason", LOWER}, {"message", STR_NULL}}},
    {"JobPriorityChanged",
     "at",
     HEAD ", priority = $7::int" TAIL HISTORY COUNT,
     {{"priority", INT}}},
    {"JobAssigned",
     "at",
     HEAD ", state = 'assigned', reason = 'waiting_for_run_start', reason_message = NULL, "
          "current_run_id = $7, attempts = attempts + 1" TAIL HISTORY
          ", r AS (INSERT INTO runs (run_id, job_id, tenant_id, worker_id, gpu_uuids, "
          "assigned_at) SELECT $7, $1, u.tenant_id, $8, "
          "ARRAY(SELECT jsonb_array_elements_text($9::jsonb)), cstl_ts($3) FROM u "
          ")" COUNT,
     {{"run_id", STR}, {"worker_id", STR}, {"gpu_uuids", JSON}}},
    {"RunStarted",
     "started_at",
     HEAD ", state = 'running', reason = 'running', reason_message = NULL" TAIL HISTORY
          ", r AS (UPDATE runs SET started_at = cstl_ts($3), worker_id = $8 FROM u "
          "WHERE run_id = $7)" COUNT,
     {{"run_id", STR}, {"worker_id", STR}}},
    {"RunFinished",
     "finished_at",
     HEAD TAIL HISTORY
     ", r AS (UPDATE runs SET finished_at = cstl_ts($3), outcome = $8, exit_code = $9::int, "
     "failure_reason = $10, gpu_seconds = $11::bigint, log_lines = $12::bigint FROM u "
     "WHERE run_id = $7)" COUNT,
     {{"run_id", STR},
      {"outcome", LOWER},
      {"exit_code", INT_NULL},
      {"failure_reason", LOWER_NULL},
      {"gpu_seconds", INT},
      {"log_lines", INT_NULL}}},
    {"JobSucceeded",
     "at",
     HEAD ", state = 'succeeded', reason = 'completed', reason_message = NULL, "
          "finished_at = cstl_ts($3)" TAIL HISTORY COUNT,
     {{NULL, STR}}},
    {"JobFailed",
     "at",
     HEAD ", state = 'failed', reason = $7, reason_message = $8, attempts = $9::int, "
          "finished_at = cstl_ts($3)" TAIL HISTORY COUNT,
     {{"reason", LOWER}, {"message", STR_NULL}, {"attempts", INT}}},
    {"JobRequeued",
     "at",
     HEAD ", state = 'queued', reason = coalesce(" KEPT(
         "reason") ", 'requeued'), "
                   "reason_message = coalesce(" KEPT(
                       "message") ", $7::text || '; ' || $8::int || "
                                  "' retries left'), current_run_id = NULL" TAIL HISTORY COUNT,
     {{"reason", STR}, {"retries_left", INT}}},
    {"JobCancelled",
     "at",
     HEAD ", state = 'cancelled', reason = 'cancelled', reason_message = "
          "coalesce($7::text, 'cancelled by ' || $8::text), finished_at = cstl_ts($3)" TAIL HISTORY
              COUNT,
     {{"reason", STR_NULL}, {"cancelled_by", STR}}},
    {"JobTimedOut",
     "at",
     HEAD ", state = 'timed_out', reason = 'runtime_limit_exceeded', reason_message = "
          "'exceeded the runtime limit of ' || $7::bigint || ' s', finished_at = cstl_ts($3)" TAIL
              HISTORY COUNT,
     {{"runtime_limit_seconds", INT}}},
};

static const char exists_sql[] = "SELECT 1 FROM pg_temp.jobs_work WHERE job_id = $1";

/* $1 job_id, $2 tenant_id, $3 attempts, $4 reason (lower case), $5 message, $6 at (us). Keeps the
 * record (records of one job come in order: the last one wins), and sets the job's reason if it
 * is queued in the stay the record names. Not named "u": it has no set form. */
static const char waiting_sql[] =
    "WITH w AS (INSERT INTO job_waiting (job_id, tenant_id, attempts, reason, message, at) "
    "VALUES ($1, $2, $3::int, $4, $5, cstl_ts($6::bigint)) ON CONFLICT (job_id) DO UPDATE SET "
    "tenant_id = excluded.tenant_id, attempts = excluded.attempts, reason = excluded.reason, "
    "message = excluded.message, at = excluded.at RETURNING job_id), "
    "j AS (UPDATE " WORK " SET reason = $4, reason_message = $5 WHERE job_id = $1 AND "
    "state = 'queued' AND attempts = $3::int AND (reason, reason_message) IS DISTINCT FROM "
    "($4, $5)) SELECT count(*) FROM w";

/* $1 job_id: the job left the queue, its records are void. */
static const char tombstone_sql[] =
    "WITH d AS (DELETE FROM job_waiting WHERE job_id = $1 RETURNING job_id) SELECT count(*) FROM d";

/* A pending reason of the scheduler, or a tombstone, from constellation.jobs.waiting. */
static int apply_waiting(cstl_pg_conn *conn, const char *type, const json_t *data, cstl_error *err)
{
    bool tombstone = strcmp(type, CSTL_PROJ_TOMBSTONE) == 0;
    cstl_proj_params p = {0};
    cstl_proj_str(&p, data, tombstone ? "key" : "job_id", false);
    if (!tombstone) {
        cstl_proj_str(&p, data, "tenant_id", false);
        cstl_proj_int(&p, data, "attempts", false);
        cstl_proj_lower(&p, data, "reason", false);
        cstl_proj_str(&p, data, "message", false);
        cstl_proj_int(&p, data, "at", false);
    }
    int rc = cstl_proj_params_check(&p, type, err);
    if (rc == 0)
        rc = cstl_proj_guarded(conn, tombstone ? "jobs_Tombstone" : "jobs_JobWaiting",
                               tombstone ? tombstone_sql : waiting_sql, &p, NULL, NULL, "job", err);
    cstl_proj_params_free(&p);
    return rc;
}

int cstl_projection_jobs_apply(cstl_pg_conn *conn,
                               const cstl_event_headers *h,
                               const char *type,
                               const json_t *data,
                               cstl_error *err)
{
    if (strcmp(type, "JobWaiting") == 0 || strcmp(type, CSTL_PROJ_TOMBSTONE) == 0)
        return apply_waiting(conn, type, data, err);
    const event_spec *spec = NULL;
    for (size_t i = 0; i < CSTL_ARRAY_LEN(specs); i++)
        if (strcmp(specs[i].type, type) == 0)
            spec = &specs[i];
    if (spec == NULL)
        return 0;

    cstl_proj_params p = {0};
    cstl_proj_str(&p, data, "job_id", false);
    cstl_proj_i64(&p, h->version);
    cstl_proj_int(&p, data, spec->time_key, false);
    cstl_proj_text(&p, h->id);
    cstl_proj_text(&p, type);
    cstl_proj_json(&p, data, NULL);
    for (const field_spec *f = spec->fields; f->key != NULL; f++) {
        switch (f->kind) {
        case STR:
        case STR_NULL:
            cstl_proj_str(&p, data, f->key, f->kind == STR_NULL);
            break;
        case INT:
        case INT_NULL:
            cstl_proj_int(&p, data, f->key, f->kind == INT_NULL);
            break;
        case JSON:
            cstl_proj_json(&p, data, f->key);
            break;
        case LOWER:
        case LOWER_NULL:
            cstl_proj_lower(&p, data, f->key, f->kind == LOWER_NULL);
            break;
        }
    }
    int rc = cstl_proj_params_check(&p, type, err);
    if (rc == 0) {
        char name[64];
        snprintf(name, sizeof(name), "jobs_%s", type);
        int submitted = strcmp(type, "JobSubmitted") == 0;
        rc = cstl_proj_guarded(conn, name, spec->sql, &p, "jobs_exists",
                               submitted ? NULL : exists_sql, "job", err);
    }
    cstl_proj_params_free(&p);
    return rc;
}

/* A growing string. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
} sbuf;

static sbuf sbuf_new(void)
{
    sbuf b = {cstl_xmalloc(256), 0, 256};
    b.s[0] = '\0';
    return b;
}

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = cstl_xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void puts_(sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Appends s to b with every occurrence of from replaced by to. */
static void put_replacing(sbuf *b, const char *s, const char *from, const char *to)
{
    const char *at;
    while ((at = strstr(s, from)) != NULL) {
        put(b, s, (size_t)(at - s));
        puts_(b, to);
        s = at + strlen(from);
    }
    puts_(b, s);
}

/* s with every $N replaced by e.pN. New string. */
static char *params_to_columns(const char *s)
{
    sbuf out = sbuf_new();
    while (*s != '\0') {
        if (s[0] == '$' && s[1] >= '0' && s[1] <= '9') {
            puts_(&out, "e.p");
            s++;
            while (*s >= '0' && *s <= '9')
                put(&out, s++, 1);
            continue;
        }
        put(&out, s++, 1);
    }
    return out.s;
}

/* Replaces the first occurrence of from in *s by to; false when absent. */
static bool replace_once(char **s, const char *from, const char *to)
{
    char *at = strstr(*s, from);
    if (at == NULL)
        return false;
    sbuf out = sbuf_new();
    put(&out, *s, (size_t)(at - *s));
    puts_(&out, to);
    puts_(&out, at + strlen(from));
    free(*s);
    *s = out.s;
    return true;
}

char *cstl_projection_jobs_set_sql(const char *sql, const char *const *types, int n)
{
    /* the events' parameters as the columns p1..pN of e, one row per event, each text element
     * cast to its parameter's type */
    sbuf out = sbuf_new();
    puts_(&out, "WITH e AS (SELECT ");
    for (int i = 0; i < n; i++) {
        char buf[160];
        if (strcmp(types[i], "text") == 0)
            snprintf(buf, sizeof(buf), "%sx.p%d", i ? ", " : "", i + 1);
        else
            snprintf(buf, sizeof(buf), "%sx.p%d::%s AS p%d", i ? ", " : "", i + 1, types[i], i + 1);
        puts_(&out, buf);
    }
    puts_(&out, " FROM unnest(");
    for (int i = 0; i < n; i++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%s$%d::text[]", i ? ", " : "", i + 1);
        puts_(&out, buf);
    }
    puts_(&out, ") AS x(");
    for (int i = 0; i < n; i++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%sp%d", i ? ", " : "", i + 1);
        puts_(&out, buf);
    }
    puts_(&out, ")), ");
    char *body = params_to_columns(sql);
    bool ok = strncmp(body, "WITH u AS (", 11) == 0;
    /* the guarded update or the insert of u runs for every row of e. An update returns each
     * changed job's event with it, so what follows reads u as e; an insert can return only the
     * row's columns, so what follows joins each inserted job to its event. */
    bool update =
        ok && replace_once(&body, " WHERE job_id = e.p1 AND version < e.p2 RETURNING tenant_id)",
                           " FROM e WHERE jobs.job_id = e.p1 AND jobs.version < e.p2 "
                           "RETURNING jobs.tenant_id, e.*)");
    if (ok && !update)
        ok = replace_once(&body, " VALUES (", " SELECT ") &&
             replace_once(&body, ") ON CONFLICT (job_id) DO NOTHING RETURNING tenant_id)",
                          " FROM e ON CONFLICT (job_id) DO NOTHING RETURNING job_id, tenant_id)");
    const char *tail = ok ? strstr(body, "RETURNING ") : NULL;
    if (tail != NULL)
        put(&out, body + 5, (size_t)(tail - body - 5)); /* without "WITH " */
    if (tail != NULL && !update) {
        put_replacing(&out, tail, " FROM u", " FROM u JOIN e ON e.p1 = u.job_id");
    } else if (tail != NULL) {
        /* u's columns as e's: u.tenant_id is e.tenant_id, and each " FROM u" (the whole word)
         * reads u as e */
        sbuf t = sbuf_new();
        put_replacing(&t, tail, "u.tenant_id", "e.tenant_id");
        const char *rest = t.s, *from;
        while ((from = strstr(rest, " FROM u")) != NULL) {
            put(&out, rest, (size_t)(from - rest) + 7);
            rest = from + 7;
            if (*rest != '_' && !isalnum((unsigned char)*rest))
                puts_(&out, " AS e");
        }
        puts_(&out, rest);
        free(t.s);
    }
    bool done = tail != NULL;
    free(body);
    if (!done) {
        free(out.s);
        return NULL;
    }
    return out.s;
}

/* The batch's jobs into pg_temp.jobs_work (see the top of the file and migration 0010). */
int cstl_projection_jobs_batch_begin(cstl_pg_conn *conn,
                                     const json_t *const *data,
                                     size_t n,
                                     cstl_error *err)
{
    const char **ids = cstl_xcalloc(n ? n : 1, sizeof(const char *));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *id = json_object_get(data[i], "job_id");
        if (id == NULL)
            id = json_object_get(data[i], "key"); /* a tombstone of jobs.waiting */
        if (json_string_value(id) != NULL)        /* else no job: its statement finds none either */
            ids[m++] = json_string_value(id);
    }
    char *literal = cstl_proj_array_literal(ids, m);
    free(ids);
    const char *params[] = {literal};
    int rc = cstl_pg_exec_prepared(conn, "jobs_work_begin",
                                   "SELECT projection_jobs_work_begin($1::text[])", 1, params, NULL,
                                   err);
    free(literal);
    return rc;
}

/* The batch's changed jobs back into jobs, one row version each. */
int cstl_projection_jobs_batch_end(cstl_pg_conn *conn, cstl_error *err)
{
    return cstl_pg_exec_prepared(conn, "jobs_work_end", "SELECT projection_jobs_work_end()", 0,
                                 NULL, NULL, err);
}
