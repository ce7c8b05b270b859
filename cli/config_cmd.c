/*
 * config_cmd.c - `constellation config [show|reference|check]`.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

int cli_load_config(cstl_config *cfg)
{
    cstl_config_problems problems;
    if (cstl_config_load(cfg, &problems) != 0) {
        cstl_config_print_problems(&problems, stderr);
        fprintf(stderr,
                "constellation: invalid configuration: %d problem%s (see "
                "`constellation config reference`)\n",
                problems.count, problems.count == 1 ? "" : "s");
        return CLI_EXIT_USAGE;
    }
    cstl_log_set_level(cfg->log_level);
    return 0;
}

int cli_config(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: constellation config [show|check|reference]\n\n"
               "  show       print the effective configuration as NAME=value lines (default);\n"
               "             a password in the PostgreSQL connection string is shown as ***\n"
               "  check      validate the configuration; exit 2 and name every problem if invalid\n"
               "  reference  print the configuration reference (Markdown) of every variable\n");
        return CLI_EXIT_OK;
    }
    const char *what = argc > 1 ? argv[1] : "show";
    if (strcmp(what, "reference") == 0) {
        cstl_config_write_reference(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(what, "show") != 0 && strcmp(what, "check") != 0) {
        fprintf(stderr, "constellation: config: unknown action \"%s\" (show, check, reference)\n",
                what);
        return CLI_EXIT_USAGE;
    }
    cstl_config cfg;
    int rc = cli_load_config(&cfg);
    if (rc != 0)
        return rc;
    if (strcmp(what, "show") == 0)
        cstl_config_dump(&cfg, stdout);
    else
        printf("configuration is valid\n");
    return CLI_EXIT_OK;
}
