/*
 * envelope.h - the records of the command path on the wire: CommandEnvelope (on
 * constellation.<context>.commands) and CommandReply (on constellation.replies), both Avro
 * single-object encodings of schemas/common/CommandEnvelope.avsc and CommandReply.avsc, to and from
 * plain C structs.
 *
 * Decoding validates what the rest of the write side relies on: ids that must be UUIDs are
 * (command, tenant, correlation), strings fit their fields, the traceparent is valid or absent.
 * A record that fails is a poison record (CSTL_EDECODE naming the field).
 *
 * Pure functions; thread-safe.
 */
#ifndef CSTL_COMMANDS_ENVELOPE_H
#define CSTL_COMMANDS_ENVELOPE_H

#include "commands/client.h"
#include "platform/codec.h"
#include "platform/error.h"

#include <stddef.h>
#include <stdint.h>

#define CSTL_CMD_TYPE_MAX      128 /* bytes of a command_type ("io.constellation.jobs.SubmitJob.v1") */
#define CSTL_CMD_AGGREGATE_MAX 127 /* bytes of an aggregate id */
#define CSTL_CMD_PRINCIPAL_MAX 127 /* bytes of issued_by and reply_to */

typedef struct cstl_cmd_envelope {
    char command_id[37];
    char tenant_id[37];
    char command_type[CSTL_CMD_TYPE_MAX + 1];
    char aggregate_id[CSTL_CMD_AGGREGATE_MAX + 1];
    int64_t expected_version; /* -1: no check */
    int64_t issued_at_us;
    char issued_by[CSTL_CMD_PRINCIPAL_MAX + 1];
    char correlation_id[37];
    char reply_to[CSTL_CMD_PRINCIPAL_MAX + 1]; /* "" when null */
    char traceparent[56];                      /* "" when null */
    unsigned char *payload;                    /* owned: cstl_cmd_envelope_clear */
    size_t payload_len;
} cstl_cmd_envelope;

/* Encodes env as a CommandEnvelope single object into out (replacing its contents). Returns 0 or
 * CSTL_EINVAL naming the field that does not fit. Does not take ownership of anything. */
int cstl_cmd_envelope_encode(const cstl_cmd_envelope *env, cstl_codec_buf *out, cstl_error *err);

/* Decodes a CommandEnvelope single object into *env (payload newly allocated). Returns 0, or
 * CSTL_EDECODE / CSTL_ESCHEMA naming what is wrong; then env has no payload, and the string
 * fields that could be read are kept (reply_to and command_id first, so a poison command can
 * still be answered), the others are "". */
int cstl_cmd_envelope_decode(const void *data, size_t len, cstl_cmd_envelope *env, cstl_error *err);

/* Frees env's payload and zeroes it. */
void cstl_cmd_envelope_clear(cstl_cmd_envelope *env);

/* A reply with the ids of the events a command produced (borrowed for the call). */
typedef struct cstl_cmd_reply_record {
    cstl_cmd_reply reply;
    const char *tenant_id;
    const char *const *event_ids;
    int n_event_ids;
} cstl_cmd_reply_record;

/* Encodes a CommandReply single object into out. Returns 0 or CSTL_EINVAL. */
int cstl_cmd_reply_encode(const cstl_cmd_reply_record *rec, cstl_codec_buf *out, cstl_error *err);

/* Decodes a CommandReply single object into *reply (event ids are not kept). Returns 0 or
 * CSTL_EDECODE / CSTL_ESCHEMA. */
int cstl_cmd_reply_decode(const void *data, size_t len, cstl_cmd_reply *reply, cstl_error *err);

#endif
