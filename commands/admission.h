/*
 * admission.h - the admission process manager's decisions: JobSubmitted -> AdmitJob | RejectJob.
 *
 * Until billing reserves credits, admission applies these rules, in this order:
 *   1. the tenant exists and is not suspended            else RejectJob TENANT_SUSPENDED
 *   2. some active worker has gpu_count GPUs that each have at least min_gpu_memory_mib and, when
 *      asked, the requested model (drained GPUs count: they come back)
 *                                                        else RejectJob NO_MATCHING_GPU
 *   3. the tenant has fewer than max_queued jobs waiting (submitted or queued, not yet assigned)
 *                                                        else RejectJob QUOTA_EXCEEDED
 * This file is the pure part: state built from the tenants, fleet and jobs events, and the
 * decision. The loop that reads the events and sends the commands is in admission_run.c.
 *
 * Thread: one thread owns a cstl_admission.
 */
#ifndef CSTL_COMMANDS_ADMISSION_H
#define CSTL_COMMANDS_ADMISSION_H

#include "platform/error.h"

#include <jansson.h>

#include <stddef.h>

typedef struct cstl_admission cstl_admission;

/* A new, empty state. max_queued >= 1. Free with cstl_admission_free (NULL is a no-op). */
cstl_admission *cstl_admission_new(int max_queued);
void cstl_admission_free(cstl_admission *a);

/* Applies one event of the tenants, fleet or jobs context (type: short name, "JobSubmitted";
 * data borrowed). Events of other types are ignored. */
void cstl_admission_apply(cstl_admission *a,
                          const char *context,
                          const char *type,
                          const json_t *data);

/* A decision: the command to send (to the jobs context) and its payload (owned). */
typedef struct cstl_admission_decision {
    const char *command_type; /* "AdmitJob" or "RejectJob" (static) */
    char job_id[37];
    char tenant_id[37];
    json_t *payload;
} cstl_admission_decision;

/*
 * Decides the submitted job job_id (its JobSubmitted must have been applied and no decision
 * seen yet). Returns 0 with *out filled (free out->payload with json_decref), or CSTL_ENOTFOUND
 * when the job is not pending.
 */
int cstl_admission_decide(cstl_admission *a, const char *job_id, cstl_admission_decision *out);

/* The ids of the jobs submitted and not yet decided, in submission order: a new JSON array
 * (caller decrefs). After a restart these are decided once the log has been read to its end. */
json_t *cstl_admission_pending(const cstl_admission *a);

/* ---- the running process manager (admission_run.c) ---------------------------------------- */

#include "commands/client.h"
#include "platform/metrics.h"

typedef struct cstl_admission_runner cstl_admission_runner;

typedef struct cstl_admission_runner_options {
    const char *brokers;
    const char *instance_id;
    cstl_cmd_client *client; /* borrowed: sends the decisions */
    int max_queued;          /* per tenant */
    int timeout_ms;
    cstl_metrics *metrics; /* may be NULL */
} cstl_admission_runner_options;

/* A runner reading the tenants, fleet and jobs events. NULL + err when they cannot be read. */
cstl_admission_runner *cstl_admission_runner_new(const cstl_admission_runner_options *opts,
                                                 cstl_error *err);

/*
 * Runs until cstl_admission_runner_stop: applies the log to its end, then decides every job still
 * undecided, then decides each new JobSubmitted as it arrives. Every decision is a command whose id
 * is derived from the job id, so a decision sent twice (after a restart, or by two instances) is
 * handled once. A command that cannot be sent is retried with backoff. Returns 0 after a stop.
 */
int cstl_admission_runner_run(cstl_admission_runner *r, cstl_error *err);

/* Asks run to return (from any thread). */
void cstl_admission_runner_stop(cstl_admission_runner *r);

/* True once the past has been applied and the undecided jobs decided. */
bool cstl_admission_runner_ready(const cstl_admission_runner *r);

void cstl_admission_runner_free(cstl_admission_runner *r);

#endif
