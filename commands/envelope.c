/*
 * envelope.c - CommandEnvelope and CommandReply to and from Avro (see envelope.h).
 *
 * Values are built and read field by field with avro-c's generic value API on the catalog's
 * current schemas; the codec does the single-object framing and the bounded decoding. The order
 * of cstl_cmd_outcome is the order of the CommandOutcome enum symbols.
 */
#include "commands/envelope.h"

#include "platform/events.h"
#include "platform/id.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cstl_schema_entry *schema(const char *name)
{
    const cstl_schema_entry *e = cstl_schema_catalog_find(cstl_schema_catalog_get(), name);
    if (e == NULL)
        cstl_panic("schema \"%s\" is not compiled in", name);
    return e;
}

/* ---- writing ------------------------------------------------------------------------------- */

static int set_str(avro_value_t *rec, const char *name, const char *s)
{
    avro_value_t f;
    if (avro_value_get_by_name(rec, name, &f, NULL) != 0)
        return -1;
    return avro_value_set_string(&f, s);
}

/* A ["null", T] union: null when isnull, else branch 1 (returned in *branch). */
static int set_opt(avro_value_t *rec, const char *name, int isnull, avro_value_t *branch)
{
    avro_value_t f;
    if (avro_value_get_by_name(rec, name, &f, NULL) != 0)
        return -1;
    avro_value_t b;
    if (isnull)
        return avro_value_set_branch(&f, 0, &b) != 0 ? -1 : avro_value_set_null(&b);
    return avro_value_set_branch(&f, 1, branch);
}

static int set_opt_str(avro_value_t *rec, const char *name, const char *s)
{
    avro_value_t b;
    int isnull = s == NULL || *s == '\0';
    if (set_opt(rec, name, isnull, &b) != 0)
        return -1;
    return isnull ? 0 : avro_value_set_string(&b, s);
}

static int set_opt_long(avro_value_t *rec, const char *name, int64_t v, int isnull)
{
    avro_value_t b;
    if (set_opt(rec, name, isnull, &b) != 0)
        return -1;
    return isnull ? 0 : avro_value_set_long(&b, v);
}

static int set_long(avro_value_t *rec, const char *name, int64_t v)
{
    avro_value_t f;
    if (avro_value_get_by_name(rec, name, &f, NULL) != 0)
        return -1;
    return avro_value_set_long(&f, v);
}

int cstl_cmd_envelope_encode(const cstl_cmd_envelope *env, cstl_codec_buf *out, cstl_error *err)
{
    const cstl_schema_entry *e = schema("common.CommandEnvelope");
    avro_value_t v;
    if (cstl_codec_value_new(e, &v) != 0)
        return cstl_error_set(err, CSTL_ENOMEM, "cannot make a command envelope value");
    int rc = 0;
    avro_value_t payload;
    if (set_str(&v, "command_id", env->command_id) != 0 ||
        set_str(&v, "tenant_id", env->tenant_id) != 0 ||
        set_str(&v, "command_type", env->command_type) != 0 ||
        set_str(&v, "aggregate_id", env->aggregate_id) != 0 ||
        set_opt_long(&v, "expected_version", env->expected_version, env->expected_version < 0) !=
            0 ||
        set_long(&v, "issued_at", env->issued_at_us) != 0 ||
        set_str(&v, "issued_by", env->issued_by) != 0 ||
        set_str(&v, "correlation_id", env->correlation_id) != 0 ||
        set_opt_str(&v, "reply_to", env->reply_to) != 0 ||
        set_opt_str(&v, "traceparent", env->traceparent) != 0 ||
        avro_value_get_by_name(&v, "payload", &payload, NULL) != 0 ||
        avro_value_set_bytes(&payload, env->payload_len ? env->payload : (void *)"",
                             env->payload_len) != 0)
        rc = cstl_error_set(err, CSTL_EINVAL, "cannot build command envelope: %s", avro_strerror());
    if (rc == 0)
        rc = cstl_codec_encode(e, &v, out, err);
    avro_value_decref(&v);
    return rc;
}

int cstl_cmd_reply_encode(const cstl_cmd_reply_record *rec, cstl_codec_buf *out, cstl_error *err)
{
    const cstl_schema_entry *e = schema("common.CommandReply");
    const cstl_cmd_reply *r = &rec->reply;
    avro_value_t v, f, item;
    if (cstl_codec_value_new(e, &v) != 0)
        return cstl_error_set(err, CSTL_ENOMEM, "cannot make a command reply value");
    int rc = 0;
    if (set_str(&v, "command_id", r->command_id) != 0 ||
        set_str(&v, "tenant_id", rec->tenant_id != NULL ? rec->tenant_id : "") != 0 ||
        avro_value_get_by_name(&v, "outcome", &f, NULL) != 0 ||
        avro_value_set_enum(&f, (int)r->outcome) != 0 ||
        set_str(&v, "aggregate_id", r->aggregate_id) != 0 ||
        set_opt_long(&v, "version", r->version, r->version < 0) != 0 ||
        set_opt_str(&v, "error_code", r->error_code) != 0 ||
        set_opt_str(&v, "error_message", r->error_message) != 0 ||
        set_long(&v, "handled_at", r->handled_at_us) != 0 ||
        avro_value_get_by_name(&v, "event_ids", &f, NULL) != 0) {
        cstl_error_set(err, CSTL_EINVAL, "cannot build command reply: %s", avro_strerror());
        rc = CSTL_EINVAL;
    }
    for (int i = 0; rc == 0 && i < rec->n_event_ids; i++)
        if (avro_value_append(&f, &item, NULL) != 0 ||
            avro_value_set_string(&item, rec->event_ids[i]) != 0)
            rc =
                cstl_error_set(err, CSTL_EINVAL, "cannot build command reply: %s", avro_strerror());
    if (rc == 0)
        rc = cstl_codec_encode(e, &v, out, err);
    avro_value_decref(&v);
    return rc;
}

/* ---- reading ------------------------------------------------------------------------------- */

/* Copies a string field into out[cap]; CSTL_EDECODE when it does not fit or is empty and must
 * not be. */
static int get_str(avro_value_t *rec,
                   const char *what,
                   const char *name,
                   char *out,
                   size_t cap,
                   int allow_empty,
                   cstl_error *err)
{
    avro_value_t f;
    const char *s = NULL;
    size_t n = 0;
    if (avro_value_get_by_name(rec, name, &f, NULL) != 0 || avro_value_get_string(&f, &s, &n) != 0)
        return cstl_error_set(err, CSTL_EDECODE, "%s has no field \"%s\"", what, name);
    size_t len = n > 0 ? n - 1 : 0; /* avro-c counts the NUL */
    if (len >= cap || memchr(s, '\0', len) != NULL)
        return cstl_error_set(err, CSTL_EDECODE,
                              "%s field \"%s\" is too long (%zu bytes, at most %zu)", what, name,
                              len, cap - 1);
    if (len == 0 && !allow_empty)
        return cstl_error_set(err, CSTL_EDECODE, "%s field \"%s\" is empty", what, name);
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

/* A ["null", T] union: *branch set and 1 when not null, 0 when null, -1 on error. */
static int get_opt(avro_value_t *rec, const char *name, avro_value_t *branch)
{
    avro_value_t f;
    int d = 0;
    if (avro_value_get_by_name(rec, name, &f, NULL) != 0 ||
        avro_value_get_discriminant(&f, &d) != 0 || avro_value_get_current_branch(&f, branch) != 0)
        return -1;
    return d == 0 ? 0 : 1;
}

static int get_opt_str(
    avro_value_t *rec, const char *what, const char *name, char *out, size_t cap, cstl_error *err)
{
    avro_value_t b;
    int has = get_opt(rec, name, &b);
    if (has < 0)
        return cstl_error_set(err, CSTL_EDECODE, "%s has no field \"%s\"", what, name);
    out[0] = '\0';
    if (has == 0)
        return 0;
    const char *s = NULL;
    size_t n = 0;
    if (avro_value_get_string(&b, &s, &n) != 0)
        return cstl_error_set(err, CSTL_EDECODE, "%s field \"%s\" is not a string", what, name);
    size_t len = n > 0 ? n - 1 : 0;
    if (len >= cap || memchr(s, '\0', len) != NULL)
        return cstl_error_set(err, CSTL_EDECODE,
                              "%s field \"%s\" is too long (%zu bytes, at most %zu)", what, name,
                              len, cap - 1);
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

static int
get_opt_long(avro_value_t *rec, const char *what, const char *name, int64_t *out, cstl_error *err)
{
    avro_value_t b;
    int has = get_opt(rec, name, &b);
    if (has < 0)
        return cstl_error_set(err, CSTL_EDECODE, "%s has no field \"%s\"", what, name);
    *out = -1;
    if (has == 1 && avro_value_get_long(&b, out) != 0)
        return cstl_error_set(err, CSTL_EDECODE, "%s field \"%s\" is not a long", what, name);
    return 0;
}

static int
get_long(avro_value_t *rec, const char *what, const char *name, int64_t *out, cstl_error *err)
{
    avro_value_t f;
    if (avro_value_get_by_name(rec, name, &f, NULL) != 0 || avro_value_get_long(&f, out) != 0)
        return cstl_error_set(err, CSTL_EDECODE, "%s has no field \"%s\"", what, name);
    return 0;
}

static int check_uuid(const char *what, const char *name, const char *value, cstl_error *err)
{
    if (cstl_uuid_valid(value))
        return 0;
    return cstl_error_set(err, CSTL_EDECODE, "%s field \"%s\" is not a uuid: \"%.40s\"", what, name,
                          value);
}

void cstl_cmd_envelope_clear(cstl_cmd_envelope *env)
{
    free(env->payload);
    memset(env, 0, sizeof(*env));
}

int cstl_cmd_envelope_decode(const void *data, size_t len, cstl_cmd_envelope *env, cstl_error *err)
{
    static const char what[] = "command envelope";
    const cstl_schema_entry *e = schema("common.CommandEnvelope");
    memset(env, 0, sizeof(*env));
    avro_value_t v;
    if (cstl_codec_value_new(e, &v) != 0)
        return cstl_error_set(err, CSTL_ENOMEM, "cannot make a command envelope value");
    int rc = cstl_codec_decode(data, len, e, &v, NULL, err);
    /* Read every field before validating any, so that a caller handling a bad envelope still
     * has its reply_to and command id when they could be read. */
    if (rc == 0)
        rc = get_opt_str(&v, what, "reply_to", env->reply_to, sizeof(env->reply_to), err);
    if (rc == 0)
        rc = get_str(&v, what, "command_id", env->command_id, sizeof(env->command_id), 0, err);
    if (rc == 0)
        rc = get_str(&v, what, "tenant_id", env->tenant_id, sizeof(env->tenant_id), 0, err);
    if (rc == 0)
        rc =
            get_str(&v, what, "command_type", env->command_type, sizeof(env->command_type), 0, err);
    if (rc == 0)
        rc =
            get_str(&v, what, "aggregate_id", env->aggregate_id, sizeof(env->aggregate_id), 0, err);
    if (rc == 0)
        rc = get_opt_long(&v, what, "expected_version", &env->expected_version, err);
    if (rc == 0)
        rc = get_long(&v, what, "issued_at", &env->issued_at_us, err);
    if (rc == 0)
        rc = get_str(&v, what, "issued_by", env->issued_by, sizeof(env->issued_by), 1, err);
    if (rc == 0)
        rc = get_str(&v, what, "correlation_id", env->correlation_id, sizeof(env->correlation_id),
                     0, err);
    if (rc == 0)
        rc = get_opt_str(&v, what, "traceparent", env->traceparent, sizeof(env->traceparent), err);
    if (rc == 0)
        rc = check_uuid(what, "command_id", env->command_id, err);
    if (rc == 0)
        rc = check_uuid(what, "tenant_id", env->tenant_id, err);
    if (rc == 0)
        rc = check_uuid(what, "correlation_id", env->correlation_id, err);
    if (rc == 0 && env->expected_version < -1)
        rc = cstl_error_set(err, CSTL_EDECODE, "%s field \"expected_version\" is negative: %lld",
                            what, (long long)env->expected_version);
    if (rc == 0 && env->traceparent[0] != '\0' && !cstl_event_traceparent_valid(env->traceparent))
        rc = cstl_error_set(err, CSTL_EDECODE, "%s field \"traceparent\" is invalid: \"%s\"", what,
                            env->traceparent);
    if (rc == 0) {
        avro_value_t f;
        const void *b = NULL;
        size_t n = 0;
        if (avro_value_get_by_name(&v, "payload", &f, NULL) != 0 ||
            avro_value_get_bytes(&f, &b, &n) != 0) {
            rc = cstl_error_set(err, CSTL_EDECODE, "%s has no field \"payload\"", what);
        } else {
            env->payload = cstl_xmalloc(n > 0 ? n : 1);
            if (n > 0)
                memcpy(env->payload, b, n);
            env->payload_len = n;
        }
    }
    avro_value_decref(&v);
    if (rc != 0) {
        free(env->payload);
        env->payload = NULL;
        env->payload_len = 0;
    }
    return rc;
}

int cstl_cmd_reply_decode(const void *data, size_t len, cstl_cmd_reply *reply, cstl_error *err)
{
    static const char what[] = "command reply";
    const cstl_schema_entry *e = schema("common.CommandReply");
    memset(reply, 0, sizeof(*reply));
    avro_value_t v;
    if (cstl_codec_value_new(e, &v) != 0)
        return cstl_error_set(err, CSTL_ENOMEM, "cannot make a command reply value");
    int rc = cstl_codec_decode(data, len, e, &v, NULL, err);
    if (rc == 0)
        rc = get_str(&v, what, "command_id", reply->command_id, sizeof(reply->command_id), 0, err);
    if (rc == 0) {
        avro_value_t f;
        int sym = 0;
        if (avro_value_get_by_name(&v, "outcome", &f, NULL) != 0 ||
            avro_value_get_enum(&f, &sym) != 0 || sym < 0 || sym > CSTL_CMD_FAILED)
            rc = cstl_error_set(err, CSTL_EDECODE, "%s field \"outcome\" is invalid", what);
        else
            reply->outcome = (cstl_cmd_outcome)sym;
    }
    if (rc == 0)
        rc = get_str(&v, what, "aggregate_id", reply->aggregate_id, sizeof(reply->aggregate_id), 1,
                     err);
    if (rc == 0)
        rc = get_opt_long(&v, what, "version", &reply->version, err);
    if (rc == 0)
        rc = get_opt_str(&v, what, "error_code", reply->error_code, sizeof(reply->error_code), err);
    if (rc == 0) {
        /* A long message is cut, not refused: it is for people. */
        avro_value_t b;
        int has = get_opt(&v, "error_message", &b);
        const char *s = NULL;
        size_t n = 0;
        if (has < 0 || (has == 1 && avro_value_get_string(&b, &s, &n) != 0))
            rc = cstl_error_set(err, CSTL_EDECODE, "%s field \"error_message\" is invalid", what);
        else if (has == 1)
            snprintf(reply->error_message, sizeof(reply->error_message), "%s", s);
    }
    if (rc == 0)
        rc = get_long(&v, what, "handled_at", &reply->handled_at_us, err);
    avro_value_decref(&v);
    if (rc != 0)
        memset(reply, 0, sizeof(*reply));
    return rc;
}
