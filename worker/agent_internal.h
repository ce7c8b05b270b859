/*
 * agent_internal.h - what the worker agent's files share: agent.c (the log follower and the runs)
 * and agent_api.c (registration, heartbeats and reports over HTTP). Private to worker/agent*.c.
 */
#ifndef CSTL_WORKER_AGENT_INTERNAL_H
#define CSTL_WORKER_AGENT_INTERNAL_H

#include "commands/event_reader.h"
#include "worker/agent.h"
#include "worker/gpu.h"
#include "worker/http_client.h"
#include "worker/runner.h"

#include <jansson.h>

#include <pthread.h>
#include <stdatomic.h>

/* Why a run is being stopped from outside. */
typedef enum stop_reason {
    STOP_NONE = 0,
    STOP_CANCELLED, /* JobCancelled: report CANCELLED */
    STOP_TIMED_OUT, /* JobTimedOut: report TIMED_OUT */
    STOP_ABANDONED, /* JobRequeued or failed without us: report nothing */
    STOP_SHUTDOWN,  /* the agent stops: report FAILED, WORKER_LOST */
} stop_reason;

/* The delivery of one run's output lines: a reference for the run and one per line in flight.
 * The run's thread waits for in_flight to reach 0 before it reports the run finished; the last
 * reference frees it (a delivery report served after the run's thread stopped waiting). */
typedef struct log_tally {
    atomic_long refs;
    atomic_long in_flight;
    cstl_metric *m_dropped; /* may be NULL */
} log_tally;

typedef struct run_slot {
    struct run_slot *next;
    cstl_worker *w;
    char job_id[37];
    char run_id[37];
    char tenant_id[37];
    json_t *argv;        /* owned: array of strings */
    json_t *environment; /* owned: object of strings */
    json_t *gpus;        /* owned: array of GPU uuids */
    int64_t runtime_limit_s;
    cstl_run *run;      /* under w->mu; NULL before it started */
    stop_reason reason; /* under w->mu */
    long seq;           /* output lines so far (the run thread's) */
    log_tally *tally;   /* the run thread's reference */
    pthread_t thread;
    atomic_bool done;
} run_slot;

/* Reports go out on one thread (lane) per GPU, at least REPORT_LANES_MIN; the reports of one run
 * always take the same lane, so its StartRun goes before its FinishRun, while runs ending together
 * do not wait for each other. */
#define REPORT_LANES_MIN 8
#define REPORT_LANES_MAX CSTL_GPU_MAX

/* A report waiting to be sent, in order. */
typedef struct report {
    struct report *next;
    char path[160];
    char idempotency_key[96];
    char *body; /* owned JSON text */
    char what[16];
} report;

typedef struct report_lane {
    struct cstl_worker *w;
    report *head, *tail;
    pthread_t thread;
    bool started;
} report_lane;

struct cstl_worker {
    char worker_id[37];
    char hostname[256];
    cstl_gpu gpus[CSTL_GPU_MAX];
    int n_gpus;
    cstl_nvml *nvml;
    cstl_http_url url;
    char authorization[600];
    int heartbeat_s;
    int kill_grace_ms;
    int kafka_timeout_ms; /* bounds the wait for a run's lines to be delivered */
    cstl_kafka_producer *producer;
    cstl_event_reader *reader;

    pthread_mutex_t mu;
    pthread_cond_t wake; /* the API thread waits on it */
    json_t *jobs;        /* job id -> {"argv", "environment", "limit", "tenant"} of live jobs */
    json_t *mine; /* job id -> {"run", "gpus", "started", "launched", "ended": "" | outcome} */
    run_slot *runs;
    pthread_cond_t report_wake; /* the report lanes wait on it */
    report_lane lanes[REPORT_LANES_MAX];
    int nlanes;
    bool need_register;

    atomic_bool registered;
    atomic_bool caught_up;
    atomic_bool stopping;
    atomic_bool api_stop;
    bool started;
    pthread_t follower, api;

    cstl_metric *m_running;
    cstl_metric *m_registered;
    cstl_metric_family *m_runs;
    cstl_metric *m_lines;
    cstl_metric *m_lines_dropped;
    cstl_metric_family *m_reports;
};

/* Queues a report (body: owned JSON, stolen). Thread-safe (takes w->mu). */
void agent_report(
    cstl_worker *w, const char *what, const char *path, const char *key, json_t *body);

/* The API thread: registration and heartbeats. */
void *agent_api_main(void *arg);

/* Starts the report lanes' threads. 0, or -1 (none is left running). */
int agent_lanes_start(cstl_worker *w);

/* Stops and joins the report lanes (after api_stop is set), then frees what they did not send. */
void agent_lanes_stop(cstl_worker *w);

/* True while some report waits to be sent. Takes w->mu. */
bool agent_reports_pending(cstl_worker *w);

int64_t agent_wall_us(void);

#endif
