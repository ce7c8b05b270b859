/*
 * job_logs.c - the job_logs projection: the output lines of jobs (job_log_lines) and, per run, how
 * much of its output was received and stored (job_log_runs), from the workers' JobLogLine records
 * on constellation.jobs.logs (telemetry: no CloudEvents headers; the record's offset is its
 * position, see projection.h).
 *
 * Invariants:
 *   - A line is identified by (job_id, run_id, seq): a redelivered or duplicated record stores
 *     nothing twice and counts nothing twice.
 *   - What is stored of a run is a prefix of its new lines in offset order: a line is stored when
 *     the run's stored lines and bytes, with it, stay within job_log_limits and no earlier line
 *     was refused (job_log_runs.truncated). The decision depends only on the lines before it in
 *     the log, so a rebuild stores exactly the same rows whatever its batches.
 *   - job_log_runs.next_seq and last_pos count every line received, stored or refused.
 * The set form applies a whole batch in one statement; the single form is the same statement over
 * one line, so applying lines one at a time (a batch redone with savepoints) decides alike.
 * Called from the projector's thread inside its batch transaction.
 */
#include "platform/id.h"
#include "projections/projection.h"

#include <stdlib.h>
#include <string.h>

/* The lines of the statement, one row each: e(job_id, tenant_id, run_id, stream, seq, line, at,
 * pos), from scalar parameters (one line) or text arrays (the set form, see
 * cstl_projection_set_sql_fn). */
#define LINES_ONE                                                                                  \
    "SELECT $1::text, $2::text, $3::text, $4::text, $5::bigint, $6::text, $7::bigint, $8::bigint"
#define LINES_SET                                                                                  \
    "SELECT j, t, r, s, q::bigint, l, a::bigint, p::bigint FROM unnest($1::text[], $2::text[], "   \
    "$3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) AS x(j, t, r, s, q, " \
    "l, a, p)"

/* The new lines of each run (first record of a line by offset, not stored yet) with the run's
 * stored lines and bytes up to each in offset order; those within the limits are stored; then
 * each run's counters. The CTEs all read the snapshot before the statement, so c reads the
 * counters as they were before this batch. */
#define APPLY(LINES)                                                                               \
    "WITH e (job_id, tenant_id, run_id, stream, seq, line, at, pos) AS (" LINES "), "              \
    "n AS (SELECT DISTINCT ON (e.job_id, e.run_id, e.seq) e.* FROM e "                             \
    "WHERE NOT EXISTS (SELECT FROM job_log_lines l WHERE l.job_id = e.job_id "                     \
    "AND l.run_id = e.run_id AND l.seq = e.seq) ORDER BY e.job_id, e.run_id, e.seq, e.pos), "      \
    "c AS (SELECT n.*, coalesce(r.lines, 0) + row_number() OVER w AS k, "                          \
    "coalesce(r.bytes, 0) + sum(octet_length(n.line)) OVER w AS b, "                               \
    "coalesce(r.truncated, false) AS t FROM n LEFT JOIN job_log_runs r "                           \
    "ON r.job_id = n.job_id AND r.run_id = n.run_id "                                              \
    "WINDOW w AS (PARTITION BY n.job_id, n.run_id ORDER BY n.pos ROWS UNBOUNDED PRECEDING)), "     \
    "s AS (SELECT c.*, NOT c.t AND c.k <= m.max_lines_per_run AND c.b <= m.max_bytes_per_run "     \
    "AS fits FROM c CROSS JOIN job_log_limits m), "                                                \
    "ins AS (INSERT INTO job_log_lines (tenant_id, job_id, run_id, seq, pos, stream, line, at) "   \
    "SELECT tenant_id, job_id, run_id, seq, pos, stream, line, cstl_ts(at) FROM s WHERE fits "     \
    "ON CONFLICT (job_id, run_id, seq) DO NOTHING "                                                \
    "RETURNING job_id, run_id, octet_length(line) AS len), "                                       \
    "added AS (SELECT job_id, run_id, count(*) AS lines, sum(len) AS bytes FROM ins "              \
    "GROUP BY 1, 2), "                                                                             \
    "refused AS (SELECT DISTINCT job_id, run_id FROM s WHERE NOT fits), "                          \
    "got AS (SELECT job_id, run_id, min(tenant_id) AS tenant_id, max(seq) + 1 AS next_seq, "       \
    "max(pos) AS last_pos FROM e GROUP BY 1, 2), "                                                 \
    "u AS (INSERT INTO job_log_runs AS x (tenant_id, job_id, run_id, lines, bytes, next_seq, "     \
    "last_pos, truncated) SELECT g.tenant_id, g.job_id, g.run_id, coalesce(a.lines, 0), "          \
    "coalesce(a.bytes, 0), g.next_seq, g.last_pos, f.job_id IS NOT NULL FROM got g "               \
    "LEFT JOIN added a ON a.job_id = g.job_id AND a.run_id = g.run_id "                            \
    "LEFT JOIN refused f ON f.job_id = g.job_id AND f.run_id = g.run_id "                          \
    "ON CONFLICT (job_id, run_id) DO UPDATE SET lines = x.lines + excluded.lines, "                \
    "bytes = x.bytes + excluded.bytes, next_seq = greatest(x.next_seq, excluded.next_seq), "       \
    "last_pos = greatest(x.last_pos, excluded.last_pos), "                                         \
    "truncated = x.truncated OR excluded.truncated RETURNING 1) "                                  \
    "SELECT count(*) FROM e"

static const char sql_one[] = APPLY(LINES_ONE);
static const char sql_set[] = APPLY(LINES_SET);

int cstl_projection_job_logs_apply(cstl_pg_conn *conn,
                                   const cstl_event_headers *h,
                                   const char *type,
                                   const json_t *data,
                                   cstl_error *err)
{
    if (strcmp(type, "JobLogLine") != 0)
        return 0;
    /* the tenant: the record's own, else the header of lines written before it had one */
    const char *tenant = json_string_value(json_object_get(data, "tenant_id"));
    if (tenant == NULL || tenant[0] == '\0')
        tenant = h->tenant;
    const char *job = json_string_value(json_object_get(data, "job_id"));
    if (!cstl_uuid_valid(tenant))
        return cstl_error_set(err, CSTL_EINVAL,
                              "JobLogLine of job \"%.64s\" has no valid tenant (tenant_id or the "
                              "cstl_tenant header), got \"%.64s\"",
                              job ? job : "", tenant);
    const char *line = json_string_value(json_object_get(data, "line"));
    if (line != NULL && strlen(line) > CSTL_JOB_LOG_LINE_MAX)
        return cstl_error_set(err, CSTL_ETOOBIG,
                              "JobLogLine of job \"%.64s\" has a line of %zu bytes, over the limit "
                              "of %d",
                              job ? job : "", strlen(line), CSTL_JOB_LOG_LINE_MAX);
    const json_t *seq = json_object_get(data, "seq");
    if (json_is_integer(seq) && json_integer_value(seq) < 0)
        return cstl_error_set(err, CSTL_EINVAL,
                              "JobLogLine of job \"%.64s\" has a negative seq %lld", job ? job : "",
                              (long long)json_integer_value(seq));

    cstl_proj_params p = {0};
    cstl_proj_str(&p, data, "job_id", false);
    cstl_proj_text(&p, tenant);
    cstl_proj_str(&p, data, "run_id", false);
    cstl_proj_str(&p, data, "stream", false);
    cstl_proj_int(&p, data, "seq", false);
    cstl_proj_str(&p, data, "line", false);
    cstl_proj_int(&p, data, "at", false);
    cstl_proj_i64(&p, h->version);
    int rc = cstl_proj_params_check(&p, type, err);
    if (rc == 0)
        rc = cstl_proj_guarded(conn, "job_logs_line", sql_one, &p, NULL, NULL, "job", err);
    cstl_proj_params_free(&p);
    return rc;
}

char *cstl_projection_job_logs_set_sql(const char *sql, const char *const *types, int n)
{
    (void)types;
    if (n != 8 || strcmp(sql, sql_one) != 0)
        return NULL;
    return cstl_xstrdup(sql_set);
}
