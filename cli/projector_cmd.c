/*
 * projector_cmd.c - `constellation projector [--projection NAME ...]`: the projector service. Runs
 * one projector thread per selected projection (default: all) inside the common service life of
 * service.c, which serves /healthz, /readyz (every projection consuming) and /metrics.
 */
#include "cli/cli.h"
#include "cli/service.h"
#include "projections/projection.h"
#include "projections/projector.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SELECTED 16

static const char *selected[MAX_SELECTED];
static size_t nselected;

typedef struct projector_state {
    cstl_projector *projectors[MAX_SELECTED];
    size_t n;
} projector_state;

static int projector_start(cli_service *svc, cstl_error *err)
{
    projector_state *st = cstl_xcalloc(1, sizeof(*st));
    svc->state = st;
    for (size_t i = 0; i < nselected; i++) {
        char client_id[300];
        snprintf(client_id, sizeof(client_id), "constellation-projector-%s-%s", selected[i],
                 svc->cfg->instance_id);
        char group[160];
        bool isolated = strcmp(svc->cfg->topic_prefix, "constellation.") != 0;
        snprintf(group, sizeof(group), "%sprojector-", svc->cfg->topic_prefix);
        cstl_projector_options o = {.projection = selected[i],
                                    .topic_prefix = svc->cfg->topic_prefix,
                                    .group_prefix = isolated ? group : NULL,
                                    .brokers = svc->cfg->kafka_brokers,
                                    .pg_dsn = svc->cfg->pg_dsn,
                                    .client_id = client_id,
                                    .batch_max = svc->cfg->projector_batch_max,
                                    .batch_ms = svc->cfg->projector_batch_ms,
                                    .kafka_timeout_ms = svc->cfg->kafka_timeout_ms,
                                    .pg_statement_timeout_ms = svc->cfg->pg_statement_timeout_ms,
                                    .metrics = svc->metrics};
        cstl_projector *p = cstl_projector_new(&o, err);
        if (p == NULL)
            return err->code;
        st->projectors[st->n++] = p;
        if (cstl_projector_start(p, err) != 0)
            return err->code;
    }
    return 0;
}

static void projector_stop(cli_service *svc)
{
    projector_state *st = svc->state;
    if (st == NULL)
        return;
    for (size_t i = 0; i < st->n; i++)
        cstl_projector_stop(st->projectors[i]);
    for (size_t i = 0; i < st->n; i++)
        cstl_projector_free(st->projectors[i]);
    free(st);
    svc->state = NULL;
}

static int projector_ready(cli_service *svc, cstl_error *why)
{
    projector_state *st = svc->state;
    for (size_t i = 0; st != NULL && i < st->n; i++)
        if (cstl_projector_ready(st->projectors[i], why) != 0)
            return why->code;
    return 0;
}

const cli_service_hooks cli_projector_hooks = {projector_start, projector_stop, projector_ready};

int cli_projector(int argc, char **argv)
{
    size_t n;
    const cstl_projection *const *all = cstl_projections_all(&n);
    if (cli_wants_help(argc, argv)) {
        printf("usage: constellation projector [--projection NAME ...]\n\n"
               "Applies the events to the PostgreSQL read models, each batch in one transaction\n"
               "with its offsets. Runs every projection unless --projection selects some; each\n"
               "has its own consumer group constellation-projector-<name>. Projections:");
        for (size_t i = 0; i < n; i++)
            printf(" %s", all[i]->name);
        printf(".\nBatches: CONSTELLATION_PROJECTOR_BATCH_MAX records, "
               "CONSTELLATION_PROJECTOR_BATCH_MS ms.\n\n");
        char *args[] = {argv[0], "--help", NULL};
        return cli_run_service(2, args);
    }
    nselected = 0;
    for (int i = 1; i < argc; i++) {
        const char *name = NULL;
        if (strcmp(argv[i], "--projection") == 0 && i + 1 < argc)
            name = argv[++i];
        else if (strncmp(argv[i], "--projection=", 13) == 0)
            name = argv[i] + 13;
        else {
            fprintf(stderr, "constellation: projector: unexpected argument \"%s\" (see --help)\n",
                    argv[i]);
            return CLI_EXIT_USAGE;
        }
        if (cstl_projection_find(name) == NULL) {
            fprintf(stderr, "constellation: projector: unknown projection \"%s\"\n", name);
            return CLI_EXIT_USAGE;
        }
        int dup = 0;
        for (size_t k = 0; k < nselected; k++)
            dup |= strcmp(selected[k], name) == 0;
        if (!dup && nselected < MAX_SELECTED)
            selected[nselected++] = name;
    }
    for (size_t i = 0; nselected == 0 && i < n; i++)
        selected[i] = all[i]->name;
    if (nselected == 0)
        nselected = n;
    char *args[] = {argv[0], NULL};
    return cli_run_service(1, args);
}
