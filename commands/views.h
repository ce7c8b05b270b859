/*
 * views.h - what the command API needs to know about the world, kept current from the log.
 *
 * A reader thread consumes every partition of constellation.tenants.events,
 * constellation.fleet.events and constellation.jobs.events from the beginning (read_committed,
 * assigned, no consumer group, no committed offsets: the views are rebuilt from the log at every
 * start) and keeps:
 *   - tenants: which exist and which are suspended; their API keys go into the authenticator's key
 *     store (cstl_auth_key_put / _revoke / cstl_auth_tenant_set_suspended);
 *   - fleet: which worker owns which GPU (for /v1/gpus/{uuid}/drain), each worker's tenant, and the
 *     largest GPU count and GPU memory of any registered worker;
 *   - runs (from constellation.jobs.events): each job's current run, its worker and the job's
 *     tenant, so a worker's report on a run is checked against the run's assignment. A run that
 *     ended (RunFinished, requeued, failed) is kept for an hour, so a retried report still finds
 * it. The views are ready once the reader has reached the end offsets seen at start, so an API key
 * issued before the start authenticates from the first request answered as ready.
 *
 * Threads: the reader thread writes, any thread reads (a mutex guards the maps); new, start, stop
 * and free from one thread.
 */
#ifndef CSTL_COMMANDS_VIEWS_H
#define CSTL_COMMANDS_VIEWS_H

#include "platform/auth.h"
#include "platform/error.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdint.h>

typedef struct cstl_views cstl_views;

typedef struct cstl_views_options {
    const char *brokers;      /* NULL: no reader (unit tests feed events with cstl_views_apply) */
    const char *instance_id;  /* for the Kafka client id */
    const char *topic_prefix; /* NULL or "": the production topic names */
    cstl_auth *auth;          /* key store to fill; borrowed, may be NULL */
    int timeout_ms;           /* metadata and watermark queries; default 10000 */
} cstl_views_options;

/*
 * New, empty views. With brokers, creates the consumer, reads the topics' end offsets and assigns
 * every partition from the beginning (nothing is read until cstl_views_start). Returns NULL + err
 * (CSTL_EKAFKA, CSTL_ENOTFOUND when a topic does not exist: run `constellation topics create`).
 */
cstl_views *cstl_views_new(const cstl_views_options *opts, cstl_error *err);

/* Starts the reader thread. Returns 0 or CSTL_EINTERNAL. */
int cstl_views_start(cstl_views *v, cstl_error *err);

/* Stops and joins the reader thread (bounded by one poll, 200 ms). Idempotent. */
void cstl_views_stop(cstl_views *v);

/* Stops and frees; NULL is a no-op. */
void cstl_views_free(cstl_views *v);

/* True once every partition has been read up to the end offset seen at start. Thread-safe. */
bool cstl_views_ready(cstl_views *v);

/*
 * Applies one event (short type "TenantCreated", its data as the codec's JSON, the record's
 * cstl_tenant header or NULL) to the views. Unknown types are ignored. Returns 0 or CSTL_EDECODE
 * naming a missing field. For the reader thread and tests. Thread-safe.
 */
int cstl_views_apply(cstl_views *v,
                     const char *event_type,
                     const json_t *data,
                     const char *tenant_id,
                     cstl_error *err);

/* Tenant lookup: 0 with *suspended set, or CSTL_ENOTFOUND. Thread-safe. */
int cstl_views_tenant(cstl_views *v, const char *tenant_id, bool *suspended);

/* The worker holding GPU gpu_uuid (registered, not deregistered) and that worker's tenant
 * (tenant_out may be NULL). 0 or CSTL_ENOTFOUND. Thread-safe. */
int cstl_views_gpu_worker(cstl_views *v,
                          const char *gpu_uuid,
                          char worker_id[37],
                          char tenant_out[37]);

/* The tenant of a registered worker (tenant_out may be NULL). 0 or CSTL_ENOTFOUND. */
int cstl_views_worker(cstl_views *v, const char *worker_id, char tenant_out[37]);

/* The current run of job job_id when it is run_id: the worker it is assigned to and the job's
 * tenant (either output may be NULL). 0, or CSTL_ENOTFOUND (no such job, or another run is
 * current). Thread-safe. */
int cstl_views_run(cstl_views *v,
                   const char *job_id,
                   const char *run_id,
                   char worker_out[37],
                   char tenant_out[37]);

/* The largest GPU count and the largest GPU memory (MiB) of any registered worker; 0 and 0 when
 * no worker is registered. Either pointer may be NULL. Thread-safe. */
void cstl_views_fleet_max(cstl_views *v, int *max_gpus, int64_t *max_gpu_memory_mib);

#endif
