/*
 * cli.h - the subcommands of the `constellation` executable.
 *
 * Each subcommand is `int cli_<name>(int argc, char **argv)` where argv[0] is the subcommand's
 * name; it returns the process exit status: 0 success, 1 failure at run time, 2 usage or
 * configuration error (the problem is printed to stderr first).
 */
#ifndef CSTL_CLI_CLI_H
#define CSTL_CLI_CLI_H

#include "platform/config.h"

#define CLI_EXIT_OK      0
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE   2

int cli_run_service(int argc,
                    char **argv); /* commands, projector, queries, scheduler, mcp, worker */
int cli_topics(int argc, char **argv);
int cli_migrate(int argc, char **argv);
int cli_config(int argc, char **argv);
int cli_tenants(int argc, char **argv); /* tenants create */

/* True when argv (after argv[0]) contains -h or --help. */
int cli_wants_help(int argc, char **argv);

/*
 * Loads the configuration and applies its log level. On problems prints every one to stderr and
 * returns CLI_EXIT_USAGE; else 0.
 */
int cli_load_config(cstl_config *cfg);

#endif
