/*
 * aggregate.h - the contract between aggregates and the command handler runtime.
 *
 * An aggregate is a pair of pure functions over one aggregate instance's state:
 *   decide(state, version, command) -> events | rejection
 *   evolve(state, event)            -> state'
 * with no I/O, no clock and no randomness: everything decide needs that is not in the state comes
 * in the command (the handler's clock reading, the ids it assigned). The runtime owns the states,
 * loads them from snapshots and events, checks expected versions and idempotency, and appends what
 * decide returns. Commands and events are JSON objects shaped exactly like their Avro schemas
 * (schemas/<context>/...), so fixtures, the HTTP edge and the codec share one representation.
 *
 * Versions: an aggregate that has no event yet is at version 0; each event adds one.
 *
 * Thread: an aggregate state is touched by one thread at a time (the partition's owner). The
 * functions themselves are reentrant.
 */
#ifndef CSTL_COMMANDS_AGGREGATE_H
#define CSTL_COMMANDS_AGGREGATE_H

#include "platform/error.h"

#include <jansson.h>

#include <stdint.h>

/* Most events one command may produce. */
#define CSTL_DECISION_MAX_EVENTS 8

/* A command as decide sees it. Everything is borrowed for the duration of the call. */
typedef struct cstl_command {
    const char *type;         /* short name within the context: "SubmitJob" */
    const char *command_id;   /* UUID; the causation id of the events it produces */
    const char *tenant_id;    /* the tenant the command runs in (authenticated at the edge) */
    const char *aggregate_id; /* the aggregate addressed (also inside payload) */
    const char *issued_by;    /* principal: api key id, user id or process manager name */
    int64_t now_us;           /* the handler's clock when it took the command: event timestamps */
    const json_t *payload;    /* the command's fields, shaped like its Avro schema */
} cstl_command;

/* An event as evolve sees it. Borrowed for the duration of the call. */
typedef struct cstl_event {
    const char *type;   /* short name within the context: "JobSubmitted" */
    int64_t version;    /* the aggregate's version after this event */
    const json_t *data; /* the event's fields, shaped like its Avro schema */
} cstl_event;

/* Why a command was refused; maps to the reply outcome and, at the HTTP edge, to a status. */
typedef enum cstl_rejection_kind {
    CSTL_REJECT_NONE = 0,
    CSTL_REJECT_INVALID,   /* a field breaks a rule of the command itself: 422 */
    CSTL_REJECT_NOT_FOUND, /* the aggregate does not exist (or is another tenant's): 404 */
    CSTL_REJECT_CONFLICT,  /* a business rule refuses it in the aggregate's current state: 409 */
} cstl_rejection_kind;

/* What decide returns: either events or a rejection. */
typedef struct cstl_decision {
    int n_events;
    struct {
        const char *type; /* static string: short event name */
        json_t *data;     /* owned by the decision (cstl_decision_clear releases it) */
    } events[CSTL_DECISION_MAX_EVENTS];
    cstl_rejection_kind rejection;
    char code[64];     /* machine-readable reason: "job_not_found", "job_already_finished" */
    char field[64];    /* the offending field for CSTL_REJECT_INVALID, else "" */
    char message[256]; /* lower case, no final period, names the value */
} cstl_decision;

/* Appends an event to d (taking ownership of data). Panics past CSTL_DECISION_MAX_EVENTS. */
void cstl_decision_emit(cstl_decision *d, const char *type, json_t *data);

/* Records a rejection in d (drops any events already emitted). Returns -1 for `return` chains. */
int cstl_decision_reject(cstl_decision *d,
                         cstl_rejection_kind kind,
                         const char *code,
                         const char *field,
                         const char *fmt,
                         ...) __attribute__((format(printf, 5, 6)));

/* Releases the events d owns and resets it to empty. */
void cstl_decision_clear(cstl_decision *d);

/* One kind of aggregate: the functions of a bounded context's aggregate. */
typedef struct cstl_aggregate_type {
    const char *context; /* "tenants", "jobs", "fleet" */
    const char *name;    /* "Tenant", "Job", "Worker" */

    /* A new empty state (the aggregate before its first event). Never NULL. */
    void *(*create)(void);
    /* Frees a state made by create or restore. NULL is a no-op. */
    void (*destroy)(void *state);

    /* Applies one event. Fails (CSTL_EDECODE naming the field) only on an event that does not fit
     * its schema or the state; the runtime then treats the partition as poisoned. */
    int (*evolve)(void *state, const cstl_event *event, cstl_error *err);

    /* Decides a command against the state at version. Fills d (initially empty) with events or a
     * rejection. Returns 0 for either; non-zero only for an unknown command type. */
    int (*decide)(const void *state, int64_t version, const cstl_command *cmd, cstl_decision *d);

    /* The state as JSON for a snapshot (new reference), and back (a new state, or NULL with err).
     */
    json_t *(*snapshot)(const void *state);
    void *(*restore)(const json_t *snapshot, cstl_error *err);

    /* The aggregate id addressed by a command payload (borrowed from payload), or NULL. */
    const char *(*aggregate_id)(const char *command_type, const json_t *payload);
} cstl_aggregate_type;

/* The aggregates of the tenants, jobs and fleet contexts. */
extern const cstl_aggregate_type cstl_tenant_aggregate;
extern const cstl_aggregate_type cstl_job_aggregate;
extern const cstl_aggregate_type cstl_worker_aggregate;

/* The aggregate type of a context ("jobs"), or NULL. */
const cstl_aggregate_type *cstl_aggregate_for_context(const char *context);

#endif
