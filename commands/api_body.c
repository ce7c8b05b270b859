/*
 * api_body.c - request bodies to command payloads, If-Match and Idempotency-Key (see api_body.h).
 *
 * Invariant: a mapped payload holds exactly the fields of its table, each of its declared type,
 * within its caps; nothing from the body is copied unchecked. Reentrant, no I/O.
 */
#include "commands/api_body.h"

#include "commands/rules.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the bodies -------------------------------------------------------------------------- */

static const cstl_api_field job_parameters_fields[] = {
    {.name = "command", .type = CSTL_API_STRING_ARRAY, .required = true},
    {.name = "environment", .type = CSTL_API_STRING_MAP, .def = "{}"},
    {0},
};

const cstl_api_field cstl_api_submit_job_fields[] = {
    {.name = "name", .type = CSTL_API_STRING_NULL, .def = "null", .max = 255},
    {.name = "gpu_count", .type = CSTL_API_INT, .required = true},
    {.name = "min_gpu_memory_mib", .type = CSTL_API_LONG, .def = "0"},
    {.name = "gpu_model", .type = CSTL_API_STRING_NULL, .def = "null", .max = 255},
    {.name = "priority", .type = CSTL_API_INT, .def = "50"},
    {.name = "runtime_limit_seconds", .type = CSTL_API_LONG, .def = "3600"},
    {.name = "retry_limit", .type = CSTL_API_INT, .def = "0"},
    {.name = "labels", .type = CSTL_API_STRING_MAP, .def = "{}", .max = 64},
    {.name = "parameters",
     .type = CSTL_API_OBJECT,
     .required = true,
     .fields = job_parameters_fields},
    {0},
};

const cstl_api_field cstl_api_cancel_job_fields[] = {
    {.name = "reason", .type = CSTL_API_STRING_NULL, .def = "null", .max = 1024},
    {0},
};

const cstl_api_field cstl_api_change_priority_fields[] = {
    {.name = "priority", .type = CSTL_API_INT, .required = true},
    {0},
};

static const cstl_api_field gpu_fields[] = {
    {.name = "uuid", .type = CSTL_API_STRING, .required = true, .max = 128},
    {.name = "model", .type = CSTL_API_STRING, .required = true, .max = 255},
    {.name = "memory_mib", .type = CSTL_API_LONG, .required = true},
    {.name = "compute_capability", .type = CSTL_API_STRING, .required = true, .max = 16},
    {0},
};

const cstl_api_field cstl_api_register_worker_fields[] = {
    {.name = "worker_id", .type = CSTL_API_STRING, .max = 36},
    {.name = "hostname", .type = CSTL_API_STRING, .required = true, .max = 255},
    {.name = "gpus",
     .type = CSTL_API_OBJECT_ARRAY,
     .required = true,
     .max = 64,
     .fields = gpu_fields},
    {.name = "labels", .type = CSTL_API_STRING_MAP, .def = "{}", .max = 64},
    {0},
};

static const cstl_api_field gpu_telemetry_fields[] = {
    {.name = "uuid", .type = CSTL_API_STRING, .required = true, .max = 128},
    {.name = "utilization_percent",
     .type = CSTL_API_INT,
     .required = true,
     .has_range = true,
     .min = 0,
     .max_value = 100},
    {.name = "memory_used_mib",
     .type = CSTL_API_LONG,
     .required = true,
     .has_range = true,
     .min = 0,
     .max_value = INT64_C(1) << 40},
    {.name = "temperature_c",
     .type = CSTL_API_INT,
     .required = true,
     .has_range = true,
     .min = -100,
     .max_value = 200},
    {0},
};

const cstl_api_field cstl_api_heartbeat_fields[] = {
    {.name = "gpus",
     .type = CSTL_API_OBJECT_ARRAY,
     .required = true,
     .max = 64,
     .fields = gpu_telemetry_fields},
    {0},
};

const cstl_api_field cstl_api_start_run_fields[] = {
    {.name = "worker_id", .type = CSTL_API_STRING, .required = true, .max = 36},
    {.name = "started_at", .type = CSTL_API_LONG, .required = true},
    {0},
};

const cstl_api_field cstl_api_finish_run_fields[] = {
    {.name = "worker_id", .type = CSTL_API_STRING, .required = true, .max = 36},
    {.name = "outcome", .type = CSTL_API_STRING, .required = true, .max = 32},
    {.name = "exit_code", .type = CSTL_API_INT}, /* left out: null */
    {.name = "failure_reason", .type = CSTL_API_STRING_NULL, .def = "null", .max = 32},
    {.name = "finished_at", .type = CSTL_API_LONG, .required = true},
    {.name = "gpu_seconds", .type = CSTL_API_LONG, .required = true},
    {.name = "log_lines", .type = CSTL_API_LONG}, /* left out: null (not counted) */
    {0},
};

const cstl_api_field cstl_api_drain_gpu_fields[] = {
    {.name = "reason", .type = CSTL_API_STRING, .required = true, .max = 1024},
    {0},
};

const cstl_api_field cstl_api_resume_gpu_fields[] = {
    {0},
};

const cstl_api_field cstl_api_create_tenant_fields[] = {
    {.name = "name", .type = CSTL_API_STRING, .required = true, .max = 255},
    {.name = "contact_email", .type = CSTL_API_STRING, .required = true, .max = 320},
    {0},
};

const cstl_api_field cstl_api_issue_key_fields[] = {
    {.name = "role", .type = CSTL_API_STRING, .required = true, .max = 16},
    {.name = "expires_at", .type = CSTL_API_TIME_NULL, .def = "null"},
    {0},
};

/* ---- mapping ----------------------------------------------------------------------------- */

static int
field_error(cstl_api_field_error *fe, const char *path, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
field_error(cstl_api_field_error *fe, const char *path, const char *code, const char *fmt, ...)
{
    if (fe != NULL) {
        snprintf(fe->field, sizeof(fe->field), "%s", path);
        snprintf(fe->code, sizeof(fe->code), "%s", code);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fe->message, sizeof(fe->message), fmt, ap);
        va_end(ap);
    }
    return CSTL_EINVAL;
}

static int wrong_type(cstl_api_field_error *fe, const char *path, const char *want, const json_t *v)
{
    return field_error(fe, path, "invalid_type", "%s must be %s, got %s",
                       path[0] ? path : "the body", want, cstl_json_type_name(v));
}

static size_t cap_of(const cstl_api_field *f, size_t dflt)
{
    return f->max != 0 ? f->max : dflt;
}

static int
check_string(const cstl_api_field *f, const char *path, const json_t *v, cstl_api_field_error *fe)
{
    size_t len = json_string_length(v);
    size_t cap = cap_of(f, CSTL_API_STRING_MAX);
    if (len > cap)
        return field_error(fe, path, "invalid_length", "%s is %zu bytes long, the limit is %zu",
                           path, len, cap);
    if (strlen(json_string_value(v)) != len)
        return field_error(fe, path, "invalid_format", "%s contains a NUL character", path);
    return 0;
}

static int map_object(const cstl_api_field *fields,
                      const json_t *in,
                      json_t *out,
                      const char *prefix,
                      cstl_api_field_error *fe);

/* Maps one present value v of field f at path into a new reference in *res. */
static int map_value(
    const cstl_api_field *f, const char *path, json_t *v, json_t **res, cstl_api_field_error *fe)
{
    char sub[160];
    switch (f->type) {
    case CSTL_API_STRING_NULL:
        if (json_is_null(v)) {
            *res = json_null();
            return 0;
        }
        /* fall through */
    case CSTL_API_STRING:
        if (!json_is_string(v))
            return wrong_type(fe, path,
                              f->type == CSTL_API_STRING ? "a string" : "a string or null", v);
        if (check_string(f, path, v, fe) != 0)
            return CSTL_EINVAL;
        *res = json_incref(v);
        return 0;
    case CSTL_API_INT:
    case CSTL_API_LONG: {
        if (!json_is_integer(v))
            return wrong_type(fe, path, "an integer", v);
        json_int_t n = json_integer_value(v);
        if (f->type == CSTL_API_INT && (n < INT32_MIN || n > INT32_MAX))
            return field_error(fe, path, "out_of_range",
                               "%s must be from %" PRId32 " to %" PRId32
                               ", got %" JSON_INTEGER_FORMAT,
                               path, INT32_MIN, INT32_MAX, n);
        if (f->has_range && (n < f->min || n > f->max_value))
            return field_error(fe, path, "out_of_range",
                               "%s must be from %" PRId64 " to %" PRId64
                               ", got %" JSON_INTEGER_FORMAT,
                               path, f->min, f->max_value, n);
        *res = json_incref(v);
        return 0;
    }
    case CSTL_API_STRING_MAP: {
        if (!json_is_object(v))
            return wrong_type(fe, path, "an object of strings", v);
        size_t cap = cap_of(f, CSTL_API_ITEMS_MAX);
        if (json_object_size(v) > cap)
            return field_error(fe, path, "invalid_length", "%s has %zu entries, the limit is %zu",
                               path, json_object_size(v), cap);
        const char *k;
        json_t *item;
        static const cstl_api_field entry = {.type = CSTL_API_STRING, .max = 1024};
        json_object_foreach(v, k, item)
        {
            snprintf(sub, sizeof(sub), "%s.%s", path, k);
            if (strlen(k) == 0 || strlen(k) > 255)
                return field_error(fe, path, "invalid_length",
                                   "%s has a key of %zu bytes, keys are 1 to 255 bytes", path,
                                   strlen(k));
            if (!json_is_string(item))
                return wrong_type(fe, sub, "a string", item);
            if (check_string(&entry, sub, item, fe) != 0)
                return CSTL_EINVAL;
        }
        *res = json_incref(v);
        return 0;
    }
    case CSTL_API_STRING_ARRAY:
    case CSTL_API_OBJECT_ARRAY: {
        if (!json_is_array(v))
            return wrong_type(fe, path,
                              f->type == CSTL_API_STRING_ARRAY ? "an array of strings"
                                                               : "an array of objects",
                              v);
        size_t cap = cap_of(f, CSTL_API_ITEMS_MAX);
        if (json_array_size(v) > cap)
            return field_error(fe, path, "invalid_length", "%s has %zu items, the limit is %zu",
                               path, json_array_size(v), cap);
        json_t *arr = json_array();
        size_t i;
        json_t *item;
        static const cstl_api_field elem = {.type = CSTL_API_STRING};
        json_array_foreach(v, i, item)
        {
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            json_t *mapped = NULL;
            int rc;
            if (f->type == CSTL_API_STRING_ARRAY) {
                rc = map_value(&elem, sub, item, &mapped, fe);
            } else if (!json_is_object(item)) {
                rc = wrong_type(fe, sub, "an object", item);
            } else {
                mapped = json_object();
                rc = map_object(f->fields, item, mapped, sub, fe);
            }
            if (rc != 0) {
                json_decref(mapped);
                json_decref(arr);
                return rc;
            }
            json_array_append_new(arr, mapped);
        }
        *res = arr;
        return 0;
    }
    case CSTL_API_OBJECT: {
        if (!json_is_object(v))
            return wrong_type(fe, path, "an object", v);
        json_t *obj = json_object();
        if (map_object(f->fields, v, obj, path, fe) != 0) {
            json_decref(obj);
            return CSTL_EINVAL;
        }
        *res = obj;
        return 0;
    }
    case CSTL_API_TIME_NULL: {
        if (json_is_null(v)) {
            *res = json_null();
            return 0;
        }
        if (!json_is_string(v))
            return wrong_type(fe, path, "an RFC 3339 time string or null", v);
        int64_t us;
        if (cstl_api_time_parse(json_string_value(v), &us) != 0)
            return field_error(fe, path, "invalid_format",
                               "%s must be an RFC 3339 UTC time such as \"2027-01-31T12:00:00Z\", "
                               "got \"%.64s\"",
                               path, json_string_value(v));
        *res = json_integer(us);
        return 0;
    }
    }
    return field_error(fe, path, "internal", "%s has an unknown type", path);
}

static int map_object(const cstl_api_field *fields,
                      const json_t *in,
                      json_t *out,
                      const char *prefix,
                      cstl_api_field_error *fe)
{
    char path[160];
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v)
    {
        const cstl_api_field *f = fields;
        while (f->name != NULL && strcmp(f->name, k) != 0)
            f++;
        if (f->name == NULL) {
            snprintf(path, sizeof(path), "%s%s%.100s", prefix, prefix[0] ? "." : "", k);
            return field_error(fe, path, "unknown_field", "unknown field \"%.100s\"", path);
        }
    }
    for (const cstl_api_field *f = fields; f->name != NULL; f++) {
        snprintf(path, sizeof(path), "%s%s%s", prefix, prefix[0] ? "." : "", f->name);
        json_t *value = json_object_get(in, f->name);
        json_t *mapped = NULL;
        if (value == NULL) {
            if (f->required)
                return field_error(fe, path, "missing_field", "%s is required", path);
            if (f->def == NULL)
                continue;
            mapped = json_loads(f->def, JSON_DECODE_ANY, NULL);
            CSTL_ASSERT(mapped != NULL);
        } else if (map_value(f, path, value, &mapped, fe) != 0) {
            return CSTL_EINVAL;
        }
        json_object_set_new(out, f->name, mapped);
    }
    return 0;
}

int cstl_api_body_map(const cstl_api_field *fields,
                      const json_t *body,
                      json_t *out,
                      cstl_api_field_error *fe)
{
    if (!json_is_object(body))
        return field_error(fe, "", "invalid_type", "the body must be a JSON object, got %s",
                           cstl_json_type_name(body));
    return map_object(fields, body, out, "", fe);
}

int cstl_api_body_parse(const char *body, size_t len, json_t **out, cstl_error *err)
{
    size_t i = 0;
    while (i < len && isspace((unsigned char)body[i]))
        i++;
    if (i == len) {
        *out = json_object();
        return 0;
    }
    json_error_t je;
    json_t *v = json_loadb(body, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (v == NULL)
        return cstl_error_set(err, CSTL_EPARSE,
                              "the body is not valid JSON: %s at line %d column %d", je.text,
                              je.line, je.column);
    *out = v;
    return 0;
}

/* ---- headers ----------------------------------------------------------------------------- */

int cstl_api_if_match_parse(const char *header, int64_t *expected_version, cstl_error *err)
{
    *expected_version = -1;
    if (header == NULL)
        return 0;
    while (*header == ' ' || *header == '\t')
        header++;
    size_t len = strlen(header);
    while (len > 0 && (header[len - 1] == ' ' || header[len - 1] == '\t'))
        len--;
    if (len == 1 && header[0] == '*')
        return 0;
    int64_t v = 0;
    if (len < 3 || len > 20 || header[0] != '"' || header[len - 1] != '"')
        goto bad;
    for (size_t i = 1; i + 1 < len; i++) {
        if (!isdigit((unsigned char)header[i]))
            goto bad;
        v = v * 10 + (header[i] - '0');
    }
    *expected_version = v;
    return 0;
bad:
    return cstl_error_set(
        err, CSTL_EPARSE,
        "If-Match must be one entity tag holding a version, such as \"\\\"3\\\"\", "
        "got \"%.64s\"",
        header);
}

int cstl_api_idempotency_key_check(const char *key, cstl_error *err)
{
    size_t len = strlen(key);
    if (len == 0 || len > CSTL_API_IDEMPOTENCY_MAX)
        return cstl_error_set(err, CSTL_EPARSE,
                              "Idempotency-Key must be 1 to %d bytes long, got %zu bytes",
                              CSTL_API_IDEMPOTENCY_MAX, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c > 0x7e)
            return cstl_error_set(err, CSTL_EPARSE,
                                  "Idempotency-Key must be printable ASCII, got byte 0x%02x at "
                                  "position %zu",
                                  c, i);
    }
    return 0;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int cstl_api_time_parse(const char *text, int64_t *micros)
{
    int y, mo, d, h, mi, s;
    if (strlen(text) < 20 || digits(text, 4, &y) || text[4] != '-' || digits(text + 5, 2, &mo) ||
        text[7] != '-' || digits(text + 8, 2, &d) || (text[10] != 'T' && text[10] != 't') ||
        digits(text + 11, 2, &h) || text[13] != ':' || digits(text + 14, 2, &mi) ||
        text[16] != ':' || digits(text + 17, 2, &s))
        return CSTL_EPARSE;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59)
        return CSTL_EPARSE;
    const char *p = text + 19;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        while (isdigit((unsigned char)*p)) {
            if (n < 6)
                frac = frac * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0 || n > 9)
            return CSTL_EPARSE;
        for (; n < 6; n++)
            frac *= 10;
    }
    if (!((p[0] == 'Z' || p[0] == 'z') && p[1] == '\0') && strcmp(p, "+00:00") != 0)
        return CSTL_EPARSE;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap))
        return CSTL_EPARSE;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = s};
    time_t t = timegm(&tm);
    *micros = (int64_t)t * 1000000 + frac;
    return 0;
}
