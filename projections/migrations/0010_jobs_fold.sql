-- The jobs projection folds a batch's changes of each job into one row version of jobs.
--
-- A job has about ten events, and each used to update its jobs row: a new row version per event,
-- and since `state` is indexed (lists by state, the queue), none of those updates is HOT, so each
-- inserted into every index of jobs. With a batch of several events per job, most of those
-- versions lived only until the next event of the same batch.
--
-- Now a batch of the jobs projection works on pg_temp.jobs_work, a session-local copy of the
-- rows of the jobs its records name: projection_jobs_work_begin copies them in at the start of
-- the batch's transaction, every statement of the batch reads and changes jobs_work instead of
-- jobs (a temporary table: no WAL, and only its primary key to maintain), and
-- projection_jobs_work_end writes the rows that changed back to jobs, one version per job per
-- batch, then empties jobs_work. The statements and their guards are the ones of 0002-0007; the
-- rows in jobs after a batch are the same. The queue count triggers see the batch's net change of
-- each row.

-- Copies the rows of jobs (of the jobs version first on the search path) whose job_id is in
-- p_ids into pg_temp.jobs_work, which it (re)creates when it is missing or was made for another
-- version (its comment names the schema; the projector's connection changes versions after a
-- rebuild).
CREATE FUNCTION projection_jobs_work_begin(p_ids text[]) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    s text := current_schema();
BEGIN
    IF s IS NULL OR s NOT LIKE 'jobs\_v%' THEN
        RAISE EXCEPTION 'projection_jobs_work_begin: the search path starts with "%", not a jobs version', s;
    END IF;
    IF to_regclass('pg_temp.jobs_work') IS NULL
       OR obj_description(to_regclass('pg_temp.jobs_work'), 'pg_class') IS DISTINCT FROM s THEN
        DROP TABLE IF EXISTS pg_temp.jobs_work;
        -- fillfactor 50: the batch's updates of a row stay on its page (HOT)
        EXECUTE format('CREATE TEMP TABLE jobs_work (LIKE %I.jobs INCLUDING DEFAULTS) '
                       'WITH (fillfactor = 50)', s);
        ALTER TABLE pg_temp.jobs_work ADD PRIMARY KEY (job_id);
        EXECUTE format('COMMENT ON TABLE pg_temp.jobs_work IS %L', s);
    END IF;
    -- FOR UPDATE: the rows stay locked until the batch commits, so a change another projector
    -- process makes meanwhile (the pending reasons of jobs.waiting are partitioned apart from the
    -- events) waits for the batch and is not overwritten by its write-back; job_id order keeps two
    -- batches from locking each other's rows crosswise
    EXECUTE format('INSERT INTO pg_temp.jobs_work SELECT * FROM %I.jobs WHERE job_id = ANY($1) '
                   'ORDER BY job_id FOR UPDATE ON CONFLICT (job_id) DO NOTHING', s) USING p_ids;
END
$$;

-- Writes the rows of pg_temp.jobs_work that differ from jobs back (new jobs inserted, changed
-- ones updated, each once), then empties jobs_work.
CREATE FUNCTION projection_jobs_work_end() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    s text := current_schema();
    cols text;
    vals text;
BEGIN
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum),
           string_agg('w.' || quote_ident(attname), ', ' ORDER BY attnum)
      INTO cols, vals
      FROM pg_attribute
     WHERE attrelid = 'pg_temp.jobs_work'::regclass AND attnum > 0 AND NOT attisdropped
       AND attname <> 'job_id';
    -- the = ANY keeps the plan on the primary key whatever the planner guesses of jobs_work
    EXECUTE format('UPDATE %I.jobs j SET (%s) = ROW(%s) FROM pg_temp.jobs_work w '
                   'WHERE j.job_id = w.job_id '
                   'AND j.job_id = ANY(ARRAY(SELECT job_id FROM pg_temp.jobs_work)) '
                   'AND ROW(j.*) IS DISTINCT FROM ROW(w.*)', s, cols, vals);
    EXECUTE format('INSERT INTO %I.jobs SELECT w.* FROM pg_temp.jobs_work w '
                   'WHERE NOT EXISTS (SELECT FROM %I.jobs j WHERE j.job_id = w.job_id)', s, s);
    TRUNCATE pg_temp.jobs_work;
END
$$;
