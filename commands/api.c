/*
 * api.c - the command API's common request path and reply mapping (see api.h); the endpoints
 * themselves are in api_routes.c.
 *
 * Order of checks, each answering on failure: authenticate (401), authorize (403), path
 * parameters (400), If-Match and Idempotency-Key (400), body syntax (400), body fields (422),
 * endpoint preparation (ids, lookups: 404/403), command rules (422). Only then is anything sent,
 * so a refused request never produces a record.
 *
 * A command's answer is deferred (platform/http.h): the handler sends it asynchronously and
 * returns, and the command client's completion answers the request (reply, 202 when the wait ran
 * out, 503 when it could not be appended), so thousands of commands can wait for their replies
 * on a handful of server threads.
 *
 * Threads: HTTP server threads; the answers of commands on the command client's threads. The
 * recent-commands table is guarded by a mutex.
 */
#include "commands/api_internal.h"
#include "commands/rules.h"
#include "platform/id.h"
#include "platform/log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- problems ---------------------------------------------------------------------------- */

int api_problem(
    cstl_http_request *req, int status, const char *type, const char *title, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    if (status == 401)
        cstl_http_set_header(req, "WWW-Authenticate", "Bearer realm=\"constellation\"");
    return cstl_http_respond_problem(req, status, type, title, detail, NULL);
}

int api_invalid(cstl_http_request *req, const char *field, const char *code, const char *message)
{
    json_t *ext = json_pack("{s:[{s:s,s:s,s:s}]}", "errors", "field", field, "code", code,
                            "message", message);
    return cstl_http_respond_problem(req, 422, "invalid-request", "invalid request", message, ext);
}

/* ---- recent commands (for GET /v1/commands/{id}) ----------------------------------------- */

static void
recent_add(cstl_cmd_api *api, const char *command_id, const char *tenant_id, const char *context)
{
    pthread_mutex_lock(&api->recent_mu);
    api_recent *r = &api->recent[api->recent_next++ % API_RECENT_MAX];
    snprintf(r->command_id, sizeof(r->command_id), "%.36s", command_id);
    snprintf(r->tenant_id, sizeof(r->tenant_id), "%.36s", tenant_id);
    snprintf(r->context, sizeof(r->context), "%.15s", context);
    pthread_mutex_unlock(&api->recent_mu);
}

static bool recent_find(cstl_cmd_api *api, const char *command_id, const char *tenant_id)
{
    bool found = false;
    pthread_mutex_lock(&api->recent_mu);
    for (size_t i = 0; i < API_RECENT_MAX && !found; i++)
        found = strcmp(api->recent[i].command_id, command_id) == 0 &&
                strcmp(api->recent[i].tenant_id, tenant_id) == 0;
    pthread_mutex_unlock(&api->recent_mu);
    return found;
}

/* ---- the common path --------------------------------------------------------------------- */

static bool gpu_uuid_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > CSTL_GPU_UUID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-')
            return false;
    return true;
}

int api_authenticate(cstl_cmd_api *api,
                     cstl_http_request *req,
                     const api_endpoint *ep,
                     cstl_principal *who)
{
    const char *authorization = cstl_http_request_header(req, "Authorization");
    if (authorization == NULL)
        return api_problem(req, 401, "unauthenticated", "unauthenticated",
                           "the request has no Authorization header: send \"Bearer <api key or "
                           "jwt>\""),
               -1;
    cstl_error err;
    if (cstl_auth_authenticate(api->auth, authorization, (int64_t)time(NULL), who, &err) != 0) {
        cstl_log(CSTL_LOG_INFO, "commands", "authentication refused: %s", err.detail);
        err.detail[0] = '\0';
        return cstl_http_respond_error(req, &err), -1;
    }
    bool allowed = false;
    for (size_t i = 0; i < CSTL_ARRAY_LEN(ep->perms) && ep->perms[i] != API_PERM_NONE; i++)
        allowed = allowed || cstl_principal_can(who, (cstl_perm)ep->perms[i]);
    if (!allowed)
        return api_problem(req, 403, "forbidden", "forbidden", "the role \"%s\" may not %s",
                           cstl_role_name(who->role), ep->action),
               -1;
    return 0;
}

static int check_params(cstl_http_request *req)
{
    static const char *const ids[] = {"id"};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(ids); i++) {
        const char *v = cstl_http_request_param(req, ids[i]);
        if (v != NULL && !cstl_uuid_valid(v))
            return api_problem(req, 400, "malformed-request", "malformed request",
                               "the path parameter \"%s\" must be a UUID, got \"%.64s\"", ids[i],
                               v),
                   -1;
    }
    const char *gpu = cstl_http_request_param(req, "uuid");
    if (gpu != NULL && !gpu_uuid_valid(gpu))
        return api_problem(req, 400, "malformed-request", "malformed request",
                           "the path parameter \"uuid\" must be a GPU UUID of 1 to %d letters, "
                           "digits and dashes, got \"%.64s\"",
                           CSTL_GPU_UUID_MAX, gpu),
               -1;
    return 0;
}

/* Answers a successful (accepted or duplicate) reply. */
static int respond_success(api_call *c, const cstl_cmd_reply *r)
{
    const api_endpoint *ep = c->ep;
    int status = ep->creates ? 201 : 200;
    char etag[32];
    snprintf(etag, sizeof(etag), "\"%lld\"", (long long)r->version);
    if (r->version >= 0)
        cstl_http_set_header(c->req, "ETag", etag);
    if (c->location[0] != '\0')
        cstl_http_set_header(c->req, "Location", c->location);
    json_t *body =
        json_pack("{s:s,s:I,s:s,s:s}", "id", c->resource_id[0] ? c->resource_id : r->aggregate_id,
                  "version", (json_int_t)r->version, "command_id", c->command_id, "status",
                  cstl_cmd_outcome_name(r->outcome));
    if (c->extra != NULL) {
        /* a duplicate's secret (an API key) is not the one stored: never show it */
        if (r->outcome == CSTL_CMD_DUPLICATE)
            json_object_del(c->extra, "api_key");
        json_object_update(body, c->extra);
    }
    return cstl_http_respond_json(c->req, status, body);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int api_respond_reply(api_call *c, const cstl_cmd_reply *r)
{
    cstl_http_request *req = c->req;
    json_t *ext;
    switch (r->outcome) {
    case CSTL_CMD_ACCEPTED:
        return respond_success(c, r);
    case CSTL_CMD_DUPLICATE:
        if (r->error_code[0] == '\0')
            return respond_success(c, r);
        /* the first outcome was a refusal */
        __attribute__((fallthrough));
    case CSTL_CMD_REJECTED:
        ext = json_pack("{s:s}", "code", r->error_code);
        if (ends_with(r->error_code, "not_found"))
            return cstl_http_respond_problem(req, 404, "not-found", "not found", r->error_message,
                                             ext);
        return cstl_http_respond_problem(req, 409, "conflict", "conflict", r->error_message, ext);
    case CSTL_CMD_VERSION_MISMATCH:
        ext = json_pack("{s:s}", "code", r->error_code[0] ? r->error_code : "version_mismatch");
        if (r->version >= 0)
            json_object_set_new(ext, "current_version", json_integer(r->version));
        return cstl_http_respond_problem(
            req, 412, "precondition-failed", "precondition failed",
            r->error_message[0] ? r->error_message : "If-Match does not hold", ext);
    case CSTL_CMD_INVALID:
        return api_invalid(req, "", r->error_code[0] ? r->error_code : "invalid", r->error_message);
    case CSTL_CMD_FAILED:
        break;
    }
    cstl_log(CSTL_LOG_ERROR, "commands", "command \"%s\" failed in the handler: %s %s",
             c->command_id, r->error_code, r->error_message);
    return cstl_http_respond_problem(req, 500, "internal", "internal error", NULL, NULL);
}

static int respond_pending(api_call *c)
{
    char location[64];
    snprintf(location, sizeof(location), "/v1/commands/%s", c->command_id);
    cstl_http_set_header(c->req, "Location", location);
    cstl_http_set_header(c->req, "Retry-After", "1");
    json_t *body = json_pack("{s:s,s:s,s:s}", "command_id", c->command_id, "status", "pending",
                             "location", location);
    const char *id = c->resource_id[0] != '\0' ? c->resource_id : c->aggregate_id;
    if (id[0] != '\0')
        json_object_set_new(body, "id", json_string(id));
    return cstl_http_respond_json(c->req, 202, body);
}

/* Reads If-Match and Idempotency-Key into c. */
static int read_headers(api_call *c)
{
    cstl_error err;
    if (cstl_api_if_match_parse(cstl_http_request_header(c->req, "If-Match"), &c->expected_version,
                                &err) != 0)
        return api_problem(c->req, 400, "malformed-request", "malformed request", "%s",
                           err.message),
               -1;
    if (!c->ep->if_match)
        c->expected_version = -1;
    const char *key = cstl_http_request_header(c->req, "Idempotency-Key");
    if (key != NULL) {
        if (cstl_api_idempotency_key_check(key, &err) != 0)
            return api_problem(c->req, 400, "malformed-request", "malformed request", "%s",
                               err.message),
                   -1;
        cstl_cmd_id_from_key(c->who.tenant_id, key, c->command_id);
        c->idempotency_key = key;
    } else {
        cstl_uuid_v7_string(c->command_id);
    }
    return 0;
}

/* A command sent and not answered yet. Owned by its completion (on_outcome). */
typedef struct api_inflight {
    api_call call; /* req is NULL: the request is reached through the deferred handle */
    cstl_http_deferred *deferred;
    int rc;
    cstl_cmd_reply reply;
    cstl_error err;
} api_inflight;

/* Writes the answer of an in-flight command once its outcome is known (deferred answer). */
static void answer_outcome(cstl_http_request *req, void *ud)
{
    api_inflight *f = ud;
    api_call *c = &f->call;
    c->req = req;
    if (f->rc == 0) {
        api_respond_reply(c, &f->reply);
    } else if (f->rc == CSTL_ETIMEDOUT) {
        respond_pending(c);
    } else if (f->rc == CSTL_EINVAL || f->rc == CSTL_EDECODE) {
        api_invalid(req, "", "invalid_command", f->err.message);
    } else {
        cstl_log(CSTL_LOG_ERROR, "commands", "cannot send %s \"%s\": %s", c->ep->command_type,
                 c->command_id, f->err.message);
        cstl_http_set_header(req, "Retry-After", "1");
        api_problem(req, 503, "unavailable", "service unavailable",
                    "the command could not be appended to the log, retry later");
    }
}

/* The command client's completion: answers the deferred request (when it still waits: a stopped
 * server has answered it 503 already) and frees the in-flight record. */
static void on_outcome(void *ud, int rc, const cstl_cmd_reply *reply, const cstl_error *err)
{
    api_inflight *f = ud;
    f->rc = rc;
    if (reply != NULL)
        f->reply = *reply;
    if (err != NULL)
        f->err = *err;
    cstl_http_deferred_complete(f->deferred, answer_outcome, f);
    json_decref(f->call.extra);
    free(f);
}

void api_derived_id(api_call *c, const char *what, char out[37])
{
    if (c->idempotency_key == NULL) {
        cstl_uuid_v7_string(out);
        return;
    }
    /* \x01 cannot occur in a key (printable only), so these never equal another key's id */
    char material[CSTL_API_IDEMPOTENCY_MAX + 64];
    snprintf(material, sizeof(material), "\x01%s\x01%s", what, c->idempotency_key);
    cstl_cmd_id_from_key(c->who.tenant_id, material, out);
}

int api_handle(cstl_http_request *req, void *ud)
{
    const api_endpoint *ep = ud;
    cstl_cmd_api *api = ep->api;
    api_call call = {.api = api, .ep = ep, .req = req};
    api_call *c = &call;
    int rc = 0;
    json_t *body = NULL;
    c->payload = json_object();

    if (api_authenticate(api, req, ep, &c->who) != 0 || check_params(req) != 0 ||
        read_headers(c) != 0)
        goto done;
    size_t len;
    const char *text = cstl_http_request_body(req, &len);
    cstl_error err;
    if (cstl_api_body_parse(text, len, &body, &err) != 0) {
        cstl_http_respond_error(req, &err);
        goto done;
    }
    cstl_api_field_error fe;
    if (cstl_api_body_map(ep->fields, body, c->payload, &fe) != 0) {
        api_invalid(req, fe.field, fe.code, fe.message);
        goto done;
    }
    snprintf(c->tenant_id, sizeof(c->tenant_id), "%.36s", c->who.tenant_id);
    if (ep->prepare(c) != 0)
        goto done; /* prepare answered */
    if (ep->command_type == NULL) {
        rc = ep->finish(c);
        goto done;
    }
    cstl_decision d = {0};
    if (cstl_command_validate(ep->context, ep->command_type, c->payload, &d) != 0) {
        api_invalid(req, d.field, d.code, d.message);
        cstl_decision_clear(&d);
        goto done;
    }
    cstl_decision_clear(&d);

    cstl_cmd_request cmd = {.context = ep->context,
                            .command_type = ep->command_type,
                            .command_id = c->command_id,
                            .tenant_id = c->tenant_id,
                            .aggregate_id = c->aggregate_id,
                            .expected_version = c->expected_version,
                            .issued_by = c->who.subject,
                            .traceparent = cstl_http_request_traceparent(req),
                            .payload = c->payload,
                            .want_reply = 1};
    recent_add(api, c->command_id, c->who.tenant_id, ep->context);
    /* The answer waits for the reply without holding this thread: what it needs moves to the
     * in-flight record, and the request to a deferred handle. cmd's strings (the request's
     * traceparent among them) stay valid until this handler returns, which send_async outlasts. */
    api_inflight *f = cstl_xcalloc(1, sizeof(*f));
    f->call = *c;
    f->call.req = NULL;
    f->call.payload = NULL;
    f->call.idempotency_key = NULL;
    c->extra = NULL;
    f->deferred = cstl_http_defer(req);
    int sent = cstl_cmd_client_send_async(api->client, &cmd, api->wait_ms, on_outcome, f, &err);
    if (sent != 0)
        on_outcome(f, sent, NULL, &err); /* nothing was sent: answered now, through the handle */
done:
    json_decref(body);
    json_decref(c->payload);
    json_decref(c->extra);
    return rc;
}

/* GET /v1/commands/{id} */
int api_get_command(cstl_http_request *req, void *ud)
{
    const api_endpoint *ep = ud;
    cstl_cmd_api *api = ep->api;
    cstl_principal who;
    if (api_authenticate(api, req, ep, &who) != 0 || check_params(req) != 0)
        return 0;
    const char *id = cstl_http_request_param(req, "id");
    char lower[37];
    for (size_t i = 0; i < sizeof(lower); i++)
        lower[i] = (char)tolower((unsigned char)id[i]);
    if (!recent_find(api, lower, who.tenant_id))
        return api_problem(req, 404, "not-found", "not found",
                           "no recent command \"%s\" of this tenant on this instance", lower);
    cstl_cmd_reply r;
    if (cstl_cmd_client_lookup(api->client, lower, &r) != 0)
        return cstl_http_respond_json(
            req, 200, json_pack("{s:s,s:s}", "command_id", lower, "status", "pending"));
    json_t *body = json_pack("{s:s,s:s,s:s,s:I}", "command_id", lower, "status",
                             cstl_cmd_outcome_name(r.outcome), "id", r.aggregate_id, "version",
                             (json_int_t)r.version);
    if (r.error_code[0] != '\0')
        json_object_set_new(
            body, "error",
            json_pack("{s:s,s:s}", "code", r.error_code, "message", r.error_message));
    return cstl_http_respond_json(req, 200, body);
}

cstl_cmd_api *cstl_cmd_api_new(const cstl_cmd_api_options *opts)
{
    cstl_cmd_api *api = cstl_xcalloc(1, sizeof(*api));
    api->auth = opts->auth;
    api->views = opts->views;
    api->client = opts->client;
    api->producer = opts->producer;
    api->wait_ms = opts->wait_ms > 0 ? opts->wait_ms : 5000;
    snprintf(api->operator_tenant_id, sizeof(api->operator_tenant_id), "%s",
             opts->operator_tenant_id ? opts->operator_tenant_id : "");
    snprintf(api->topic_prefix, sizeof(api->topic_prefix), "%s",
             opts->topic_prefix ? opts->topic_prefix : "");
    pthread_mutex_init(&api->recent_mu, NULL);
    pthread_mutex_init(&api->producer_mu, NULL);
    api->recent = cstl_xcalloc(API_RECENT_MAX, sizeof(*api->recent));
    return api;
}

void cstl_cmd_api_free(cstl_cmd_api *api)
{
    if (api == NULL)
        return;
    free(api->endpoints);
    free(api->recent);
    pthread_mutex_destroy(&api->recent_mu);
    pthread_mutex_destroy(&api->producer_mu);
    free(api);
}
