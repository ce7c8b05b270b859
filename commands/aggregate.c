/*
 * aggregate.c - the decision helpers every aggregate uses and the context -> aggregate table.
 *
 * A decision holds either up to CSTL_DECISION_MAX_EVENTS events or one rejection, never both:
 * rejecting drops what was emitted before. Reentrant; a decision belongs to one thread.
 */
#include "commands/aggregate.h"

#include "commands/aggregate_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void cstl_decision_emit(cstl_decision *d, const char *type, json_t *data)
{
    CSTL_ASSERT(data != NULL);
    if (d->n_events >= CSTL_DECISION_MAX_EVENTS)
        cstl_panic("decision holds more than %d events (adding %s)", CSTL_DECISION_MAX_EVENTS,
                   type);
    d->events[d->n_events].type = type;
    d->events[d->n_events].data = data;
    d->n_events++;
}

int cstl_decision_reject(cstl_decision *d,
                         cstl_rejection_kind kind,
                         const char *code,
                         const char *field,
                         const char *fmt,
                         ...)
{
    for (int i = 0; i < d->n_events; i++)
        json_decref(d->events[i].data);
    memset(d->events, 0, sizeof(d->events));
    d->n_events = 0;
    d->rejection = kind;
    snprintf(d->code, sizeof(d->code), "%s", code ? code : "");
    snprintf(d->field, sizeof(d->field), "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->message, sizeof(d->message), fmt, ap);
    va_end(ap);
    return -1;
}

void cstl_decision_clear(cstl_decision *d)
{
    for (int i = 0; i < d->n_events; i++)
        json_decref(d->events[i].data);
    memset(d, 0, sizeof(*d));
}

const cstl_aggregate_type *cstl_aggregate_for_context(const char *context)
{
    static const cstl_aggregate_type *const all[] = {&cstl_tenant_aggregate, &cstl_job_aggregate,
                                                     &cstl_worker_aggregate};
    if (context == NULL)
        return NULL;
    for (size_t i = 0; i < CSTL_ARRAY_LEN(all); i++)
        if (strcmp(all[i]->context, context) == 0)
            return all[i];
    return NULL;
}

/* ---- helpers for the aggregates (aggregate_internal.h) ----------------------------------- */


static int event_field(const cstl_event *ev,
                       const char *name,
                       json_type want,
                       int nullable,
                       const json_t **out,
                       cstl_error *err)
{
    const json_t *v = ev->data ? json_object_get(ev->data, name) : NULL;
    *out = NULL;
    if (v != NULL && json_is_null(v) && nullable)
        return 0;
    if (v == NULL || json_typeof(v) != want)
        return cstl_error_set(err, CSTL_EDECODE, "%s.%s is missing or has the wrong type", ev->type,
                              name);
    *out = v;
    return 0;
}

int cstl_agg_event_str(
    const cstl_event *ev, const char *name, char *out, size_t cap, cstl_error *err)
{
    const json_t *v;
    int rc = event_field(ev, name, JSON_STRING, 0, &v, err);
    if (rc != 0)
        return rc;
    if (json_string_length(v) >= cap)
        return cstl_error_set(err, CSTL_EDECODE, "%s.%s is longer than %zu bytes", ev->type, name,
                              cap - 1);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

int cstl_agg_event_strdup(
    const cstl_event *ev, const char *name, int nullable, char **out, cstl_error *err)
{
    const json_t *v;
    *out = NULL;
    int rc = event_field(ev, name, JSON_STRING, nullable, &v, err);
    if (rc != 0)
        return rc;
    if (v != NULL)
        *out = cstl_xstrdup(json_string_value(v));
    return 0;
}

int cstl_agg_event_int(
    const cstl_event *ev, const char *name, int64_t *out, int *present, cstl_error *err)
{
    const json_t *v;
    *out = 0;
    int rc = event_field(ev, name, JSON_INTEGER, present != NULL, &v, err);
    if (rc != 0)
        return rc;
    if (present != NULL)
        *present = v != NULL;
    if (v != NULL)
        *out = (int64_t)json_integer_value(v);
    return 0;
}

const char *cstl_agg_str(const json_t *payload, const char *name)
{
    return json_string_value(json_object_get(payload, name));
}

int64_t cstl_agg_int(const json_t *payload, const char *name)
{
    return (int64_t)json_integer_value(json_object_get(payload, name));
}

json_t *cstl_agg_copy(const json_t *payload, const char *name)
{
    json_t *v = json_object_get(payload, name);
    return v ? json_deep_copy(v) : json_null();
}

int cstl_agg_check_target(const cstl_command *cmd, const char *id_field, cstl_decision *d)
{
    const char *id = cstl_agg_str(cmd->payload, id_field);
    if (cmd->aggregate_id != NULL && id != NULL && strcmp(cmd->aggregate_id, id) != 0)
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "aggregate_id_mismatch", id_field,
                                    "%s \"%s\" is not the addressed aggregate \"%.64s\"", id_field,
                                    id, cmd->aggregate_id);
    return 0;
}

int cstl_agg_unpack(const json_t *snapshot, const char *what, cstl_error *err, const char *fmt, ...)
{
    json_error_t jerr;
    va_list ap;
    va_start(ap, fmt);
    int rc = json_vunpack_ex((json_t *)snapshot, &jerr, 0, fmt, ap);
    va_end(ap);
    if (rc != 0)
        return cstl_error_set(err, CSTL_EDECODE, "%s snapshot does not fit: %s", what, jerr.text);
    return 0;
}

char *cstl_agg_strdup_or_null(const char *s)
{
    return s ? cstl_xstrdup(s) : NULL;
}

json_t *cstl_agg_json_str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}
