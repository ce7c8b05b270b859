/*
 * main.c - the `constellation` executable: dispatches to one subcommand per service and admin task.
 */
#include "cli/cli.h"
#include "cli/schemas.h"

#include <stdio.h>
#include <string.h>

typedef struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand subcommands[] = {
    {"commands", cli_run_service, "command API (HTTP) and command handler"},
    {"projector", cli_run_service, "projector: builds the PostgreSQL read models from the events"},
    {"queries", cli_run_service, "query API: REST and Server-Sent Events over the read models"},
    {"scheduler", cli_run_service, "scheduler: places queued jobs on free GPUs"},
    {"mcp", cli_run_service, "MCP server for chatbot agents"},
    {"worker", cli_run_service, "GPU worker agent: registers GPUs, runs jobs, streams logs"},
    {"topics", cli_topics, "topics create: create every topic of the catalog (idempotent)"},
    {"tenants", cli_tenants, "tenants create NAME: a tenant and its first admin API key"},
    {"migrate", cli_migrate, "apply pending PostgreSQL migrations"},
    {"schemas", cli_schemas, "schemas check: parse, fingerprint and compatibility of every schema"},
    {"config", cli_config, "print the effective configuration or the configuration reference"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: constellation [--help] [--version] <command> [<args>]\n\n"
                 "Constellation, the backend of a GPU job platform.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
        fprintf(out, "  %-10s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(out,
            "\n`constellation <command> --help` tells more about one command. Settings come from\n"
            "CONSTELLATION_* environment variables: `constellation config reference` lists them.\n"
            "Exit status: 0 success, 1 failure, 2 usage or configuration error.\n");
}

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "help") == 0) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "-V") == 0 || strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("constellation %s\n", CSTL_VERSION);
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
        if (strcmp(name, subcommands[i].name) == 0)
            return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "constellation: unknown command \"%s\" (see constellation --help)\n", name);
    return CLI_EXIT_USAGE;
}
