-- The query API's reads (docs/query-api.md): one function per endpoint in schema "query", each
-- binding the caller's tenant for the rest of the transaction (set_config(..., true)) and then
-- reading the views of schema "read" under row-level security, so a request costs one round trip.
-- The functions are SECURITY INVOKER: they run as constellation_query and see exactly what that
-- role sees for the tenant they are given. They return the response JSON as text, built here so
-- that the service passes it through.

CREATE SCHEMA query;
GRANT USAGE ON SCHEMA query TO constellation_query;

-- RFC 3339 UTC with microseconds, as events carry them.
CREATE FUNCTION query.ts(t timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

CREATE FUNCTION query.bind_tenant(p_tenant text) RETURNS void
    LANGUAGE sql VOLATILE
    AS $$ SELECT set_config('constellation.tenant_id', p_tenant, true) $$;

CREATE FUNCTION query.job_json(j read.jobs) RETURNS json
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'id', j.job_id, 'name', j.name, 'state', j.state, 'reason', j.reason,
        'reason_message', j.reason_message, 'priority', j.priority, 'gpu_count', j.gpu_count,
        'min_gpu_memory_mib', j.min_gpu_memory_mib, 'gpu_model', j.gpu_model,
        'runtime_limit_seconds', j.runtime_limit_seconds, 'retry_limit', j.retry_limit,
        'labels', j.labels, 'parameters', j.parameters, 'submitted_by', j.submitted_by,
        'submitted_at', query.ts(j.submitted_at), 'updated_at', query.ts(j.updated_at),
        'version', j.version, 'queue_position', j.queue_position,
        'current_run_id', j.current_run_id, 'attempts', j.attempts,
        'reservation_id', j.reservation_id, 'finished_at', query.ts(j.finished_at))
$$;

-- One job with its runs, or NULL when the tenant has no such job.
CREATE FUNCTION query.job_get(p_tenant text, p_job_id text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    j read.jobs;
    runs json;
BEGIN
    PERFORM query.bind_tenant(p_tenant);
    SELECT * INTO j FROM read.jobs WHERE job_id = p_job_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(json_agg(json_build_object(
               'run_id', r.run_id, 'worker_id', r.worker_id, 'gpu_uuids', r.gpu_uuids,
               'assigned_at', query.ts(r.assigned_at), 'started_at', query.ts(r.started_at),
               'finished_at', query.ts(r.finished_at), 'outcome', r.outcome,
               'exit_code', r.exit_code, 'failure_reason', r.failure_reason,
               'gpu_seconds', r.gpu_seconds) ORDER BY r.assigned_at, r.run_id), '[]'::json)
      INTO runs FROM read.runs r WHERE r.job_id = p_job_id;
    RETURN (SELECT json_build_object('job', query.job_json(j), 'runs', runs)::text);
END
$$;

-- A page of jobs: up to p_limit + 1 rows in (submitted_at, job_id) order after the cursor
-- position (p_after_ts, p_after_id), descending unless p_ascending. The caller shows p_limit and
-- knows from the extra row whether there is a next page. A NULL filter is left out of the query
-- (built per call, so each filter combination gets its own plan on the tenant's index).
CREATE FUNCTION query.jobs_list(p_tenant text, p_states text[], p_labels jsonb,
                                p_priority int, p_min_priority int, p_max_priority int,
                                p_submitted_after timestamptz, p_submitted_before timestamptz,
                                p_name_prefix text, p_ascending boolean,
                                p_after_ts timestamptz, p_after_id text, p_limit int)
    RETURNS text
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    w   text := 'true';
    dir text := CASE WHEN p_ascending THEN 'ASC' ELSE 'DESC' END;
    res text;
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
    EXECUTE format('SELECT coalesce(json_agg(json_build_object(''job'', query.job_json(s.j), '
                   '''cursor_us'', (extract(epoch FROM (s.j).submitted_at) * 1000000)::bigint) '
                   'ORDER BY (s.j).submitted_at %1$s, (s.j).job_id %1$s), ''[]''::json)::text '
                   'FROM (SELECT j FROM read.jobs j WHERE %2$s '
                   'ORDER BY j.submitted_at %1$s, j.job_id %1$s LIMIT $11) s', dir, w)
        INTO res
        USING p_states, p_labels, p_priority, p_min_priority, p_max_priority, p_submitted_after,
              p_submitted_before, p_name_prefix, p_after_ts, p_after_id, p_limit + 1;
    RETURN res;
END
$$;

-- The events of one job, oldest first, or NULL when the tenant has no such job.
CREATE FUNCTION query.job_history(p_tenant text, p_job_id text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM query.bind_tenant(p_tenant);
    IF NOT EXISTS (SELECT FROM read.jobs WHERE job_id = p_job_id) THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT json_build_object('job_id', p_job_id, 'items', coalesce(json_agg(
                json_build_object('version', h.version, 'event_id', h.event_id,
                                  'type', h.event_type, 'at', query.ts(h.at), 'data', h.data)
                ORDER BY h.version), '[]'::json))::text
              FROM read.job_history h WHERE h.job_id = p_job_id);
END
$$;

-- The tenant's queued jobs in scheduling order (queue position), with their reasons.
CREATE FUNCTION query.queue(p_tenant text, p_limit int) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM query.bind_tenant(p_tenant);
    RETURN (SELECT json_build_object('items', coalesce(json_agg(json_build_object(
                'position', q.queue_position, 'id', q.job_id, 'name', q.name,
                'priority', q.priority, 'gpu_count', q.gpu_count, 'gpu_model', q.gpu_model,
                'reason', q.reason, 'reason_message', q.reason_message,
                'submitted_at', query.ts(q.submitted_at)) ORDER BY q.ord), '[]'::json))::text
              FROM (SELECT j.*, row_number() OVER (ORDER BY j.priority DESC, j.submitted_at,
                                                   j.job_id) AS ord
                      FROM read.jobs j WHERE j.state = 'queued'
                     ORDER BY j.priority DESC, j.submitted_at, j.job_id
                     LIMIT p_limit) q);
END
$$;

-- The fleet's workers (fleet-wide: every tenant sees them).
CREATE FUNCTION query.workers(p_tenant text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM query.bind_tenant(p_tenant);
    RETURN (SELECT json_build_object('items', coalesce(json_agg(json_build_object(
                'id', w.worker_id, 'hostname', w.hostname, 'state', w.state,
                'labels', w.labels, 'registered_at', query.ts(w.registered_at),
                'last_event_at', query.ts(w.last_event_at), 'version', w.version,
                'gpu_count', (SELECT count(*) FROM read.gpus g WHERE g.worker_id = w.worker_id))
                ORDER BY w.worker_id), '[]'::json))::text
              FROM read.workers w);
END
$$;

-- Every GPU with its state; the holding job's id only when it is the caller's.
CREATE FUNCTION query.gpus(p_tenant text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM query.bind_tenant(p_tenant);
    RETURN (SELECT json_build_object('items', coalesce(json_agg(json_build_object(
                'uuid', g.gpu_uuid, 'worker_id', g.worker_id, 'hostname', g.hostname,
                'model', g.model, 'memory_mib', g.memory_mib,
                'compute_capability', g.compute_capability, 'state', g.state,
                'drained', g.drained, 'drain_reason', g.drain_reason,
                'held_since', query.ts(g.held_since), 'job_id', g.job_id,
                'held_by_tenant', g.held_by_tenant)
                ORDER BY g.worker_id, g.gpu_uuid), '[]'::json))::text
              FROM read.gpu_state g);
END
$$;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA query TO constellation_query;
