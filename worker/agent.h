/*
 * agent.h - the GPU worker agent (docs/worker.md): registers its GPUs with the command API, sends
 * heartbeats, follows constellation.jobs.events for the runs assigned to it, runs them, streams
 * their output to constellation.jobs.logs and reports StartRun / FinishRun over HTTP.
 *
 * Threads: new, start, stop and free from one thread (the service's). The agent runs three kinds
 * of threads of its own: the log follower (events, starting and stopping runs), the API thread
 * (registration, heartbeats, reports in order, each retried with backoff) and one thread per run.
 * cstl_worker_ready may be called from any thread.
 */
#ifndef CSTL_WORKER_AGENT_H
#define CSTL_WORKER_AGENT_H

#include "platform/error.h"
#include "platform/kafka.h"
#include "platform/metrics.h"

#include <stdbool.h>

typedef struct cstl_worker cstl_worker;

typedef struct cstl_worker_options {
    const char *brokers;
    const char *instance_id;
    const char *api_url;   /* the command API: http://host[:port][/prefix] */
    const char *token;     /* bearer token, role worker */
    const char *worker_id; /* "" or NULL: derived from the hostname */
    const char *hostname;  /* "" or NULL: the machine's */
    const char *fake_gpus; /* "" or NULL: NVML */
    const char *nvml_path; /* NULL: libnvidia-ml.so.1 */
    int heartbeat_s;
    int kill_grace_ms;
    int kafka_timeout_ms;
    cstl_kafka_producer *producer; /* borrowed: job output goes through it */
    cstl_metrics *metrics;         /* borrowed, may be NULL */
} cstl_worker_options;

/*
 * A worker with its GPUs found (fake or NVML) and its event reader set up. NULL + err: no GPUs
 * (CSTL_ENOTFOUND, naming both ways to get some), a bad fake GPU spec or URL (CSTL_ECONFIG), the
 * topics missing or Kafka unreachable.
 */
cstl_worker *cstl_worker_new(const cstl_worker_options *opts, cstl_error *err);

/* The worker id it registers as. Borrowed for the worker's life. */
const char *cstl_worker_id(const cstl_worker *w);

/* Starts the threads. 0 or CSTL_EINTERNAL. */
int cstl_worker_start(cstl_worker *w, cstl_error *err);

/* True once the jobs log has been read to the end seen at start (registered or not: the
 * registration is retried until the command API accepts it). Thread-safe. */
bool cstl_worker_ready(cstl_worker *w);

/* True while the command API has accepted the registration. Thread-safe. */
bool cstl_worker_registered(cstl_worker *w);

/*
 * Stops: no new runs; every running job's group is stopped (SIGTERM, SIGKILL after the grace)
 * and reported as FAILED with WORKER_LOST, so the job is requeued; the reports left are tried
 * for up to drain_ms; then the threads are joined. Idempotent.
 */
void cstl_worker_stop(cstl_worker *w, int drain_ms);

/* Stops (drain 0 when not stopped yet) and frees. NULL is a no-op. */
void cstl_worker_free(cstl_worker *w);

#endif
