/*
 * config.h - service configuration from CONSTELLATION_* environment variables.
 *
 * Every setting lives in one table (config.c): its variable, type, default, limits and
 * documentation. Loading starts from the defaults, then reads the optional file named by
 * CONSTELLATION_CONFIG_FILE (lines `CONSTELLATION_NAME=value`, `#` comments), then the environment,
 * which wins. The whole configuration is validated at once: every problem is reported, each naming
 * its variable and the value seen, so one start shows everything to fix. A variable that is set
 * but empty is an error, not a silent default, and so is an unknown CONSTELLATION_* variable
 * (usually a typo). Optional settings have no default: left unset, their field is "" (an empty
 * string is never a valid value, so "" always means unset).
 *
 * A loaded cstl_config is plain data, read-only after load and safe to share between threads.
 */
#ifndef CSTL_PLATFORM_CONFIG_H
#define CSTL_PLATFORM_CONFIG_H

#include "platform/log.h"

#include <stdio.h>

#define CSTL_CONFIG_STR_MAX 1024

typedef struct cstl_config_addr {
    char host[256];
    int port;
} cstl_config_addr;

typedef struct cstl_config {
    char kafka_brokers[CSTL_CONFIG_STR_MAX];
    char pg_dsn[CSTL_CONFIG_STR_MAX];
    char instance_id[128];
    cstl_log_level log_level;
    cstl_config_addr commands_addr;
    cstl_config_addr queries_addr;
    cstl_config_addr projector_addr;
    cstl_config_addr scheduler_addr;
    cstl_config_addr mcp_addr;
    cstl_config_addr worker_addr;
    int http_threads;
    long http_max_body_bytes;
    long http_max_header_bytes;
    int http_timeout_s;
    int shutdown_grace_ms;
    int pg_connect_attempts;
    int pg_statement_timeout_ms;
    int kafka_timeout_ms;
    int topic_replication_factor;
    long job_logs_retention_ms;
    int command_wait_ms;            /* how long the command API waits for a command's reply */
    int admission;                  /* 1: `constellation commands` also runs admission */
    int max_queued_jobs_per_tenant; /* admission quota */
    int scheduler_heartbeat_timeout_s;
    int scheduler_usage_half_life_s;
    int scheduler_timeout_grace_s;
    int scheduler_reason_message_interval_s;
    char scheduler_tenant_weights[CSTL_CONFIG_STR_MAX]; /* "" when unset */
    /* worker agent (docs/worker.md); strings "" when unset */
    char worker_api_url[512];
    char worker_token[512];
    char worker_id[40];
    char worker_hostname[256];
    char worker_fake_gpus[CSTL_CONFIG_STR_MAX];
    int worker_heartbeat_s;
    int worker_kill_grace_ms;
    int command_handler;         /* 1: `constellation commands` also runs the command handler */
    char operator_tenant_id[40]; /* the tenant whose admins may create tenants; "" when unset */
    /* authentication (platform/auth.h); "" when unset */
    char jwt_hs256_secret[CSTL_CONFIG_STR_MAX];
    char jwt_rs256_public_key_file[CSTL_CONFIG_STR_MAX];
    char jwt_issuer[512];
    char jwt_audience[512];
    int projector_batch_max;
    int projector_batch_ms;
    char topic_prefix[96];
    /* query API (docs/query-api.md) */
    char query_pg_dsn[CSTL_CONFIG_STR_MAX];
    char cors_origins[CSTL_CONFIG_STR_MAX]; /* "" when unset: CORS off */
    int sse_heartbeat_s;
    int sse_max_streams;
    int sse_buffer_events;
    int sse_send_buffer_bytes;
    int job_logs_end_wait_ms;
    int api_key_cache_s;
} cstl_config;

/* One problem found while loading; problems are collected in a cstl_config_problems list. */
#define CSTL_CONFIG_MAX_PROBLEMS 64

typedef struct cstl_config_problems {
    int count;
    char text[CSTL_CONFIG_MAX_PROBLEMS][512];
} cstl_config_problems;

/* Looks a variable up: returns its value or NULL. The default reads the process environment. */
typedef const char *(*cstl_config_getenv)(const char *name, void *ud);

/* Enumerates the environment: calls fn(name=value string) for each entry. */
typedef void (*cstl_config_each_env)(void (*fn)(const char *entry, void *fn_ud),
                                     void *fn_ud,
                                     void *ud);

/*
 * Loads the configuration from the process environment (and the optional file) into *cfg.
 * Returns 0, or CSTL_ECONFIG with every problem in *problems (which may be NULL).
 * Not thread-safe against concurrent setenv(3).
 */
int cstl_config_load(cstl_config *cfg, cstl_config_problems *problems);

/* Like cstl_config_load but reads variables through getenv_fn/each_fn (for tests). */
int cstl_config_load_from(cstl_config *cfg,
                          cstl_config_problems *problems,
                          cstl_config_getenv getenv_fn,
                          cstl_config_each_env each_fn,
                          void *ud);

/* Fills *cfg with the defaults (always valid). */
void cstl_config_defaults(cstl_config *cfg);

/* Prints every problem to out, one per line, prefixed "constellation: ". */
void cstl_config_print_problems(const cstl_config_problems *problems, FILE *out);

/* Writes the effective configuration as `NAME=value` lines to out: secrets as "***", passwords in
 * the PostgreSQL connection string as "***", and an unset optional setting as a `# NAME is unset`
 * comment line. */
void cstl_config_dump(const cstl_config *cfg, FILE *out);

/* Writes the configuration reference (Markdown: every variable, default, limits, meaning). */
void cstl_config_write_reference(FILE *out);

/* Formats an address as "host:port" into buf. Returns buf. */
char *cstl_config_addr_format(const cstl_config_addr *addr, char *buf, size_t size);

#endif
