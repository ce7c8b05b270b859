/*
 * rules.h - the rules of a command that need no aggregate state: presence and JSON type of every
 * field, lengths, ranges, formats and uniqueness (docs/commands.md lists them all).
 *
 * The HTTP edge applies them to refuse a bad request before anything is produced; every decide
 * applies them again, so a command that reached the log by another path is held to the same rules.
 * Pure and reentrant.
 */
#ifndef CSTL_COMMANDS_RULES_H
#define CSTL_COMMANDS_RULES_H

#include "commands/aggregate.h"

#include <jansson.h>

/* Limits shared by the rules and the aggregates. */
#define CSTL_JOB_MAX_GPUS         64
#define CSTL_JOB_MAX_GPU_MEMORY   1048576 /* MiB */
#define CSTL_JOB_MAX_PRIORITY     100
#define CSTL_JOB_DEFAULT_PRIORITY 50     /* what the API fills in when a request has none */
#define CSTL_JOB_MAX_RUNTIME      604800 /* seconds: one week */
#define CSTL_JOB_MAX_RETRIES      10
#define CSTL_WORKER_MAX_GPUS      64
#define CSTL_GPU_UUID_MAX         64
#define CSTL_REASON_MAX           512

/*
 * Checks payload, the fields of command_type in context ("jobs", "SubmitJob"), against the
 * command's stateless rules. Returns 0 when it holds. Otherwise records a CSTL_REJECT_INVALID
 * rejection in d (field = the JSON path of the first offending field: "gpu_count", "labels.team",
 * "parameters.command[3]"; code = missing_field, invalid_type, out_of_range, invalid_length,
 * invalid_format, invalid_value or duplicate_value; message names the limit and the value) and
 * returns -1. An unknown context or command type is rejected too, with code unknown_command.
 * Borrows everything; d must be empty or hold only events (they are dropped on rejection).
 */
int cstl_command_validate(const char *context,
                          const char *command_type,
                          const json_t *payload,
                          cstl_decision *d);

/* True when context has a command named command_type. */
int cstl_command_known(const char *context, const char *command_type);

/* How a JSON value's type reads in a message: "a string", "an integer", "null"... Static. */
const char *cstl_json_type_name(const json_t *v);

#endif
