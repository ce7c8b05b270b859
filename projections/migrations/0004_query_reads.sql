-- Cheaper reads for the query API (docs/query-api.md, "Speed"); same answers, same tenant binding.
--
-- query.ts was declared IMMUTABLE while to_char is only STABLE, and PostgreSQL never inlines a SQL
-- function whose body is more volatile than its declaration: every timestamp of every answer was a
-- separate SQL function call (executor set up and torn down), three per job. Declared STABLE, it is
-- inlined into the calling query.
CREATE OR REPLACE FUNCTION query.ts(t timestamptz) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

-- query.bind_tenant returned void while its body returns text, which keeps PostgreSQL from inlining
-- it: every call parsed and planned its one-line body again (the function cache of a SQL function
-- lasts one transaction, and every read is its own transaction). Returning the tenant it bound, it
-- is inlined into set_config itself, and a caller can bind with an assignment, evaluated as a plain
-- expression without a statement of its own. The callers of 0003 are unchanged (PERFORM).
DROP FUNCTION query.bind_tenant(text);
CREATE FUNCTION query.bind_tenant(p_tenant text) RETURNS text
    LANGUAGE sql VOLATILE
    AS $$ SELECT set_config('constellation.tenant_id', p_tenant, true) $$;
GRANT EXECUTE ON FUNCTION query.bind_tenant(text) TO constellation_query;

-- One job with its runs, or NULL when the tenant has no such job: after binding the tenant, one
-- statement reads the job, aggregates its runs and builds the document (it was three statements
-- and a fourth for the result, each a separate executor run inside the function).
CREATE OR REPLACE FUNCTION query.job_get(p_tenant text, p_job_id text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    res text;
BEGIN
    res := query.bind_tenant(p_tenant);
    SELECT json_build_object('job', query.job_json(j), 'runs',
               (SELECT coalesce(json_agg(json_build_object(
                    'run_id', r.run_id, 'worker_id', r.worker_id, 'gpu_uuids', r.gpu_uuids,
                    'assigned_at', query.ts(r.assigned_at), 'started_at', query.ts(r.started_at),
                    'finished_at', query.ts(r.finished_at), 'outcome', r.outcome,
                    'exit_code', r.exit_code, 'failure_reason', r.failure_reason,
                    'gpu_seconds', r.gpu_seconds) ORDER BY r.assigned_at, r.run_id), '[]'::json)
                  FROM read.runs r WHERE r.job_id = j.job_id))::text
      INTO res FROM read.jobs j WHERE j.job_id = p_job_id;
    RETURN res;
END
$$;

-- A page of jobs, ready to send: replaces query.jobs_list, which returned p_limit + 1 rows that the
-- service parsed and wrote again to drop the look-ahead row and find the cursor. One row:
--   items    the JSON array of up to p_limit jobs in (submitted_at, job_id) order after the cursor
--            position (p_after_ts, p_after_id), descending unless p_ascending
--   next_us, next_id  the position of the last job shown (submitted_at in µs since the epoch, id)
--            when more jobs follow, for the next cursor; NULL on the last page
-- A NULL filter is left out of the query (built per call, so each filter combination gets its own
-- plan on the tenant's index). Each job's document is built below the LIMIT, from the row itself,
-- so only the jobs returned are formatted.
DROP FUNCTION query.jobs_list(text, text[], jsonb, int, int, int, timestamptz, timestamptz, text,
                              boolean, timestamptz, text, int);
CREATE FUNCTION query.jobs_page(p_tenant text, p_states text[], p_labels jsonb,
                                p_priority int, p_min_priority int, p_max_priority int,
                                p_submitted_after timestamptz, p_submitted_before timestamptz,
                                p_name_prefix text, p_ascending boolean,
                                p_after_ts timestamptz, p_after_id text, p_limit int,
                                OUT items text, OUT next_us bigint, OUT next_id text)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    w   text := 'true';
    dir text := CASE WHEN p_ascending THEN 'ASC' ELSE 'DESC' END;
BEGIN
    PERFORM query.bind_tenant(p_tenant);
    IF p_states IS NOT NULL THEN w := w || ' AND j.state = ANY ($1)'; END IF;
    IF p_labels IS NOT NULL THEN w := w || ' AND j.labels @> $2'; END IF;
    IF p_priority IS NOT NULL THEN w := w || ' AND j.priority = $3'; END IF;
    IF p_min_priority IS NOT NULL THEN w := w || ' AND j.priority >= $4'; END IF;
    IF p_max_priority IS NOT NULL THEN w := w || ' AND j.priority <= $5'; END IF;
    IF p_submitted_after IS NOT NULL THEN w := w || ' AND j.submitted_at > $6'; END IF;
    IF p_submitted_before IS NOT NULL THEN w := w || ' AND j.submitted_at < $7'; END IF;
    IF p_name_prefix IS NOT NULL THEN w := w || ' AND starts_with(j.name, $8)'; END IF;
    IF p_after_ts IS NOT NULL THEN
        w := w || CASE WHEN p_ascending THEN ' AND (j.submitted_at, j.job_id) > ($9, $10)'
                       ELSE ' AND (j.submitted_at, j.job_id) < ($9, $10)' END;
    END IF;
    EXECUTE format('SELECT coalesce(json_agg(p.doc ORDER BY p.n) FILTER (WHERE p.n <= $11), '
                   '''[]''::json)::text, '
                   'CASE WHEN count(*) > $11 THEN max(p.at_us) FILTER (WHERE p.n = $11) END, '
                   'CASE WHEN count(*) > $11 THEN max(p.job_id) FILTER (WHERE p.n = $11) END '
                   'FROM (SELECT row_number() OVER (ORDER BY s.submitted_at %1$s, s.job_id %1$s) '
                   '             AS n, s.* '
                   '        FROM (SELECT query.job_json(j) AS doc, j.submitted_at, j.job_id, '
                   '                     (extract(epoch FROM j.submitted_at) * 1000000)::bigint '
                   '                     AS at_us '
                   '                FROM read.jobs j WHERE %2$s '
                   '               ORDER BY j.submitted_at %1$s, j.job_id %1$s LIMIT $11 + 1) s) p',
                   dir, w)
        INTO items, next_us, next_id
        USING p_states, p_labels, p_priority, p_min_priority, p_max_priority, p_submitted_after,
              p_submitted_before, p_name_prefix, p_after_ts, p_after_id, p_limit;
END
$$;
GRANT EXECUTE ON FUNCTION query.jobs_page(text, text[], jsonb, int, int, int, timestamptz,
                                          timestamptz, text, boolean, timestamptz, text, int)
    TO constellation_query;
