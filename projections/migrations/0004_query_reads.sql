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
