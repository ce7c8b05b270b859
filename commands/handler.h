/*
 * handler.h - the command handler runtime (DESIGN.md §6, principles 2 and 3; docs/write-side.md).
 *
 * A handler is a member of a consumer group over constellation.<context>.commands of the contexts
 * it serves. For each partition p it is assigned it owns a transactional producer with the fixed
 * transactional.id "constellation-cmd-<context>-<p>" (initialized first, which fences any older
 * owner and aborts its open transaction) and the in-memory state of the aggregates of p, restored
 * from constellation.<context>.snapshots and .events partition p. It then handles commands in
 * batches, one Kafka transaction per partition and batch carrying the events, the replies, the
 * snapshots, the dead letters and the consumed offsets.
 *
 * Thread: cstl_cmd_handler_run runs in the calling thread; cstl_cmd_handler_stop may be called
 * from any thread or a signal handler; the others from the thread that owns the handler.
 */
#ifndef CSTL_COMMANDS_HANDLER_H
#define CSTL_COMMANDS_HANDLER_H

#include "commands/aggregate.h"
#include "platform/error.h"
#include "platform/metrics.h"

#include <stddef.h>
#include <stdint.h>

typedef struct cstl_cmd_handler cstl_cmd_handler;

typedef struct cstl_cmd_handler_options {
    const char *brokers;     /* required */
    const char *instance_id; /* required: ce_source "constellation/commands/<instance_id>" */
    /* The aggregate types served, one per context (borrowed for the handler's life); NULL: the
     * tenants, jobs and fleet aggregates. */
    const cstl_aggregate_type *const *contexts;
    size_t n_contexts;
    const char *group_id;   /* NULL: "constellation-commands" */
    int batch_max;          /* commands per batch; 0: 500 */
    int batch_wait_ms;      /* longest wait for a batch to fill after its first command; 0: 5 */
    int snapshot_every;     /* a snapshot per aggregate every N events; 0: 100 */
    cstl_metrics *metrics;  /* NULL: cstl_metrics_default() */
    int timeout_ms;         /* Kafka operations (init, commit, metadata); 0: 30000 */
    int restore_timeout_ms; /* restoring one partition; 0: 300000 */
    int session_timeout_ms; /* group session: how soon a dead member's partitions move; 0: 10000 */
    size_t handled_ids_max; /* command ids remembered per partition; 0: 200000 */
    int64_t handled_ids_ttl_us; /* and for how long; 0: 7 days */
} cstl_cmd_handler_options;

/*
 * A new handler: checks the options and that the served contexts' commands, events and
 * snapshots topics exist with equal partition counts, and that constellation.replies and
 * constellation.dlq exist. Does not join the group yet. Returns NULL with err filled
 * (CSTL_EINVAL/CSTL_ECONFIG naming the option, CSTL_ENOTFOUND/CSTL_ECONFLICT for topics).
 * Owned by the caller: cstl_cmd_handler_free.
 */
cstl_cmd_handler *cstl_cmd_handler_new(const cstl_cmd_handler_options *opts, cstl_error *err);

/*
 * Joins the group and handles commands until cstl_cmd_handler_stop; then finishes the current
 * batch, commits it, and leaves the group (its partitions are revoked and released). Returns 0
 * after a stop, or a fatal error (the consumer failed) with err filled. Call once.
 */
int cstl_cmd_handler_run(cstl_cmd_handler *h, cstl_error *err);

/* Asks run to return. Async-signal-safe; idempotent. */
void cstl_cmd_handler_stop(cstl_cmd_handler *h);

/* Number of partitions currently owned and restored (ready to handle). Thread-safe; for tests
 * and readiness probes. */
int cstl_cmd_handler_ready_partitions(const cstl_cmd_handler *h);

/* Frees h (after run returned, or if it never ran). NULL is a no-op. */
void cstl_cmd_handler_free(cstl_cmd_handler *h);

#endif
