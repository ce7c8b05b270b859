/*
 * aggregate_internal.h - helpers shared by the aggregates of commands/ (not for other components).
 *
 * Event readers fail with CSTL_EDECODE naming "<Event>.<field>" so a poisoned partition says
 * which record is wrong. Payload readers are for payloads cstl_command_validate has accepted.
 */
#ifndef CSTL_COMMANDS_AGGREGATE_INTERNAL_H
#define CSTL_COMMANDS_AGGREGATE_INTERNAL_H

#include "commands/aggregate.h"

#include <jansson.h>

#include <stddef.h>
#include <stdint.h>

/* Copies the string field name of an event into out (cap bytes with the NUL). */
int cstl_agg_event_str(
    const cstl_event *ev, const char *name, char *out, size_t cap, cstl_error *err);

/* A new copy (free()) of the string field name of an event; null gives NULL when nullable. */
int cstl_agg_event_strdup(
    const cstl_event *ev, const char *name, int nullable, char **out, cstl_error *err);

/* The integer field name of an event; a null gives *present = 0 when present is not NULL. */
int cstl_agg_event_int(
    const cstl_event *ev, const char *name, int64_t *out, int *present, cstl_error *err);

/* The string field of a validated payload (borrowed), or NULL when absent or null. */
const char *cstl_agg_str(const json_t *payload, const char *name);

/* The integer field of a validated payload, or 0 when absent or null. */
int64_t cstl_agg_int(const json_t *payload, const char *name);

/* The field of a payload as a new reference, JSON null when absent. */
json_t *cstl_agg_copy(const json_t *payload, const char *name);

/*
 * Rejects (CSTL_REJECT_INVALID, aggregate_id_mismatch) a command whose cmd->aggregate_id is set
 * and differs from the id field of its payload. Returns 0 or -1.
 */
int cstl_agg_check_target(const cstl_command *cmd, const char *id_field, cstl_decision *d);

/* Reads a snapshot with json_unpack, failing with CSTL_EDECODE naming the aggregate. */
int cstl_agg_unpack(
    const json_t *snapshot, const char *what, cstl_error *err, const char *fmt, ...);

/* The copy of s (free()), or NULL for NULL. */
char *cstl_agg_strdup_or_null(const char *s);

/* JSON string of s, or JSON null for NULL. New reference. */
json_t *cstl_agg_json_str_or_null(const char *s);

#endif
