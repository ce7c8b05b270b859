/*
 * service.c - the common life of every long-running service: load the configuration, serve
 * /healthz, /readyz and /metrics, report readiness from the service's real dependencies (Kafka
 * metadata, a PostgreSQL round trip), wait for SIGTERM/SIGINT, then drain and exit 0.
 *
 * Threads: main waits for the signal; libmicrohttpd's pool threads call ready_check and
 * access_log concurrently (the Kafka handle and the PostgreSQL pool are thread-safe by design:
 * one PostgreSQL connection per HTTP thread).
 */
#include "cli/service.h"

#include "cli/cli.h"
#include "platform/http.h"
#include "platform/kafka.h"
#include "platform/metrics.h"
#include "platform/pg.h"
#include "platform/shutdown.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct service_def {
    const char *name;
    size_t addr_offset; /* of the cstl_config_addr in cstl_config */
    int needs_kafka;
    int needs_pg;
    const char *summary;
    const cli_service_hooks *hooks; /* NULL: health and metrics only */
} service_def;

#define ADDR(field) offsetof(cstl_config, field)

static const service_def services[] = {
    {"commands", ADDR(commands_addr), 1, 1,
     "the command API: validates commands and appends them to the commands topics",
     &cli_commands_hooks},
    {"projector", ADDR(projector_addr), 1, 1,
     "the projector: applies events to the PostgreSQL read models", &cli_projector_hooks},
    {"queries", ADDR(queries_addr), 0, 1, "the query API: REST and SSE over the read models",
     &cli_queries_hooks},
    {"scheduler", ADDR(scheduler_addr), 1, 0, "the scheduler: places queued jobs on free GPUs",
     &cli_scheduler_hooks},
    {"mcp", ADDR(mcp_addr), 1, 1, "the MCP server for chatbot agents"},
    {"worker", ADDR(worker_addr), 1, 0, "the GPU worker agent", &cli_worker_hooks},
};

#undef ADDR

typedef struct service {
    const service_def *def;
    const cstl_config *cfg;
    cstl_kafka_producer *kafka; /* also for metadata probes; NULL when not needed */
    cstl_pg_pool *pg;           /* NULL when not needed */
    cli_service pub;            /* what the hooks see */
} service;

static int ready_check(void *ud, cstl_error *why)
{
    service *svc = ud;
    if (cstl_shutdown_requested())
        return cstl_error_set(why, CSTL_ESHUTDOWN, "shutting down");
    if (svc->kafka != NULL) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t rc =
            rd_kafka_metadata(cstl_kafka_producer_handle(svc->kafka), 0, NULL, &md, 2000);
        if (rc != RD_KAFKA_RESP_ERR_NO_ERROR)
            return cstl_error_set(why, CSTL_EUNAVAILABLE, "kafka at %s is not reachable: %s",
                                  svc->cfg->kafka_brokers, rd_kafka_err2str(rc));
        int brokers = md->broker_cnt;
        rd_kafka_metadata_destroy(md);
        if (brokers == 0)
            return cstl_error_set(why, CSTL_EUNAVAILABLE, "kafka reports no brokers");
    }
    if (svc->pg != NULL) {
        cstl_pg_conn *conn = NULL;
        PGresult *res = NULL;
        cstl_error err;
        if (cstl_pg_pool_get(svc->pg, &conn, &err) != 0 ||
            cstl_pg_exec(conn, "select 1", 0, NULL, &res, &err) != 0)
            return cstl_error_set(why, CSTL_EUNAVAILABLE, "postgresql is not reachable: %s",
                                  err.message);
        PQclear(res);
    }
    if (svc->def->hooks != NULL && svc->def->hooks->ready != NULL)
        return svc->def->hooks->ready(&svc->pub, why);
    return 0;
}

static void access_log(void *ud, const cstl_http_access *a)
{
    (void)ud;
    /* Probes and scrapes arrive every few seconds: keep them out of the info log. */
    int probe = strcmp(a->route, "/healthz") == 0 || strcmp(a->route, "/readyz") == 0 ||
                strcmp(a->route, "/metrics") == 0;
    cstl_log_level level = a->status >= 500 ? CSTL_LOG_WARN
                           : probe          ? CSTL_LOG_DEBUG
                                            : CSTL_LOG_INFO;
    if (!cstl_log_enabled(level))
        return;
    json_t *fields =
        json_pack("{s:s,s:s,s:s,s:i,s:I,s:I,s:f,s:s}", "method", a->method, "path", a->path,
                  "route", a->route, "status", a->status, "body_bytes", (json_int_t)a->body_bytes,
                  "response_bytes", (json_int_t)a->response_bytes, "duration_s",
                  a->duration_seconds, "request_id", a->request_id);
    if (fields != NULL && a->traceparent != NULL)
        json_object_set_new(fields, "traceparent", json_string(a->traceparent));
    cstl_log_fields(level, "http", fields, "%s %s %d", a->method, a->path, a->status);
}

static void usage(const service_def *def)
{
    char var[64];
    snprintf(var, sizeof(var), "CONSTELLATION_%s_ADDR", def->name);
    for (char *p = var; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    printf(
        "usage: constellation %s\n\nRuns %s.\n\n"
        "Listens on %s (default shown by `constellation config`); serves /healthz (the process "
        "runs),\n/readyz (its dependencies answer:%s%s) and Prometheus /metrics. Logs JSON lines "
        "to stderr.\nSIGTERM or SIGINT stops it gracefully within CONSTELLATION_SHUTDOWN_GRACE_MS."
        "\nSettings: `constellation config reference`.\n",
        def->name, def->summary, var, def->needs_kafka ? " Kafka" : "",
        def->needs_pg ? " PostgreSQL" : "");
    if (strcmp(def->name, "worker") == 0)
        printf("\n--fake-gpus SPEC  offer fake GPUs instead of NVML's, e.g. 4xH100:81920 or\n"
               "                  2xA100:40960,1xL4:24576 (CONSTELLATION_WORKER_FAKE_GPUS); see "
               "docs/worker.md\n");
}

static int service_open_dependencies(service *svc, cstl_error *err)
{
    const cstl_config *cfg = svc->cfg;
    if (svc->def->needs_kafka) {
        char client_id[256];
        snprintf(client_id, sizeof(client_id), "constellation-%s-%s", svc->def->name,
                 cfg->instance_id);
        cstl_kafka_conf *conf = cstl_kafka_conf_new(cfg->kafka_brokers, client_id, err);
        if (conf == NULL)
            return err->code;
        svc->kafka = cstl_kafka_producer_new(conf, err);
        cstl_kafka_conf_free(conf);
        if (svc->kafka == NULL)
            return err->code;
    }
    if (svc->def->needs_pg) {
        /* Readiness probes must answer quickly: one attempt, short connect timeout. */
        cstl_pg_retry policy = {.max_attempts = 1,
                                .initial_backoff_ms = 100,
                                .max_backoff_ms = 100,
                                .max_total_ms = 2000,
                                .connect_timeout_s = 2,
                                .application_name = svc->def->name,
                                .statement_timeout_ms = cfg->pg_statement_timeout_ms};
        /* The query API reads as constellation_query, bound to a tenant by row-level security. */
        const char *dsn = strcmp(svc->def->name, "queries") == 0 ? cfg->query_pg_dsn : cfg->pg_dsn;
        svc->pg = cstl_pg_pool_new(dsn, &policy, err);
        if (svc->pg == NULL)
            return err->code;
    }
    return 0;
}

static void service_close(service *svc)
{
    if (svc->kafka != NULL) {
        cstl_kafka_producer_flush(svc->kafka, 1000, NULL);
        cstl_kafka_producer_free(svc->kafka);
    }
    cstl_pg_pool_free(svc->pg);
}

static int service_run(const service_def *def, const cstl_config *cfg)
{
    service svc = {.def = def, .cfg = cfg};
    const cstl_config_addr *addr = (const cstl_config_addr *)((const char *)cfg + def->addr_offset);
    cstl_error err;
    cstl_metrics *metrics = cstl_metrics_default();
    static const char *const info_labels[] = {"version", "service", NULL};
    cstl_metric_family *info =
        cstl_metrics_gauge(metrics, "constellation_build_info",
                           "constant 1, labelled with the running version", info_labels, &err);
    if (info != NULL) {
        const char *values[] = {CSTL_VERSION, def->name};
        cstl_metrics_gauge_set(cstl_metrics_child(info, values), 1);
    }

    if (service_open_dependencies(&svc, &err) != 0) {
        cstl_log_error(def->name, &err, "cannot set up the service's clients");
        service_close(&svc);
        return CLI_EXIT_FAILURE;
    }
    cstl_http_options opts = {.host = addr->host,
                              .port = (unsigned)addr->port,
                              .threads = (unsigned)cfg->http_threads,
                              .max_body_bytes = (size_t)cfg->http_max_body_bytes,
                              .max_header_bytes = (size_t)cfg->http_max_header_bytes,
                              .timeout_seconds = (unsigned)cfg->http_timeout_s,
                              .service = def->name,
                              .metrics = metrics,
                              .ready = ready_check,
                              .ready_ud = &svc,
                              .access_log = access_log,
                              .cors_origins = cfg->cors_origins,
                              .etag = 1};
    cstl_http_server *http = cstl_http_server_new(&opts, &err);
    /* The HTTP APIs serve their contract (queries/openapi.json) and its docs page. */
    int api = strcmp(def->name, "commands") == 0 || strcmp(def->name, "queries") == 0;
    if (http != NULL && api && cstl_http_route_openapi(http, &err) != 0) {
        cstl_http_server_free(http);
        http = NULL;
    }
    if (http == NULL) {
        cstl_log_error(def->name, &err, "cannot start the http server");
        service_close(&svc);
        return CLI_EXIT_FAILURE;
    }
    svc.pub = (cli_service){.name = def->name,
                            .cfg = cfg,
                            .metrics = metrics,
                            .http = http,
                            .kafka = svc.kafka,
                            .pg = svc.pg};
    const cli_service_hooks *hooks = def->hooks;
    if ((hooks != NULL && hooks->start(&svc.pub, &err) != 0) ||
        cstl_http_server_start(http, &err) != 0) {
        cstl_log_error(def->name, &err, "cannot start the service");
        cstl_http_server_free(http);
        if (hooks != NULL)
            hooks->stop(&svc.pub);
        service_close(&svc);
        return CLI_EXIT_FAILURE;
    }
    char bound[300];
    cstl_config_addr actual = *addr;
    actual.port = (int)cstl_http_server_port(http);
    cstl_config_addr_format(&actual, bound, sizeof(bound));
    cstl_log_fields(CSTL_LOG_INFO, def->name,
                    json_pack("{s:s,s:s,s:s}", "addr", bound, "version", CSTL_VERSION,
                              "instance_id", cfg->instance_id),
                    "listening");

    int sig = cstl_shutdown_wait(-1);
    cstl_log(CSTL_LOG_INFO, def->name, "stopping on %s, draining for up to %d ms",
             sig > 0 ? strsignal(sig) : "request", cfg->shutdown_grace_ms);
    int rc = cstl_http_server_stop(http, (unsigned)cfg->shutdown_grace_ms);
    if (rc != 0)
        cstl_log(CSTL_LOG_WARN, def->name, "requests were still in flight at the deadline");
    cstl_http_server_free(http);
    if (hooks != NULL)
        hooks->stop(&svc.pub);
    service_close(&svc);
    cstl_log(CSTL_LOG_INFO, def->name, "stopped");
    return CLI_EXIT_OK;
}

int cli_run_service(int argc, char **argv)
{
    const service_def *def = NULL;
    for (size_t i = 0; i < CSTL_ARRAY_LEN(services); i++)
        if (strcmp(argv[0], services[i].name) == 0)
            def = &services[i];
    if (def == NULL)
        return CLI_EXIT_USAGE;
    if (cli_wants_help(argc, argv)) {
        usage(def);
        return CLI_EXIT_OK;
    }
    /* `constellation worker --fake-gpus SPEC` is CONSTELLATION_WORKER_FAKE_GPUS=SPEC */
    if (strcmp(def->name, "worker") == 0 && argc > 1 && strncmp(argv[1], "--fake-gpus", 11) == 0) {
        const char *spec = argv[1][11] == '=' ? argv[1] + 12 : argv[1][11] == '\0' ? argv[2] : NULL;
        if (spec == NULL || spec[0] == '\0') {
            fprintf(stderr, "constellation: worker: --fake-gpus needs a spec such as "
                            "4xH100:81920 (see --help)\n");
            return CLI_EXIT_USAGE;
        }
        setenv("CONSTELLATION_WORKER_FAKE_GPUS", spec, 1);
        int used = argv[1][11] == '=' ? 1 : 2;
        argc -= used;
        argv += used;
    }
    if (argc > 1) {
        fprintf(stderr, "constellation: %s: unexpected argument \"%s\" (see --help)\n", def->name,
                argv[1]);
        return CLI_EXIT_USAGE;
    }
    /* Before any thread exists, so every thread inherits the blocked signals. */
    if (cstl_shutdown_init() != 0) {
        fprintf(stderr, "constellation: cannot set up signal handling\n");
        return CLI_EXIT_FAILURE;
    }
    cstl_config cfg;
    int rc = cli_load_config(&cfg);
    if (rc != 0)
        return rc;
    return service_run(def, &cfg);
}
