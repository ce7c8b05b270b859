/*
 * http_client.h - a small HTTP/1.1 client over plain sockets, for the worker agent's calls to the
 * command API. One request per connection (Connection: close); http:// URLs only.
 *
 * Every wait is bounded by the request's deadline (connect, send, receive), and every buffer fed
 * by the network is capped: the response head at CSTL_HTTP_CLIENT_HEAD_MAX bytes, the body at
 * CSTL_HTTP_CLIENT_BODY_MAX. Bodies may be sized by Content-Length, chunked, or end at close.
 *
 * Threads: reentrant; no global state, no logging.
 */
#ifndef CSTL_WORKER_HTTP_CLIENT_H
#define CSTL_WORKER_HTTP_CLIENT_H

#include "platform/error.h"

#include <stddef.h>

#define CSTL_HTTP_CLIENT_HEAD_MAX ((size_t)16 * 1024)
#define CSTL_HTTP_CLIENT_BODY_MAX ((size_t)1024 * 1024)

/* A parsed http:// URL: host, port (default 80) and a path prefix without a final '/'. */
typedef struct cstl_http_url {
    char host[256];
    char port[8];
    char prefix[256];
} cstl_http_url;

/* Parses "http://host[:port][/prefix]". 0, or CSTL_ECONFIG quoting the URL and what is wrong. */
int cstl_http_url_parse(const char *text, cstl_http_url *out, cstl_error *err);

typedef struct cstl_http_response {
    int status; /* 100..599 */
    char *body; /* NUL-terminated, owned: free with cstl_http_response_free */
    size_t body_len;
    int retry_after_s; /* Retry-After in seconds, -1 when absent */
} cstl_http_response;

/* One extra request header. */
typedef struct cstl_http_header {
    const char *name;
    const char *value;
} cstl_http_header;

/*
 * Sends method path (appended to the URL's prefix) with the headers (n of them, borrowed) and the
 * body (NULL for none; sent as application/json), and reads the response into *resp within
 * timeout_ms in all. Returns 0 with *resp filled (any status), or CSTL_EUNAVAILABLE (cannot
 * connect), CSTL_ETIMEDOUT, CSTL_EIO (connection broken), CSTL_EPARSE (malformed response) or
 * CSTL_ETOOBIG (head or body over its cap), each retriable but the last two. On failure *resp is
 * empty.
 */
int cstl_http_client_request(const cstl_http_url *url,
                             const char *method,
                             const char *path,
                             const cstl_http_header *headers,
                             size_t n_headers,
                             const char *body,
                             int timeout_ms,
                             cstl_http_response *resp,
                             cstl_error *err);

/* Frees the body; the response may be reused. NULL is a no-op. */
void cstl_http_response_free(cstl_http_response *resp);

#endif
