/*
 * events.c - CloudEvents (Kafka binding, binary mode) and cstl_* headers of event records (see
 * events.h). Every value is validated on the way out and on the way in, with hard size caps.
 */
#include "platform/events.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_MICROS INT64_C(253402300799999999) /* 9999-12-31T23:59:59.999999Z */

int cstl_event_time_format(int64_t micros, char out[CSTL_EVENT_TIME_STRLEN + 1])
{
    if (micros < 0 || micros > MAX_MICROS)
        return CSTL_EINVAL;
    time_t secs = (time_t)(micros / 1000000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm))
        return CSTL_EINVAL;
    char buf[64]; /* wide enough for any int, so the compiler can see nothing is cut */
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(micros % 1000000));
    memcpy(out, buf, CSTL_EVENT_TIME_STRLEN);
    out[CSTL_EVENT_TIME_STRLEN] = '\0';
    return 0;
}

int cstl_event_time_parse(const char *text, int64_t *micros)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (!text || strlen(text) != CSTL_EVENT_TIME_STRLEN)
        return CSTL_EPARSE;
    for (size_t i = 0; i < CSTL_EVENT_TIME_STRLEN; i++)
        if (shape[i] == 'd' ? !isdigit((unsigned char)text[i]) : text[i] != shape[i])
            return CSTL_EPARSE;
    struct tm tm = {0};
    int us = 0;
    sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d.%6d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
           &tm.tm_min, &tm.tm_sec, &us);
    int year = tm.tm_year, mon = tm.tm_mon, day = tm.tm_mday;
    if (year < 1970 || mon < 1 || mon > 12 || day < 1 || day > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 59)
        return CSTL_EPARSE;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t secs = timegm(&tm);
    /* timegm normalizes 31 February into March: refuse dates that moved */
    struct tm check;
    if (secs < 0 || !gmtime_r(&secs, &check) || check.tm_mday != day || check.tm_mon != mon - 1)
        return CSTL_EPARSE;
    *micros = (int64_t)secs * 1000000 + us;
    return 0;
}

static bool lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool all_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0')
            return false;
    return true;
}

bool cstl_event_traceparent_valid(const char *t)
{
    return t && strlen(t) == 55 && t[0] == '0' && t[1] == '0' && t[2] == '-' && t[35] == '-' &&
           t[52] == '-' && lower_hex(t + 3, 32) && lower_hex(t + 36, 16) && lower_hex(t + 53, 2) &&
           !all_zero(t + 3, 32) && !all_zero(t + 36, 16);
}

static bool text_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CSTL_EVENT_HEADER_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static int bad(cstl_error *err, int code, const char *name, const char *value)
{
    return cstl_error_set(err, code, "invalid %s header \"%.64s\"", name, value);
}

int cstl_event_headers_build(const cstl_event_headers *h, rd_kafka_headers_t *hdrs, cstl_error *err)
{
    char time[CSTL_EVENT_TIME_STRLEN + 1], version[24];
    if (!h || !hdrs)
        return cstl_error_set(err, CSTL_EINVAL, "no headers");
    if (!cstl_uuid_valid(h->id))
        return bad(err, CSTL_EINVAL, "ce_id", h->id);
    if (!text_ok(h->source))
        return bad(err, CSTL_EINVAL, "ce_source", h->source);
    if (!text_ok(h->type))
        return bad(err, CSTL_EINVAL, "ce_type", h->type);
    if (cstl_event_time_format(h->time_us, time) != 0)
        return cstl_error_set(err, CSTL_EINVAL, "invalid ce_time %" PRId64, h->time_us);
    if (!text_ok(h->subject))
        return bad(err, CSTL_EINVAL, "ce_subject", h->subject);
    if (!cstl_uuid_valid(h->tenant))
        return bad(err, CSTL_EINVAL, "cstl_tenant", h->tenant);
    if (h->version < 1)
        return cstl_error_set(err, CSTL_EINVAL, "invalid cstl_version %" PRId64, h->version);
    if (h->causation[0] && !cstl_uuid_valid(h->causation))
        return bad(err, CSTL_EINVAL, "cstl_causation", h->causation);
    if (h->correlation[0] && !cstl_uuid_valid(h->correlation))
        return bad(err, CSTL_EINVAL, "cstl_correlation", h->correlation);
    if (h->traceparent[0] && !cstl_event_traceparent_valid(h->traceparent))
        return bad(err, CSTL_EINVAL, "traceparent", h->traceparent);
    snprintf(version, sizeof version, "%" PRId64, h->version);
    const char *pairs[][2] = {
        {"ce_specversion", "1.0"},
        {"ce_id", h->id},
        {"ce_source", h->source},
        {"ce_type", h->type},
        {"ce_time", time},
        {"ce_subject", h->subject},
        {"content-type", CSTL_EVENT_CONTENT_TYPE},
        {"cstl_tenant", h->tenant},
        {"cstl_version", version},
        {"cstl_causation", h->causation},
        {"cstl_correlation", h->correlation},
        {"traceparent", h->traceparent},
    };
    for (size_t i = 0; i < CSTL_ARRAY_LEN(pairs); i++) {
        if (!pairs[i][1][0])
            continue;
        if (rd_kafka_header_add(hdrs, pairs[i][0], -1, pairs[i][1], -1) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            return cstl_error_set(err, CSTL_EINVAL, "cannot add header \"%s\"", pairs[i][0]);
    }
    return 0;
}

/* Copies header name into out (size cap bytes incl. NUL). Returns 0, 1 when absent, or an error. */
static int get(const rd_kafka_headers_t *hdrs,
               const char *name,
               char *out,
               size_t cap,
               bool required,
               cstl_error *err)
{
    const void *v = NULL;
    size_t n = 0;
    out[0] = '\0';
    if (rd_kafka_header_get_last(hdrs, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || !v) {
        if (required)
            return cstl_error_set(err, CSTL_EDECODE, "missing %s header", name);
        return 1;
    }
    if (n > CSTL_EVENT_HEADER_MAX || n >= cap)
        return cstl_error_set(err, n > CSTL_EVENT_HEADER_MAX ? CSTL_ETOOBIG : CSTL_EDECODE,
                              "%s header of %zu bytes is too long", name, n);
    if (memchr(v, 0, n))
        return cstl_error_set(err, CSTL_EDECODE, "%s header contains a NUL byte", name);
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
}

int cstl_event_headers_parse(const rd_kafka_headers_t *hdrs, cstl_event_headers *h, cstl_error *err)
{
    char buf[CSTL_EVENT_HEADER_MAX + 1];
    int rc;
    if (!hdrs || !h)
        return cstl_error_set(err, CSTL_EDECODE, "record has no headers");
    memset(h, 0, sizeof *h);
#define GET(name, dst, req)                                                                        \
    if ((rc = get(hdrs, name, dst, sizeof dst, req, err)) < 0)                                     \
        return rc;
    GET("ce_specversion", buf, true)
    if (strcmp(buf, "1.0") != 0)
        return bad(err, CSTL_EDECODE, "ce_specversion", buf);
    GET("content-type", buf, true)
    if (strcmp(buf, CSTL_EVENT_CONTENT_TYPE) != 0)
        return bad(err, CSTL_EDECODE, "content-type", buf);
    GET("ce_id", buf, true)
    if (!cstl_uuid_valid(buf))
        return bad(err, CSTL_EDECODE, "ce_id", buf);
    memcpy(h->id, buf, CSTL_UUID_STRLEN + 1);
    GET("ce_source", h->source, true)
    if (!text_ok(h->source))
        return bad(err, CSTL_EDECODE, "ce_source", h->source);
    GET("ce_type", h->type, true)
    if (!text_ok(h->type))
        return bad(err, CSTL_EDECODE, "ce_type", h->type);
    GET("ce_time", buf, true)
    if (cstl_event_time_parse(buf, &h->time_us) != 0)
        return bad(err, CSTL_EDECODE, "ce_time", buf);
    GET("ce_subject", h->subject, true)
    if (!text_ok(h->subject))
        return bad(err, CSTL_EDECODE, "ce_subject", h->subject);
    GET("cstl_tenant", buf, true)
    if (!cstl_uuid_valid(buf))
        return bad(err, CSTL_EDECODE, "cstl_tenant", buf);
    memcpy(h->tenant, buf, CSTL_UUID_STRLEN + 1);
    GET("cstl_version", buf, true)
    char *end = NULL;
    long long ver = strtoll(buf, &end, 10);
    if (!isdigit((unsigned char)buf[0]) || *end || ver < 1 || strlen(buf) > 18)
        return bad(err, CSTL_EDECODE, "cstl_version", buf);
    h->version = ver;
    if ((rc = get(hdrs, "cstl_causation", buf, sizeof buf, false, err)) < 0)
        return rc;
    if (rc == 0) {
        if (!cstl_uuid_valid(buf))
            return bad(err, CSTL_EDECODE, "cstl_causation", buf);
        memcpy(h->causation, buf, CSTL_UUID_STRLEN + 1);
    }
    if ((rc = get(hdrs, "cstl_correlation", buf, sizeof buf, false, err)) < 0)
        return rc;
    if (rc == 0) {
        if (!cstl_uuid_valid(buf))
            return bad(err, CSTL_EDECODE, "cstl_correlation", buf);
        memcpy(h->correlation, buf, CSTL_UUID_STRLEN + 1);
    }
    if ((rc = get(hdrs, "traceparent", buf, sizeof buf, false, err)) < 0)
        return rc;
    if (rc == 0) {
        if (!cstl_event_traceparent_valid(buf))
            return bad(err, CSTL_EDECODE, "traceparent", buf);
        memcpy(h->traceparent, buf, 56);
    }
#undef GET
    return 0;
}
