/*
 * log.h - JSON-lines logging to stderr for services.
 *
 * One line per record: {"ts":"2026-11-21T23:41:03.123456Z","level":"info","component":"http",
 * "msg":"...", ...fields}. A record is formatted in full and written with one write(2) under a
 * mutex, so lines from different threads never interleave. Library modules do not log; they return
 * errors, and the service loop logs them once (cstl_log_error). librdkafka's own log is forwarded
 * here by platform/kafka.c.
 *
 * A thread may set a trace context (request id, traceparent) that is added to every record it
 * writes until cleared, so the records of one request can be found together.
 */
#ifndef CSTL_PLATFORM_LOG_H
#define CSTL_PLATFORM_LOG_H

#include "platform/error.h"

#include <jansson.h>

typedef enum cstl_log_level {
    CSTL_LOG_DEBUG = 0,
    CSTL_LOG_INFO = 1,
    CSTL_LOG_WARN = 2,
    CSTL_LOG_ERROR = 3,
} cstl_log_level;

/* Sets the lowest level written (default info). Thread-safe. */
void cstl_log_set_level(cstl_log_level level);

/* The lowest level written. */
cstl_log_level cstl_log_get_level(void);

/* Parses "debug", "info", "warn" or "error" into *out. Returns 0 or CSTL_EINVAL. */
int cstl_log_parse_level(const char *text, cstl_log_level *out);

/* Name of a level ("info"). Static. */
const char *cstl_log_level_name(cstl_log_level level);

/* Redirects output to fd (default 2, stderr); for tests. Not thread-safe with concurrent logging.
 */
void cstl_log_set_fd(int fd);

/* Sets the calling thread's trace context; NULL clears a field. The strings are copied (truncated
 * to 63 and 127 bytes). */
void cstl_log_set_context(const char *request_id, const char *traceparent);

/* True when a record at level would be written. */
int cstl_log_enabled(cstl_log_level level);

/* Writes a record with a printf-formatted message. */
void cstl_log(cstl_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Writes a record with extra fields: every key of the object fields is added to the record (keys
 * "ts", "level", "component" and "msg" are reserved and skipped). Takes ownership of fields (a
 * reference is stolen, also when the record is filtered out); fields may be NULL.
 */
void cstl_log_fields(cstl_log_level level,
                     const char *component,
                     json_t *fields,
                     const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));

/* Logs err at level error with fields "error" (the code's name), "detail" and the origin codes,
 * prefixed by a printf-formatted context message: "<context>: <err->message>". */
void cstl_log_error(const char *component, const cstl_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
