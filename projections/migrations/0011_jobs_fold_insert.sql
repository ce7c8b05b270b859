-- The write-back of the jobs fold (0010) inserts the batch's new jobs without reading jobs whole.
--
-- projection_jobs_work_end found the new rows of pg_temp.jobs_work with NOT EXISTS against jobs.
-- The planner knows nothing of the temporary table's rows (it is never analyzed), and chose an
-- anti-join that hashes every row of jobs, each batch: over a catch-up of 20,000 jobs, each batch
-- read the whole table, and a table of millions of jobs would be read whole by every batch. Now
-- every row of jobs_work is offered with ON CONFLICT (job_id) DO NOTHING: a row copied from jobs
-- (the batch's existing jobs, already written back by the update before it) meets its own key in
-- the primary key index and is skipped, a new one is inserted. The work is one index probe per
-- row of the batch, whatever the size of jobs.

CREATE OR REPLACE FUNCTION projection_jobs_work_end() RETURNS void
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
                   'ON CONFLICT (job_id) DO NOTHING', s);
    TRUNCATE pg_temp.jobs_work;
END
$$;
