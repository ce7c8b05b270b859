-- Queue positions are computed when read, no longer stored (docs/read-side.md "Queue position").
--
-- Renumbering a tenant's queue in every batch rewrote every job behind one that left the queue:
-- O(queue) non-HOT updates of wide rows per batch, 31 to 45 ms of every batch. A job's position
-- is now 1 + the number of the tenant's queued jobs ahead of it (priority desc, submission time,
-- job id), counted by the view read.jobs from jobs_queue_counts (queued jobs per tenant and
-- priority, kept by triggers) and the partial index jobs_queue; GET /v1/queue numbers its page
-- with row_number(). The jobs tables lose queue_position and queue_dirty (and the index
-- jobs_queue_dirty); read.jobs keeps a queue_position column, now its last one.

-- Queued jobs per tenant and priority in schema s (a jobs version): the table
-- jobs_queue_counts, exact at every commit, kept by statement-level triggers on s.jobs, and
-- filled from the jobs already there. A queue position is then the sum of the counts of higher
-- priorities plus a precise range of jobs_queue at the job's own priority, instead of a range
-- over every queued job ahead.
CREATE FUNCTION projection_jobs_queue_counts(s text) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    -- one statement per kind of change: the (tenant, priority) deltas of the statement's rows
    -- (%1$s) applied in key order, so that two batches lock shared rows in the same order; a
    -- count that falls to 0 is deleted (a rebuilt version has no such rows either)
    apply text := 'WITH d AS (SELECT tenant_id, priority, sum(d)::bigint AS d FROM (%1$s) x '
                  'GROUP BY 1, 2 HAVING sum(d) <> 0), '
                  'z AS (DELETE FROM %2$I.jobs_queue_counts c USING d '
                  'WHERE c.tenant_id = d.tenant_id AND c.priority = d.priority '
                  'AND c.n + d.d = 0 RETURNING c.tenant_id, c.priority) '
                  'INSERT INTO %2$I.jobs_queue_counts AS c (tenant_id, priority, n) '
                  'SELECT d.tenant_id, d.priority, d.d FROM d WHERE NOT EXISTS (SELECT FROM z '
                  'WHERE z.tenant_id = d.tenant_id AND z.priority = d.priority) ORDER BY 1, 2 '
                  'ON CONFLICT (tenant_id, priority) DO UPDATE SET n = c.n + excluded.n';
    added   text := 'SELECT tenant_id, priority, 1 AS d FROM new_rows WHERE state = ''queued''';
    removed text := 'SELECT tenant_id, priority, -1 AS d FROM old_rows WHERE state = ''queued''';
BEGIN
    EXECUTE format('CREATE TABLE %I.jobs_queue_counts (tenant_id text NOT NULL, '
                   'priority int NOT NULL, n bigint NOT NULL, '
                   'PRIMARY KEY (tenant_id, priority))', s);
    PERFORM projection_tenant_rls(format('%I.jobs_queue_counts', s)::regclass, true);
    EXECUTE format('GRANT SELECT ON %I.jobs_queue_counts TO constellation_query', s);
    EXECUTE format('INSERT INTO %1$I.jobs_queue_counts (tenant_id, priority, n) '
                   'SELECT tenant_id, priority, count(*) FROM %1$I.jobs WHERE state = ''queued'' '
                   'GROUP BY 1, 2', s);
    -- The trigger function lives in the version's schema, with the table's name written out:
    -- its statements are static, so PL/pgSQL plans them once per session, not once per call.
    -- Most statements move no job into, out of or within a queue and return after the checks.
    EXECUTE format('CREATE FUNCTION %I.jobs_queue_count() RETURNS trigger LANGUAGE plpgsql AS '
                   '$f$ BEGIN '
                   'IF TG_OP = ''INSERT'' THEN '
                   '  IF EXISTS (SELECT FROM new_rows WHERE state = ''queued'') THEN %s; END IF; '
                   'ELSIF TG_OP = ''DELETE'' THEN '
                   '  IF EXISTS (SELECT FROM old_rows WHERE state = ''queued'') THEN %s; END IF; '
                   'ELSIF EXISTS (SELECT FROM new_rows WHERE state = ''queued'') '
                   '   OR EXISTS (SELECT FROM old_rows WHERE state = ''queued'') THEN %s; '
                   'END IF; RETURN NULL; END $f$', s,
                   format(apply, added, s), format(apply, removed, s),
                   format(apply, added || ' UNION ALL ' || removed, s));
    EXECUTE format('CREATE TRIGGER jobs_queue_count_insert AFTER INSERT ON %1$I.jobs '
                   'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION %1$I.jobs_queue_count()', s);
    EXECUTE format('CREATE TRIGGER jobs_queue_count_update AFTER UPDATE ON %1$I.jobs '
                   'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION %1$I.jobs_queue_count()', s);
    EXECUTE format('CREATE TRIGGER jobs_queue_count_delete AFTER DELETE ON %1$I.jobs '
                   'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
                   'EXECUTE FUNCTION %1$I.jobs_queue_count()', s);
END
$$;

-- The schema of a new version, as in 0002 but without the stored queue position, with
-- jobs_queue_counts, and with room on the pages of runs (fillfactor 80) so that the updates of
-- RunStarted and RunFinished, which change no indexed column, can be HOT (no index insertions).
CREATE OR REPLACE FUNCTION projection_create_version(p_projection text, p_version int) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    s   text := p_projection || '_v' || p_version;
    old text := current_setting('search_path');
BEGIN
    IF p_projection NOT IN ('tenants', 'jobs', 'fleet') THEN
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
            gpu_seconds    bigint
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
    END IF;
    PERFORM set_config('search_path', old, true);
    RETURN s;
END
$$;

-- Creates or replaces the views of schema read on <projection>_v<version>: one per relation of
-- that schema the query role may read. read.jobs adds queue_position: for a queued job, 1 + the
-- queued jobs of its tenant ahead of it (those of higher priorities from jobs_queue_counts, those
-- of its priority submitted before it from a range of jobs_queue), NULL otherwise. The view is
-- security_invoker, so the counts run under the caller's row-level security like the rest.
CREATE FUNCTION projection_read_views(p_projection text, p_version int) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    s text := p_projection || '_v' || p_version;
    r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = s AND c.relkind IN ('r', 'v')
                AND has_table_privilege('constellation_query', c.oid, 'SELECT')
              ORDER BY c.relname
    LOOP
        IF p_projection = 'jobs' AND r.relname = 'jobs' THEN
            EXECUTE format('CREATE OR REPLACE VIEW read.jobs WITH (security_invoker = true) AS '
                           'SELECT j.*, CASE WHEN j.state = ''queued'' THEN (1 + '
                           'coalesce((SELECT sum(c.n) FROM %1$I.jobs_queue_counts c '
                           'WHERE c.tenant_id = j.tenant_id AND c.priority > j.priority), 0) + '
                           '(SELECT count(*) FROM %1$I.jobs q WHERE q.tenant_id = j.tenant_id '
                           'AND q.state = ''queued'' AND q.priority = j.priority '
                           'AND (q.submitted_at, q.job_id) < (j.submitted_at, j.job_id)))::int '
                           'END AS queue_position FROM %1$I.jobs j', s);
        ELSE
            EXECUTE format('CREATE OR REPLACE VIEW read.%I WITH (security_invoker = true) AS '
                           'SELECT * FROM %I.%I', r.relname, s, r.relname);
        END IF;
        EXECUTE format('GRANT SELECT ON read.%I TO constellation_query', r.relname);
    END LOOP;
END
$$;

-- As in 0002, with the views made by projection_read_views.
CREATE OR REPLACE FUNCTION projection_activate(p_projection text, p_version int) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM projection_read_views(p_projection, p_version);
    INSERT INTO projection_versions (projection, active_version)
        VALUES (p_projection, p_version)
        ON CONFLICT (projection) DO UPDATE
            SET active_version = excluded.active_version, building_version = NULL,
                switched_at = now();
END
$$;

-- Existing versions lose the stored position. read.jobs must go first (it depends on every
-- column), and with it query.job_json, whose argument has its row type; both are made again.
DROP VIEW read.jobs CASCADE;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relname = 'jobs' AND c.relkind = 'r' AND n.nspname ~ '^jobs_v[0-9]+$'
    LOOP
        EXECUTE format('ALTER TABLE %I.jobs DROP COLUMN IF EXISTS queue_position, '
                       'DROP COLUMN IF EXISTS queue_dirty', r.nspname);
        PERFORM projection_jobs_queue_counts(r.nspname);
        EXECUTE format('ALTER TABLE %I.runs SET (fillfactor = 80)', r.nspname);
    END LOOP;
    PERFORM projection_read_views('jobs', active_version)
       FROM projection_versions WHERE projection = 'jobs';
END
$$;

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
GRANT EXECUTE ON FUNCTION query.job_json(read.jobs) TO constellation_query;

-- The tenant's queued jobs in scheduling order: a page from the front of the queue, so a row's
-- position is its row number. The view's queue_position is not read: a count per row would make
-- a page quadratic.
CREATE OR REPLACE FUNCTION query.queue(p_tenant text, p_limit int) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    PERFORM query.bind_tenant(p_tenant);
    RETURN (SELECT json_build_object('items', coalesce(json_agg(json_build_object(
                'position', q.ord, 'id', q.job_id, 'name', q.name,
                'priority', q.priority, 'gpu_count', q.gpu_count, 'gpu_model', q.gpu_model,
                'reason', q.reason, 'reason_message', q.reason_message,
                'submitted_at', query.ts(q.submitted_at)) ORDER BY q.ord), '[]'::json))::text
              FROM (SELECT j.job_id, j.name, j.priority, j.gpu_count, j.gpu_model, j.reason,
                           j.reason_message, j.submitted_at,
                           row_number() OVER (ORDER BY j.priority DESC, j.submitted_at,
                                              j.job_id) AS ord
                      FROM read.jobs j WHERE j.state = 'queued'
                     ORDER BY j.priority DESC, j.submitted_at, j.job_id
                     LIMIT p_limit) q);
END
$$;
