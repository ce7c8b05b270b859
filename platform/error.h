/*
 * error.h - Constellation's error codes, from one table, and the error record constructors fill.
 *
 * Fallible functions return 0 on success or a negative CSTL_E* code. Constructors return NULL and
 * fill an optional cstl_error. Each code carries a class that tells the caller what to do next:
 * retry (transient), give up (fatal), or abort the current Kafka transaction and retry the batch.
 * HTTP status codes are mapped from these codes only at the HTTP edge (platform/http.c).
 */
#ifndef CSTL_PLATFORM_ERROR_H
#define CSTL_PLATFORM_ERROR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

/* Error classes. */
#define CSTL_ECLASS_PERMANENT 0 /* the same call will fail the same way: fix the input */
#define CSTL_ECLASS_RETRIABLE 1 /* transient: the same call may succeed later */
#define CSTL_ECLASS_FATAL     2 /* this handle (or process) cannot go on: stop and restart */
#define CSTL_ECLASS_ABORT_TXN 3 /* abort the current transaction, then retry the whole batch */

/* X(NAME, value, class, message). Values are stable: they appear in logs. */
#define CSTL_ERROR_TABLE(X)                                                                        \
    X(OK, 0, PERMANENT, "success")                                                                 \
    X(EINVAL, -1, PERMANENT, "invalid argument")                                                   \
    X(ENOMEM, -2, FATAL, "out of memory")                                                          \
    X(ECONFIG, -3, PERMANENT, "invalid configuration")                                             \
    X(EIO, -4, RETRIABLE, "input/output error")                                                    \
    X(ETIMEDOUT, -5, RETRIABLE, "timed out")                                                       \
    X(ENOTFOUND, -6, PERMANENT, "not found")                                                       \
    X(EEXISTS, -7, PERMANENT, "already exists")                                                    \
    X(ETOOBIG, -8, PERMANENT, "too large")                                                         \
    X(EPARSE, -9, PERMANENT, "malformed input")                                                    \
    X(EUNAVAILABLE, -10, RETRIABLE, "service unavailable")                                         \
    X(ESHUTDOWN, -11, PERMANENT, "shutting down")                                                  \
    X(EKAFKA, -20, RETRIABLE, "kafka error")                                                       \
    X(EKAFKA_FATAL, -21, FATAL, "fatal kafka error")                                               \
    X(EKAFKA_ABORT, -22, ABORT_TXN, "kafka transaction must be aborted")                           \
    X(EFENCED, -23, FATAL, "producer fenced by a newer instance")                                  \
    X(EPG, -30, PERMANENT, "postgresql error")                                                     \
    X(EPG_CONN, -31, RETRIABLE, "postgresql connection failed")                                    \
    X(EPG_RETRY, -32, RETRIABLE, "postgresql transaction must be retried")                         \
    X(EMIGRATION, -33, FATAL, "migration failed")                                                  \
    X(EDECODE, -40, PERMANENT, "cannot decode")                                                    \
    X(ESCHEMA, -41, PERMANENT, "unknown or incompatible schema")                                   \
    X(EAUTH, -50, PERMANENT, "not authenticated")                                                  \
    X(EFORBIDDEN, -51, PERMANENT, "forbidden")                                                     \
    X(ECONFLICT, -52, PERMANENT, "conflict")                                                       \
    X(EPRECONDITION, -53, PERMANENT, "precondition failed")                                        \
    X(EINTERNAL, -99, FATAL, "internal error")

enum {
#define CSTL_ERROR_ENUM_(name, value, klass, msg) CSTL_##name = (value),
    CSTL_ERROR_TABLE(CSTL_ERROR_ENUM_)
#undef CSTL_ERROR_ENUM_
};

/* Where an error came from, for the origin_code field. */
typedef enum cstl_error_origin {
    CSTL_ORIGIN_NONE = 0,
    CSTL_ORIGIN_OS,    /* origin_code is an errno */
    CSTL_ORIGIN_KAFKA, /* origin_code is an rd_kafka_resp_err_t */
    CSTL_ORIGIN_PG,    /* origin_sqlstate holds the SQLSTATE */
    CSTL_ORIGIN_HTTP,  /* origin_code is an HTTP status from a peer */
    CSTL_ORIGIN_AVRO,
} cstl_error_origin;

#define CSTL_ERROR_MESSAGE_MAX 512
#define CSTL_ERROR_DETAIL_MAX  512

typedef struct cstl_error {
    int code;                             /* a CSTL_E* value */
    char message[CSTL_ERROR_MESSAGE_MAX]; /* what failed and why, lower case, no final period */
    char detail[CSTL_ERROR_DETAIL_MAX];   /* optional: the offending value, a hint */
    cstl_error_origin origin;
    int origin_code;
    char origin_sqlstate[6];
} cstl_error;

/* Message of a code ("invalid argument"); "unknown error" for a value not in the table. Static. */
const char *cstl_strerror(int code);

/* Symbolic name of a code ("CSTL_EINVAL"); "CSTL_E?" for a value not in the table. Static. */
const char *cstl_error_name(int code);

/* The class (CSTL_ECLASS_*) of a code; CSTL_ECLASS_FATAL for a value not in the table. */
int cstl_error_class(int code);

/* True when the class of code is CSTL_ECLASS_RETRIABLE. */
bool cstl_error_is_retriable(int code);

/* True when the class of code is CSTL_ECLASS_FATAL. */
bool cstl_error_is_fatal(int code);

/*
 * Fills err (which may be NULL) with code and a printf-formatted message, clearing the rest.
 * Returns code, so `return cstl_error_set(err, CSTL_EINVAL, "...")` reads naturally.
 */
int cstl_error_set(cstl_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int cstl_error_vset(cstl_error *err, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Sets err->detail (printf-formatted); no-op when err is NULL. Returns err->code (or 0). */
int cstl_error_detail(cstl_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resets err to success; no-op when err is NULL. */
void cstl_error_clear(cstl_error *err);

/* Aborts the process with a message on stderr: for broken invariants and allocation failure. */
_Noreturn void cstl_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation that never returns NULL: on failure it calls cstl_panic. Free with free(). */
void *cstl_xmalloc(size_t size);
void *cstl_xcalloc(size_t count, size_t size);
void *cstl_xrealloc(void *ptr, size_t size);
char *cstl_xstrdup(const char *s);
char *cstl_xstrndup(const char *s, size_t n);

#define CSTL_ASSERT(cond)                                                                          \
    ((cond) ? (void)0 : cstl_panic("assertion failed: %s (%s:%d)", #cond, __FILE__, __LINE__))

#define CSTL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
