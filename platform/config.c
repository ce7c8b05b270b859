/*
 * config.c - the settings table and its loader (see config.h).
 *
 * Invariant: every setting is described once, in `settings` below; loading, validation, the
 * effective-configuration dump and the Markdown reference are all driven from that table. Called
 * once at start from the main thread.
 */
#include "platform/config.h"

#include "platform/id.h"
#include "platform/pg.h"

#include <libpq-fe.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum setting_type {
    SETTING_STRING,
    SETTING_BROKERS,
    SETTING_DSN,
    SETTING_INT,
    SETTING_LONG,
    SETTING_LOG_LEVEL,
    SETTING_ADDR,
    SETTING_ONOFF, /* int field: on -> 1, off -> 0 */
    SETTING_UUID,  /* string field: a canonical UUID; unset leaves it "" */
    SETTING_FILE,  /* the path of a file readable at load */
} setting_type;

#define SETTING_OPTIONAL 1u /* no default: unset leaves the field "" (def must be NULL) */
#define SETTING_SECRET   2u /* never printed: cstl_config_dump shows "***" */

typedef struct setting {
    const char *name;
    setting_type type;
    size_t offset;
    size_t size;     /* capacity for string settings */
    const char *def; /* NULL: computed at load (see default_value) */
    long min, max;   /* for numbers; min is the minimum length of a string */
    const char *doc;
    unsigned flags; /* SETTING_OPTIONAL, SETTING_SECRET */
} setting;

#define F(field) offsetof(cstl_config, field), sizeof(((cstl_config *)0)->field)

static const setting settings[] = {
    {"CONSTELLATION_KAFKA_BROKERS", SETTING_BROKERS, F(kafka_brokers), "127.0.0.1:9092", 0, 0,
     "Kafka bootstrap servers, comma-separated host:port pairs"},
    {"CONSTELLATION_PG_DSN", SETTING_DSN, F(pg_dsn),
     "host=127.0.0.1 port=5432 dbname=constellation user=constellation", 0, 0,
     "PostgreSQL connection string (libpq keyword/value or URI form); a password in it is never "
     "logged"},
    {"CONSTELLATION_INSTANCE_ID", SETTING_STRING, F(instance_id), NULL, 0, 0,
     "this process's identity in Kafka client ids and reply routing (default: hostname-pid)"},
    {"CONSTELLATION_TOPIC_PREFIX", SETTING_STRING, F(topic_prefix), "constellation.", 0, 0,
     "prefix of the topics the projector consumes (<prefix><context>.events, <prefix>dlq); any "
     "other value also prefixes its consumer groups (<prefix>projector-<name>), for isolated "
     "test and bench topics"},
    {"CONSTELLATION_LOG_LEVEL", SETTING_LOG_LEVEL, F(log_level), "info", 0, 0,
     "lowest level logged: debug, info, warn or error"},
    {"CONSTELLATION_COMMANDS_ADDR", SETTING_ADDR, F(commands_addr), "127.0.0.1:8080", 0, 0,
     "listen address of the command API (`constellation commands`)"},
    {"CONSTELLATION_QUERIES_ADDR", SETTING_ADDR, F(queries_addr), "127.0.0.1:8081", 0, 0,
     "listen address of the query API (`constellation queries`)"},
    {"CONSTELLATION_PROJECTOR_ADDR", SETTING_ADDR, F(projector_addr), "127.0.0.1:8082", 0, 0,
     "listen address of the projector's health and metrics endpoints"},
    {"CONSTELLATION_SCHEDULER_ADDR", SETTING_ADDR, F(scheduler_addr), "127.0.0.1:8083", 0, 0,
     "listen address of the scheduler's health and metrics endpoints"},
    {"CONSTELLATION_MCP_ADDR", SETTING_ADDR, F(mcp_addr), "127.0.0.1:8084", 0, 0,
     "listen address of the MCP server (Streamable HTTP)"},
    {"CONSTELLATION_WORKER_ADDR", SETTING_ADDR, F(worker_addr), "127.0.0.1:8085", 0, 0,
     "listen address of the worker agent's health and metrics endpoints"},
    {"CONSTELLATION_HTTP_THREADS", SETTING_INT, F(http_threads), "4", 1, 256,
     "HTTP server worker threads per service"},
    {"CONSTELLATION_HTTP_MAX_BODY_BYTES", SETTING_LONG, F(http_max_body_bytes), "1048576", 1024,
     64L * 1024 * 1024, "largest accepted request body; larger bodies get 413"},
    {"CONSTELLATION_HTTP_MAX_HEADER_BYTES", SETTING_LONG, F(http_max_header_bytes), "16384", 1024,
     1024L * 1024, "largest accepted request head (request line and headers); larger get 431"},
    {"CONSTELLATION_HTTP_TIMEOUT_S", SETTING_INT, F(http_timeout_s), "30", 1, 3600,
     "idle connection timeout, seconds"},
    {"CONSTELLATION_SHUTDOWN_GRACE_MS", SETTING_INT, F(shutdown_grace_ms), "10000", 0, 600000,
     "on SIGTERM, how long in-flight work may take to finish before the process exits"},
    {"CONSTELLATION_PG_CONNECT_ATTEMPTS", SETTING_INT, F(pg_connect_attempts), "10", 1, 1000,
     "connection attempts (with exponential backoff) before PostgreSQL is declared unreachable"},
    {"CONSTELLATION_PG_STATEMENT_TIMEOUT_MS", SETTING_INT, F(pg_statement_timeout_ms), "30000", 0,
     3600000, "statement_timeout of every service connection; 0 disables it"},
    {"CONSTELLATION_KAFKA_TIMEOUT_MS", SETTING_INT, F(kafka_timeout_ms), "10000", 100, 600000,
     "timeout of blocking Kafka operations (metadata, admin requests, transaction commits)"},
    {"CONSTELLATION_TOPIC_REPLICATION_FACTOR", SETTING_INT, F(topic_replication_factor), "1", 1, 16,
     "replication factor of topics made by `constellation topics create`"},
    {"CONSTELLATION_JOB_LOGS_RETENTION_MS", SETTING_LONG, F(job_logs_retention_ms), "604800000", -1,
     LONG_MAX, "retention of constellation.jobs.logs (-1 keeps logs forever)"},
    {"CONSTELLATION_JWT_HS256_SECRET", SETTING_STRING, F(jwt_hs256_secret), NULL, 32, 0,
     "shared secret of HS256 JWTs; unset: HS256 tokens are refused. Never printed (shown as ***)",
     SETTING_OPTIONAL | SETTING_SECRET},
    {"CONSTELLATION_JWT_RS256_PUBLIC_KEY_FILE", SETTING_FILE, F(jwt_rs256_public_key_file), NULL, 0,
     0,
     "PEM file of the RSA public key (\"BEGIN PUBLIC KEY\", at least 2048 bits) of RS256 JWTs; "
     "unset: RS256 tokens are refused",
     SETTING_OPTIONAL},
    {"CONSTELLATION_JWT_ISSUER", SETTING_STRING, F(jwt_issuer), NULL, 0, 0,
     "the `iss` every JWT must carry; unset: not checked", SETTING_OPTIONAL},
    {"CONSTELLATION_JWT_AUDIENCE", SETTING_STRING, F(jwt_audience), NULL, 0, 0,
     "a value the `aud` of every JWT must include; unset: not checked", SETTING_OPTIONAL},
    {"CONSTELLATION_PROJECTOR_BATCH_MAX", SETTING_INT, F(projector_batch_max), "20000", 1, 100000,
     "most records a projector applies in one PostgreSQL transaction (it holds up to twice as "
     "many: "
     "the next batch is decoded while one is applied)"},
    {"CONSTELLATION_PROJECTOR_BATCH_MS", SETTING_INT, F(projector_batch_ms), "50", 1, 60000,
     "longest a projector waits after a batch's first record before applying it, milliseconds"},
    {"CONSTELLATION_COMMAND_WAIT_MS", SETTING_INT, F(command_wait_ms), "5000", 100, 60000,
     "how long the command API waits for a command's outcome before answering 202 with a status "
     "URL"},
    {"CONSTELLATION_COMMAND_HANDLER", SETTING_ONOFF, F(command_handler), "on", 0, 0,
     "on: `constellation commands` also runs the command handler; off: the HTTP command API only "
     "(run the handler in another process)"},
    {"CONSTELLATION_ADMISSION", SETTING_ONOFF, F(admission), "on", 0, 0,
     "on: `constellation commands` also runs the admission process manager (JobSubmitted -> "
     "AdmitJob or RejectJob); off: run it elsewhere"},
    {"CONSTELLATION_MAX_QUEUED_JOBS_PER_TENANT", SETTING_INT, F(max_queued_jobs_per_tenant), "1000",
     1, 1000000,
     "admission rejects a job (QUOTA_EXCEEDED) when its tenant already has this many "
     "jobs waiting (submitted or queued)"},
    {"CONSTELLATION_SCHEDULER_HEARTBEAT_TIMEOUT_S", SETTING_INT, F(scheduler_heartbeat_timeout_s),
     "30", 2, 3600,
     "seconds without a heartbeat after which the scheduler marks a worker lost and requeues its "
     "jobs"},
    {"CONSTELLATION_SCHEDULER_USAGE_HALF_LIFE_S", SETTING_INT, F(scheduler_usage_half_life_s),
     "600", 1, 604800,
     "half-life in seconds of the recent GPU usage that fair share compares between tenants"},
    {"CONSTELLATION_SCHEDULER_TIMEOUT_GRACE_S", SETTING_INT, F(scheduler_timeout_grace_s), "30", 1,
     3600,
     "seconds past a running job's runtime limit before the scheduler times it out (the worker "
     "enforces the limit itself; this covers a worker that does not)"},
    {"CONSTELLATION_SCHEDULER_REASON_MESSAGE_INTERVAL_S", SETTING_INT,
     F(scheduler_reason_message_interval_s), "30", 1, 3600,
     "seconds between two records of a queued job's pending reason on constellation.jobs.waiting "
     "when only its message changed (a change of reason is published at once)"},
    {"CONSTELLATION_SCHEDULER_TENANT_WEIGHTS", SETTING_STRING, F(scheduler_tenant_weights), NULL, 0,
     0,
     "fair-share weights, comma-separated TENANT_UUID=WEIGHT (a positive number); tenants not "
     "listed weigh 1",
     SETTING_OPTIONAL},
    {"CONSTELLATION_WORKER_API_URL", SETTING_STRING, F(worker_api_url), "http://127.0.0.1:8080", 8,
     0, "base URL (http://host[:port][/prefix]) of the command API the worker agent reports to"},
    {"CONSTELLATION_WORKER_TOKEN", SETTING_STRING, F(worker_token), NULL, 1, 0,
     "API key (role worker) or JWT the worker agent sends as its bearer token; required by "
     "`constellation worker`",
     SETTING_OPTIONAL | SETTING_SECRET},
    {"CONSTELLATION_WORKER_ID", SETTING_UUID, F(worker_id), NULL, 0, 0,
     "the worker agent's worker id (unset: derived from its hostname, so a restarted worker keeps "
     "its id)",
     SETTING_OPTIONAL},
    {"CONSTELLATION_WORKER_HOSTNAME", SETTING_STRING, F(worker_hostname), NULL, 1, 0,
     "hostname the worker agent registers with (unset: the machine's)", SETTING_OPTIONAL},
    {"CONSTELLATION_WORKER_FAKE_GPUS", SETTING_STRING, F(worker_fake_gpus), NULL, 1, 0,
     "fake GPUs instead of NVML's, COUNTxMODEL:MEMORY_MIB[:CC] groups, comma-separated (e.g. "
     "4xH100:81920 or 2xA100:40960,1xL4:24576); also `constellation worker --fake-gpus SPEC`",
     SETTING_OPTIONAL},
    {"CONSTELLATION_WORKER_HEARTBEAT_S", SETTING_INT, F(worker_heartbeat_s), "5", 1, 300,
     "seconds between the worker agent's heartbeats"},
    {"CONSTELLATION_WORKER_KILL_GRACE_MS", SETTING_INT, F(worker_kill_grace_ms), "1000", 0, 60000,
     "milliseconds between SIGTERM and SIGKILL when the worker agent stops a job (cancelled, "
     "over its runtime limit, or the agent stops)"},
    {"CONSTELLATION_OPERATOR_TENANT_ID", SETTING_UUID, F(operator_tenant_id), NULL, 0, 0,
     "the operator's tenant: only its admins may create tenants with POST /v1/tenants (unset: "
     "nobody may, tenants are then created with `constellation tenants create`)",
     SETTING_OPTIONAL},
    {"CONSTELLATION_QUERY_PG_DSN", SETTING_DSN, F(query_pg_dsn),
     "host=127.0.0.1 port=5432 dbname=constellation user=constellation_query", 0, 0,
     "PostgreSQL connection string of the query API: the role constellation_query, bound to one "
     "tenant per request by row-level security"},
    {"CONSTELLATION_CORS_ORIGINS", SETTING_STRING, F(cors_origins), NULL, 0, 0,
     "comma-separated exact origins (scheme://host[:port]) the HTTP APIs accept cross-origin "
     "requests from; unset: CORS off",
     SETTING_OPTIONAL},
    {"CONSTELLATION_SSE_HEARTBEAT_S", SETTING_INT, F(sse_heartbeat_s), "15", 1, 300,
     "seconds between heartbeat comments on an idle event stream (GET /v1/stream)"},
    {"CONSTELLATION_SSE_MAX_STREAMS", SETTING_INT, F(sse_max_streams), "1000", 1, 100000,
     "most event streams open at once; more are answered 503"},
    {"CONSTELLATION_SSE_BUFFER_EVENTS", SETTING_INT, F(sse_buffer_events), "1024", 16, 1000000,
     "events buffered per stream client; a client that falls further behind is disconnected "
     "with an event telling it to resume"},
    {"CONSTELLATION_SSE_SEND_BUFFER_BYTES", SETTING_INT, F(sse_send_buffer_bytes), "0", 0, 16777216,
     "kernel send buffer of an event stream's connection; bounds how far a client that stops "
     "reading can fall behind before its events buffer fills (0: the kernel's autotuned size, "
     "up to a few MiB)"},
    {"CONSTELLATION_JOB_LOGS_END_WAIT_MS", SETTING_INT, F(job_logs_end_wait_ms), "10000", 0, 600000,
     "how long after a job finished GET /v1/jobs/{id}/logs waits for output lines it knows are "
     "missing (fewer received than the run reported) before it ends the stream with "
     "\"complete\":false"},
    {"CONSTELLATION_API_KEY_CACHE_S", SETTING_INT, F(api_key_cache_s), "10", 0, 3600,
     "seconds an API key looked up in PostgreSQL (by the query API) is trusted before it is "
     "looked up again, so revocations apply within this time"},
};

#undef F

#define CONFIG_FILE_VAR     "CONSTELLATION_CONFIG_FILE"
#define CONFIG_FILE_MAX     (64L * 1024)
#define CONFIG_FILE_ENTRIES 128

static void problem(cstl_config_problems *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void problem(cstl_config_problems *p, const char *fmt, ...)
{
    if (p == NULL || p->count >= CSTL_CONFIG_MAX_PROBLEMS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->text[p->count++], sizeof(p->text[0]), fmt, ap);
    va_end(ap);
}

static const setting *setting_find(const char *name, size_t len)
{
    for (size_t i = 0; i < CSTL_ARRAY_LEN(settings); i++)
        if (strlen(settings[i].name) == len && strncmp(settings[i].name, name, len) == 0)
            return &settings[i];
    return NULL;
}

static int parse_long(const char *text, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || isspace((unsigned char)text[0]))
        return CSTL_EINVAL;
    *out = v;
    return 0;
}

static int parse_port(const char *text, int *port)
{
    long v;
    if (parse_long(text, &v) != 0 || v < 0 || v > 65535)
        return CSTL_EINVAL;
    *port = (int)v;
    return 0;
}

/* host:port or [v6]:port. Writes into addr on success. */
static int parse_addr(const char *text, cstl_config_addr *addr, const char **why)
{
    const char *colon;
    const char *host = text;
    size_t host_len;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':') {
            *why = "expected [ipv6]:port";
            return CSTL_EINVAL;
        }
        host = text + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL) {
            *why = "expected host:port";
            return CSTL_EINVAL;
        }
        host_len = (size_t)(colon - text);
    }
    if (host_len == 0 || host_len >= sizeof(addr->host)) {
        *why = "the host is empty or too long";
        return CSTL_EINVAL;
    }
    int port;
    if (parse_port(colon + 1, &port) != 0) {
        *why = "the port must be a number from 0 to 65535";
        return CSTL_EINVAL;
    }
    memcpy(addr->host, host, host_len);
    addr->host[host_len] = '\0';
    addr->port = port;
    return 0;
}

static int has_control_chars(const char *s)
{
    for (; *s; s++)
        if (iscntrl((unsigned char)*s))
            return 1;
    return 0;
}

static int validate_brokers(const char *value, const char **why)
{
    char buf[CSTL_CONFIG_STR_MAX];
    snprintf(buf, sizeof(buf), "%s", value);
    char *save = NULL;
    int n = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        cstl_config_addr a;
        if (parse_addr(tok, &a, why) != 0 || a.port == 0) {
            *why = "each broker must be host:port with a port from 1 to 65535";
            return CSTL_EINVAL;
        }
        n++;
    }
    if (n == 0) {
        *why = "no broker given";
        return CSTL_EINVAL;
    }
    return 0;
}

/* Applies one value to its setting, or records why it cannot. source is "" or " (in FILE:LINE)". */
static void apply(cstl_config *cfg,
                  const setting *s,
                  const char *value,
                  const char *source,
                  cstl_config_problems *problems)
{
    char *field = (char *)cfg + s->offset;
    const char *why = NULL;
    if (value[0] == '\0') {
        if (s->flags & SETTING_OPTIONAL)
            problem(problems, "%s is set but empty%s: unset it, it is optional", s->name, source);
        else
            problem(problems, "%s is set but empty%s: unset it to use the default \"%s\"", s->name,
                    source, s->def ? s->def : "(computed)");
        return;
    }
    size_t len = strlen(value);
    if (len >= CSTL_CONFIG_STR_MAX || has_control_chars(value)) {
        problem(problems, "%s%s is too long or contains control characters", s->name, source);
        return;
    }
    switch (s->type) {
    case SETTING_BROKERS:
        if (validate_brokers(value, &why) != 0)
            break;
        /* fall through */
    case SETTING_STRING:
        if (len >= s->size) {
            problem(problems, "%s%s is %zu bytes long, the limit is %zu", s->name, source, len,
                    s->size - 1);
            return;
        }
        if (s->min > 0 && len < (size_t)s->min) {
            problem(problems, "%s%s is %zu bytes long, the minimum is %ld", s->name, source, len,
                    s->min);
            return;
        }
        memcpy(field, value, len + 1);
        return;
    case SETTING_FILE: {
        if (len >= s->size) {
            problem(problems, "%s%s is %zu bytes long, the limit is %zu", s->name, source, len,
                    s->size - 1);
            return;
        }
        /* opened and one byte read: a directory opens but does not read */
        FILE *f = fopen(value, "r");
        int e = f == NULL ? errno : 0;
        if (f != NULL) {
            if (fgetc(f) == EOF && ferror(f))
                e = errno ? errno : EIO;
            fclose(f);
        }
        if (e != 0) {
            problem(problems, "%s%s names \"%s\", which cannot be read: %s", s->name, source, value,
                    strerror(e));
            return;
        }
        memcpy(field, value, len + 1);
        return;
    }
    case SETTING_DSN: {
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(value, &err);
        if (opts == NULL) {
            /* libpq's message ends with a newline */
            char msg[256];
            snprintf(msg, sizeof(msg), "%s", err ? err : "out of memory");
            msg[strcspn(msg, "\n")] = '\0';
            problem(problems, "%s%s is not a valid connection string: %s", s->name, source, msg);
            PQfreemem(err);
            return;
        }
        PQconninfoFree(opts);
        if (len >= s->size)
            break;
        memcpy(field, value, len + 1);
        return;
    }
    case SETTING_INT:
    case SETTING_LONG: {
        long v;
        if (parse_long(value, &v) != 0 || v < s->min || v > s->max) {
            problem(problems, "%s%s must be an integer from %ld to %ld, got \"%s\"", s->name,
                    source, s->min, s->max, value);
            return;
        }
        if (s->type == SETTING_INT)
            *(int *)field = (int)v;
        else
            *(long *)field = v;
        return;
    }
    case SETTING_LOG_LEVEL:
        if (cstl_log_parse_level(value, (cstl_log_level *)field) == 0)
            return;
        why = "expected debug, info, warn or error";
        break;
    case SETTING_ADDR:
        if (parse_addr(value, (cstl_config_addr *)field, &why) == 0)
            return;
        break;
    case SETTING_ONOFF:
        if (strcmp(value, "on") == 0 || strcmp(value, "off") == 0) {
            *(int *)field = strcmp(value, "on") == 0;
            return;
        }
        why = "expected on or off";
        break;
    case SETTING_UUID:
        if (cstl_uuid_valid(value) && len < s->size) {
            for (size_t i = 0; i <= len; i++)
                field[i] = (char)tolower((unsigned char)value[i]);
            return;
        }
        why = "expected a UUID such as \"0190a4d2-6f1e-7c3a-9b2d-3f4e5a6b7c8d\"";
        break;
    }
    problem(problems, "%s%s is invalid, got \"%s\"%s%s", s->name, source, value, why ? ": " : "",
            why ? why : "");
}

static void default_instance_id(char *out, size_t size)
{
    char host[64] = "host";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(out, size, "%s-%ld", host, (long)getpid());
}

void cstl_config_defaults(cstl_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < CSTL_ARRAY_LEN(settings); i++) {
        if (settings[i].def != NULL)
            apply(cfg, &settings[i], settings[i].def, "", NULL);
    }
    default_instance_id(cfg->instance_id, sizeof(cfg->instance_id));
}

typedef struct file_entry {
    const setting *setting;
    char value[CSTL_CONFIG_STR_MAX];
    int line;
} file_entry;

/* Reads the optional configuration file; its entries are applied before the environment. */
static int
read_file(const char *path, file_entry *entries, int *count, cstl_config_problems *problems)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        problem(problems, "%s names \"%s\", which cannot be read: %s", CONFIG_FILE_VAR, path,
                strerror(errno));
        return -1;
    }
    char line[CSTL_CONFIG_STR_MAX + 128];
    int lineno = 0;
    long total = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        total += (long)strlen(line);
        if (total > CONFIG_FILE_MAX) {
            problem(problems, "%s: the file is larger than %ld bytes", path, CONFIG_FILE_MAX);
            break;
        }
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] != '\n' && !feof(f)) {
            problem(problems, "%s:%d: the line is longer than %zu bytes", path, lineno,
                    sizeof(line) - 2);
            break;
        }
        line[strcspn(line, "\r\n")] = '\0';
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        char *eq = strchr(p, '=');
        if (eq == NULL) {
            problem(problems, "%s:%d: expected NAME=value, got \"%s\"", path, lineno, p);
            continue;
        }
        const setting *s = setting_find(p, (size_t)(eq - p));
        if (s == NULL) {
            problem(problems, "%s:%d: unknown variable \"%.*s\"", path, lineno, (int)(eq - p), p);
            continue;
        }
        if (*count >= CONFIG_FILE_ENTRIES) {
            problem(problems, "%s: more than %d settings", path, CONFIG_FILE_ENTRIES);
            break;
        }
        file_entry *e = &entries[(*count)++];
        e->setting = s;
        e->line = lineno;
        snprintf(e->value, sizeof(e->value), "%s", eq + 1);
    }
    fclose(f);
    return 0;
}

typedef struct unknown_ctx {
    cstl_config_problems *problems;
} unknown_ctx;

static void check_known(const char *entry, void *ud)
{
    unknown_ctx *ctx = ud;
    static const char prefix[] = "CONSTELLATION_";
    if (strncmp(entry, prefix, sizeof(prefix) - 1) != 0)
        return;
    const char *eq = strchr(entry, '=');
    size_t len = eq ? (size_t)(eq - entry) : strlen(entry);
    if (setting_find(entry, len) != NULL ||
        (len == strlen(CONFIG_FILE_VAR) && strncmp(entry, CONFIG_FILE_VAR, len) == 0))
        return;
    problem(ctx->problems, "unknown variable %.*s (see docs/configuration.md for the known ones)",
            (int)len, entry);
}

int cstl_config_load_from(cstl_config *cfg,
                          cstl_config_problems *problems,
                          cstl_config_getenv getenv_fn,
                          cstl_config_each_env each_fn,
                          void *ud)
{
    cstl_config_problems local;
    if (problems == NULL)
        problems = &local;
    problems->count = 0;
    cstl_config_defaults(cfg);

    const char *file = getenv_fn(CONFIG_FILE_VAR, ud);
    if (file != NULL && file[0] != '\0') {
        static file_entry entries[CONFIG_FILE_ENTRIES];
        int count = 0;
        read_file(file, entries, &count, problems);
        for (int i = 0; i < count; i++) {
            char source[600];
            snprintf(source, sizeof(source), " (in %s:%d)", file, entries[i].line);
            apply(cfg, entries[i].setting, entries[i].value, source, problems);
        }
    }
    for (size_t i = 0; i < CSTL_ARRAY_LEN(settings); i++) {
        const char *value = getenv_fn(settings[i].name, ud);
        if (value != NULL)
            apply(cfg, &settings[i], value, "", problems);
    }
    if (each_fn != NULL) {
        unknown_ctx ctx = {problems};
        each_fn(check_known, &ctx, ud);
    }
    return problems->count == 0 ? 0 : CSTL_ECONFIG;
}

static const char *env_getenv(const char *name, void *ud)
{
    (void)ud;
    return getenv(name);
}

static void env_each(void (*fn)(const char *entry, void *fn_ud), void *fn_ud, void *ud)
{
    (void)ud;
    for (char **e = environ; e && *e; e++)
        fn(*e, fn_ud);
}

int cstl_config_load(cstl_config *cfg, cstl_config_problems *problems)
{
    return cstl_config_load_from(cfg, problems, env_getenv, env_each, NULL);
}

void cstl_config_print_problems(const cstl_config_problems *problems, FILE *out)
{
    for (int i = 0; i < problems->count; i++)
        fprintf(out, "constellation: %s\n", problems->text[i]);
    if (problems->count >= CSTL_CONFIG_MAX_PROBLEMS)
        fprintf(out, "constellation: (further problems not shown)\n");
}

char *cstl_config_addr_format(const cstl_config_addr *addr, char *buf, size_t size)
{
    if (strchr(addr->host, ':') != NULL)
        snprintf(buf, size, "[%s]:%d", addr->host, addr->port);
    else
        snprintf(buf, size, "%s:%d", addr->host, addr->port);
    return buf;
}

static void format_value(const cstl_config *cfg, const setting *s, char *buf, size_t size)
{
    const char *field = (const char *)cfg + s->offset;
    if (s->flags & SETTING_SECRET) {
        snprintf(buf, size, "***");
        return;
    }
    switch (s->type) {
    case SETTING_STRING:
    case SETTING_BROKERS:
    case SETTING_UUID:
    case SETTING_FILE:
        snprintf(buf, size, "%s", field);
        break;
    case SETTING_ONOFF:
        snprintf(buf, size, "%s", *(const int *)field ? "on" : "off");
        break;
    case SETTING_DSN:
        cstl_pg_dsn_redact(field, buf, size);
        break;
    case SETTING_INT:
        snprintf(buf, size, "%d", *(const int *)field);
        break;
    case SETTING_LONG:
        snprintf(buf, size, "%ld", *(const long *)field);
        break;
    case SETTING_LOG_LEVEL:
        snprintf(buf, size, "%s", cstl_log_level_name(*(const cstl_log_level *)field));
        break;
    case SETTING_ADDR:
        cstl_config_addr_format((const cstl_config_addr *)field, buf, size);
        break;
    }
}

void cstl_config_dump(const cstl_config *cfg, FILE *out)
{
    char buf[CSTL_CONFIG_STR_MAX + 64];
    for (size_t i = 0; i < CSTL_ARRAY_LEN(settings); i++) {
        const setting *s = &settings[i];
        if ((s->flags & SETTING_OPTIONAL) && ((const char *)cfg + s->offset)[0] == '\0') {
            fprintf(out, "# %s is unset\n", s->name);
            continue;
        }
        format_value(cfg, s, buf, sizeof(buf));
        fprintf(out, "%s=%s\n", s->name, buf);
    }
}

void cstl_config_write_reference(FILE *out)
{
    fputs("# Configuration reference\n\n"
          "Every service reads its settings from `CONSTELLATION_*` environment variables, and "
          "optionally from the\nfile named by `CONSTELLATION_CONFIG_FILE` (lines "
          "`CONSTELLATION_NAME=value`, `#` comments; the\nenvironment wins over the file). The "
          "whole configuration is validated at start: a service refuses\nto start on any invalid, "
          "empty or unknown `CONSTELLATION_*` variable, and names every one at once.\n"
          "`constellation config` prints the effective configuration.\n\n"
          "This page is generated by `constellation config reference` from the settings table in "
          "`platform/config.c`.\n\n"
          "| variable | default | allowed | meaning |\n|---|---|---|---|\n",
          out);
    for (size_t i = 0; i < CSTL_ARRAY_LEN(settings); i++) {
        const setting *s = &settings[i];
        char allowed[96];
        switch (s->type) {
        case SETTING_INT:
        case SETTING_LONG:
            if (s->max == LONG_MAX)
                snprintf(allowed, sizeof(allowed), "integer ≥ %ld", s->min);
            else
                snprintf(allowed, sizeof(allowed), "integer %ld–%ld", s->min, s->max);
            break;
        case SETTING_LOG_LEVEL:
            snprintf(allowed, sizeof(allowed), "debug, info, warn, error");
            break;
        case SETTING_ADDR:
            snprintf(allowed, sizeof(allowed), "host:port (port 0: any free port)");
            break;
        case SETTING_BROKERS:
            snprintf(allowed, sizeof(allowed), "host:port[,host:port…]");
            break;
        case SETTING_DSN:
            snprintf(allowed, sizeof(allowed), "libpq connection string");
            break;
        case SETTING_STRING:
            if (s->min > 0)
                snprintf(allowed, sizeof(allowed), "text, %ld to %zu bytes", s->min, s->size - 1);
            else
                snprintf(allowed, sizeof(allowed), "text, at most %zu bytes", s->size - 1);
            break;
        case SETTING_FILE:
            snprintf(allowed, sizeof(allowed), "path of a readable file");
            break;
        case SETTING_ONOFF:
            snprintf(allowed, sizeof(allowed), "on, off");
            break;
        case SETTING_UUID:
            snprintf(allowed, sizeof(allowed), "UUID");
            break;
        }
        const char *def = s->def ? s->def : s->flags & SETTING_OPTIONAL ? "unset" : "computed";
        fprintf(out, "| `%s` | %s%s%s | %s | %s |\n", s->name, s->def ? "`" : "", def,
                s->def ? "`" : "", allowed, s->doc);
    }
}
