/*
 * command_handler_runner - runs just the command handler, for the failover test: serves the jobs
 * context with a short group session (6 s) so a killed member's partitions move quickly.
 *
 *   command_handler_runner <instance id> <group id>
 *
 * Reads CONSTELLATION_KAFKA_BROKERS. SIGTERM or SIGINT stops it cleanly (exit 0).
 */
#include "commands/aggregate.h"
#include "commands/handler.h"
#include "platform/log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cstl_cmd_handler *handler;

static void on_signal(int sig)
{
    (void)sig;
    cstl_cmd_handler_stop(handler);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: command_handler_runner <instance id> <group id>\n");
        return 2;
    }
    const char *brokers = getenv("CONSTELLATION_KAFKA_BROKERS");
    if (brokers == NULL || *brokers == '\0')
        brokers = "127.0.0.1:9092";
    cstl_log_set_level(CSTL_LOG_WARN);
    const cstl_aggregate_type *types[] = {&cstl_job_aggregate};
    cstl_cmd_handler_options o = {.brokers = brokers,
                                  .instance_id = argv[1],
                                  .contexts = types,
                                  .n_contexts = 1,
                                  .group_id = argv[2],
                                  .session_timeout_ms = 6000};
    cstl_error err;
    handler = cstl_cmd_handler_new(&o, &err);
    if (handler == NULL) {
        fprintf(stderr, "command_handler_runner: %s\n", err.message);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = cstl_cmd_handler_run(handler, &err);
    if (rc != 0)
        fprintf(stderr, "command_handler_runner: %s\n", err.message);
    cstl_cmd_handler_free(handler);
    return rc == 0 ? 0 : 1;
}
