/*
 * client.h - sending commands and waiting for their outcome: what every adapter uses (the command
 * API, the CLI, the process managers, the worker agent).
 *
 * A client produces CommandEnvelope records (Avro, single-object encoding) with an idempotent
 * producer to constellation.<context>.commands, on the partition murmur2(aggregate id) % the
 * topic's partition count, so command partition p and event partition p belong to one owner. Its
 * replies come back on constellation.replies keyed by the client's instance id: the client reads
 * the partition of that key (read_committed, from the end at start) and hands each reply to the
 * request waiting for its command id.
 *
 * Thread: every function may be called from any thread; cstl_cmd_client_free from one, after the
 * others returned.
 */
#ifndef CSTL_COMMANDS_CLIENT_H
#define CSTL_COMMANDS_CLIENT_H

#include "platform/error.h"

#include <jansson.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cstl_cmd_client cstl_cmd_client;

typedef struct cstl_cmd_client_options {
    const char *brokers;
    const char *instance_id; /* the key of this client's replies; unique per process */
    int timeout_ms;          /* metadata and produce timeouts; default 10000 */
} cstl_cmd_client_options;

/* A command to send. Strings are borrowed for the duration of the call. */
typedef struct cstl_cmd_request {
    const char *context;      /* "jobs" */
    const char *command_type; /* short name: "SubmitJob" */
    const char *command_id;   /* UUID; see cstl_cmd_id_from_key for idempotency keys */
    const char *tenant_id;
    const char *aggregate_id;
    int64_t expected_version; /* -1: no check */
    const char *issued_by;
    const char *correlation_id; /* NULL: the command id */
    const char *traceparent;    /* NULL: none */
    const json_t *payload;      /* shaped like schemas/<context>/commands/<type>.avsc */
    int want_reply;             /* 0: fire and forget (reply_to null) */
} cstl_cmd_request;

typedef enum cstl_cmd_outcome {
    CSTL_CMD_ACCEPTED = 0,
    CSTL_CMD_DUPLICATE,        /* the command id was handled before: the first outcome's version */
    CSTL_CMD_REJECTED,         /* a business rule refused it; error_code says which */
    CSTL_CMD_VERSION_MISMATCH, /* expected_version did not hold */
    CSTL_CMD_INVALID,          /* the command itself is invalid */
    CSTL_CMD_FAILED,           /* the handler could not process it (poison command) */
} cstl_cmd_outcome;

typedef struct cstl_cmd_reply {
    cstl_cmd_outcome outcome;
    char command_id[37];
    char aggregate_id[128];
    int64_t version; /* -1 when none */
    char error_code[64];
    char error_message[256];
    int64_t handled_at_us;
} cstl_cmd_reply;

/* A new client, connected (metadata loaded, reply partition assigned). NULL + err on failure. */
cstl_cmd_client *cstl_cmd_client_new(const cstl_cmd_client_options *opts, cstl_error *err);

/* Stops the reply reader, flushes, frees. Sends still waiting for a reply are finished with
 * CSTL_ETIMEDOUT (those not yet delivered, with their delivery's outcome) before it returns. NULL
 * is a no-op. */
void cstl_cmd_client_free(cstl_cmd_client *c);

/*
 * The outcome of cstl_cmd_client_send_async, given exactly once: rc 0 with reply (NULL when the
 * request did not want one: the command was appended); CSTL_ETIMEDOUT when the command was
 * appended but no reply came within wait_ms of that; CSTL_EKAFKA (or another delivery error) when
 * it could not be appended (retriable; nothing was written). reply and err are borrowed for the
 * call. Runs on one of the client's threads (reply reader, delivery reports), or on a thread that
 * was sending another command at the time, possibly before send_async returned; never with a
 * client lock held. It must not block: every other outcome of the client waits behind it.
 */
typedef void (*cstl_cmd_done_fn)(void *ud,
                                 int rc,
                                 const cstl_cmd_reply *reply,
                                 const cstl_error *err);

/*
 * Validates req and queues it for sending without waiting: done(ud, ...) then reports the outcome,
 * once (see cstl_cmd_done_fn). The reply wait, wait_ms, starts when the command is in the log.
 * Returns 0 once queued; otherwise nothing was sent and done is never called: CSTL_EINVAL /
 * CSTL_EDECODE when the payload does not fit its schema, CSTL_ENOTFOUND for a missing commands
 * topic, CSTL_EKAFKA when the producer's queue stayed full for the client's timeout. req's strings
 * are borrowed for the call only.
 */
int cstl_cmd_client_send_async(cstl_cmd_client *c,
                               const cstl_cmd_request *req,
                               int wait_ms,
                               cstl_cmd_done_fn done,
                               void *ud,
                               cstl_error *err);

/* The outcome of one command of cstl_cmd_client_send_batch. */
typedef struct cstl_cmd_result {
    int rc;         /* as cstl_cmd_client_send returns */
    bool has_reply; /* reply is set (rc 0 and the request wanted one) */
    cstl_cmd_reply reply;
    cstl_error err; /* when rc != 0 */
} cstl_cmd_result;

/*
 * Sends the n requests at once (cstl_cmd_client_send_async each) and waits until every one has its
 * outcome in results[i] (n of them), so commands decided together share the handlers' batches
 * instead of paying a round trip each. A request that could not be queued has its rc at once.
 */
void cstl_cmd_client_send_batch(cstl_cmd_client *c,
                                const cstl_cmd_request *reqs,
                                size_t n,
                                int wait_ms,
                                cstl_cmd_result *results);

/*
 * Validates and sends req, then waits up to wait_ms for its reply (when req->want_reply): the
 * synchronous form of cstl_cmd_client_send_async, holding the calling thread meanwhile.
 * Returns 0 with *reply filled; CSTL_ETIMEDOUT when the command was appended but no reply came in
 * time (the outcome can be fetched later with cstl_cmd_client_lookup); CSTL_EINVAL / CSTL_EDECODE
 * when the payload does not fit its schema (nothing was sent); CSTL_EKAFKA when it could not be
 * appended (nothing was sent, retriable).
 */
int cstl_cmd_client_send(cstl_cmd_client *c,
                         const cstl_cmd_request *req,
                         int wait_ms,
                         cstl_cmd_reply *reply,
                         cstl_error *err);

/* A recent reply by command id (replies seen by this client in the last hour). 0 or ENOTFOUND. */
int cstl_cmd_client_lookup(cstl_cmd_client *c, const char *command_id, cstl_cmd_reply *reply);

/* The command id for an Idempotency-Key: a UUID (version 8) made from SHA-256(tenant, key), so the
 * same key from two tenants never collides and a retried request maps to the same command. */
void cstl_cmd_id_from_key(const char *tenant_id, const char *key, char out[37]);

/* Name of an outcome ("accepted"). */
const char *cstl_cmd_outcome_name(cstl_cmd_outcome outcome);

#endif
