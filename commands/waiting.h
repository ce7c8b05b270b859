/*
 * waiting.h - which pending reasons the scheduler publishes to constellation.jobs.waiting: the
 * change detection and rate limit, without I/O.
 *
 * The scheduler decides a reason for every queued job at every plan (about twice a second), and
 * every placement moves the position of every job behind it. Publishing every decision, or every
 * change of position, would be O(queue) records per plan. A record goes out only when what a job
 * waits for changes:
 *   - the first decision of a stay in the queue (nothing published yet, or only for an earlier
 *     stay: the attempts differ);
 *   - a change of reason, at once;
 *   - a change of message alone (how many GPUs are free, which job goes first), at most once per
 *     message_interval_s per job, and then the newest message;
 * and a tombstone (a record without a value) once a job with a record is no longer queued
 * (assigned, cancelled, finished), so that the compacted topic keeps only the queued jobs.
 * A job being placed (decided ASSIGNED, or in flight) publishes nothing and keeps its record.
 *
 * Thread: one thread owns a cstl_waiting.
 */
#ifndef CSTL_COMMANDS_WAITING_H
#define CSTL_COMMANDS_WAITING_H

#include "commands/placement.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cstl_waiting cstl_waiting;

/* One job queued in the log, with this plan's decision. Strings borrowed for the call. */
typedef struct cstl_waiting_job {
    const char *job_id; /* at most 64 bytes */
    const char *tenant_id;
    int attempts;             /* JobAssigned events before this stay in the queue */
    int64_t version;          /* the job's version the decision was made from */
    cstl_place_reason reason; /* CSTL_PLACE_ASSIGNED: being placed, nothing to publish */
    const char *message;
} cstl_waiting_job;

/* One record to produce: a JobWaiting, or a tombstone for job_id. */
typedef struct cstl_waiting_record {
    char job_id[65];
    char tenant_id[37];
    bool tombstone;
    int attempts;
    int64_t version;
    cstl_place_reason reason;
    char message[CSTL_PLACE_MESSAGE_MAX];
    int64_t at; /* the decision's time, UTC microseconds */
} cstl_waiting_record;

/* A tracker with nothing published; message_interval_s <= 0 takes the default, 30 s. Free with
 * cstl_waiting_free (NULL is a no-op). */
cstl_waiting *cstl_waiting_new(double message_interval_s);
void cstl_waiting_free(cstl_waiting *w);

/*
 * Compares jobs (every job queued in the log, n of them, each once) at now_us with what was
 * published, appends the records to produce now to *out (a realloc'd array of *nout records,
 * owned by the caller: free()), and remembers them as published. Jobs absent from jobs that have
 * a record get a tombstone and are forgotten.
 */
void cstl_waiting_diff(cstl_waiting *w,
                       const cstl_waiting_job *jobs,
                       size_t n,
                       int64_t now_us,
                       cstl_waiting_record **out,
                       size_t *nout);

/* Remembers a record read back from the topic (at a start, before the first diff) as published:
 * an unchanged reason is then not published again. reason: CSTL_PLACE_NREASONS for one this
 * build does not know (published again at the first diff). */
void cstl_waiting_seen(cstl_waiting *w,
                       const char *job_id,
                       const char *tenant_id,
                       int attempts,
                       cstl_place_reason reason,
                       const char *message,
                       int64_t at);

/* Forgets job_id's record: a tombstone read back from the topic (at a start, before the first
 * diff), so no tombstone is owed for it. */
void cstl_waiting_clear(cstl_waiting *w, const char *job_id);

/* Tells the tracker that record r (from cstl_waiting_diff) was not delivered: unless a later
 * record superseded it, the next diff publishes the job's reason again while it is queued, and a
 * tombstone once it is not. */
void cstl_waiting_failed(cstl_waiting *w, const cstl_waiting_record *r);

/* Jobs with a published record. */
size_t cstl_waiting_len(const cstl_waiting *w);

#endif
