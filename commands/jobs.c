/*
 * jobs.c - the Job aggregate (id = job id): a GPU job from submission to its end.
 *
 *   submitted -> queued -> assigned -> running -> succeeded | failed | cancelled | timed_out
 *   submitted -> rejected;  assigned | running -> (requeued) -> queued
 *
 * Invariants: a job belongs to one tenant for life; at most one run is current (the last
 * JobAssigned's run id), and a run is "open" from JobAssigned until RunFinished, or until the job
 * is requeued or fails without one (a lost worker reports nothing). A terminal job never changes
 * state again, but an open run of a cancelled or timed-out job may still report RunFinished so its
 * GPU time is accounted. Retries are counted in two budgets (docs/commands.md): the job's own
 * failures against retry_limit and infrastructure failures against CSTL_JOB_INFRA_RETRIES.
 * Called by the partition's owner thread.
 */
#include "commands/aggregate.h"
#include "commands/aggregate_internal.h"
#include "commands/rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Requeues a job gets for failures that are not its own (lost worker, GPU error, launch failure).
 */
#define CSTL_JOB_INFRA_RETRIES 3

typedef enum job_status {
    JOB_NONE = 0,
    JOB_SUBMITTED,
    JOB_QUEUED,
    JOB_ASSIGNED,
    JOB_RUNNING,
    JOB_SUCCEEDED,
    JOB_FAILED,
    JOB_CANCELLED,
    JOB_TIMED_OUT,
    JOB_REJECTED,
} job_status;

static const char *const STATUS_NAMES[] = {"none",      "submitted", "queued", "assigned",
                                           "running",   "succeeded", "failed", "cancelled",
                                           "timed_out", "rejected"};

typedef struct job_state {
    job_status status;
    char job_id[37];
    char tenant_id[37];
    int64_t gpu_count;
    int64_t priority;
    int64_t runtime_limit_seconds;
    int64_t retry_limit;
    char reservation_id[37]; /* "" until admitted */
    int64_t attempts;        /* runs assigned so far */
    int64_t job_failures;    /* requeues charged to retry_limit */
    int64_t infra_failures;  /* requeues charged to CSTL_JOB_INFRA_RETRIES */
    char run_id[37];         /* the current (last assigned) run, "" before the first */
    char worker_id[37];
    int run_open;    /* the current run has not reported RunFinished (nor been abandoned) */
    int run_started; /* RunStarted seen for the current run */
    int finished_own_failure; /* the last RunFinished was a failure of the job itself */
    int64_t submitted_at;
} job_state;

static int terminal(job_status s)
{
    return s >= JOB_SUCCEEDED;
}

/* Failures the job causes itself count against its retry_limit; the rest against the fleet's. */
static int own_failure(const char *reason)
{
    return reason != NULL &&
           (strcmp(reason, "NONZERO_EXIT") == 0 || strcmp(reason, "SIGNALLED") == 0 ||
            strcmp(reason, "OUT_OF_MEMORY") == 0 || strcmp(reason, "OTHER") == 0);
}

static void *job_create(void)
{
    return cstl_xcalloc(1, sizeof(job_state));
}

static void job_destroy(void *state)
{
    free(state);
}

/* ---- evolve ------------------------------------------------------------------------------ */

static int evolve_submitted(job_state *j, const cstl_event *ev, cstl_error *err)
{
    int rc;
    if ((rc = cstl_agg_event_str(ev, "tenant_id", j->tenant_id, sizeof(j->tenant_id), err)) ||
        (rc = cstl_agg_event_int(ev, "gpu_count", &j->gpu_count, NULL, err)) ||
        (rc = cstl_agg_event_int(ev, "priority", &j->priority, NULL, err)) ||
        (rc = cstl_agg_event_int(ev, "runtime_limit_seconds", &j->runtime_limit_seconds, NULL,
                                 err)) ||
        (rc = cstl_agg_event_int(ev, "retry_limit", &j->retry_limit, NULL, err)) ||
        (rc = cstl_agg_event_int(ev, "at", &j->submitted_at, NULL, err)))
        return rc;
    j->status = JOB_SUBMITTED;
    return 0;
}

static int evolve_run_event(job_state *j, const cstl_event *ev, cstl_error *err)
{
    char run_id[37];
    int rc = cstl_agg_event_str(ev, "run_id", run_id, sizeof(run_id), err);
    if (rc != 0)
        return rc;
    if (strcmp(run_id, j->run_id) != 0)
        return cstl_error_set(err, CSTL_EDECODE, "%s names run \"%s\", the current run is \"%s\"",
                              ev->type, run_id, j->run_id);
    return 0;
}

static int job_evolve(void *state, const cstl_event *ev, cstl_error *err)
{
    job_state *j = state;
    char job_id[37];
    int rc = cstl_agg_event_str(ev, "job_id", job_id, sizeof(job_id), err);
    if (rc != 0)
        return rc;
    int submitted = strcmp(ev->type, "JobSubmitted") == 0;
    if (submitted != (j->status == JOB_NONE))
        return cstl_error_set(err, CSTL_EDECODE, "%s %s job \"%s\"", ev->type,
                              submitted ? "repeats for" : "precedes the submission of", job_id);
    if (submitted) {
        memcpy(j->job_id, job_id, sizeof(job_id));
        return evolve_submitted(j, ev, err);
    }
    if (strcmp(job_id, j->job_id) != 0)
        return cstl_error_set(err, CSTL_EDECODE, "%s.job_id \"%s\" is not job \"%s\"", ev->type,
                              job_id, j->job_id);

    if (strcmp(ev->type, "JobAdmitted") == 0) {
        if ((rc = cstl_agg_event_str(ev, "reservation_id", j->reservation_id,
                                     sizeof(j->reservation_id), err)))
            return rc;
        j->status = JOB_QUEUED;
    } else if (strcmp(ev->type, "JobRejected") == 0) {
        j->status = JOB_REJECTED;
    } else if (strcmp(ev->type, "JobPriorityChanged") == 0) {
        if ((rc = cstl_agg_event_int(ev, "priority", &j->priority, NULL, err)))
            return rc;
    } else if (strcmp(ev->type, "JobCancelled") == 0) {
        j->status = JOB_CANCELLED;
    } else if (strcmp(ev->type, "JobAssigned") == 0) {
        if ((rc = cstl_agg_event_str(ev, "run_id", j->run_id, sizeof(j->run_id), err)) ||
            (rc = cstl_agg_event_str(ev, "worker_id", j->worker_id, sizeof(j->worker_id), err)))
            return rc;
        j->status = JOB_ASSIGNED;
        j->attempts++;
        j->run_open = 1;
        j->run_started = 0;
        j->finished_own_failure = 0;
    } else if (strcmp(ev->type, "RunStarted") == 0) {
        if ((rc = evolve_run_event(j, ev, err)))
            return rc;
        j->run_started = 1;
        if (j->status == JOB_ASSIGNED)
            j->status = JOB_RUNNING;
    } else if (strcmp(ev->type, "RunFinished") == 0) {
        const json_t *reason = json_object_get(ev->data, "failure_reason");
        const char *outcome = json_string_value(json_object_get(ev->data, "outcome"));
        if ((rc = evolve_run_event(j, ev, err)))
            return rc;
        if (outcome == NULL)
            return cstl_error_set(err, CSTL_EDECODE, "RunFinished.outcome is missing");
        j->run_open = 0;
        j->finished_own_failure =
            strcmp(outcome, "FAILED") == 0 && own_failure(json_string_value(reason));
    } else if (strcmp(ev->type, "JobRequeued") == 0) {
        if ((rc = evolve_run_event(j, ev, err)))
            return rc;
        /* after a RunFinished the failure decides the budget; without one (RequeueJob) the
         * worker or its GPUs were lost: infrastructure */
        if (!j->run_open && j->finished_own_failure)
            j->job_failures++;
        else
            j->infra_failures++;
        j->run_open = 0;
        j->finished_own_failure = 0;
        j->status = JOB_QUEUED;
    } else if (strcmp(ev->type, "JobSucceeded") == 0) {
        j->status = JOB_SUCCEEDED;
    } else if (strcmp(ev->type, "JobFailed") == 0) {
        j->run_open = 0; /* a run failed without RunFinished was abandoned */
        j->status = JOB_FAILED;
    } else if (strcmp(ev->type, "JobTimedOut") == 0) {
        j->status = JOB_TIMED_OUT;
    } else {
        return cstl_error_set(err, CSTL_EDECODE, "jobs has no event \"%s\"", ev->type);
    }
    return 0;
}

/* ---- decide ------------------------------------------------------------------------------ */

static json_t *job_event(const job_state *j)
{
    return json_pack("{s:s}", "job_id", j->job_id);
}

static void emit(cstl_decision *d, const char *type, json_t *e, const cstl_command *cmd)
{
    json_object_set_new(e, "at", json_integer(cmd->now_us));
    cstl_decision_emit(d, type, e);
}

static int finished(const job_state *j, cstl_decision *d)
{
    return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "job_already_finished", "",
                                "job \"%s\" already finished: it is %s", j->job_id,
                                STATUS_NAMES[j->status]);
}

static int wrong_state(const job_state *j, cstl_decision *d, const char *code, const char *want)
{
    return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, code, "", "job \"%s\" is %s, not %s",
                                j->job_id, STATUS_NAMES[j->status], want);
}

/* The rejection for a run command whose run is not the job's open current run. */
static int not_current_run(const job_state *j, const char *run_id, cstl_decision *d)
{
    if (strcmp(run_id, j->run_id) == 0 && !j->run_open)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "run_already_finished", "",
                                    "run \"%s\" of job \"%s\" already finished", run_id, j->job_id);
    if (terminal(j->status))
        return finished(j, d);
    if (j->status == JOB_ASSIGNED || j->status == JOB_RUNNING)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "run_not_current", "",
                                    "run \"%s\" is not the current run \"%s\" of job \"%s\"",
                                    run_id, j->run_id, j->job_id);
    return wrong_state(j, d, "job_not_assigned", "assigned or running");
}

static int decide_submit(const job_state *j, const cstl_command *cmd, cstl_decision *d)
{
    const json_t *p = cmd->payload;
    const char *tenant = cstl_agg_str(p, "tenant_id");
    if (cmd->tenant_id == NULL || strcmp(tenant, cmd->tenant_id) != 0)
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "tenant_mismatch", "tenant_id",
                                    "tenant_id \"%s\" is not the tenant of the command", tenant);
    if (j->status != JOB_NONE)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "job_already_exists", "",
                                    "job \"%s\" already exists", cstl_agg_str(p, "job_id"));
    const json_t *params = json_object_get(p, "parameters");
    json_t *e = json_object();
    static const char *const copied[] = {"job_id",
                                         "tenant_id",
                                         "name",
                                         "gpu_count",
                                         "min_gpu_memory_mib",
                                         "gpu_model",
                                         "priority",
                                         "runtime_limit_seconds",
                                         "retry_limit",
                                         "labels"};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(copied); i++)
        json_object_set_new(e, copied[i], cstl_agg_copy(p, copied[i]));
    json_object_set_new(e, "parameters",
                        json_pack("{s:o, s:o}", "command", cstl_agg_copy(params, "command"),
                                  "environment", cstl_agg_copy(params, "environment")));
    json_object_set_new(e, "submitted_by", json_string(cmd->issued_by ? cmd->issued_by : ""));
    emit(d, "JobSubmitted", e, cmd);
    return 0;
}

static int decide_admission(const job_state *j, const cstl_command *cmd, cstl_decision *d)
{
    const json_t *p = cmd->payload;
    if (terminal(j->status))
        return finished(j, d);
    if (j->status != JOB_SUBMITTED)
        return wrong_state(j, d, "job_not_submitted", "submitted");
    json_t *e = job_event(j);
    if (strcmp(cmd->type, "AdmitJob") == 0) {
        json_object_set_new(e, "reservation_id", cstl_agg_copy(p, "reservation_id"));
        emit(d, "JobAdmitted", e, cmd);
    } else {
        json_object_set_new(e, "reason", cstl_agg_copy(p, "reason"));
        json_object_set_new(e, "message", cstl_agg_copy(p, "message"));
        emit(d, "JobRejected", e, cmd);
    }
    return 0;
}

static int decide_priority(const job_state *j, const cstl_command *cmd, cstl_decision *d)
{
    int64_t priority = cstl_agg_int(cmd->payload, "priority");
    if (terminal(j->status))
        return finished(j, d);
    if (priority == j->priority)
        return 0; /* already so: accepted, nothing to record */
    json_t *e = job_event(j);
    json_object_set_new(e, "old_priority", json_integer(j->priority));
    json_object_set_new(e, "priority", json_integer(priority));
    emit(d, "JobPriorityChanged", e, cmd);
    return 0;
}

static int decide_cancel(const job_state *j, const cstl_command *cmd, cstl_decision *d)
{
    if (terminal(j->status))
        return finished(j, d);
    json_t *e = job_event(j);
    json_object_set_new(e, "reason", cstl_agg_copy(cmd->payload, "reason"));
    json_object_set_new(e, "cancelled_by", json_string(cmd->issued_by ? cmd->issued_by : ""));
    emit(d, "JobCancelled", e, cmd);
    return 0;
}

static int decide_assign(const job_state *j, const cstl_command *cmd, cstl_decision *d)
{
    const json_t *p = cmd->payload;
    if (terminal(j->status))
        return finished(j, d);
    if (j->status != JOB_QUEUED)
        return wrong_state(j, d, "job_not_queued", "queued");
    if (strcmp(cstl_agg_str(p, "run_id"), j->run_id) == 0)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "run_already_finished", "",
                                    "run \"%s\" of job \"%s\" already finished: a new assignment "
                                    "needs a new run id",
                                    j->run_id, j->job_id);
    size_t n = json_array_size(json_object_get(p, "gpu_uuids"));
    if ((int64_t)n != j->gpu_count)
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "gpu_count_mismatch", "gpu_uuids",
                                    "gpu_uuids must have %lld entries (the job's gpu_count), "
                                    "got %zu",
                                    (long long)j->gpu_count, n);
    json_t *e = job_event(j);
    json_object_set_new(e, "worker_id", cstl_agg_copy(p, "worker_id"));
    json_object_set_new(e, "run_id", cstl_agg_copy(p, "run_id"));
    json_object_set_new(e, "gpu_uuids", cstl_agg_copy(p, "gpu_uuids"));
    emit(d, "JobAssigned", e, cmd);
    return 0;
}

static int decide_start(const job_state *j, const cstl_command *cmd, cstl_decision *d)
{
    const char *run_id = cstl_agg_str(cmd->payload, "run_id");
    if (j->status == JOB_CANCELLED)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "job_cancelled", "",
                                    "job \"%s\" was cancelled: run \"%s\" must not start",
                                    j->job_id, run_id);
    if (!j->run_open || strcmp(run_id, j->run_id) != 0 || terminal(j->status))
        return not_current_run(j, run_id, d);
    if (j->run_started)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "run_already_started", "",
                                    "run \"%s\" of job \"%s\" already started", run_id, j->job_id);
    json_t *e = job_event(j);
    json_object_set_new(e, "run_id", json_string(run_id));
    json_object_set_new(e, "worker_id", json_string(j->worker_id));
    json_object_set_new(e, "started_at", cstl_agg_copy(cmd->payload, "started_at"));
    cstl_decision_emit(d, "RunStarted", e);
    return 0;
}

/*
 * Requeues the job or fails it for good, charging one failure to the budget it belongs to.
 * own: the job's own failure (else infrastructure); failure is the FailureReason symbol; text
 * the requeue reason (NULL: failure).
 */
static void retry_or_fail(const job_state *j,
                          const cstl_command *cmd,
                          cstl_decision *d,
                          int own,
                          const char *failure,
                          const char *text,
                          const json_t *exit_code)
{
    int64_t used = own ? j->job_failures : j->infra_failures;
    int64_t budget = own ? j->retry_limit : CSTL_JOB_INFRA_RETRIES;
    json_t *e = job_event(j);
    json_object_set_new(e, "run_id", json_string(j->run_id));
    if (used < budget) {
        json_object_set_new(e, "reason", json_string(text ? text : failure));
        json_object_set_new(e, "retries_left", json_integer(budget - used - 1));
        emit(d, "JobRequeued", e, cmd);
        return;
    }
    char message[CSTL_REASON_MAX + 128];
    char code[48] = "";
    if (json_is_integer(exit_code))
        snprintf(code, sizeof(code), "exit code %lld; ", (long long)json_integer_value(exit_code));
    if (own)
        snprintf(message, sizeof(message), "%sretry limit %lld reached", code, (long long)budget);
    else
        snprintf(message, sizeof(message), "%s%s%sinfrastructure retry budget %lld reached", code,
                 text ? text : "", text ? "; " : "", (long long)budget);
    json_object_set_new(e, "reason", json_string(failure));
    json_object_set_new(e, "message", json_string(message));
    json_object_set_new(e, "attempts", json_integer(j->attempts));
    emit(d, "JobFailed", e, cmd);
}

static int decide_finish(const job_state *j, const cstl_command *cmd, cstl_decision *d)
{
    const json_t *p = cmd->payload;
    const char *run_id = cstl_agg_str(p, "run_id");
    const char *outcome = cstl_agg_str(p, "outcome");
    const char *failure = cstl_agg_str(p, "failure_reason");
    if (!j->run_open || strcmp(run_id, j->run_id) != 0)
        return not_current_run(j, run_id, d);
    if (strcmp(outcome, "CANCELLED") == 0 && j->status != JOB_CANCELLED)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "job_not_cancelled", "",
                                    "run \"%s\" reports CANCELLED but job \"%s\" is %s", run_id,
                                    j->job_id, STATUS_NAMES[j->status]);

    json_t *e = job_event(j);
    json_object_set_new(e, "run_id", json_string(run_id));
    json_object_set_new(e, "worker_id", json_string(j->worker_id));
    static const char *const copied[] = {"outcome",     "exit_code",   "failure_reason",
                                         "finished_at", "gpu_seconds", "log_lines"};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(copied); i++)
        json_object_set_new(e, copied[i], cstl_agg_copy(p, copied[i]));
    cstl_decision_emit(d, "RunFinished", e);

    /* a cancelled or timed-out job only accounts for the run it still had */
    if (terminal(j->status))
        return 0;
    if (strcmp(outcome, "SUCCEEDED") == 0) {
        e = job_event(j);
        json_object_set_new(e, "run_id", json_string(run_id));
        emit(d, "JobSucceeded", e, cmd);
    } else if (strcmp(outcome, "TIMED_OUT") == 0) {
        e = job_event(j);
        json_object_set_new(e, "run_id", json_string(run_id));
        json_object_set_new(e, "runtime_limit_seconds", json_integer(j->runtime_limit_seconds));
        emit(d, "JobTimedOut", e, cmd);
    } else {
        /* FAILED carries its reason; a LOST run is the infrastructure's, WORKER_LOST unless told */
        int own = strcmp(outcome, "FAILED") == 0 && own_failure(failure);
        retry_or_fail(j, cmd, d, own, failure ? failure : "WORKER_LOST", NULL,
                      json_object_get(p, "exit_code"));
    }
    return 0;
}

static int decide_requeue(const job_state *j, const cstl_command *cmd, cstl_decision *d)
{
    const char *run_id = cstl_agg_str(cmd->payload, "run_id");
    if (terminal(j->status) || !j->run_open || strcmp(run_id, j->run_id) != 0)
        return not_current_run(j, run_id, d);
    retry_or_fail(j, cmd, d, 0, "WORKER_LOST", cstl_agg_str(cmd->payload, "reason"), NULL);
    return 0;
}

static int decide_time_out(const job_state *j, const cstl_command *cmd, cstl_decision *d)
{
    const char *run_id = cstl_agg_str(cmd->payload, "run_id");
    if (terminal(j->status) || !j->run_open || strcmp(run_id, j->run_id) != 0)
        return not_current_run(j, run_id, d);
    if (j->status != JOB_RUNNING)
        return wrong_state(j, d, "job_not_running", "running");
    json_t *e = job_event(j);
    json_object_set_new(e, "run_id", json_string(run_id));
    json_object_set_new(e, "runtime_limit_seconds", json_integer(j->runtime_limit_seconds));
    emit(d, "JobTimedOut", e, cmd);
    return 0;
}

static int job_decide(const void *state, int64_t version, const cstl_command *cmd, cstl_decision *d)
{
    static const struct {
        const char *type;
        int (*fn)(const job_state *, const cstl_command *, cstl_decision *);
    } table[] = {
        {"SubmitJob", decide_submit},    {"AdmitJob", decide_admission},
        {"RejectJob", decide_admission}, {"ChangeJobPriority", decide_priority},
        {"CancelJob", decide_cancel},    {"AssignJob", decide_assign},
        {"StartRun", decide_start},      {"FinishRun", decide_finish},
        {"RequeueJob", decide_requeue},  {"TimeOutJob", decide_time_out},
    };
    const job_state *j = state;
    (void)version;
    size_t i = 0;
    while (i < CSTL_ARRAY_LEN(table) && strcmp(table[i].type, cmd->type ? cmd->type : "") != 0)
        i++;
    if (i == CSTL_ARRAY_LEN(table))
        return CSTL_EINVAL;
    if (cstl_command_validate("jobs", cmd->type, cmd->payload, d) < 0 ||
        cstl_agg_check_target(cmd, "job_id", d) < 0)
        return 0;
    /* another tenant's job is reported exactly like a missing one */
    if (table[i].fn != decide_submit && (j->status == JOB_NONE || cmd->tenant_id == NULL ||
                                         strcmp(j->tenant_id, cmd->tenant_id) != 0)) {
        cstl_decision_reject(d, CSTL_REJECT_NOT_FOUND, "job_not_found", "",
                             "job \"%s\" does not exist", cstl_agg_str(cmd->payload, "job_id"));
        return 0;
    }
    table[i].fn(j, cmd, d);
    return 0;
}

/* ---- snapshot ---------------------------------------------------------------------------- */

static json_t *job_snapshot(const void *state)
{
    const job_state *j = state;
    return json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:s, s:s, s:b, "
        "s:b, s:b, s:I}",
        "status", STATUS_NAMES[j->status], "job_id", j->job_id, "tenant_id", j->tenant_id,
        "gpu_count", (json_int_t)j->gpu_count, "priority", (json_int_t)j->priority,
        "runtime_limit_seconds", (json_int_t)j->runtime_limit_seconds, "retry_limit",
        (json_int_t)j->retry_limit, "reservation_id", j->reservation_id, "attempts",
        (json_int_t)j->attempts, "job_failures", (json_int_t)j->job_failures, "infra_failures",
        (json_int_t)j->infra_failures, "run_id", j->run_id, "worker_id", j->worker_id, "run_open",
        j->run_open, "run_started", j->run_started, "finished_own_failure", j->finished_own_failure,
        "submitted_at", (json_int_t)j->submitted_at);
}

static int copy_id(char out[37], const char *s, const char *what, cstl_error *err)
{
    if (strlen(s) > 36)
        return cstl_error_set(err, CSTL_EDECODE, "job snapshot: %s is too long", what);
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

static void *job_restore(const json_t *snap, cstl_error *err)
{
    const char *status, *job_id, *tenant_id, *reservation_id, *run_id, *worker_id;
    json_int_t gpu_count, priority, runtime, retry_limit, attempts, job_failures, infra_failures,
        submitted_at;
    int run_open, run_started, own;
    if (cstl_agg_unpack(snap, "job", err,
                        "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:s, s:s, s:b, "
                        "s:b, s:b, s:I}",
                        "status", &status, "job_id", &job_id, "tenant_id", &tenant_id, "gpu_count",
                        &gpu_count, "priority", &priority, "runtime_limit_seconds", &runtime,
                        "retry_limit", &retry_limit, "reservation_id", &reservation_id, "attempts",
                        &attempts, "job_failures", &job_failures, "infra_failures", &infra_failures,
                        "run_id", &run_id, "worker_id", &worker_id, "run_open", &run_open,
                        "run_started", &run_started, "finished_own_failure", &own, "submitted_at",
                        &submitted_at) != 0)
        return NULL;
    job_state *j = job_create();
    size_t s = 0;
    while (s < CSTL_ARRAY_LEN(STATUS_NAMES) && strcmp(STATUS_NAMES[s], status) != 0)
        s++;
    if (s == CSTL_ARRAY_LEN(STATUS_NAMES)) {
        cstl_error_set(err, CSTL_EDECODE, "job snapshot: unknown status \"%s\"", status);
        goto fail;
    }
    if (copy_id(j->job_id, job_id, "job_id", err) ||
        copy_id(j->tenant_id, tenant_id, "tenant_id", err) ||
        copy_id(j->reservation_id, reservation_id, "reservation_id", err) ||
        copy_id(j->run_id, run_id, "run_id", err) ||
        copy_id(j->worker_id, worker_id, "worker_id", err))
        goto fail;
    j->status = (job_status)s;
    j->gpu_count = gpu_count;
    j->priority = priority;
    j->runtime_limit_seconds = runtime;
    j->retry_limit = retry_limit;
    j->attempts = attempts;
    j->job_failures = job_failures;
    j->infra_failures = infra_failures;
    j->run_open = run_open;
    j->run_started = run_started;
    j->finished_own_failure = own;
    j->submitted_at = submitted_at;
    return j;
fail:
    job_destroy(j);
    return NULL;
}

static const char *job_aggregate_id(const char *command_type, const json_t *payload)
{
    if (!cstl_command_known("jobs", command_type))
        return NULL;
    return cstl_agg_str(payload, "job_id");
}

const cstl_aggregate_type cstl_job_aggregate = {
    .context = "jobs",
    .name = "Job",
    .create = job_create,
    .destroy = job_destroy,
    .evolve = job_evolve,
    .decide = job_decide,
    .snapshot = job_snapshot,
    .restore = job_restore,
    .aggregate_id = job_aggregate_id,
};
