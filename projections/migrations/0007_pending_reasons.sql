-- The scheduler's pending reasons in the jobs read model (docs/read-side.md "Pending reasons").
--
-- The scheduler publishes why each queued job waits to constellation.jobs.waiting (JobWaiting,
-- keyed by job id, compacted; a tombstone once the job left the queue). The jobs projection
-- consumes it next to constellation.jobs.events. Records of the two topics reach the projector in
-- no fixed order, so that the read model stays a function of the two logs (rebuilt ==
-- incremental), each version of the jobs projection gets the internal table job_waiting: the
-- last record per job (a tombstone deletes it). A record names the job's stay in the queue by its
-- attempts (JobAssigned events before the stay); jobs.reason and reason_message take it while the
-- job is queued with those attempts, whichever of the record and the event that queued the job
-- (JobAdmitted, JobRequeued) is applied first. A late record about an earlier stay, or one read
-- after the job left the queue, changes nothing.

-- Adds job_waiting to schema s (a jobs version). Internal: no grant to constellation_query, so
-- no view in schema read.
CREATE FUNCTION projection_jobs_waiting(s text) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE %I.job_waiting ('
                   'job_id    text PRIMARY KEY, '
                   'tenant_id text NOT NULL, '
                   'attempts  int NOT NULL CHECK (attempts >= 0), '
                   'reason    text NOT NULL, '
                   'message   text NOT NULL, '
                   'at        timestamptz NOT NULL)', s);
    EXECUTE format('REVOKE ALL ON %I.job_waiting FROM constellation_query', s);
END
$$;

-- projection_create_version as it stands (0005, or a later migration's), then job_waiting for a
-- jobs version. Wrapped rather than copied, so that what an earlier migration made of it stays.
ALTER FUNCTION projection_create_version(text, int) RENAME TO projection_create_version_pre0007;

CREATE FUNCTION projection_create_version(p_projection text, p_version int) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    s text := projection_create_version_pre0007(p_projection, p_version);
BEGIN
    IF p_projection = 'jobs' THEN
        PERFORM projection_jobs_waiting(s);
    END IF;
    RETURN s;
END
$$;

-- The existing versions of the jobs projection. Their jobs rows keep the reasons they have; the
-- next record of each queued job sets them.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relname = 'jobs' AND c.relkind = 'r' AND n.nspname ~ '^jobs_v[0-9]+$'
    LOOP
        PERFORM projection_jobs_waiting(r.nspname);
    END LOOP;
END
$$;
