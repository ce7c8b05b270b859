-- Job output lines as a read model (docs/read-side.md "Job logs", docs/query-api.md
-- "GET /v1/jobs/{id}/logs").
--
-- A fourth projection, job_logs, reads constellation.jobs.logs (the worker's JobLogLine records)
-- into job_log_lines and job_log_runs; runs gain log_lines (RunFinished.log_lines: how many lines
-- the run wrote), so that the log stream knows when it has every line of a finished job;
-- query.job_logs reads a page of a job's lines and tells whether the job's output is complete.

-- The schema of a new version: as in 0005, plus runs.log_lines and the job_logs projection.
CREATE OR REPLACE FUNCTION projection_create_version(p_projection text, p_version int) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    s   text := p_projection || '_v' || p_version;
    old text := current_setting('search_path');
    v   int;
BEGIN
    IF p_projection NOT IN ('tenants', 'jobs', 'fleet', 'job_logs') THEN
        RAISE EXCEPTION 'unknown projection "%"', p_projection;
    END IF;
    EXECUTE format('CREATE SCHEMA %I', s);
    PERFORM set_config('search_path', quote_ident(s) || ', public', true);

    IF p_projection = 'tenants' THEN
        CREATE TABLE tenants (
            tenant_id        text PRIMARY KEY,
            name             text NOT NULL,
            contact_email    text NOT NULL,
            state            text NOT NULL CHECK (state IN ('active', 'suspended')),
            suspended_reason text,
            created_at       timestamptz NOT NULL,
            updated_at       timestamptz NOT NULL,
            version          bigint NOT NULL
        );
        CREATE TABLE api_keys (
            key_id     text PRIMARY KEY,
            tenant_id  text NOT NULL,
            key_hash   text NOT NULL,
            role       text NOT NULL,
            expires_at timestamptz,
            issued_at  timestamptz NOT NULL,
            revoked_at timestamptz
        );
        CREATE INDEX ON api_keys (tenant_id);
        PERFORM projection_tenant_rls('tenants', true);
        PERFORM projection_tenant_rls('api_keys', true);
    ELSIF p_projection = 'jobs' THEN
        CREATE TABLE jobs (
            job_id                text PRIMARY KEY,
            tenant_id             text NOT NULL,
            name                  text,
            state                 text NOT NULL CHECK (state IN ('submitted', 'queued',
                                      'assigned', 'running', 'succeeded', 'failed', 'cancelled',
                                      'timed_out', 'rejected')),
            reason                text NOT NULL,
            reason_message        text,
            priority              int NOT NULL,
            gpu_count             int NOT NULL CHECK (gpu_count >= 1),
            min_gpu_memory_mib    bigint NOT NULL CHECK (min_gpu_memory_mib >= 0),
            gpu_model             text,
            runtime_limit_seconds bigint NOT NULL CHECK (runtime_limit_seconds >= 0),
            retry_limit           int NOT NULL CHECK (retry_limit >= 0),
            labels                jsonb NOT NULL,
            parameters            jsonb NOT NULL,
            submitted_by          text NOT NULL,
            submitted_at          timestamptz NOT NULL,
            updated_at            timestamptz NOT NULL,
            version               bigint NOT NULL,
            current_run_id        text,
            attempts              int NOT NULL DEFAULT 0,
            reservation_id        text,
            finished_at           timestamptz
        );
        CREATE INDEX jobs_tenant_submitted ON jobs (tenant_id, submitted_at DESC, job_id DESC);
        CREATE INDEX jobs_tenant_state ON jobs (tenant_id, state, submitted_at DESC);
        CREATE INDEX jobs_labels ON jobs USING gin (labels jsonb_path_ops);
        CREATE INDEX jobs_queue ON jobs (tenant_id, priority DESC, submitted_at, job_id)
            WHERE state = 'queued';
        PERFORM projection_jobs_queue_counts(s);
        CREATE TABLE runs (
            run_id         text PRIMARY KEY,
            job_id         text NOT NULL,
            tenant_id      text NOT NULL,
            worker_id      text NOT NULL,
            gpu_uuids      text[] NOT NULL,
            assigned_at    timestamptz NOT NULL,
            started_at     timestamptz,
            finished_at    timestamptz,
            outcome        text,
            exit_code      int,
            failure_reason text,
            gpu_seconds    bigint,
            log_lines      bigint
        ) WITH (fillfactor = 80);
        CREATE INDEX runs_job ON runs (job_id, assigned_at);
        CREATE INDEX runs_tenant ON runs (tenant_id, assigned_at DESC);
        CREATE TABLE job_history (
            tenant_id  text NOT NULL,
            job_id     text NOT NULL,
            version    bigint NOT NULL,
            event_id   text NOT NULL,
            event_type text NOT NULL,
            at         timestamptz NOT NULL,
            data       jsonb NOT NULL,
            PRIMARY KEY (job_id, version)
        );
        CREATE INDEX job_history_tenant ON job_history (tenant_id, at DESC);
        PERFORM projection_tenant_rls('jobs', true);
        PERFORM projection_tenant_rls('runs', true);
        PERFORM projection_tenant_rls('job_history', true);
    ELSIF p_projection = 'job_logs' THEN
        -- one row per stored line; (job_id, run_id, seq) makes a redelivered line a no-op, pos
        -- (the record's offset: every line of a job is on one partition) orders a job's lines
        CREATE TABLE job_log_lines (
            tenant_id text NOT NULL,
            job_id    text NOT NULL,
            run_id    text NOT NULL,
            seq       bigint NOT NULL CHECK (seq >= 0),
            pos       bigint NOT NULL CHECK (pos >= 0),
            stream    text NOT NULL CHECK (stream IN ('stdout', 'stderr')),
            line      text NOT NULL,
            at        timestamptz NOT NULL,
            PRIMARY KEY (job_id, run_id, seq)
        );
        CREATE INDEX job_log_lines_pos ON job_log_lines (job_id, pos);
        -- one row per run that wrote lines: what was stored, and how far the run's output was
        -- received (stored or not), which the log stream compares with RunFinished.log_lines
        CREATE TABLE job_log_runs (
            tenant_id text NOT NULL,
            job_id    text NOT NULL,
            run_id    text NOT NULL,
            lines     bigint NOT NULL,  -- lines stored
            bytes     bigint NOT NULL,  -- their bytes (UTF-8)
            next_seq  bigint NOT NULL,  -- 1 + the highest seq received
            last_pos  bigint NOT NULL,  -- the highest offset received
            truncated boolean NOT NULL, -- a line did not fit the limits: no later line is stored
            PRIMARY KEY (job_id, run_id)
        ) WITH (fillfactor = 70);
        -- what is stored per run (docs/read-side.md); internal, one row
        CREATE TABLE job_log_limits (
            one               boolean PRIMARY KEY DEFAULT true CHECK (one),
            max_lines_per_run bigint NOT NULL CHECK (max_lines_per_run >= 0),
            max_bytes_per_run bigint NOT NULL CHECK (max_bytes_per_run >= 0)
        );
        INSERT INTO job_log_limits (max_lines_per_run, max_bytes_per_run) VALUES (100000, 67108864);
        -- a rebuild keeps the limits the active version was given, so that it stores the same
        SELECT active_version INTO v FROM projection_versions WHERE projection = 'job_logs';
        IF FOUND THEN
            EXECUTE format('UPDATE job_log_limits SET (max_lines_per_run, max_bytes_per_run) = '
                           '(SELECT max_lines_per_run, max_bytes_per_run FROM %I.job_log_limits)',
                           'job_logs_v' || v);
        END IF;
        PERFORM projection_tenant_rls('job_log_lines', true);
        PERFORM projection_tenant_rls('job_log_runs', true);
    ELSE
        CREATE TABLE workers (
            worker_id     text PRIMARY KEY,
            hostname      text NOT NULL,
            state         text NOT NULL CHECK (state IN ('registered', 'lost', 'deregistered')),
            labels        jsonb NOT NULL,
            registered_at timestamptz NOT NULL,
            last_event_at timestamptz NOT NULL,
            version       bigint NOT NULL
        );
        CREATE TABLE gpus (
            gpu_uuid           text PRIMARY KEY,
            worker_id          text NOT NULL,
            model              text NOT NULL,
            memory_mib         bigint NOT NULL,
            compute_capability text NOT NULL,
            drained            boolean NOT NULL DEFAULT false,
            drain_reason       text
        );
        CREATE INDEX gpus_worker ON gpus (worker_id);
        -- the GPU job state: one row per held GPU
        CREATE TABLE gpu_assignments (
            gpu_uuid  text PRIMARY KEY,
            worker_id text NOT NULL,
            job_id    text NOT NULL,
            tenant_id text, -- the holding job's tenant; NULL until its JobSubmitted is seen
            since     timestamptz NOT NULL
        );
        CREATE INDEX gpu_assignments_job ON gpu_assignments (job_id);
        CREATE INDEX gpu_assignments_worker ON gpu_assignments (worker_id);
        -- job id -> tenant, from the jobs topic, to fill gpu_assignments.tenant_id; internal
        CREATE TABLE job_tenants (
            job_id    text PRIMARY KEY,
            tenant_id text NOT NULL
        );
        -- Not FORCE: the owner-run view gpu_state must see every assignment to tell held GPUs
        -- from free ones; it shows the job id only to the tenant that holds the GPU.
        PERFORM projection_tenant_rls('gpu_assignments', false);
        CREATE VIEW gpu_state AS
            SELECT g.gpu_uuid, g.worker_id, w.hostname, g.model, g.memory_mib,
                   g.compute_capability, g.drained, g.drain_reason,
                   CASE WHEN w.state IS DISTINCT FROM 'registered' THEN 'offline'
                        WHEN a.gpu_uuid IS NOT NULL THEN 'held'
                        WHEN g.drained THEN 'drained'
                        ELSE 'free' END AS state,
                   a.since AS held_since,
                   CASE WHEN a.tenant_id = current_setting('constellation.tenant_id', true)
                        THEN a.job_id END AS job_id,
                   coalesce(a.tenant_id = current_setting('constellation.tenant_id', true), false)
                       AS held_by_tenant
              FROM gpus g
              LEFT JOIN workers w ON w.worker_id = g.worker_id
              LEFT JOIN gpu_assignments a ON a.gpu_uuid = g.gpu_uuid;
    END IF;

    EXECUTE format('GRANT USAGE ON SCHEMA %I TO constellation_query', s);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO constellation_query', s);
    IF p_projection = 'fleet' THEN
        REVOKE SELECT ON job_tenants FROM constellation_query;
    ELSIF p_projection = 'job_logs' THEN
        REVOKE SELECT ON job_log_limits FROM constellation_query;
    END IF;
    PERFORM set_config('search_path', old, true);
    RETURN s;
END
$$;

-- Existing versions of jobs gain runs.log_lines; read.runs is made again to show it.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relname = 'runs' AND c.relkind = 'r' AND n.nspname ~ '^jobs_v[0-9]+$'
    LOOP
        EXECUTE format('ALTER TABLE %I.runs ADD COLUMN IF NOT EXISTS log_lines bigint', r.nspname);
    END LOOP;
    PERFORM projection_read_views('jobs', active_version)
       FROM projection_versions WHERE projection = 'jobs';
END
$$;

SELECT projection_create_version('job_logs', 1), projection_activate('job_logs', 1);

-- The next offset a projection's active version will consume on one partition (NULL: nothing
-- applied from it yet). Every row a projector wrote from records below it is visible in the
-- same snapshot, since a batch commits its rows and its offsets together. SECURITY DEFINER: the
-- query role has no access to projection_offsets, which holds nothing of any tenant.
CREATE FUNCTION read.projection_next_offset(p_projection text, p_topic text, p_partition int)
    RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT o.next_offset
      FROM public.projection_versions v
      JOIN public.projection_offsets o ON o.projection = v.projection || '_v' || v.active_version
     WHERE v.projection = p_projection AND o.topic = p_topic AND o.partition = p_partition
$$;
REVOKE ALL ON FUNCTION read.projection_next_offset(text, text, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION read.projection_next_offset(text, text, int) TO constellation_query;

-- A page of a job's output for GET /v1/jobs/{id}/logs, after position p_after, as Server-Sent
-- Events ready to send; all NULL when the tenant has no such job. One row:
--   state      the job's state
--   frames     the page: one event per line (id = pos, event line, data = the line as JSON), or
--              NULL when no line follows p_after; at most p_limit lines, and no more lines than
--              keep the text before the last one under p_max_bytes (so at least one)
--   lines      how many lines the page holds; last_id the pos of its last
--   more       lines follow the page
--   complete   the job is finished and every line of its output was received: its last run has
--              finished and every run that reported log_lines has had that many received (lines
--              received but refused by the limits count; they are not stored)
--   expired    the job finished more than p_wait_ms ago (the stream stops waiting for lines)
--   end_data   the data of the final event: {"state","reason","complete"}
--   jobs_applied, logs_applied  the next offsets the jobs and job_logs projections will apply on
--              the job's partitions of the given topics (NULL: none yet), in the same snapshot
-- Every statement reads the caller's snapshot (the function is STABLE), so the page, the job's
-- state and the offsets agree.
CREATE FUNCTION query.job_logs(p_tenant text, p_job_id text, p_after bigint, p_limit int,
                               p_max_bytes int, p_wait_ms int, p_jobs_topic text,
                               p_jobs_partition int, p_logs_topic text, p_logs_partition int,
                               OUT state text, OUT frames text, OUT lines int, OUT last_id bigint,
                               OUT more boolean, OUT complete boolean, OUT expired boolean,
                               OUT end_data text, OUT jobs_applied bigint,
                               OUT logs_applied bigint)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    t text;
    j record;
BEGIN
    t := query.bind_tenant(p_tenant);
    SELECT x.state, x.reason, x.finished_at INTO j FROM read.jobs x WHERE x.job_id = p_job_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    state := j.state;
    SELECT string_agg(format(E'id: %s\nevent: line\ndata: %s\n\n', l.pos,
                             json_build_object('run_id', l.run_id, 'stream', l.stream,
                                               'seq', l.seq, 'line', l.line,
                                               'at', query.ts(l.at))), '' ORDER BY l.pos),
           count(*), max(l.pos)
      INTO frames, lines, last_id
      FROM (SELECT x.*, sum(octet_length(x.line)) OVER (ORDER BY x.pos) - octet_length(x.line)
                        AS before
              FROM (SELECT * FROM read.job_log_lines y WHERE y.job_id = p_job_id
                       AND y.pos > p_after ORDER BY y.pos LIMIT p_limit) x) l
     WHERE l.before < p_max_bytes;
    more := EXISTS (SELECT FROM read.job_log_lines x WHERE x.job_id = p_job_id
                       AND x.pos > coalesce(last_id, p_after));
    complete := j.state IN ('succeeded', 'failed', 'cancelled', 'timed_out', 'rejected')
        AND NOT EXISTS (
            SELECT FROM read.runs r
              LEFT JOIN read.job_log_runs g ON g.job_id = r.job_id AND g.run_id = r.run_id
             WHERE r.job_id = p_job_id
               AND ((r.log_lines IS NOT NULL AND coalesce(g.next_seq, 0) < r.log_lines)
                    OR (r.finished_at IS NULL AND r.assigned_at = (
                            SELECT max(q.assigned_at) FROM read.runs q WHERE q.job_id = p_job_id))));
    expired := j.finished_at IS NOT NULL
        AND now() >= j.finished_at + p_wait_ms * interval '1 millisecond';
    end_data := json_build_object('state', j.state, 'reason', j.reason, 'complete', complete)::text;
    jobs_applied := read.projection_next_offset('jobs', p_jobs_topic, p_jobs_partition);
    logs_applied := read.projection_next_offset('job_logs', p_logs_topic, p_logs_partition);
END
$$;
GRANT EXECUTE ON FUNCTION query.job_logs(text, text, bigint, int, int, int, text, int, text, int)
    TO constellation_query;
