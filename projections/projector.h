/*
 * projector.h - the projector runtime: consumes a projection's events topics and applies them to
 * its read models in PostgreSQL, batch by batch, each batch in one transaction with its offsets
 * (docs/read-side.md).
 *
 * A projector runs one projection on its own thread with its own consumer (group
 * <group_prefix><name>, read_committed, no commits to Kafka), PostgreSQL connection and idempotent
 * DLQ producer. On assignment it seeks to the offsets stored in projection_offsets for the active
 * version (the beginning when there is none). It never skips a batch it could not apply: it
 * retries it with backoff, consuming nothing further, until it succeeds or the projector stops.
 * When a rebuild activates another version, it reopens its consumer on that version's offsets.
 *
 * Threads: new/start/stop/free from one controlling thread; ready and the counters from any.
 */
#ifndef CSTL_PROJECTIONS_PROJECTOR_H
#define CSTL_PROJECTIONS_PROJECTOR_H

#include "platform/error.h"
#include "platform/metrics.h"

#include <stdint.h>

typedef struct cstl_projector cstl_projector;

typedef struct cstl_projector_options {
    const char *projection;      /* "jobs" (required) */
    const char *brokers;         /* required */
    const char *pg_dsn;          /* required */
    const char *topic_prefix;    /* NULL: "constellation." (events topics are <prefix><ctx>.events,
                                    the DLQ <prefix>dlq) */
    const char *group_prefix;    /* NULL: "constellation-projector-" */
    const char *client_id;       /* NULL: "constellation-projector" */
    int batch_max;               /* 0: 20000 records */
    int batch_ms;                /* 0: 50 ms after the batch's first record */
    int kafka_timeout_ms;        /* 0: 10000 */
    int pg_statement_timeout_ms; /* 0: none */
    cstl_metrics *metrics;       /* NULL: no metrics; borrowed, must outlive the projector */
} cstl_projector_options;

/* A new, stopped projector; strings are copied. NULL with err (CSTL_EINVAL: unknown projection). */
cstl_projector *cstl_projector_new(const cstl_projector_options *o, cstl_error *err);

/* Starts its thread. Returns 0 or CSTL_EINTERNAL. */
int cstl_projector_start(cstl_projector *p, cstl_error *err);

/* Asks the thread to stop and joins it: the batch in hand is committed or dropped (its offsets
 * only ever move in PostgreSQL, so dropping is safe). NULL and a stopped projector are no-ops. */
void cstl_projector_stop(cstl_projector *p);

/* Stops and frees p; NULL is a no-op. */
void cstl_projector_free(cstl_projector *p);

/* 0 when the projector is consuming (PostgreSQL reached, consumer subscribed); else fills why. */
int cstl_projector_ready(cstl_projector *p, cstl_error *why);

/* Records applied to the read model and dead-lettered since start, and batches committed. */
uint64_t cstl_projector_applied(cstl_projector *p);
uint64_t cstl_projector_dead_lettered(cstl_projector *p);
uint64_t cstl_projector_batches(cstl_projector *p);

/* The total lag (high watermark - applied offset, summed over owned partitions) last observed;
 * -1 while no partition is owned or a high watermark is still unknown. */
int64_t cstl_projector_lag(cstl_projector *p);

#endif
