/*
 * log.c - JSON-lines logger (see log.h).
 *
 * Invariant: a record is one complete line, written with a single write(2) while holding
 * log_mutex. The level is an atomic so the hot "is this enabled" check takes no lock. Callable from
 * any thread, including librdkafka's internal threads.
 */
#include "platform/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = CSTL_LOG_INFO;
static int log_fd = 2;
static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local char log_request_id[64];
static _Thread_local char log_traceparent[128];

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void cstl_log_set_level(cstl_log_level level)
{
    atomic_store(&log_level, (int)level);
}

cstl_log_level cstl_log_get_level(void)
{
    return (cstl_log_level)atomic_load(&log_level);
}

int cstl_log_parse_level(const char *text, cstl_log_level *out)
{
    for (size_t i = 0; text != NULL && i < CSTL_ARRAY_LEN(level_names); i++) {
        if (strcmp(text, level_names[i]) == 0) {
            *out = (cstl_log_level)i;
            return 0;
        }
    }
    return CSTL_EINVAL;
}

const char *cstl_log_level_name(cstl_log_level level)
{
    if ((int)level < 0 || (size_t)level >= CSTL_ARRAY_LEN(level_names))
        return "unknown";
    return level_names[level];
}

void cstl_log_set_fd(int fd)
{
    log_fd = fd;
}

void cstl_log_set_context(const char *request_id, const char *traceparent)
{
    snprintf(log_request_id, sizeof(log_request_id), "%s", request_id ? request_id : "");
    snprintf(log_traceparent, sizeof(log_traceparent), "%s", traceparent ? traceparent : "");
}

int cstl_log_enabled(cstl_log_level level)
{
    return (int)level >= atomic_load(&log_level);
}

static void format_time(char *buf, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%06ldZ", ts.tv_nsec / 1000);
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a failing stderr */
        }
        buf += w;
        len -= (size_t)w;
    }
}

static int reserved_key(const char *key)
{
    return strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "component") == 0 ||
           strcmp(key, "msg") == 0;
}

static void
log_emit(cstl_log_level level, const char *component, json_t *fields, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void
log_emit(cstl_log_level level, const char *component, json_t *fields, const char *fmt, va_list ap)
{
    char ts[40];
    char msg[2048];
    format_time(ts, sizeof(ts));
    vsnprintf(msg, sizeof(msg), fmt, ap);

    json_t *rec = json_object();
    json_object_set_new(rec, "ts", json_string(ts));
    json_object_set_new(rec, "level", json_string(cstl_log_level_name(level)));
    json_object_set_new(rec, "component", json_string(component ? component : "main"));
    /* json_stringn_nocheck would accept invalid UTF-8; a message that is not UTF-8 is escaped. */
    json_t *jmsg = json_string(msg);
    if (jmsg == NULL)
        jmsg = json_string("(message is not valid UTF-8)");
    json_object_set_new(rec, "msg", jmsg);
    if (log_request_id[0] != '\0')
        json_object_set_new(rec, "request_id", json_string(log_request_id));
    if (log_traceparent[0] != '\0')
        json_object_set_new(rec, "traceparent", json_string(log_traceparent));
    if (fields != NULL && json_is_object(fields)) {
        const char *key;
        json_t *value;
        json_object_foreach(fields, key, value)
        {
            if (!reserved_key(key))
                json_object_set(rec, key, value);
        }
    }
    char *line = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(rec);
    if (line == NULL)
        return;
    size_t len = strlen(line);
    line[len] = '\n'; /* overwrite the NUL: written by length below */
    pthread_mutex_lock(&log_mutex);
    write_all(log_fd, line, len + 1);
    pthread_mutex_unlock(&log_mutex);
    free(line);
}

void cstl_log(cstl_log_level level, const char *component, const char *fmt, ...)
{
    if (!cstl_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, component, NULL, fmt, ap);
    va_end(ap);
}

void cstl_log_fields(
    cstl_log_level level, const char *component, json_t *fields, const char *fmt, ...)
{
    if (cstl_log_enabled(level)) {
        va_list ap;
        va_start(ap, fmt);
        log_emit(level, component, fields, fmt, ap);
        va_end(ap);
    }
    json_decref(fields);
}

void cstl_log_error(const char *component, const cstl_error *err, const char *fmt, ...)
{
    if (!cstl_log_enabled(CSTL_LOG_ERROR))
        return;
    char context[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(context, sizeof(context), fmt, ap);
    va_end(ap);
    json_t *fields = json_object();
    if (err != NULL) {
        json_object_set_new(fields, "error", json_string(cstl_error_name(err->code)));
        if (err->detail[0] != '\0')
            json_object_set_new(fields, "detail", json_string(err->detail));
        if (err->origin_sqlstate[0] != '\0')
            json_object_set_new(fields, "sqlstate", json_string(err->origin_sqlstate));
        else if (err->origin != CSTL_ORIGIN_NONE)
            json_object_set_new(fields, "origin_code", json_integer(err->origin_code));
    }
    cstl_log_fields(CSTL_LOG_ERROR, component, fields, "%s: %s", context,
                    err ? err->message : "unknown error");
}
