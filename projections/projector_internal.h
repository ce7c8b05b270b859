/*
 * projector_internal.h - what the live projector (projector.c) and the rebuild (rebuild.c) share:
 * applying one batch of consumed records to one version of a projection, in one PostgreSQL
 * transaction with its projection_offsets rows (projector_batch.c). Private to projections/.
 */
#ifndef CSTL_PROJECTIONS_PROJECTOR_INTERNAL_H
#define CSTL_PROJECTIONS_PROJECTOR_INTERNAL_H

#include "platform/events.h"
#include "platform/kafka.h"
#include "platform/metrics.h"
#include "platform/pg.h"
#include "projections/projection.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdint.h>

#define PROJ_NAME_MAX 160

/* One consumed record of a batch. The message is owned by the batch's owner. */
typedef struct proj_item {
    rd_kafka_message_t *msg;
    cstl_event_headers h;
    const char *type; /* short event name, borrowed from the schema catalog */
    json_t *data;     /* owned; NULL when dead-lettered before applying */
    char *dlq_reason; /* owned; non-NULL: goes to the DLQ instead of the read model, why */
    bool skip;        /* below the stored offset: applied by an earlier transaction */
} proj_item;

/* Applies batches of one projection version. */
typedef struct proj_core {
    const cstl_projection *proj;
    int version;
    char schema[PROJ_NAME_MAX];      /* "jobs_v1" */
    char offsets_key[PROJ_NAME_MAX]; /* projection_offsets.projection: the schema name */
    cstl_pg_conn *pg;                /* borrowed */
    cstl_kafka_producer *dlq;        /* borrowed, idempotent */
    char dlq_topic[PROJ_NAME_MAX];
    int kafka_timeout_ms;
    bool check_version; /* lock projection_versions FOR SHARE and require version active */
    cstl_metric *m_applied, *m_dlq, *m_batch; /* may be NULL */
    uint64_t applied, dead;                   /* totals, for tests */
} proj_core;

/* Sets version, schema and offsets_key. */
void proj_core_set_version(proj_core *c, int version);

/* Decodes every record of items (headers, writer schema, value; only the value for records of
 * proj's telemetry topics): failures are dead-lettered. */
void proj_items_prepare(const cstl_projection *proj, proj_item *items, size_t n);

/* Frees the decoded data of items (not the messages). */
void proj_items_release(proj_item *items, size_t n);

/*
 * A batch's statements built ahead of its transaction: every decoded record's statements recorded
 * through the projection's apply (with a sink installed, so without a connection) and grouped into
 * the pipeline's set statements with their array parameters. Building one needs no connection, so
 * it is done on another thread while the previous batch runs in PostgreSQL. A plan is valid only
 * for the batch it was built from, unchanged, and is used only when no record of the batch turns
 * out to be below the stored offsets (else the statements are recorded again inside the
 * transaction). Not thread-safe: one thread at a time.
 */
typedef struct proj_plan proj_plan;

/* A new, empty plan. Free with proj_plan_free. */
proj_plan *proj_plan_new(void);

/* Builds the plan of items (prepared by proj_items_prepare), replacing what plan held. Any thread:
 * uses no connection and only reads items, which must stay unchanged until the plan is used. */
void proj_plan_build(proj_plan *plan,
                     const cstl_projection *proj,
                     const proj_item *items,
                     size_t n);

/* Forgets what plan holds (it is then unused by proj_core_apply). */
void proj_plan_clear(proj_plan *plan);

/* Frees plan; NULL is a no-op. */
void proj_plan_free(proj_plan *plan);

/*
 * Applies items in one transaction with their offsets (retrying retriable PostgreSQL errors a few
 * times): decoded records through the projection's apply (in a SAVEPOINT each once one of them
 * failed), dead letters produced and flushed before COMMIT. plan (may be NULL; borrowed) is the
 * items' plan built ahead by proj_plan_build, used when it holds one. Returns 0; CSTL_ECONFLICT
 * when check_version is set and another version became active (nothing applied); or the error of
 * the last attempt (PostgreSQL or Kafka down: redo the same batch later).
 */
int proj_core_apply(proj_core *c, proj_item *items, size_t n, proj_plan *plan, cstl_error *err);

/*
 * The same, inside a transaction the caller opened (search_path set here, locally), always with
 * savepoints. For the rebuild's final switch.
 */
int proj_core_apply_in_tx(proj_core *c, proj_item *items, size_t n, cstl_error *err);

/* Reads the stored offsets of key: calls fn(ud, topic, partition, next_offset) per row. */
int proj_offsets_load(cstl_pg_conn *pg,
                      const char *key,
                      void (*fn)(void *ud, const char *topic, int32_t partition, int64_t next),
                      void *ud,
                      cstl_error *err);

/* The active version of projection into *out. */
int proj_active_version(cstl_pg_conn *pg, const char *projection, int *out, cstl_error *err);

/* Monotonic milliseconds; sleeps up to ms, waking early when *stop becomes non-zero. */
int64_t proj_now_ms(void);
void proj_sleep_ms(int ms, const volatile int *stop);

#endif
