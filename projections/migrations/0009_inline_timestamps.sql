-- cstl_ts as an expression PostgreSQL inlines into the statements that call it.
--
-- The body of 0002 adds an interval to a timestamptz, an operation PostgreSQL marks STABLE (it
-- depends on the session's time zone), so the IMMUTABLE function was never inlined: every event
-- the projectors apply paid one or more SQL function calls (about 10 % of the backend's CPU in a
-- catch-up of the jobs projection). The same instant is computed here from a timestamp without
-- time zone and read as UTC, operations marked IMMUTABLE, so the planner inlines the body. Every
-- microsecond is kept as before: a bigint below 2^53 converts to double precision exactly.
CREATE OR REPLACE FUNCTION cstl_ts(bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT ('epoch'::timestamp + $1 * interval '1 microsecond') AT TIME ZONE 'UTC' $$;
