/*
 * schema_check.h - Avro schema compatibility: can a reader schema read data written with a writer
 * schema, by the resolution rules of the Avro specification?
 *
 * Used by `constellation schemas check` with reader = the current schema and writer = each earlier
 * version, which makes a change BACKWARD_TRANSITIVE compatible when every pair passes. Each broken
 * rule becomes one message naming the schema, the field path and the rule, e.g.
 *   jobs.JobSubmitted: field "gpu_count" was added without a default
 * Pure functions over parsed schemas; thread-safe.
 */
#ifndef CSTL_PLATFORM_SCHEMA_CHECK_H
#define CSTL_PLATFORM_SCHEMA_CHECK_H

#include "platform/avro_schema.h"

#include <stddef.h>

#define CSTL_SCHEMA_REPORT_MAX 1000 /* messages kept; later ones are counted, not stored */

/* A list of messages. Opaque; free with cstl_schema_report_free. */
typedef struct cstl_schema_report cstl_schema_report;

/* A new, empty report. Never NULL (allocation failure aborts). */
cstl_schema_report *cstl_schema_report_new(void);

/* Frees report and its messages. NULL is a no-op. */
void cstl_schema_report_free(cstl_schema_report *report);

/* Appends a printf-formatted message. */
void cstl_schema_report_add(cstl_schema_report *report, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Number of messages added (including any beyond CSTL_SCHEMA_REPORT_MAX). */
size_t cstl_schema_report_count(const cstl_schema_report *report);

/* The i-th stored message, or NULL. Borrowed until the report is freed. */
const char *cstl_schema_report_message(const cstl_schema_report *report, size_t i);

/*
 * Checks that reader can read everything writer wrote. label prefixes each message (e.g.
 * "jobs.JobSubmitted"). Returns 0 when compatible, else CSTL_ESCHEMA with one message per broken
 * rule appended to report (which may be NULL).
 */
int cstl_schema_compat_check(const cstl_avro_node *reader,
                             const cstl_avro_node *writer,
                             const char *label,
                             cstl_schema_report *report);

/* The label of a full name: "io.constellation.jobs.JobSubmitted" -> "jobs.JobSubmitted". Writes at
 * most size bytes (NUL included) into out and returns it. */
char *cstl_schema_label(const char *fullname, char *out, size_t size);

#endif
