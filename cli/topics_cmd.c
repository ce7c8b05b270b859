/*
 * topics_cmd.c - `constellation topics create|list`: the topic catalog of schemas/topics.json.
 */
#include "cli/cli.h"
#include "platform/topics.h"

#include <stdio.h>
#include <string.h>

static int topics_list(void)
{
    cstl_error err;
    cstl_topic_catalog *cat = cstl_topics_load(&err);
    if (cat == NULL) {
        cstl_log_error("topics", &err, "the topic catalog is invalid");
        return CLI_EXIT_FAILURE;
    }
    for (size_t i = 0; i < cat->len; i++) {
        const cstl_topic *t = &cat->topics[i];
        printf("%-36s partitions=%d", t->name, t->partitions);
        for (size_t j = 0; j < t->config_len; j++)
            printf(" %s=%s", t->config[2 * j], t->config[2 * j + 1]);
        printf("\n");
    }
    cstl_topics_free(cat);
    return CLI_EXIT_OK;
}

int cli_topics(int argc, char **argv)
{
    if (cli_wants_help(argc, argv) || argc < 2) {
        FILE *out = argc < 2 ? stderr : stdout;
        fprintf(out,
                "usage: constellation topics create|list\n\n"
                "  create  create every topic of the catalog on CONSTELLATION_KAFKA_BROKERS with\n"
                "          its partitions and settings; topics that exist are left alone, so it\n"
                "          is safe to run again; an existing topic with another partition count\n"
                "          is an error, since partition ownership depends on it\n"
                "  list    print the catalog compiled into this binary\n\n"
                "Replication factor: CONSTELLATION_TOPIC_REPLICATION_FACTOR. Retention of\n"
                "constellation.jobs.logs: CONSTELLATION_JOB_LOGS_RETENTION_MS.\n");
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "list") == 0)
        return topics_list();
    if (strcmp(argv[1], "create") != 0) {
        fprintf(stderr, "constellation: topics: unknown action \"%s\" (create, list)\n", argv[1]);
        return CLI_EXIT_USAGE;
    }
    cstl_config cfg;
    int rc = cli_load_config(&cfg);
    if (rc != 0)
        return rc;
    cstl_error err;
    cstl_topics_report report = {0};
    if (cstl_topics_create_all(cfg.kafka_brokers, NULL, cfg.topic_replication_factor,
                               cfg.kafka_timeout_ms, &report, &err) != 0) {
        cstl_log_error("topics", &err, "cannot create the topics on %s", cfg.kafka_brokers);
        return CLI_EXIT_FAILURE;
    }
    cstl_log_fields(CSTL_LOG_INFO, "topics",
                    json_pack("{s:I,s:I}", "created", (json_int_t)report.created, "existing",
                              (json_int_t)report.existing),
                    "topics ready: %zu created, %zu already present", report.created,
                    report.existing);
    return CLI_EXIT_OK;
}
