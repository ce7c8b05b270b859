/*
 * proj_env.h - test support for the projections: a throwaway database cstl_test_<pid>_<random>
 * with every migration applied, throwaway events topics test.<pid>.<random>.<ctx>.events, the
 * telemetry topic ...jobs.waiting and .dlq, and an event emitter that both records events (for
 * direct application) and produces them transactionally to Kafka like the command handler does
 * (telemetry records and tombstones too, to their own topic). Header-only, one includer per test.
 */
#ifndef CSTL_TESTS_PROJ_ENV_H
#define CSTL_TESTS_PROJ_ENV_H

#include "platform/codec.h"
#include "platform/events.h"
#include "platform/id.h"
#include "platform/kafka.h"
#include "platform/log.h"
#include "platform/migrate.h"
#include "platform/pg.h"
#include "projections/projection.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PE_PARTITIONS 3

#define PE_WAITING_TOPIC "jobs.waiting" /* the other topic a projection reads (jobs) */

typedef struct pe_event {
    char ctx[16];
    char topic[32]; /* "" for the context's events topic, else PE_WAITING_TOPIC */
    bool tombstone; /* a record without a value (type CSTL_PROJ_TOMBSTONE, data {"key"}) */
    char type[48];
    cstl_event_headers h;
    json_t *data;
} pe_event;

static struct {
    char admin_dsn[1024], dsn[1200], db[64];
    cstl_pg_conn *admin, *pg;
    const char *brokers;
    char prefix[96];
    cstl_kafka_conf *conf;
    cstl_kafka_admin *kadmin;
    cstl_kafka_producer *txn;
    pe_event *events;
    size_t nevents, cap;
    int64_t clock_us;
} pe;

static const cstl_pg_retry pe_policy = {.max_attempts = 3,
                                        .initial_backoff_ms = 50,
                                        .max_backoff_ms = 200,
                                        .max_total_ms = 3000,
                                        .connect_timeout_s = 3,
                                        .application_name = "cstl-test"};

static inline int64_t pe_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void pe_append_kv(char *out, size_t n, const char *key, const char *val)
{
    size_t o = strlen(out);
    o += (size_t)snprintf(out + o, n - o, "%s%s='", o ? " " : "", key);
    for (const char *p = val; *p != '\0' && o + 3 < n; p++) {
        if (*p == '\'' || *p == '\\')
            out[o++] = '\\';
        out[o++] = *p;
    }
    snprintf(out + o, n - o, "'");
}

static inline int pe_sql(cstl_pg_conn *c, const char *sql)
{
    cstl_error err;
    int rc = cstl_pg_exec_script(c, sql, &err);
    if (rc != 0)
        fprintf(stderr, "sql failed: %s (%s)\n", err.message, sql);
    return rc;
}

/* The single value of a one-row query as a new string ("" for NULL); NULL on failure. */
static char *pe_value(cstl_pg_conn *c, const char *sql)
{
    PGresult *res = NULL;
    cstl_error err;
    if (cstl_pg_exec(c, sql, 0, NULL, &res, &err) != 0) {
        fprintf(stderr, "query failed: %s (%s)\n", err.message, sql);
        return NULL;
    }
    char *v = cstl_xstrdup(PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return v;
}

static inline long pe_long(cstl_pg_conn *c, const char *sql)
{
    char *v = pe_value(c, sql);
    long r = v ? strtol(v, NULL, 10) : -1;
    free(v);
    return r;
}

static inline int pe_setup(void)
{
    cstl_log_set_level(CSTL_LOG_ERROR);
    const char *env = getenv("CONSTELLATION_PG_DSN");
    snprintf(pe.admin_dsn, sizeof(pe.admin_dsn), "%s",
             env && *env ? env
                         : "host=127.0.0.1 port=5432 dbname=constellation user=constellation");
    pe.brokers = getenv("CONSTELLATION_KAFKA_BROKERS");
    if (pe.brokers == NULL || *pe.brokers == '\0')
        pe.brokers = "127.0.0.1:9092";
    cstl_error err;
    pe.admin = cstl_pg_connect(pe.admin_dsn, &pe_policy, &err);
    if (pe.admin == NULL) {
        fprintf(stderr, "cannot reach postgresql: %s\n", err.message);
        return -1;
    }
    char uuid[CSTL_UUID_STRLEN + 1];
    cstl_uuid_v7_string(uuid);
    snprintf(pe.db, sizeof(pe.db), "cstl_test_%d_%.8s", (int)getpid(), uuid + 28);
    char sql[160];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", pe.db);
    if (pe_sql(pe.admin, sql) != 0) {
        pe.db[0] = '\0';
        return -1;
    }
    PQconninfoOption *opts = PQconninfoParse(pe.admin_dsn, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (o->val && o->val[0] && strcmp(o->keyword, "dbname") != 0)
            pe_append_kv(pe.dsn, sizeof(pe.dsn), o->keyword, o->val);
    PQconninfoFree(opts);
    pe_append_kv(pe.dsn, sizeof(pe.dsn), "dbname", pe.db);
    pe.pg = cstl_pg_connect(pe.dsn, &pe_policy, &err);
    cstl_migration *list = NULL;
    size_t n = 0;
    if (pe.pg == NULL || cstl_migrations_embedded(&list, &n, &err) != 0 ||
        cstl_migrate_run(pe.pg, list, n, NULL, &err) != 0) {
        fprintf(stderr, "cannot migrate %s: %s\n", pe.db, err.message);
        free(list);
        return -1;
    }
    free(list);

    snprintf(pe.prefix, sizeof(pe.prefix), "test.%d.%.8s.", (int)getpid(), uuid + 28);
    pe.conf = cstl_kafka_conf_new(pe.brokers, "cstl-test-projector", &err);
    pe.kadmin = pe.conf ? cstl_kafka_admin_new(pe.conf, &err) : NULL;
    if (pe.kadmin == NULL)
        return -1;
    char names[5][160];
    const char *ctxs[] = {"tenants", "jobs", "fleet"};
    cstl_kafka_topic_spec specs[5];
    for (int i = 0; i < 3; i++) {
        snprintf(names[i], sizeof(names[i]), "%s%s.events", pe.prefix, ctxs[i]);
        specs[i] = (cstl_kafka_topic_spec){names[i], PE_PARTITIONS, 1, NULL};
    }
    snprintf(names[3], sizeof(names[3]), "%sdlq", pe.prefix);
    specs[3] = (cstl_kafka_topic_spec){names[3], 1, 1, NULL};
    snprintf(names[4], sizeof(names[4]), "%s%s", pe.prefix, PE_WAITING_TOPIC);
    specs[4] = (cstl_kafka_topic_spec){names[4], PE_PARTITIONS, 1, NULL};
    if (cstl_kafka_admin_create_topics(pe.kadmin, specs, 5, 30000, NULL, NULL, &err) != 0) {
        fprintf(stderr, "cannot create topics: %s\n", err.message);
        return -1;
    }
    char txid[160];
    snprintf(txid, sizeof(txid), "%stxn", pe.prefix);
    pe.txn = cstl_kafka_txn_producer_new(pe.conf, txid, &err);
    if (pe.txn == NULL || cstl_kafka_producer_init_transactions(pe.txn, 30000, &err) != 0) {
        fprintf(stderr, "cannot start the producer: %s\n", err.message);
        return -1;
    }
    pe.clock_us = 1790000000000000LL;
    return 0;
}

static inline void pe_events_clear(void)
{
    for (size_t i = 0; i < pe.nevents; i++)
        json_decref(pe.events[i].data);
    pe.nevents = 0;
}

static inline void pe_teardown(void)
{
    pe_events_clear();
    free(pe.events);
    cstl_kafka_producer_free(pe.txn);
    if (pe.kadmin) {
        char names[5][160];
        const char *ptrs[5];
        const char *ctxs[] = {"tenants.events", "jobs.events", "fleet.events", "dlq",
                              PE_WAITING_TOPIC};
        for (int i = 0; i < 5; i++) {
            snprintf(names[i], sizeof(names[i]), "%s%s", pe.prefix, ctxs[i]);
            ptrs[i] = names[i];
        }
        cstl_kafka_admin_delete_topics(pe.kadmin, ptrs, 5, 30000, NULL);
    }
    cstl_kafka_admin_free(pe.kadmin);
    cstl_kafka_conf_free(pe.conf);
    cstl_pg_close(pe.pg);
    if (pe.admin && pe.db[0]) {
        char sql[160];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", pe.db);
        pe_sql(pe.admin, sql);
    }
    cstl_pg_close(pe.admin);
}

/* Records an event (steals data). ctx "jobs", type "JobSubmitted". */
static inline pe_event *pe_emit(const char *ctx,
                                const char *type,
                                const char *subject,
                                const char *tenant,
                                int64_t version,
                                json_t *data)
{
    if (pe.nevents == pe.cap) {
        pe.cap = pe.cap ? pe.cap * 2 : 1024;
        pe.events = cstl_xrealloc(pe.events, pe.cap * sizeof(pe_event));
    }
    pe_event *e = &pe.events[pe.nevents++];
    memset(e, 0, sizeof(*e));
    snprintf(e->ctx, sizeof(e->ctx), "%s", ctx);
    snprintf(e->type, sizeof(e->type), "%s", type);
    cstl_uuid_v7_string(e->h.id);
    snprintf(e->h.source, sizeof(e->h.source), "/constellation/commands/%s", ctx);
    snprintf(e->h.type, sizeof(e->h.type), "io.constellation.%s.%s.v1", ctx, type);
    e->h.time_us = pe.clock_us;
    snprintf(e->h.subject, sizeof(e->h.subject), "%.255s", subject);
    snprintf(e->h.tenant, sizeof(e->h.tenant), "%.36s", tenant);
    e->h.version = version;
    e->data = data;
    return e;
}

/* Records a JobWaiting of the scheduler for job (version: the job's version it was decided from;
 * reason: "GPU_MODEL_ABSENT"...), on PE_WAITING_TOPIC. */
static inline pe_event *pe_emit_waiting(const char *job,
                                        const char *tenant,
                                        int64_t version,
                                        int attempts,
                                        const char *reason,
                                        const char *message,
                                        int64_t at)
{
    pe_event *e = pe_emit("jobs", "JobWaiting", job, tenant, version > 0 ? version : 1,
                          json_pack("{s:s,s:s,s:i,s:s,s:s,s:I}", "job_id", job, "tenant_id", tenant,
                                    "attempts", attempts, "reason", reason, "message", message,
                                    "at", (json_int_t)at));
    snprintf(e->topic, sizeof(e->topic), "%s", PE_WAITING_TOPIC);
    snprintf(e->h.source, sizeof(e->h.source), "/constellation/scheduler");
    e->h.time_us = at;
    return e;
}

/* Records a tombstone of job on PE_WAITING_TOPIC, as the projector passes it on. */
static inline pe_event *pe_emit_tombstone(const char *job)
{
    pe_event *e = pe_emit("jobs", CSTL_PROJ_TOMBSTONE, job, "", 0, json_pack("{s:s}", "key", job));
    snprintf(e->topic, sizeof(e->topic), "%s", PE_WAITING_TOPIC);
    e->tombstone = true;
    memset(&e->h, 0, sizeof(e->h));
    snprintf(e->h.subject, sizeof(e->h.subject), "%.255s", job);
    return e;
}

/* True when projection p reads event e (its context's events topic, or one of its topics). */
static inline bool pe_reads(const cstl_projection *p, const pe_event *e)
{
    if (e->topic[0] != '\0') {
        for (const char *const *t = p->topics; t && *t; t++)
            if (strcmp(*t, e->topic) == 0)
                return true;
        return false;
    }
    for (const char *const *c = p->contexts; *c; c++)
        if (strcmp(*c, e->ctx) == 0)
            return true;
    return false;
}

/* Produces events [from, to) in transactions of per_txn events. Returns 0 or fails loudly. */
static inline int pe_produce(size_t from, size_t to, size_t per_txn)
{
    const cstl_schema_catalog *cat = cstl_schema_catalog_get();
    cstl_codec_buf buf = {0};
    cstl_error err;
    int rc = 0;
    for (size_t i = from; rc == 0 && i < to;) {
        rc = cstl_kafka_producer_begin(pe.txn, &err);
        size_t end = i + per_txn < to ? i + per_txn : to;
        for (; rc == 0 && i < end; i++) {
            pe_event *e = &pe.events[i];
            char name[80], topic[160];
            snprintf(name, sizeof(name), "%s.%s", e->ctx, e->type);
            if (e->topic[0] != '\0')
                snprintf(topic, sizeof(topic), "%s%s", pe.prefix, e->topic);
            else
                snprintf(topic, sizeof(topic), "%s%s.events", pe.prefix, e->ctx);
            const cstl_schema_entry *entry =
                e->tombstone ? NULL : cstl_schema_catalog_find(cat, name);
            buf.len = 0;
            if (!e->tombstone &&
                (entry == NULL || cstl_codec_encode_json(entry, e->data, &buf, &err) != 0)) {
                fprintf(stderr, "cannot encode %s: %s\n", name, entry ? err.message : "unknown");
                rc = -1;
                break;
            }
            rd_kafka_headers_t *hdrs = e->tombstone ? NULL : rd_kafka_headers_new(12);
            rc = e->tombstone ? 0 : cstl_event_headers_build(&e->h, hdrs, &err);
            int32_t part =
                cstl_kafka_partition_for_key(e->h.subject, strlen(e->h.subject), PE_PARTITIONS);
            for (int tries = 0; rc == 0; tries++) {
                rc = cstl_kafka_producer_send(pe.txn, topic, part, e->h.subject,
                                              strlen(e->h.subject), e->tombstone ? NULL : buf.data,
                                              buf.len, hdrs, NULL, NULL, &err);
                if (rc != CSTL_EKAFKA || tries > 1000)
                    break;
                cstl_kafka_producer_poll(pe.txn, 10);
                rc = 0;
            }
            if (rc != 0) {
                if (hdrs != NULL)
                    rd_kafka_headers_destroy(hdrs);
                fprintf(stderr, "cannot produce: %s\n", err.message);
            }
        }
        if (rc == 0)
            rc = cstl_kafka_producer_commit(pe.txn, 30000, &err);
        if (rc != 0)
            fprintf(stderr, "transaction failed: %s\n", err.message);
    }
    cstl_codec_buf_free(&buf);
    return rc;
}

/* Applies events [from, to) directly to schema (search_path), in one transaction. */
static inline int pe_apply_direct(const char *schema, size_t from, size_t to)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "BEGIN; SET LOCAL search_path TO %s, public", schema);
    if (pe_sql(pe.pg, sql) != 0)
        return -1;
    const char *proj = strncmp(schema, "jobs", 4) == 0    ? "jobs"
                       : strncmp(schema, "fleet", 5) == 0 ? "fleet"
                                                          : "tenants";
    const cstl_projection *p = cstl_projection_find(proj);
    cstl_error err;
    if (p->batch_begin != NULL) {
        const json_t **data = cstl_xcalloc(to > from ? to - from : 1, sizeof(const json_t *));
        size_t m = 0;
        for (size_t i = from; i < to; i++)
            if (pe_reads(p, &pe.events[i]))
                data[m++] = pe.events[i].data;
        int rc = p->batch_begin(pe.pg, data, m, &err);
        free(data);
        if (rc != 0) {
            fprintf(stderr, "batch begin failed: %s\n", err.message);
            pe_sql(pe.pg, "ROLLBACK");
            return -1;
        }
    }
    for (size_t i = from; i < to; i++) {
        pe_event *e = &pe.events[i];
        if (!pe_reads(p, e))
            continue;
        if (p->apply(pe.pg, &e->h, e->type, e->data, &err) != 0) {
            fprintf(stderr, "direct apply of %s failed: %s\n", e->type, err.message);
            pe_sql(pe.pg, "ROLLBACK");
            return -1;
        }
    }
    if (p->batch_end != NULL && p->batch_end(pe.pg, &err) != 0) {
        fprintf(stderr, "batch end failed: %s\n", err.message);
        pe_sql(pe.pg, "ROLLBACK");
        return -1;
    }
    return pe_sql(pe.pg, "COMMIT");
}

/* Every table of schema dumped in key order, as one string (new). */
static inline char *pe_dump(const char *schema)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
             "WHERE n.nspname = '%s' AND c.relkind = 'r' ORDER BY 1",
             schema);
    PGresult *res = NULL;
    cstl_error err;
    if (cstl_pg_exec(pe.pg, sql, 0, NULL, &res, &err) != 0)
        return NULL;
    size_t cap = 1 << 20, len = 0;
    char *out = cstl_xmalloc(cap);
    out[0] = '\0';
    for (int i = 0; i < PQntuples(res); i++) {
        snprintf(sql, sizeof(sql),
                 "SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM %s.%s t",
                 schema, PQgetvalue(res, i, 0));
        char *v = pe_value(pe.pg, sql);
        if (v == NULL)
            continue;
        size_t need = len + strlen(v) + 128;
        if (need > cap) {
            cap = need * 2;
            out = cstl_xrealloc(out, cap);
        }
        len += (size_t)snprintf(out + len, cap - len, "== %s\n%s\n", PQgetvalue(res, i, 0), v);
        free(v);
    }
    PQclear(res);
    return out;
}

#endif
