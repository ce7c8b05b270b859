-- The read models of the tenants, jobs and fleet projections (docs/read-side.md).
--
-- Each projection's tables live in a versioned schema <projection>_v<N>, made by
-- projection_create_version(); the stable schema "read" holds one view per table of the active
-- version, switched by projection_activate() in the transaction that ends a rebuild. Tenant-owned
-- tables carry tenant_id and row-level security keyed by the session setting
-- constellation.tenant_id; the query role constellation_query has SELECT only and no BYPASSRLS.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'constellation_query') THEN
        -- LOGIN without a password: usable on the local stack (trust), and in production only
        -- once an operator gives it a password or a certificate.
        CREATE ROLE constellation_query LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;

-- Timestamps on the wire are UTC microseconds since the epoch; this keeps every microsecond.
CREATE FUNCTION cstl_ts(bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT 'epoch'::timestamptz + $1 * interval '1 microsecond' $$;

CREATE TABLE projection_versions (
    projection       text PRIMARY KEY,
    active_version   int  NOT NULL CHECK (active_version >= 1),
    building_version int  CHECK (building_version > active_version),
    switched_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE projection_versions IS
    'which schema version <projection>_v<N> of each projection the views in schema read show, and '
    'which one a running rebuild is building; a projector locks its row FOR SHARE in every batch';

CREATE SCHEMA read;
GRANT USAGE ON SCHEMA read TO constellation_query;

-- Row-level security of a tenant-owned table: the query role sees the rows of the tenant set in
-- constellation.tenant_id (none when unset). With FORCE the owner is bound too: it sees every row
-- only while no tenant is set (the projector), and one tenant's rows once it sets one.
CREATE FUNCTION projection_tenant_rls(tbl regclass, force boolean) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    IF force THEN
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
        EXECUTE format('CREATE POLICY owner_unbound ON %s TO CURRENT_USER '
                       'USING (coalesce(current_setting(''constellation.tenant_id'', true), '''') = '''') '
                       'WITH CHECK (true)', tbl);
    END IF;
    EXECUTE format('CREATE POLICY tenant_isolation ON %s '
                   'USING (tenant_id = current_setting(''constellation.tenant_id'', true))', tbl);
END
$$;

-- Creates schema <projection>_v<version> with the projection's tables. Unqualified names below
-- resolve to that schema through a transaction-local search_path.
CREATE FUNCTION projection_create_version(p_projection text, p_version int) RETURNS text
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
            queue_position        int,
            current_run_id        text,
            attempts              int NOT NULL DEFAULT 0,
            reservation_id        text,
            finished_at           timestamptz,
            -- set when the job entered, left or moved in its tenant's queue during the batch;
            -- the batch's end renumbers those tenants' queues and clears it
            queue_dirty           boolean NOT NULL DEFAULT false
        );
        CREATE INDEX jobs_tenant_submitted ON jobs (tenant_id, submitted_at DESC, job_id DESC);
        CREATE INDEX jobs_tenant_state ON jobs (tenant_id, state, submitted_at DESC);
        CREATE INDEX jobs_labels ON jobs USING gin (labels jsonb_path_ops);
        CREATE INDEX jobs_queue ON jobs (tenant_id, priority DESC, submitted_at, job_id)
            WHERE state = 'queued';
        CREATE INDEX jobs_queue_dirty ON jobs (tenant_id) WHERE queue_dirty;
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
        );
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

-- Points the views of schema read at <projection>_v<version> (every relation of that schema the
-- query role may read) and records the version as active. Runs in the caller's transaction.
CREATE FUNCTION projection_activate(p_projection text, p_version int) RETURNS void
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
        EXECUTE format('CREATE OR REPLACE VIEW read.%I WITH (security_invoker = true) AS '
                       'SELECT * FROM %I.%I', r.relname, s, r.relname);
        EXECUTE format('GRANT SELECT ON read.%I TO constellation_query', r.relname);
    END LOOP;
    INSERT INTO projection_versions (projection, active_version)
        VALUES (p_projection, p_version)
        ON CONFLICT (projection) DO UPDATE
            SET active_version = excluded.active_version, building_version = NULL,
                switched_at = now();
END
$$;

-- API key lookup for authentication, before the tenant is known: one key by id, whatever its
-- tenant. SECURITY DEFINER so that the query role needs no access to other tenants' keys.
CREATE FUNCTION read.api_key_by_id(p_key_id text)
    RETURNS TABLE (key_id text, tenant_id text, key_hash text, role text,
                   expires_at timestamptz, revoked_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public SET constellation.tenant_id = '' AS $$
DECLARE
    v int;
BEGIN
    SELECT active_version INTO v FROM public.projection_versions WHERE projection = 'tenants';
    RETURN QUERY EXECUTE format('SELECT key_id, tenant_id, key_hash, role, expires_at, revoked_at '
                                'FROM %I.api_keys WHERE key_id = $1', 'tenants_v' || v)
        USING p_key_id;
END
$$;
REVOKE ALL ON FUNCTION read.api_key_by_id(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION read.api_key_by_id(text) TO constellation_query;

SELECT projection_create_version('tenants', 1), projection_activate('tenants', 1);
SELECT projection_create_version('jobs', 1), projection_activate('jobs', 1);
SELECT projection_create_version('fleet', 1), projection_activate('fleet', 1);
