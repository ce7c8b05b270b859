/*
 * rules.c - stateless command rules (see rules.h and docs/commands.md for the table of limits).
 *
 * Every check stops at the first offending field, in the order of the command's schema, so a
 * client fixing one error at a time converges. Field paths use dots for record fields and map
 * keys and [i] for array items. Values quoted in messages are cut at 64 bytes.
 */
#include "commands/rules.h"

#include "platform/id.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define PATH_MAX_LEN 64
#define QUOTE_MAX    64

/* ---- messages ---------------------------------------------------------------------------- */

/* Writes the value as a quoted, cut string for a message. */
static const char *quote(const char *s, char out[QUOTE_MAX + 8])
{
    if (s == NULL)
        return "null";
    size_t n = strlen(s);
    if (n <= QUOTE_MAX)
        snprintf(out, QUOTE_MAX + 8, "\"%s\"", s);
    else
        snprintf(out, QUOTE_MAX + 8, "\"%.*s...\"", QUOTE_MAX, s);
    return out;
}

const char *cstl_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

static int wrong_type(cstl_decision *d, const char *path, const char *want, const json_t *got)
{
    return cstl_decision_reject(d, CSTL_REJECT_INVALID, "invalid_type", path,
                                "%s must be %s, got %s", path, want, cstl_json_type_name(got));
}

static int
bad_length(cstl_decision *d, const char *path, size_t lo, size_t hi, size_t got, const char *unit)
{
    if (lo == 0)
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "invalid_length", path,
                                    "%s must have at most %zu %s, got %zu", path, hi, unit, got);
    return cstl_decision_reject(d, CSTL_REJECT_INVALID, "invalid_length", path,
                                "%s must have from %zu to %zu %s, got %zu", path, lo, hi, unit,
                                got);
}

/* Paths longer than the decision's field are cut: they only locate the error. */
static void join(char out[PATH_MAX_LEN], const char *prefix, const char *name)
{
    int n = snprintf(out, PATH_MAX_LEN, "%s.%s", prefix, name);
    if (n >= PATH_MAX_LEN)
        out[PATH_MAX_LEN - 1] = '\0';
}

static void index_path(char out[PATH_MAX_LEN], const char *path, size_t i)
{
    int n = snprintf(out, PATH_MAX_LEN, "%s[%zu]", path, i);
    if (n >= PATH_MAX_LEN)
        out[PATH_MAX_LEN - 1] = '\0';
}

/* ---- field getters: each returns 0 (with *out set, NULL for an absent or null optional) or -1 */

static int get_field(cstl_decision *d,
                     const json_t *obj,
                     const char *path,
                     const char *name,
                     int optional,
                     const json_t **out)
{
    const json_t *v = json_object_get(obj, name);
    if (v == NULL || json_is_null(v)) {
        *out = NULL;
        if (optional)
            return 0;
        cstl_decision_reject(d, CSTL_REJECT_INVALID, "missing_field", path, "%s is required", path);
        return -1;
    }
    *out = v;
    return 0;
}

/* A string of lo..hi bytes. */
static int str_field(cstl_decision *d,
                     const json_t *obj,
                     const char *name,
                     size_t lo,
                     size_t hi,
                     int optional,
                     const char **out)
{
    const json_t *v;
    *out = NULL;
    if (get_field(d, obj, name, name, optional, &v) < 0)
        return -1;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return wrong_type(d, name, "a string", v);
    size_t n = json_string_length(v);
    if (n < lo || n > hi)
        return bad_length(d, name, lo, hi, n, "bytes");
    *out = json_string_value(v);
    return 0;
}

static int int_range(cstl_decision *d, const char *path, json_int_t x, json_int_t lo, json_int_t hi)
{
    if (x >= lo && x <= hi)
        return 0;
    if (hi == INT64_MAX)
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "out_of_range", path,
                                    "%s must be at least %lld, got %lld", path, (long long)lo,
                                    (long long)x);
    return cstl_decision_reject(d, CSTL_REJECT_INVALID, "out_of_range", path,
                                "%s must be from %lld to %lld, got %lld", path, (long long)lo,
                                (long long)hi, (long long)x);
}

/* An integer in lo..hi. *present is 0 for an absent or null optional. */
static int int_field(cstl_decision *d,
                     const json_t *obj,
                     const char *name,
                     json_int_t lo,
                     json_int_t hi,
                     int optional,
                     json_int_t *out)
{
    const json_t *v;
    *out = 0;
    if (get_field(d, obj, name, name, optional, &v) < 0)
        return -1;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return wrong_type(d, name, "an integer", v);
    *out = json_integer_value(v);
    return int_range(d, name, *out, lo, hi);
}

static int uuid_value(cstl_decision *d, const char *path, const json_t *v)
{
    char q[QUOTE_MAX + 8];
    if (!json_is_string(v))
        return wrong_type(d, path, "a string", v);
    if (!cstl_uuid_valid(json_string_value(v)))
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "invalid_format", path,
                                    "%s must be a uuid, got %s", path,
                                    quote(json_string_value(v), q));
    return 0;
}

static int uuid_field(cstl_decision *d, const json_t *obj, const char *name)
{
    const json_t *v;
    if (get_field(d, obj, name, name, 0, &v) < 0)
        return -1;
    return uuid_value(d, name, v);
}

static int enum_field(cstl_decision *d,
                      const json_t *obj,
                      const char *name,
                      const char *const *symbols,
                      size_t n,
                      int optional)
{
    const json_t *v;
    char q[QUOTE_MAX + 8];
    if (get_field(d, obj, name, name, optional, &v) < 0)
        return -1;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return wrong_type(d, name, "a string", v);
    for (size_t i = 0; i < n; i++)
        if (strcmp(symbols[i], json_string_value(v)) == 0)
            return 0;
    char list[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < n && used < sizeof(list); i++)
        used +=
            (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", symbols[i]);
    return cstl_decision_reject(d, CSTL_REJECT_INVALID, "invalid_value", name,
                                "%s must be one of %s, got %s", name, list,
                                quote(json_string_value(v), q));
}

/* ---- value formats ----------------------------------------------------------------------- */

static int printable(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

static int bad_format(cstl_decision *d, const char *path, const char *what, const char *value)
{
    char q[QUOTE_MAX + 8];
    return cstl_decision_reject(d, CSTL_REJECT_INVALID, "invalid_format", path,
                                "%s must be %s, got %s", path, what, quote(value, q));
}

static int gpu_uuid_ok(const char *s)
{
    if (s == NULL)
        return 0;
    size_t n = strlen(s);
    if (n < 1 || n > CSTL_GPU_UUID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-')
            return 0;
    return 1;
}

static int label_key_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '/' || c == '-'))
            return 0;
    }
    return 1;
}

static int env_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 128)
        return 0;
    if (!isalpha((unsigned char)s[0]) && s[0] != '_')
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

static int hostname_ok(const char *s)
{
    if (s == NULL)
        return 0;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
            return 0;
    return 1;
}

/* digits.digits, each part 1..3 digits: "9.0", "10.0" */
static int compute_capability_ok(const char *s)
{
    size_t a = strspn(s, "0123456789");
    if (a < 1 || a > 3 || s[a] != '.')
        return 0;
    size_t b = strspn(s + a + 1, "0123456789");
    return b >= 1 && b <= 3 && s[a + 1 + b] == '\0';
}

/* One @, a non-empty local part, a domain with a dot neither first nor last, no spaces. */
static int email_ok(const char *s)
{
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || strchr(at + 1, '@') != NULL)
        return 0;
    const char *domain = at + 1;
    size_t n = strlen(domain);
    const char *dot = strchr(domain, '.');
    if (n < 3 || dot == NULL || domain[0] == '.' || domain[n - 1] == '.')
        return 0;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

static int hex64_ok(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

/* ---- composite values -------------------------------------------------------------------- */

/* A map of labels: at most 32, keys 1..63 bytes of [a-z0-9._/-], values at most 256 bytes. */
static int labels_field(cstl_decision *d, const json_t *obj, const char *name)
{
    const json_t *m;
    char path[PATH_MAX_LEN];
    if (get_field(d, obj, name, name, 0, &m) < 0)
        return -1;
    if (!json_is_object(m))
        return wrong_type(d, name, "an object", m);
    if (json_object_size(m) > 32)
        return bad_length(d, name, 0, 32, json_object_size(m), "entries");
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)m, key, value)
    {
        join(path, name, key);
        if (!label_key_ok(key))
            return bad_format(d, path, "a key of 1 to 63 bytes of [a-z0-9._/-]", key);
        if (!json_is_string(value))
            return wrong_type(d, path, "a string", value);
        if (json_string_length(value) > 256)
            return bad_length(d, path, 0, 256, json_string_length(value), "bytes");
    }
    return 0;
}

static int parameters_field(cstl_decision *d, const json_t *obj)
{
    const json_t *p, *cmd, *env;
    char path[PATH_MAX_LEN];
    if (get_field(d, obj, "parameters", "parameters", 0, &p) < 0)
        return -1;
    if (!json_is_object(p))
        return wrong_type(d, "parameters", "an object", p);

    if (get_field(d, p, "parameters.command", "command", 0, &cmd) < 0)
        return -1;
    if (!json_is_array(cmd))
        return wrong_type(d, "parameters.command", "an array", cmd);
    size_t n = json_array_size(cmd);
    if (n < 1 || n > 256)
        return bad_length(d, "parameters.command", 1, 256, n, "entries");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *arg = json_array_get(cmd, i);
        index_path(path, "parameters.command", i);
        if (!json_is_string(arg))
            return wrong_type(d, path, "a string", arg);
        if (json_string_length(arg) > 4096)
            return bad_length(d, path, 0, 4096, json_string_length(arg), "bytes");
        total += json_string_length(arg);
    }
    if (total > 65536)
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "invalid_length", "parameters.command",
                                    "parameters.command must have at most 65536 bytes in all, "
                                    "got %zu",
                                    total);

    if (get_field(d, p, "parameters.environment", "environment", 0, &env) < 0)
        return -1;
    if (!json_is_object(env))
        return wrong_type(d, "parameters.environment", "an object", env);
    if (json_object_size(env) > 128)
        return bad_length(d, "parameters.environment", 0, 128, json_object_size(env), "entries");
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)env, key, value)
    {
        join(path, "parameters.environment", key);
        if (!env_name_ok(key))
            return bad_format(d, path, "a name of 1 to 128 bytes of [A-Za-z_][A-Za-z0-9_]*", key);
        if (!json_is_string(value))
            return wrong_type(d, path, "a string", value);
        if (json_string_length(value) > 4096)
            return bad_length(d, path, 0, 4096, json_string_length(value), "bytes");
    }
    return 0;
}

/* An array of 1..64 distinct GPU UUIDs. */
static int gpu_uuids_field(cstl_decision *d, const json_t *obj, const char *name)
{
    const json_t *a;
    char path[PATH_MAX_LEN];
    if (get_field(d, obj, name, name, 0, &a) < 0)
        return -1;
    if (!json_is_array(a))
        return wrong_type(d, name, "an array", a);
    size_t n = json_array_size(a);
    if (n < 1 || n > CSTL_WORKER_MAX_GPUS)
        return bad_length(d, name, 1, CSTL_WORKER_MAX_GPUS, n, "entries");
    for (size_t i = 0; i < n; i++) {
        const json_t *u = json_array_get(a, i);
        index_path(path, name, i);
        if (!json_is_string(u))
            return wrong_type(d, path, "a string", u);
        if (!gpu_uuid_ok(json_string_value(u)))
            return bad_format(d, path, "a gpu uuid of 1 to 64 bytes of [A-Za-z0-9-]",
                              json_string_value(u));
        for (size_t k = 0; k < i; k++)
            if (strcmp(json_string_value(json_array_get(a, k)), json_string_value(u)) == 0) {
                char q[QUOTE_MAX + 8];
                return cstl_decision_reject(d, CSTL_REJECT_INVALID, "duplicate_value", path,
                                            "%s repeats %s", path, quote(json_string_value(u), q));
            }
    }
    return 0;
}

static int gpu_uuid_field(cstl_decision *d, const json_t *obj, const char *name)
{
    const char *s;
    if (str_field(d, obj, name, 1, CSTL_GPU_UUID_MAX, 0, &s) < 0)
        return -1;
    if (!gpu_uuid_ok(s))
        return bad_format(d, name, "a gpu uuid of 1 to 64 bytes of [A-Za-z0-9-]", s);
    return 0;
}

static int reason_field(cstl_decision *d, const json_t *obj, const char *name, int optional)
{
    const char *s;
    return str_field(d, obj, name, 0, CSTL_REASON_MAX, optional, &s);
}

static int timestamp_field(cstl_decision *d, const json_t *obj, const char *name, int optional)
{
    json_int_t x;
    return int_field(d, obj, name, 0, INT64_MAX, optional, &x);
}

/* ---- tenants ----------------------------------------------------------------------------- */

static const char *const ROLES[] = {"admin", "member", "viewer", "worker", "agent"};

static int v_create_tenant(const json_t *p, cstl_decision *d)
{
    const char *s;
    if (uuid_field(d, p, "tenant_id") < 0 || str_field(d, p, "name", 1, 128, 0, &s) < 0)
        return -1;
    if (!printable(s))
        return bad_format(d, "name", "printable (no control characters)", s);
    if (str_field(d, p, "contact_email", 1, 254, 0, &s) < 0)
        return -1;
    if (!email_ok(s))
        return bad_format(d, "contact_email", "an email address (one @ and a dot in the domain)",
                          s);
    return 0;
}

static int v_suspend_tenant(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "tenant_id") < 0)
        return -1;
    return reason_field(d, p, "reason", 0);
}

static int v_issue_api_key(const json_t *p, cstl_decision *d)
{
    const char *s;
    if (uuid_field(d, p, "tenant_id") < 0 || uuid_field(d, p, "key_id") < 0 ||
        str_field(d, p, "key_hash", 0, SIZE_MAX, 0, &s) < 0)
        return -1;
    if (!hex64_ok(s))
        return bad_format(d, "key_hash", "64 lower-case hex digits", s);
    if (enum_field(d, p, "role", ROLES, CSTL_ARRAY_LEN(ROLES), 0) < 0)
        return -1;
    return timestamp_field(d, p, "expires_at", 1);
}

static int v_revoke_api_key(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "tenant_id") < 0)
        return -1;
    return uuid_field(d, p, "key_id");
}

/* ---- jobs -------------------------------------------------------------------------------- */

static const char *const REJECT_REASONS[] = {"INSUFFICIENT_CREDITS", "TENANT_SUSPENDED",
                                             "NO_MATCHING_GPU",      "QUOTA_EXCEEDED",
                                             "INVALID_REQUEST",      "OTHER"};
static const char *const OUTCOMES[] = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"};
static const char *const FAILURE_REASONS[] = {"NONZERO_EXIT", "SIGNALLED",   "OUT_OF_MEMORY",
                                              "GPU_ERROR",    "WORKER_LOST", "LAUNCH_FAILED",
                                              "OTHER"};

static int v_submit_job(const json_t *p, cstl_decision *d)
{
    const char *s;
    json_int_t x;
    if (uuid_field(d, p, "job_id") < 0 || uuid_field(d, p, "tenant_id") < 0 ||
        str_field(d, p, "name", 0, 128, 1, &s) < 0)
        return -1;
    if (s != NULL && !printable(s))
        return bad_format(d, "name", "printable (no control characters)", s);
    if (int_field(d, p, "gpu_count", 1, CSTL_JOB_MAX_GPUS, 0, &x) < 0 ||
        int_field(d, p, "min_gpu_memory_mib", 0, CSTL_JOB_MAX_GPU_MEMORY, 0, &x) < 0 ||
        str_field(d, p, "gpu_model", 1, 64, 1, &s) < 0 ||
        int_field(d, p, "priority", 0, CSTL_JOB_MAX_PRIORITY, 0, &x) < 0 ||
        int_field(d, p, "runtime_limit_seconds", 1, CSTL_JOB_MAX_RUNTIME, 0, &x) < 0 ||
        int_field(d, p, "retry_limit", 0, CSTL_JOB_MAX_RETRIES, 0, &x) < 0 ||
        labels_field(d, p, "labels") < 0)
        return -1;
    return parameters_field(d, p);
}

static int v_admit_job(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "job_id") < 0)
        return -1;
    return uuid_field(d, p, "reservation_id");
}

static int v_reject_job(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "job_id") < 0 ||
        enum_field(d, p, "reason", REJECT_REASONS, CSTL_ARRAY_LEN(REJECT_REASONS), 0) < 0)
        return -1;
    return reason_field(d, p, "message", 1);
}

static int v_change_priority(const json_t *p, cstl_decision *d)
{
    json_int_t x;
    if (uuid_field(d, p, "job_id") < 0)
        return -1;
    return int_field(d, p, "priority", 0, CSTL_JOB_MAX_PRIORITY, 0, &x);
}

static int v_cancel_job(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "job_id") < 0)
        return -1;
    return reason_field(d, p, "reason", 1);
}

static int v_assign_job(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "job_id") < 0 || uuid_field(d, p, "worker_id") < 0 ||
        uuid_field(d, p, "run_id") < 0)
        return -1;
    return gpu_uuids_field(d, p, "gpu_uuids");
}

static int v_start_run(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "job_id") < 0 || uuid_field(d, p, "run_id") < 0)
        return -1;
    return timestamp_field(d, p, "started_at", 0);
}

static int v_finish_run(const json_t *p, cstl_decision *d)
{
    json_int_t x;
    if (uuid_field(d, p, "job_id") < 0 || uuid_field(d, p, "run_id") < 0 ||
        enum_field(d, p, "outcome", OUTCOMES, CSTL_ARRAY_LEN(OUTCOMES), 0) < 0 ||
        int_field(d, p, "exit_code", INT32_MIN, INT32_MAX, 1, &x) < 0 ||
        enum_field(d, p, "failure_reason", FAILURE_REASONS, CSTL_ARRAY_LEN(FAILURE_REASONS), 1) <
            0 ||
        timestamp_field(d, p, "finished_at", 0) < 0 ||
        int_field(d, p, "gpu_seconds", 0, INT64_MAX, 0, &x) < 0 ||
        int_field(d, p, "log_lines", 0, INT64_MAX, 1, &x) < 0)
        return -1;
    /* the outcome and the failure reason must tell one story */
    const char *outcome = json_string_value(json_object_get(p, "outcome"));
    const json_t *reason = json_object_get(p, "failure_reason");
    int has_reason = reason != NULL && !json_is_null(reason);
    if (strcmp(outcome, "SUCCEEDED") == 0 && has_reason)
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "invalid_value", "failure_reason",
                                    "failure_reason must be null when outcome is SUCCEEDED, got "
                                    "\"%s\"",
                                    json_string_value(reason));
    if (strcmp(outcome, "FAILED") == 0 && !has_reason)
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "missing_field", "failure_reason",
                                    "failure_reason is required when outcome is FAILED");
    return 0;
}

static int v_requeue_job(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "job_id") < 0 || uuid_field(d, p, "run_id") < 0)
        return -1;
    return reason_field(d, p, "reason", 0);
}

static int v_time_out_job(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "job_id") < 0)
        return -1;
    return uuid_field(d, p, "run_id");
}

/* ---- fleet ------------------------------------------------------------------------------- */

static int v_register_worker(const json_t *p, cstl_decision *d)
{
    const char *s;
    const json_t *gpus;
    char path[PATH_MAX_LEN], fpath[PATH_MAX_LEN];
    if (uuid_field(d, p, "worker_id") < 0 || str_field(d, p, "hostname", 1, 253, 0, &s) < 0)
        return -1;
    if (!hostname_ok(s))
        return bad_format(d, "hostname", "a host name of [A-Za-z0-9._-]", s);
    if (get_field(d, p, "gpus", "gpus", 0, &gpus) < 0)
        return -1;
    if (!json_is_array(gpus))
        return wrong_type(d, "gpus", "an array", gpus);
    size_t n = json_array_size(gpus);
    if (n < 1 || n > CSTL_WORKER_MAX_GPUS)
        return bad_length(d, "gpus", 1, CSTL_WORKER_MAX_GPUS, n, "entries");
    for (size_t i = 0; i < n; i++) {
        const json_t *g = json_array_get(gpus, i);
        const json_t *v;
        index_path(path, "gpus", i);
        if (!json_is_object(g))
            return wrong_type(d, path, "an object", g);

        join(fpath, path, "uuid");
        if (get_field(d, g, fpath, "uuid", 0, &v) < 0)
            return -1;
        if (!json_is_string(v))
            return wrong_type(d, fpath, "a string", v);
        if (!gpu_uuid_ok(json_string_value(v)))
            return bad_format(d, fpath, "a gpu uuid of 1 to 64 bytes of [A-Za-z0-9-]",
                              json_string_value(v));
        for (size_t k = 0; k < i; k++) {
            const char *other = json_string_value(json_object_get(json_array_get(gpus, k), "uuid"));
            if (strcmp(other, json_string_value(v)) == 0) {
                char q[QUOTE_MAX + 8];
                return cstl_decision_reject(d, CSTL_REJECT_INVALID, "duplicate_value", fpath,
                                            "%s repeats %s", fpath, quote(json_string_value(v), q));
            }
        }

        join(fpath, path, "model");
        if (get_field(d, g, fpath, "model", 0, &v) < 0)
            return -1;
        if (!json_is_string(v))
            return wrong_type(d, fpath, "a string", v);
        if (json_string_length(v) < 1 || json_string_length(v) > 64)
            return bad_length(d, fpath, 1, 64, json_string_length(v), "bytes");

        join(fpath, path, "memory_mib");
        if (get_field(d, g, fpath, "memory_mib", 0, &v) < 0)
            return -1;
        if (!json_is_integer(v))
            return wrong_type(d, fpath, "an integer", v);
        if (int_range(d, fpath, json_integer_value(v), 1, CSTL_JOB_MAX_GPU_MEMORY) < 0)
            return -1;

        join(fpath, path, "compute_capability");
        if (get_field(d, g, fpath, "compute_capability", 0, &v) < 0)
            return -1;
        if (!json_is_string(v))
            return wrong_type(d, fpath, "a string", v);
        if (!compute_capability_ok(json_string_value(v)))
            return bad_format(d, fpath, "major.minor digits like \"9.0\"", json_string_value(v));
    }
    return labels_field(d, p, "labels");
}

static int v_gpus_for_job(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "worker_id") < 0 || uuid_field(d, p, "job_id") < 0)
        return -1;
    return gpu_uuids_field(d, p, "gpu_uuids");
}

static int v_drain_gpu(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "worker_id") < 0 || gpu_uuid_field(d, p, "gpu_uuid") < 0)
        return -1;
    return reason_field(d, p, "reason", 0);
}

static int v_resume_gpu(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "worker_id") < 0)
        return -1;
    return gpu_uuid_field(d, p, "gpu_uuid");
}

static int v_mark_worker_lost(const json_t *p, cstl_decision *d)
{
    if (uuid_field(d, p, "worker_id") < 0)
        return -1;
    return timestamp_field(d, p, "last_heartbeat_at", 0);
}

static int v_deregister_worker(const json_t *p, cstl_decision *d)
{
    return uuid_field(d, p, "worker_id");
}

/* ---- table ------------------------------------------------------------------------------- */

static const struct rule {
    const char *context;
    const char *type;
    int (*check)(const json_t *payload, cstl_decision *d);
} RULES[] = {
    {"tenants", "CreateTenant", v_create_tenant},
    {"tenants", "SuspendTenant", v_suspend_tenant},
    {"tenants", "IssueApiKey", v_issue_api_key},
    {"tenants", "RevokeApiKey", v_revoke_api_key},
    {"jobs", "SubmitJob", v_submit_job},
    {"jobs", "AdmitJob", v_admit_job},
    {"jobs", "RejectJob", v_reject_job},
    {"jobs", "ChangeJobPriority", v_change_priority},
    {"jobs", "CancelJob", v_cancel_job},
    {"jobs", "AssignJob", v_assign_job},
    {"jobs", "StartRun", v_start_run},
    {"jobs", "FinishRun", v_finish_run},
    {"jobs", "RequeueJob", v_requeue_job},
    {"jobs", "TimeOutJob", v_time_out_job},
    {"fleet", "RegisterWorker", v_register_worker},
    {"fleet", "ReserveGpus", v_gpus_for_job},
    {"fleet", "ReleaseGpus", v_gpus_for_job},
    {"fleet", "DrainGpu", v_drain_gpu},
    {"fleet", "ResumeGpu", v_resume_gpu},
    {"fleet", "MarkWorkerLost", v_mark_worker_lost},
    {"fleet", "DeregisterWorker", v_deregister_worker},
};

static const struct rule *find_rule(const char *context, const char *type)
{
    if (context == NULL || type == NULL)
        return NULL;
    for (size_t i = 0; i < CSTL_ARRAY_LEN(RULES); i++)
        if (strcmp(RULES[i].context, context) == 0 && strcmp(RULES[i].type, type) == 0)
            return &RULES[i];
    return NULL;
}

int cstl_command_known(const char *context, const char *command_type)
{
    return find_rule(context, command_type) != NULL;
}

int cstl_command_validate(const char *context,
                          const char *command_type,
                          const json_t *payload,
                          cstl_decision *d)
{
    const struct rule *r = find_rule(context, command_type);
    char q[QUOTE_MAX + 8];
    if (r == NULL)
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "unknown_command", "",
                                    "%s has no command %s", context ? context : "(null)",
                                    quote(command_type ? command_type : "", q));
    if (payload == NULL || !json_is_object(payload))
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "invalid_type", "",
                                    "the command must be a json object");
    return r->check(payload, d) < 0 ? -1 : 0;
}
