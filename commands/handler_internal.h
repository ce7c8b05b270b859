/*
 * handler_internal.h - what handler.c (the loop, the rebalance hook, partition ownership),
 * handler_batch.c (the transactions of a batch) and handler_restore.c (rebuilding a partition's
 * state from the log) share. Not a public header.
 *
 * Thread: everything here is touched only by the thread in cstl_cmd_handler_run (the rebalance
 * hook runs inside its polls), except `stop` and `ready`, which are atomics, and a partition's
 * producer and state, which one batch thread uses while the loop thread waits for it.
 */
#ifndef CSTL_COMMANDS_HANDLER_INTERNAL_H
#define CSTL_COMMANDS_HANDLER_INTERNAL_H

#include "commands/handler.h"
#include "commands/strmap.h"
#include "platform/kafka.h"

#include <stdatomic.h>

#define CSTL_HANDLER_MAX_CONTEXTS   8
#define CSTL_HANDLER_MAX_PARTITIONS 1024
#define CSTL_HANDLER_MAX_POISON     8

/* One aggregate instance of a partition. */
typedef struct cstl_hagg {
    void *state;
    int64_t version;
} cstl_hagg;

/* The first outcome of a command that wrote events: what a duplicate is answered with. */
typedef struct cstl_handled {
    int64_t version;
    int64_t time_us; /* when its events were written (ce_time) */
    char aggregate_id[];
} cstl_handled;

typedef struct cstl_hctx {
    const cstl_aggregate_type *type;
    char commands[160], events[160], snapshots[160];
    int32_t partitions;
    cstl_metric *owned; /* partitions_owned{context} */
} cstl_hctx;

/* An owned partition. */
typedef struct cstl_hpart {
    int ctx;
    int32_t p;
    uint64_t gen; /* unique per assignment: records polled for an earlier one are dropped */
    cstl_kafka_producer *producer;
    cstl_strmap *aggs;    /* aggregate id -> cstl_hagg */
    cstl_strmap *handled; /* command id -> cstl_handled, oldest first */
    int ready;            /* producer initialized and state restored */
    int fenced;           /* another instance owns it now: wait for the revocation */
    int paused;
    int need_seek;       /* records were dropped: seek to the committed offset when ready */
    int64_t retry_at_us; /* next restore attempt (monotonic) */
    int64_t poison[CSTL_HANDLER_MAX_POISON]; /* command offsets whose handling broke the state */
    int n_poison;
} cstl_hpart;

struct cstl_cmd_handler {
    char *brokers, *instance_id, *group_id, *source;
    int batch_max, batch_wait_ms, snapshot_every, timeout_ms, restore_timeout_ms;
    size_t handled_ids_max;
    int64_t handled_ids_ttl_us;

    cstl_hctx ctx[CSTL_HANDLER_MAX_CONTEXTS];
    int n_ctx;
    int32_t replies_partitions;

    cstl_kafka_conf *conf;         /* producers and admin */
    cstl_kafka_conf *group_conf;   /* the group consumer */
    cstl_kafka_conf *restore_conf; /* the restore reader: partition EOF events on */
    cstl_kafka_consumer *consumer;
    cstl_kafka_consumer *restorer; /* assigned partition by partition, no group membership */

    cstl_hpart *parts[CSTL_HANDLER_MAX_PARTITIONS];
    int n_parts;
    uint64_t next_gen;

    atomic_int stop;
    atomic_int ready;
    int ran;

    cstl_metrics *metrics;
    cstl_metric_family *handled_family; /* commands_handled_total{context,outcome} */
    cstl_metric *batch_size;
    cstl_metric *commit_seconds;
};

/* What a command's handling returns when an event it produced did not evolve: the partition's
 * state may be half-changed and must be rebuilt. */
#define CSTL_HANDLER_BROKEN_STATE 1

/* One partition's share of a batch: its records, in order (borrowed). */
typedef struct cstl_hjob {
    cstl_hpart *pt;
    rd_kafka_message_t **msgs;
    int n;
} cstl_hjob;

/* Handles a batch (handler_batch.c): the partitions' transactions in parallel, then, on the
 * calling thread, failure handling and counters. group: the consumer's current metadata. */
void cstl_handler_run_batch(cstl_cmd_handler *h,
                            const cstl_hjob *hjobs,
                            int njobs,
                            int64_t now_us,
                            rd_kafka_consumer_group_metadata_t *group);

/* After a failed transaction step on pt (handler.c): abort and rebuild from the log, or drop the
 * partition when fenced. Loop thread only. */
void cstl_handler_fail_part(cstl_cmd_handler *h, cstl_hpart *pt, int rc, const cstl_error *err);

/* Frees a cstl_hagg of type (strmap value callback needs a closure: see handler_restore.c). */
void cstl_handler_part_clear_state(cstl_cmd_handler *h, cstl_hpart *pt);

/* Remembers that command_id produced version of aggregate_id at time_us, evicting the oldest ids
 * past the cap or the age limit. */
void cstl_handler_remember(cstl_cmd_handler *h,
                           cstl_hpart *pt,
                           const char *command_id,
                           const char *aggregate_id,
                           int64_t version,
                           int64_t time_us);

/* Rebuilds pt's aggregates and handled ids from the snapshots and events partitions, read to
 * their ends (read_committed). pt's maps must be empty. Returns 0 or a code with err filled
 * (CSTL_ETIMEDOUT, CSTL_EKAFKA..., CSTL_EDECODE for a poison event). */
int cstl_handler_restore(cstl_cmd_handler *h, cstl_hpart *pt, cstl_error *err);

/* The short name ("JobSubmitted") of a fullname or ce_type ("io.constellation.jobs.X.v1"). */
void cstl_handler_short_name(const char *fullname, char *out, size_t cap);

int64_t cstl_handler_wall_us(void);
int64_t cstl_handler_mono_us(void);

#endif
