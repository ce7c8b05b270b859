/*
 * service.h - what a long-running service adds to the common service life of service.c.
 *
 * service.c opens the service's clients (Kafka, PostgreSQL), builds the HTTP server with its
 * /healthz, /readyz and /metrics, and then calls the service's hooks: start() to register its
 * routes and start its background threads (before the HTTP server starts), and stop() after the
 * HTTP server has drained its in-flight requests on SIGTERM (so requests that wait for background
 * work still get it). A service without hooks only serves health and metrics.
 */
#ifndef CSTL_CLI_SERVICE_H
#define CSTL_CLI_SERVICE_H

#include "platform/config.h"
#include "platform/http.h"
#include "platform/kafka.h"
#include "platform/metrics.h"
#include "platform/pg.h"

typedef struct cli_service {
    const char *name;           /* "commands" */
    const cstl_config *cfg;     /* borrowed, valid for the service's life */
    cstl_metrics *metrics;      /* the registry served on /metrics */
    cstl_http_server *http;     /* routes may be added in start() */
    cstl_kafka_producer *kafka; /* idempotent producer of the service (NULL if it needs no Kafka) */
    cstl_pg_pool *pg;           /* NULL if it needs no PostgreSQL */
    void *state;                /* the hooks' own state */
} cli_service;

typedef struct cli_service_hooks {
    /* Registers routes, starts background work. Returns 0 or fills err (the service then exits 1
     * after calling stop()). */
    int (*start)(cli_service *svc, cstl_error *err);
    /* Stops background work and frees svc->state. Called once, also after a failed start. */
    void (*stop)(cli_service *svc);
    /* Extra readiness (e.g. "restoring partitions"): 0 when ready. NULL: none. */
    int (*ready)(cli_service *svc, cstl_error *why);
} cli_service_hooks;

/* The projector's hooks (cli/projector_cmd.c). */
extern const cli_service_hooks cli_projector_hooks;
/* The hooks of `constellation commands` (commands_service.c). */
extern const cli_service_hooks cli_commands_hooks;

/* The scheduler's hooks (cli/scheduler_cmd.c). */
extern const cli_service_hooks cli_scheduler_hooks;

/* The worker agent's hooks (cli/worker_cmd.c). */
extern const cli_service_hooks cli_worker_hooks;

/* The query API's hooks (cli/queries_cmd.c). */
extern const cli_service_hooks cli_queries_hooks;

#endif
