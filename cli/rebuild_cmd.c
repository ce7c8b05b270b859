/*
 * rebuild_cmd.c - `constellation rebuild NAME [--drop-old]`: rebuilds a read model from offset 0
 * into a new schema version while the current one serves, then switches to it atomically.
 */
#include "cli/cli.h"
#include "projections/projection.h"
#include "projections/rebuild.h"

#include <stdio.h>
#include <string.h>

int cli_rebuild(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf(
            "usage: constellation rebuild NAME [--drop-old]\n\n"
            "Builds projection NAME (tenants, jobs or fleet) into a new schema NAME_v<N+1> from\n"
            "offset 0 while NAME_v<N> keeps serving, then, in one transaction, applies the\n"
            "records produced meanwhile and points the views of schema read at the new version.\n"
            "Running projectors follow the switch by themselves. --drop-old drops NAME_v<N> in\n"
            "the same transaction. See docs/read-side.md.\n");
        return CLI_EXIT_OK;
    }
    const char *name = NULL;
    bool drop_old = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--drop-old") == 0)
            drop_old = true;
        else if (name == NULL && argv[i][0] != '-')
            name = argv[i];
        else {
            fprintf(stderr, "constellation: rebuild: unexpected argument \"%s\"\n", argv[i]);
            return CLI_EXIT_USAGE;
        }
    }
    if (name == NULL || cstl_projection_find(name) == NULL) {
        fprintf(stderr, "constellation: rebuild: %s \"%s\" (expected tenants, jobs or fleet)\n",
                name ? "unknown projection" : "missing projection name", name ? name : "");
        return CLI_EXIT_USAGE;
    }
    cstl_config cfg;
    int rc = cli_load_config(&cfg);
    if (rc != 0)
        return rc;
    cstl_rebuild_options o = {.projection = name,
                              .brokers = cfg.kafka_brokers,
                              .pg_dsn = cfg.pg_dsn,
                              .drop_old = drop_old,
                              .batch_max = cfg.projector_batch_max,
                              .kafka_timeout_ms = cfg.kafka_timeout_ms};
    cstl_rebuild_report rep;
    cstl_error err;
    if (cstl_projection_rebuild(&o, &rep, &err) != 0) {
        cstl_log_error("rebuild", &err, "cannot rebuild projection \"%s\"", name);
        return CLI_EXIT_FAILURE;
    }
    cstl_log_fields(CSTL_LOG_INFO, "rebuild",
                    json_pack("{s:s,s:i,s:i,s:I,s:I}", "projection", name, "old_version",
                              rep.old_version, "version", rep.new_version, "applied",
                              (json_int_t)rep.applied, "dead_lettered",
                              (json_int_t)rep.dead_lettered),
                    "projection \"%s\" now serves version %d", name, rep.new_version);
    return CLI_EXIT_OK;
}
