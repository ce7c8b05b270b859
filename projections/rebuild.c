/*
 * rebuild.c - rebuilds a projection into a new schema version and switches to it (rebuild.h).
 *
 * Invariants: the active version is only changed by the final transaction, which holds the
 * projection's projection_versions row FOR UPDATE: every live projector batch locks that row FOR
 * SHARE first, so no batch of the old version commits after the switch, and the next one sees
 * the new version and reopens its consumer on the new version's offsets, which the switch
 * transaction wrote up to the end of every partition it read. Single-threaded.
 */
#include "projections/rebuild.h"

#include "platform/kafka.h"
#include "platform/log.h"
#include "projections/projector_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REBUILD_TOPICS 8 /* events, further and telemetry topics of one projection */

typedef struct rebuild {
    const cstl_rebuild_options *o;
    proj_core core;
    cstl_kafka_consumer *consumer;
    rd_kafka_topic_partition_list_t *parts; /* every partition; offset = target end offset */
    proj_item *items;
    size_t nitems;
    int batch_max;
} rebuild;

static int exec(cstl_pg_conn *pg,
                const char *sql,
                int n,
                const char *const *params,
                PGresult **out,
                cstl_error *err)
{
    return cstl_pg_exec(pg, sql, n, params, out, err);
}

/* Sets every partition's target to its current end (last stable) offset. */
static int capture_targets(rebuild *r, cstl_error *err)
{
    for (int i = 0; i < r->parts->cnt; i++) {
        int64_t lo, hi;
        int rc = cstl_kafka_consumer_watermarks(
            r->consumer, r->parts->elems[i].topic, r->parts->elems[i].partition, &lo, &hi,
            r->o->kafka_timeout_ms ? r->o->kafka_timeout_ms : 10000, err);
        if (rc != 0)
            return rc;
        r->parts->elems[i].offset = hi;
    }
    return 0;
}

/* True when the consumer's position reached the target of every partition. */
static bool reached(rebuild *r)
{
    rd_kafka_topic_partition_list_t *pos = rd_kafka_topic_partition_list_copy(r->parts);
    rd_kafka_position(cstl_kafka_consumer_handle(r->consumer), pos);
    bool done = true;
    for (int i = 0; i < pos->cnt && done; i++) {
        int64_t target = r->parts->elems[i].offset;
        int64_t at = pos->elems[i].offset;
        if (target > 0 && (at < 0 || at < target))
            done = false;
    }
    rd_kafka_topic_partition_list_destroy(pos);
    return done;
}

static void drop_items(rebuild *r)
{
    proj_items_release(r->items, r->nitems);
    for (size_t i = 0; i < r->nitems; i++)
        rd_kafka_message_destroy(r->items[i].msg);
    r->nitems = 0;
}

/* Polls a batch (until full or 100 ms without a record). */
static int poll_batch(rebuild *r, cstl_error *err)
{
    while (r->nitems < (size_t)r->batch_max) {
        rd_kafka_message_t *m = NULL;
        int rc = cstl_kafka_consumer_poll(r->consumer, r->nitems ? 10 : 100, &m, err);
        if (rc != 0 && !cstl_error_is_retriable(rc))
            return rc;
        if (m == NULL)
            break;
        r->items[r->nitems++] = (proj_item){.msg = m};
    }
    proj_items_prepare(r->core.proj, r->items, r->nitems);
    return 0;
}

static int open_consumer(rebuild *r, cstl_kafka_conf *conf, cstl_error *err)
{
    char group[PROJ_NAME_MAX];
    snprintf(group, sizeof(group), "constellation-rebuild-%s", r->core.proj->name);
    r->consumer = cstl_kafka_consumer_new(conf, group, NULL, NULL, err);
    if (r->consumer == NULL)
        return err->code;
    cstl_kafka_admin *admin = cstl_kafka_admin_new(conf, err);
    if (admin == NULL)
        return err->code;
    const char *prefix = r->o->topic_prefix ? r->o->topic_prefix : "constellation.";
    r->parts = rd_kafka_topic_partition_list_new(8);
    int rc = 0;
    /* the events topics of its contexts, then its other topics, then its telemetry topics */
    const cstl_projection *proj = r->core.proj;
    char topics[MAX_REBUILD_TOPICS][PROJ_NAME_MAX];
    size_t ntopics = 0;
    for (const char *const *c = proj->contexts; *c != NULL && ntopics < MAX_REBUILD_TOPICS; c++)
        snprintf(topics[ntopics++], PROJ_NAME_MAX, "%s%s.events", prefix, *c);
    const char *const *more[] = {proj->topics, proj->telemetry};
    for (size_t l = 0; l < sizeof(more) / sizeof(more[0]); l++)
        for (const char *const *t = more[l];
             t != NULL && *t != NULL && ntopics < MAX_REBUILD_TOPICS; t++)
            snprintf(topics[ntopics++], PROJ_NAME_MAX, "%s%s", prefix, *t);
    for (size_t i = 0; rc == 0 && i < ntopics; i++) {
        int32_t n = 0;
        rc = cstl_kafka_admin_partition_count(admin, topics[i], 10000, &n, err);
        for (int32_t p = 0; rc == 0 && p < n; p++)
            rd_kafka_topic_partition_list_add(r->parts, topics[i], p)->offset =
                RD_KAFKA_OFFSET_BEGINNING;
    }
    cstl_kafka_admin_free(admin);
    if (rc == 0)
        rc = cstl_kafka_consumer_assign(r->consumer, r->parts, err);
    return rc;
}

static int prepare_version(rebuild *r, cstl_rebuild_report *rep, cstl_error *err)
{
    cstl_pg_conn *pg = r->core.pg;
    const char *name = r->core.proj->name;
    const char *p1[] = {name};
    PGresult *res = NULL;
    int rc =
        exec(pg, "SELECT pg_try_advisory_lock(hashtext('cstl-rebuild/' || $1))", 1, p1, &res, err);
    if (rc != 0)
        return rc;
    bool locked = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!locked)
        return cstl_error_set(err, CSTL_ECONFLICT, "a rebuild of \"%s\" is already running", name);
    if ((rc = exec(pg, "BEGIN", 0, NULL, NULL, err)) != 0)
        return rc;
    rc = exec(pg,
              "SELECT active_version, coalesce(building_version, 0) FROM "
              "projection_versions WHERE projection = $1 FOR UPDATE",
              1, p1, &res, err);
    if (rc == 0 && PQntuples(res) != 1)
        rc = cstl_error_set(err, CSTL_ENOTFOUND, "projection \"%s\" has no active version", name);
    if (rc == 0) {
        rep->old_version = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
        rep->new_version = rep->old_version + 1;
    }
    PQclear(res);
    char v[16], schema[PROJ_NAME_MAX];
    snprintf(v, sizeof(v), "%d", rep->new_version);
    snprintf(schema, sizeof(schema), "%s_v%d", name, rep->new_version);
    const char *p2[] = {name, v, schema};
    const char *p3[] = {schema};
    if (rc == 0) /* leftovers of an interrupted rebuild */
        rc = exec(pg, "DELETE FROM projection_offsets WHERE projection = $1", 1, p3, NULL, err);
    if (rc == 0) {
        char drop[PROJ_NAME_MAX + 64];
        snprintf(drop, sizeof(drop), "DROP SCHEMA IF EXISTS \"%s\" CASCADE", schema);
        rc = exec(pg, drop, 0, NULL, NULL, err);
    }
    if (rc == 0)
        rc = exec(pg, "SELECT projection_create_version($1, $2::int)", 2, p2, NULL, err);
    if (rc == 0)
        rc = exec(pg,
                  "UPDATE projection_versions SET building_version = $2::int "
                  "WHERE projection = $1",
                  2, p2, NULL, err);
    if (rc == 0)
        rc = exec(pg, "COMMIT", 0, NULL, NULL, err);
    else
        exec(pg, "ROLLBACK", 0, NULL, NULL, NULL);
    return rc;
}

static int catch_up(rebuild *r, cstl_error *err)
{
    while (!reached(r)) {
        int rc = poll_batch(r, err);
        if (rc == 0 && r->nitems > 0)
            rc = proj_core_apply(&r->core, r->items, r->nitems, NULL, err);
        drop_items(r);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int switch_version(rebuild *r, cstl_rebuild_report *rep, cstl_error *err)
{
    cstl_pg_conn *pg = r->core.pg;
    char v[16], old[16], old_schema[PROJ_NAME_MAX + 64];
    snprintf(v, sizeof(v), "%d", rep->new_version);
    snprintf(old, sizeof(old), "%d", rep->old_version);
    const char *params[] = {r->core.proj->name, v};
    int rc = exec(pg, "BEGIN", 0, NULL, NULL, err);
    if (rc == 0)
        rc = exec(pg, "SELECT 1 FROM projection_versions WHERE projection = $1 FOR UPDATE", 1,
                  params, NULL, err);
    if (rc == 0)
        rc = capture_targets(r, err);
    while (rc == 0 && !reached(r)) {
        rc = poll_batch(r, err);
        if (rc == 0 && r->nitems > 0)
            rc = proj_core_apply_in_tx(&r->core, r->items, r->nitems, err);
        drop_items(r);
    }
    if (rc == 0)
        rc = exec(pg, "SELECT projection_activate($1, $2::int)", 2, params, NULL, err);
    if (rc == 0 && r->o->drop_old) {
        snprintf(old_schema, sizeof(old_schema), "DROP SCHEMA \"%s_v%s\" CASCADE",
                 r->core.proj->name, old);
        rc = exec(pg, old_schema, 0, NULL, NULL, err);
        snprintf(old_schema, sizeof(old_schema), "%s_v%s", r->core.proj->name, old);
        const char *p[] = {old_schema};
        if (rc == 0)
            rc = exec(pg, "DELETE FROM projection_offsets WHERE projection = $1", 1, p, NULL, err);
    }
    if (rc == 0)
        rc = exec(pg, "COMMIT", 0, NULL, NULL, err);
    else
        exec(pg, "ROLLBACK", 0, NULL, NULL, NULL);
    return rc;
}

int cstl_projection_rebuild(const cstl_rebuild_options *o,
                            cstl_rebuild_report *report,
                            cstl_error *err)
{
    cstl_rebuild_report local = {0};
    cstl_rebuild_report *rep = report ? report : &local;
    memset(rep, 0, sizeof(*rep));
    const cstl_projection *proj = cstl_projection_find(o->projection ? o->projection : "");
    if (proj == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "unknown projection \"%s\"",
                              o->projection ? o->projection : "");
    rebuild r = {.o = o, .batch_max = o->batch_max > 0 ? o->batch_max : 20000};
    r.core = (proj_core){.proj = proj,
                         .kafka_timeout_ms = o->kafka_timeout_ms ? o->kafka_timeout_ms : 10000};
    snprintf(r.core.dlq_topic, sizeof(r.core.dlq_topic), "%sdlq",
             o->topic_prefix ? o->topic_prefix : "constellation.");
    r.items = cstl_xcalloc((size_t)r.batch_max, sizeof(proj_item));
    cstl_pg_retry policy = {.max_attempts = 5, .application_name = "constellation-rebuild"};
    cstl_kafka_conf *conf = NULL;
    int rc = 0;
    r.core.pg = cstl_pg_connect(o->pg_dsn, &policy, err);
    if (r.core.pg == NULL)
        rc = err->code;
    if (rc == 0) {
        conf = cstl_kafka_conf_new(o->brokers,
                                   o->client_id ? o->client_id : "constellation-rebuild", err);
        rc = conf == NULL ? err->code : 0;
    }
    if (rc == 0) {
        r.core.dlq = cstl_kafka_producer_new(conf, err);
        rc = r.core.dlq == NULL ? err->code : 0;
    }
    if (rc == 0)
        rc = prepare_version(&r, rep, err);
    if (rc == 0) {
        proj_core_set_version(&r.core, rep->new_version);
        rc = open_consumer(&r, conf, err);
    }
    if (rc == 0)
        rc = capture_targets(&r, err);
    if (rc == 0)
        rc = catch_up(&r, err);
    if (rc == 0)
        rc = switch_version(&r, rep, err);
    rep->applied = r.core.applied;
    rep->dead_lettered = r.core.dead;
    drop_items(&r);
    free(r.items);
    if (r.parts)
        rd_kafka_topic_partition_list_destroy(r.parts);
    cstl_kafka_consumer_close(r.consumer, NULL);
    if (r.core.dlq) {
        cstl_kafka_producer_flush(r.core.dlq, 10000, NULL);
        cstl_kafka_producer_free(r.core.dlq);
    }
    cstl_kafka_conf_free(conf);
    cstl_pg_close(r.core.pg); /* ends the session: releases the advisory lock */
    return rc;
}
