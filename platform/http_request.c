/*
 * http_request.c - the request side of the http module (see http.h): the per-request pool and its
 * cleanups, accessors, the error-code to status table, and the respond functions, which only store
 * the response (http.c hands it to libmicrohttpd when the handler returns).
 *
 * A request is used by one thread at a time: the server thread running its handler, then the one
 * completing it. Nothing here locks.
 */
#include "platform/http_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define POOL_BLOCK 4096

/* Request pool. */

void *cstl_http_request_alloc(cstl_http_request *req, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    pool_block *b = req->pool;
    if (b == NULL || b->cap - b->used < size) {
        size_t cap = size > POOL_BLOCK ? size : POOL_BLOCK;
        b = cstl_xmalloc(sizeof(*b) + cap);
        b->used = 0;
        b->cap = cap;
        b->next = req->pool;
        req->pool = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

char *cstl_http_pool_strdup(cstl_http_request *req, const char *s)
{
    size_t n = strlen(s);
    char *p = cstl_http_request_alloc(req, n + 1);
    memcpy(p, s, n + 1);
    return p;
}

void cstl_http_request_defer(cstl_http_request *req, void (*fn)(void *), void *ptr)
{
    cleanup *c = cstl_http_request_alloc(req, sizeof(*c));
    c->fn = fn;
    c->ptr = ptr;
    c->next = req->cleanups;
    req->cleanups = c;
}

void cstl_http_request_free(cstl_http_request *req)
{
    for (cleanup *c = req->cleanups; c != NULL; c = c->next)
        c->fn(c->ptr);
    pool_block *b = req->pool;
    while (b != NULL) {
        pool_block *next = b->next;
        free(b);
        b = next;
    }
    free(req->body);
    free(req->resp_body);
    free(req);
}

/* Status table. */

typedef struct status_entry {
    int code;
    int status;
    const char *type;
    const char *title;
} status_entry;

static const status_entry status_table[] = {
    {CSTL_EPARSE, 400, "malformed-request", "malformed request"},
    {CSTL_EDECODE, 400, "malformed-request", "malformed request"},
    {CSTL_EINVAL, 422, "invalid-request", "invalid request"},
    {CSTL_EAUTH, 401, "unauthenticated", "authentication required"},
    {CSTL_EFORBIDDEN, 403, "forbidden", "forbidden"},
    {CSTL_ENOTFOUND, 404, "not-found", "not found"},
    {CSTL_ECONFLICT, 409, "conflict", "conflict"},
    {CSTL_EEXISTS, 409, "conflict", "conflict"},
    {CSTL_EPRECONDITION, 412, "precondition-failed", "precondition failed"},
    {CSTL_ETOOBIG, 413, "too-large", "request too large"},
    {CSTL_EUNAVAILABLE, 503, "unavailable", "service unavailable"},
    {CSTL_ESHUTDOWN, 503, "unavailable", "service unavailable"},
    {CSTL_ETIMEDOUT, 504, "timeout", "timed out"},
};

static const status_entry internal_entry = {CSTL_EINTERNAL, 500, "internal", "internal error"};

static const status_entry *status_lookup(int code)
{
    for (size_t i = 0; i < CSTL_ARRAY_LEN(status_table); i++)
        if (status_table[i].code == code)
            return &status_table[i];
    return &internal_entry;
}

int cstl_http_status_for_error(int code)
{
    return status_lookup(code)->status;
}

/* Accessors. */

const char *cstl_http_request_method(const cstl_http_request *req)
{
    return req->method;
}

const char *cstl_http_request_path(const cstl_http_request *req)
{
    return req->path;
}

const char *cstl_http_request_route(const cstl_http_request *req)
{
    return req->route != NULL ? req->route->pattern : NULL;
}

const char *cstl_http_request_param(const cstl_http_request *req, const char *name)
{
    for (size_t i = 0; name != NULL && i < req->nparams; i++)
        if (strcmp(req->param_name[i], name) == 0)
            return req->param_value[i];
    return NULL;
}

const char *cstl_http_request_query(const cstl_http_request *req, const char *name)
{
    if (name == NULL)
        return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

typedef struct query_walk {
    const char *const *known;
    const char *seen[CSTL_HTTP_DEFAULT_MAX_QUERY];
    size_t nseen;
    const char *bad;
} query_walk;

static enum MHD_Result
find_unknown(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    (void)value;
    query_walk *w = cls;
    bool known = false;
    for (size_t i = 0; w->known[i] != NULL && !known; i++)
        known = strcmp(w->known[i], key) == 0;
    for (size_t i = 0; i < w->nseen && known; i++)
        known = strcmp(w->seen[i], key) != 0;
    if (!known) {
        w->bad = key;
        return MHD_NO;
    }
    if (w->nseen < CSTL_ARRAY_LEN(w->seen))
        w->seen[w->nseen++] = key;
    return MHD_YES;
}

const char *cstl_http_request_query_unknown(const cstl_http_request *req, const char *const *known)
{
    query_walk w = {.known = known};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, find_unknown, &w);
    return w.bad;
}

const char *cstl_http_request_header(const cstl_http_request *req, const char *name)
{
    if (name == NULL)
        return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *cstl_http_request_body(const cstl_http_request *req, size_t *len)
{
    if (len != NULL)
        *len = req->body_len;
    return req->body != NULL ? req->body : "";
}

const char *cstl_http_request_id(const cstl_http_request *req)
{
    return req->id;
}

const char *cstl_http_request_traceparent(const cstl_http_request *req)
{
    return req->traceparent;
}

static bool all_hex(const char *s, size_t n, bool *all_zero)
{
    *all_zero = true;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        if (c != '0')
            *all_zero = false;
    }
    return true;
}

bool cstl_http_traceparent_valid(const char *t)
{
    /* version "-" trace-id(32) "-" parent-id(16) "-" flags(2): 55 chars for version 00. */
    bool zero;
    if (t == NULL || strlen(t) < 55 || t[2] != '-' || t[35] != '-' || t[52] != '-')
        return false;
    if (!all_hex(t, 2, &zero) || strncmp(t, "ff", 2) == 0)
        return false;
    if (!all_hex(t + 3, 32, &zero) || zero || !all_hex(t + 36, 16, &zero) || zero)
        return false;
    if (!all_hex(t + 53, 2, &zero))
        return false;
    if (strncmp(t, "00", 2) == 0)
        return t[55] == '\0';
    return t[55] == '\0' || t[55] == '-';
}

/* Responses. */

bool cstl_http_token_valid(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (!isalnum((unsigned char)*s) && strchr("!#$%&'*+-.^_`|~", *s) == NULL)
            return false;
    return true;
}

int cstl_http_set_header(cstl_http_request *req, const char *name, const char *value)
{
    if (!cstl_http_token_valid(name) || value == NULL || strpbrk(value, "\r\n") != NULL)
        return CSTL_EINVAL;
    for (header *h = req->headers; h != NULL; h = h->next) {
        if (strcasecmp(h->name, name) == 0) {
            h->value = cstl_http_pool_strdup(req, value);
            return 0;
        }
    }
    header *h = cstl_http_request_alloc(req, sizeof(*h));
    h->name = cstl_http_pool_strdup(req, name);
    h->value = cstl_http_pool_strdup(req, value);
    h->next = req->headers;
    req->headers = h;
    return 0;
}

int cstl_http_respond(
    cstl_http_request *req, int status, const char *content_type, const void *body, size_t len)
{
    if (req->responded || status < 100 || status > 599 || (body == NULL && len > 0))
        return CSTL_EINVAL;
    req->responded = true;
    req->status = status;
    req->content_type = content_type != NULL ? cstl_http_pool_strdup(req, content_type) : NULL;
    req->resp_body = cstl_xmalloc(len + 1);
    if (len > 0)
        memcpy(req->resp_body, body, len);
    req->resp_len = len;
    return 0;
}

static int respond_json_typed(cstl_http_request *req, int status, const char *type, json_t *body)
{
    if (body == NULL)
        return CSTL_EINVAL;
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (text == NULL)
        cstl_panic("cannot serialize a json response");
    int rc = cstl_http_respond(req, status, type, text, strlen(text));
    free(text);
    return rc;
}

int cstl_http_respond_json(cstl_http_request *req, int status, json_t *body)
{
    return respond_json_typed(req, status, "application/json", body);
}

int cstl_http_respond_problem(cstl_http_request *req,
                              int status,
                              const char *type_suffix,
                              const char *title,
                              const char *detail,
                              json_t *extensions)
{
    json_t *doc = json_object();
    const char *base = req->server->problem_base;
    if (type_suffix == NULL || strchr(type_suffix, ':') != NULL) {
        json_object_set_new(doc, "type", json_string(type_suffix ? type_suffix : "about:blank"));
    } else {
        size_t n = strlen(base) + strlen(type_suffix) + 1;
        char *type = cstl_http_request_alloc(req, n);
        snprintf(type, n, "%s%s", base, type_suffix);
        json_object_set_new(doc, "type", json_string(type));
    }
    json_object_set_new(doc, "title", json_string(title ? title : "error"));
    json_object_set_new(doc, "status", json_integer(status));
    if (detail != NULL)
        json_object_set_new(doc, "detail", json_string(detail));
    if (req->path != NULL)
        json_object_set_new(doc, "instance", json_string(req->path));
    json_object_set_new(doc, "request_id", json_string(req->id));
    if (json_is_object(extensions)) {
        const char *key;
        json_t *value;
        json_object_foreach(extensions, key, value)
        {
            if (json_object_get(doc, key) == NULL)
                json_object_set(doc, key, value);
        }
    }
    json_decref(extensions);
    return respond_json_typed(req, status, "application/problem+json", doc);
}

int cstl_http_respond_error(cstl_http_request *req, const cstl_error *err)
{
    const status_entry *e = status_lookup(err != NULL ? err->code : CSTL_EINTERNAL);
    if (e->status == 401) {
        bool has = false;
        for (header *h = req->headers; h != NULL; h = h->next)
            has = has || strcasecmp(h->name, "WWW-Authenticate") == 0;
        if (!has)
            cstl_http_set_header(req, "WWW-Authenticate", "Bearer");
    }
    if (err == NULL || e->status >= 500)
        return cstl_http_respond_problem(req, e->status, e->type, e->title, NULL, NULL);
    json_t *ext = NULL;
    if (err->detail[0] != '\0')
        ext = json_pack("{s:s}", "hint", err->detail);
    return cstl_http_respond_problem(req, e->status, e->type, e->title,
                                     err->message[0] ? err->message : cstl_strerror(err->code),
                                     ext);
}

void cstl_http_respond_internal(cstl_http_request *req)
{
    req->responded = false;
    free(req->resp_body);
    req->resp_body = NULL;
    cstl_http_respond_problem(req, 500, internal_entry.type, internal_entry.title, NULL, NULL);
}
