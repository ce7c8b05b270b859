/*
 * http_extras.c - what the HTTP edge adds around handlers (see http.h): CORS for the browser UI's
 * origins, strong ETags with If-None-Match, and the OpenAPI document and its docs page.
 *
 * Invariants: the allowed origins are parsed once at server creation and read-only afterwards, so
 * server threads read them without a lock. Called on server threads for their own requests.
 */
#include "platform/embed.h"
#include "platform/http_internal.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CORS_MAX_ORIGINS 64
#define CORS_METHODS     "GET, HEAD, POST, OPTIONS"
#define CORS_HEADERS                                                                               \
    "Authorization, Content-Type, If-None-Match, If-Match, Idempotency-Key, Last-Event-ID, "       \
    "X-Request-Id, traceparent"
#define CORS_EXPOSE  "ETag, Location, Retry-After, X-Request-Id"
#define CORS_MAX_AGE "600"

int cstl_http_cors_init(cstl_http_server *s, const char *origins, cstl_error *err)
{
    if (origins == NULL || *origins == '\0')
        return 0;
    char *copy = cstl_xstrdup(origins);
    s->cors = cstl_xcalloc(CORS_MAX_ORIGINS, sizeof(*s->cors));
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t n = strlen(tok);
        while (n > 0 && tok[n - 1] == ' ')
            tok[--n] = '\0';
        size_t skip = strncmp(tok, "http://", 7) == 0    ? 7
                      : strncmp(tok, "https://", 8) == 0 ? 8
                                                         : 0;
        if (skip == 0 || tok[skip] == '\0' || strpbrk(tok + skip, "/?#*@ \t\r\n") != NULL ||
            s->ncors == CORS_MAX_ORIGINS) {
            rc = cstl_error_set(err, CSTL_ECONFIG,
                                "invalid cors origin \"%s\": expected scheme://host[:port], at "
                                "most %d origins",
                                tok, CORS_MAX_ORIGINS);
            break;
        }
        s->cors[s->ncors++] = cstl_xstrdup(tok);
    }
    free(copy);
    return rc;
}

void cstl_http_cors_free(cstl_http_server *s)
{
    for (size_t i = 0; i < s->ncors; i++)
        free(s->cors[i]);
    free(s->cors);
    s->cors = NULL;
    s->ncors = 0;
}

static const char *allowed_origin(cstl_http_request *req)
{
    cstl_http_server *s = req->server;
    const char *origin = cstl_http_request_header(req, "Origin");
    if (s->cors == NULL || origin == NULL)
        return NULL;
    for (size_t i = 0; i < s->ncors; i++)
        if (strcmp(s->cors[i], origin) == 0)
            return origin;
    return NULL;
}

bool cstl_http_cors_preflight(cstl_http_request *req)
{
    if (req->server->cors == NULL || strcmp(req->method, "OPTIONS") != 0 ||
        cstl_http_request_header(req, "Origin") == NULL ||
        cstl_http_request_header(req, "Access-Control-Request-Method") == NULL)
        return false;
    if (allowed_origin(req) == NULL) {
        char detail[300];
        snprintf(detail, sizeof(detail), "origin \"%.200s\" is not allowed",
                 cstl_http_request_header(req, "Origin"));
        cstl_http_respond_problem(req, 403, "cors-origin-not-allowed", "origin not allowed", detail,
                                  NULL);
        return true;
    }
    cstl_http_set_header(req, "Access-Control-Allow-Methods", CORS_METHODS);
    cstl_http_set_header(req, "Access-Control-Allow-Headers", CORS_HEADERS);
    cstl_http_set_header(req, "Access-Control-Max-Age", CORS_MAX_AGE);
    cstl_http_respond(req, 204, NULL, NULL, 0);
    return true;
}

void cstl_http_cors_headers(cstl_http_request *req, struct MHD_Response *resp)
{
    if (req->server->cors == NULL)
        return;
    MHD_add_response_header(resp, "Vary", "Origin");
    const char *origin = allowed_origin(req);
    if (origin == NULL)
        return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", CORS_EXPOSE);
}

/* True when the If-None-Match list (comma-separated entity tags, weak or strong, or "*")
 * contains tag, compared weakly as RFC 9110 says for If-None-Match. */
static bool none_match(const char *list, const char *tag)
{
    size_t tlen = strlen(tag);
    const char *p = list;
    while (*p != '\0') {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (strncmp(p, tag, tlen) == 0 && (p[tlen] == '\0' || p[tlen] == ',' || p[tlen] == ' '))
            return true;
        while (*p != '\0' && *p != ',')
            p++;
    }
    return false;
}

void cstl_http_etag_apply(cstl_http_request *req)
{
    if (!req->server->etag || req->status != 200 || req->stream != NULL ||
        (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0))
        return;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)(req->resp_body ? req->resp_body : ""), req->resp_len, md);
    char tag[2 + 32 + 1];
    tag[0] = '"';
    for (int i = 0; i < 16; i++)
        snprintf(tag + 1 + 2 * (size_t)i, 3, "%02x", md[i]);
    tag[33] = '"';
    tag[34] = '\0';
    cstl_http_set_header(req, "ETag", tag);
    const char *inm = cstl_http_request_header(req, "If-None-Match");
    if (inm != NULL && none_match(inm, tag)) {
        req->status = 304;
        req->resp_len = 0;
        req->content_type = NULL;
    }
}

static int serve_embedded(cstl_http_request *req, void *ud)
{
    const char *const *spec = ud;
    const cstl_embedded_file *f = cstl_embed_find(spec[0]);
    if (f == NULL)
        return cstl_http_respond_problem(req, 404, "not-found", "not found",
                                         "this build carries no api document", NULL);
    cstl_http_set_header(req, "Cache-Control", "no-cache");
    return cstl_http_respond(req, 200, spec[1], f->data, f->size);
}

int cstl_http_route_openapi(cstl_http_server *server, cstl_error *err)
{
    static const char *const doc[] = {"queries/openapi.json", "application/json"};
    static const char *const page[] = {"queries/docs.html", "text/html; charset=utf-8"};
    int rc = cstl_http_route(server, "GET", "/openapi.json", serve_embedded, (void *)doc, err);
    if (rc == 0)
        rc = cstl_http_route(server, "GET", "/docs", serve_embedded, (void *)page, err);
    return rc;
}
