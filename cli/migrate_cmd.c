/*
 * migrate_cmd.c - `constellation migrate`: applies the SQL migrations compiled into the binary.
 */
#include "cli/cli.h"
#include "platform/migrate.h"
#include "platform/pg.h"

#include <stdio.h>
#include <stdlib.h>

int cli_migrate(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: constellation migrate\n\n"
               "Brings the PostgreSQL database named by CONSTELLATION_PG_DSN up to date with the\n"
               "migrations compiled into this binary (projections/migrations/NNNN_name.sql), each\n"
               "in its own transaction, recorded in schema_migrations. Safe to run concurrently\n"
               "(an advisory lock serializes migrators) and again (applies nothing). Refuses to\n"
               "run if an applied migration was changed afterwards.\n");
        return CLI_EXIT_OK;
    }
    if (argc > 1) {
        fprintf(stderr, "constellation: migrate: unexpected argument \"%s\"\n", argv[1]);
        return CLI_EXIT_USAGE;
    }
    cstl_config cfg;
    int rc = cli_load_config(&cfg);
    if (rc != 0)
        return rc;

    cstl_error err;
    cstl_migration *list = NULL;
    size_t n = 0;
    if (cstl_migrations_embedded(&list, &n, &err) != 0) {
        cstl_log_error("migrate", &err, "embedded migrations are invalid");
        return CLI_EXIT_FAILURE;
    }
    cstl_pg_retry policy = {.max_attempts = cfg.pg_connect_attempts,
                            .initial_backoff_ms = 100,
                            .max_backoff_ms = 2000,
                            .max_total_ms = 60000,
                            .connect_timeout_s = 5,
                            .application_name = "constellation-migrate"};
    cstl_pg_conn *conn = cstl_pg_connect(cfg.pg_dsn, &policy, &err);
    if (conn == NULL) {
        cstl_log_error("migrate", &err, "cannot connect to postgresql");
        free(list);
        return CLI_EXIT_FAILURE;
    }
    cstl_migrate_report report = {0};
    rc = cstl_migrate_run(conn, list, n, &report, &err);
    cstl_pg_close(conn);
    free(list);
    if (rc != 0) {
        cstl_log_error("migrate", &err, "migration failed");
        return CLI_EXIT_FAILURE;
    }
    cstl_log_fields(CSTL_LOG_INFO, "migrate",
                    json_pack("{s:I,s:I,s:i}", "applied", (json_int_t)report.applied, "present",
                              (json_int_t)report.present, "version", report.last_version),
                    "database is at version %d", report.last_version);
    return CLI_EXIT_OK;
}
