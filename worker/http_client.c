/*
 * http_client.c - the worker's HTTP/1.1 client (see http_client.h).
 *
 * Invariants: the socket is non-blocking and every wait is a poll() bounded by the one deadline
 * of the request; the head and the body are read into buffers whose size is checked before every
 * append, so a misbehaving server costs at most the caps. Reentrant.
 */
#include "worker/http_client.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cstl_http_url_parse(const char *text, cstl_http_url *out, cstl_error *err)
{
    memset(out, 0, sizeof(*out));
    static const char scheme[] = "http://";
    if (strncmp(text, scheme, sizeof(scheme) - 1) != 0)
        return cstl_error_set(err, CSTL_ECONFIG, "url \"%.200s\" must start with http://", text);
    const char *host = text + sizeof(scheme) - 1;
    const char *slash = strchr(host, '/');
    size_t hostport = slash ? (size_t)(slash - host) : strlen(host);
    const char *colon = memchr(host, ':', hostport);
    size_t hlen = colon ? (size_t)(colon - host) : hostport;
    if (hlen == 0 || hlen >= sizeof(out->host))
        return cstl_error_set(err, CSTL_ECONFIG,
                              "url \"%.200s\" has no host or a host over %zu "
                              "bytes",
                              text, sizeof(out->host) - 1);
    memcpy(out->host, host, hlen);
    if (colon != NULL) {
        size_t plen = hostport - hlen - 1;
        long port = 0;
        bool ok = plen >= 1 && plen <= 5;
        for (size_t i = 0; ok && i < plen; i++) {
            ok = isdigit((unsigned char)colon[1 + i]);
            port = port * 10 + (colon[1 + i] - '0');
        }
        if (!ok || port < 1 || port > 65535)
            return cstl_error_set(err, CSTL_ECONFIG,
                                  "url \"%.200s\": the port must be from 1 to 65535", text);
        snprintf(out->port, sizeof(out->port), "%ld", port);
    } else {
        snprintf(out->port, sizeof(out->port), "80");
    }
    if (slash != NULL) {
        size_t plen = strlen(slash);
        while (plen > 0 && slash[plen - 1] == '/')
            plen--;
        if (plen >= sizeof(out->prefix))
            return cstl_error_set(err, CSTL_ECONFIG, "url \"%.200s\": the path is over %zu bytes",
                                  text, sizeof(out->prefix) - 1);
        memcpy(out->prefix, slash, plen);
    }
    return 0;
}

/* ---- connection -------------------------------------------------------------------------- */

static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return CSTL_ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, (int)left);
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return CSTL_EIO;
    }
}

static int connect_to(const cstl_http_url *url, int64_t deadline, int *fd_out, cstl_error *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(url->host, url->port, &hints, &res);
    if (gai != 0)
        return cstl_error_set(err, CSTL_EUNAVAILABLE, "cannot resolve \"%s\": %s", url->host,
                              gai_strerror(gai));
    int rc = CSTL_EUNAVAILABLE;
    int last_errno = 0;
    for (struct addrinfo *ai = res; ai != NULL && rc != 0; ai = ai->ai_next) {
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int c = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (c != 0 && errno == EINPROGRESS) {
            int w = wait_fd(fd, POLLOUT, deadline);
            int soerr = 0;
            socklen_t len = sizeof(soerr);
            if (w == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0)
                c = 0;
            else if (w == CSTL_ETIMEDOUT)
                errno = ETIMEDOUT;
            else
                errno = soerr ? soerr : EIO;
        }
        if (c == 0) {
            *fd_out = fd;
            rc = 0;
        } else {
            last_errno = errno;
            close(fd);
        }
    }
    freeaddrinfo(res);
    if (rc != 0)
        cstl_error_set(err, last_errno == ETIMEDOUT ? CSTL_ETIMEDOUT : CSTL_EUNAVAILABLE,
                       "cannot connect to %s:%s: %s", url->host, url->port,
                       strerror(last_errno ? last_errno : ECONNREFUSED));
    return rc;
}

static int send_all(int fd, const char *data, size_t len, int64_t deadline, cstl_error *err)
{
    while (len > 0) {
        ssize_t w = send(fd, data, len, MSG_NOSIGNAL);
        if (w > 0) {
            data += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            int rc = wait_fd(fd, POLLOUT, deadline);
            if (rc != 0)
                return cstl_error_set(err, rc, "sending the request: %s",
                                      rc == CSTL_ETIMEDOUT ? "timed out" : "poll failed");
            continue;
        }
        return cstl_error_set(err, CSTL_EIO, "sending the request: %s", strerror(errno));
    }
    return 0;
}

/* ---- reading ----------------------------------------------------------------------------- */

typedef struct reader {
    int fd;
    int64_t deadline;
    char buf[8192];
    size_t pos, len;
    bool eof;
} reader;

/* Refills the buffer; 0 (possibly at eof) or a code. */
static int fill(reader *r, cstl_error *err)
{
    r->pos = r->len = 0;
    for (;;) {
        ssize_t n = recv(r->fd, r->buf, sizeof(r->buf), 0);
        if (n > 0) {
            r->len = (size_t)n;
            return 0;
        }
        if (n == 0) {
            r->eof = true;
            return 0;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            int rc = wait_fd(r->fd, POLLIN, r->deadline);
            if (rc != 0)
                return cstl_error_set(err, rc, "reading the response: %s",
                                      rc == CSTL_ETIMEDOUT ? "timed out" : "poll failed");
            continue;
        }
        return cstl_error_set(err, CSTL_EIO, "reading the response: %s", strerror(errno));
    }
}

/* Reads one line ending in LF (CR stripped) of at most max bytes into out. */
static int read_line(reader *r, char *out, size_t max, cstl_error *err)
{
    size_t n = 0;
    for (;;) {
        if (r->pos == r->len) {
            if (r->eof)
                return cstl_error_set(err, CSTL_EIO,
                                      "the connection closed inside the response "
                                      "head");
            int rc = fill(r, err);
            if (rc != 0)
                return rc;
            continue;
        }
        char c = r->buf[r->pos++];
        if (c == '\n')
            break;
        if (n + 1 >= max)
            return cstl_error_set(err, CSTL_ETOOBIG, "a response line is over %zu bytes", max - 1);
        out[n++] = c;
    }
    if (n > 0 && out[n - 1] == '\r')
        n--;
    out[n] = '\0';
    return 0;
}

typedef struct body_buf {
    char *data;
    size_t len, cap;
} body_buf;

static int body_append(body_buf *b, const char *data, size_t n, cstl_error *err)
{
    if (b->len + n > CSTL_HTTP_CLIENT_BODY_MAX)
        return cstl_error_set(err, CSTL_ETOOBIG, "the response body is over %zu bytes",
                              CSTL_HTTP_CLIENT_BODY_MAX);
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (p == NULL)
            cstl_panic("out of memory for a response body");
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* Reads exactly n bytes (or until eof when n is (size_t)-1) into b. */
static int read_bytes(reader *r, body_buf *b, size_t n, cstl_error *err)
{
    bool to_eof = n == (size_t)-1;
    while (to_eof || n > 0) {
        if (r->pos == r->len) {
            if (r->eof)
                return to_eof ? 0
                              : cstl_error_set(err, CSTL_EIO,
                                               "the connection closed inside the response body");
            int rc = fill(r, err);
            if (rc != 0)
                return rc;
            continue;
        }
        size_t take = r->len - r->pos;
        if (!to_eof && take > n)
            take = n;
        int rc = body_append(b, r->buf + r->pos, take, err);
        if (rc != 0)
            return rc;
        r->pos += take;
        if (!to_eof)
            n -= take;
    }
    return 0;
}

static int read_chunked(reader *r, body_buf *b, cstl_error *err)
{
    char line[128];
    for (;;) {
        int rc = read_line(r, line, sizeof(line), err);
        if (rc != 0)
            return rc;
        char *end = NULL;
        errno = 0;
        unsigned long long size = strtoull(line, &end, 16);
        if (end == line || errno != 0 || (*end != '\0' && *end != ';'))
            return cstl_error_set(err, CSTL_EPARSE, "malformed chunk size \"%.32s\"", line);
        if (size > CSTL_HTTP_CLIENT_BODY_MAX)
            return cstl_error_set(err, CSTL_ETOOBIG,
                                  "a chunk of %llu bytes is over the %zu byte "
                                  "cap",
                                  size, CSTL_HTTP_CLIENT_BODY_MAX);
        if (size == 0)
            break;
        if ((rc = read_bytes(r, b, (size_t)size, err)) != 0 ||
            (rc = read_line(r, line, sizeof(line), err)) != 0)
            return rc;
        if (line[0] != '\0')
            return cstl_error_set(err, CSTL_EPARSE, "a chunk does not end with CRLF");
    }
    /* trailers, up to the empty line */
    size_t head = 0;
    for (;;) {
        int rc = read_line(r, line, sizeof(line), err);
        if (rc != 0)
            return rc;
        if (line[0] == '\0')
            return 0;
        head += strlen(line);
        if (head > CSTL_HTTP_CLIENT_HEAD_MAX)
            return cstl_error_set(err, CSTL_ETOOBIG, "the trailers are over %zu bytes",
                                  CSTL_HTTP_CLIENT_HEAD_MAX);
    }
}

static int parse_status(const char *line, int *status, cstl_error *err)
{
    if (strlen(line) < 12 || strncmp(line, "HTTP/1.", 7) != 0 ||
        (line[7] != '0' && line[7] != '1') || line[8] != ' ' || !isdigit((unsigned char)line[9]) ||
        !isdigit((unsigned char)line[10]) || !isdigit((unsigned char)line[11]) ||
        (line[12] != ' ' && line[12] != '\0'))
        return cstl_error_set(err, CSTL_EPARSE, "malformed status line \"%.64s\"", line);
    *status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    if (*status < 100)
        return cstl_error_set(err, CSTL_EPARSE, "malformed status line \"%.64s\"", line);
    return 0;
}

typedef struct head_info {
    long long content_length; /* -1: none */
    bool chunked;
    int retry_after_s;
} head_info;

static int parse_header(const char *line, head_info *h, cstl_error *err)
{
    const char *colon = strchr(line, ':');
    if (colon == NULL || colon == line)
        return cstl_error_set(err, CSTL_EPARSE, "malformed header line \"%.64s\"", line);
    size_t nlen = (size_t)(colon - line);
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (nlen == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
        char *end = NULL;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (end == v || errno != 0 || n < 0 || (*end != '\0' && *end != ' '))
            return cstl_error_set(err, CSTL_EPARSE, "malformed Content-Length \"%.32s\"", v);
        if ((unsigned long long)n > CSTL_HTTP_CLIENT_BODY_MAX)
            return cstl_error_set(err, CSTL_ETOOBIG, "the response body of %lld bytes is over %zu",
                                  n, CSTL_HTTP_CLIENT_BODY_MAX);
        h->content_length = n;
    } else if (nlen == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
        h->chunked = strcasestr(v, "chunked") != NULL;
    } else if (nlen == 11 && strncasecmp(line, "Retry-After", 11) == 0) {
        char *end = NULL;
        long s = strtol(v, &end, 10);
        if (end != v && s >= 0 && s <= 3600)
            h->retry_after_s = (int)s;
    }
    return 0;
}

static int read_response(reader *r, const char *method, cstl_http_response *resp, cstl_error *err)
{
    char line[CSTL_HTTP_CLIENT_HEAD_MAX] = {0};
    int rc;
    /* 1xx interim responses are skipped */
    do {
        if ((rc = read_line(r, line, sizeof(line), err)) != 0 ||
            (rc = parse_status(line, &resp->status, err)) != 0)
            return rc;
        head_info h = {.content_length = -1, .retry_after_s = -1};
        size_t head = strlen(line);
        for (;;) {
            if ((rc = read_line(r, line, sizeof(line), err)) != 0)
                return rc;
            if (line[0] == '\0')
                break;
            head += strlen(line) + 2;
            if (head > CSTL_HTTP_CLIENT_HEAD_MAX)
                return cstl_error_set(err, CSTL_ETOOBIG, "the response head is over %zu bytes",
                                      CSTL_HTTP_CLIENT_HEAD_MAX);
            if ((rc = parse_header(line, &h, err)) != 0)
                return rc;
        }
        if (resp->status < 200)
            continue;
        resp->retry_after_s = h.retry_after_s;
        body_buf b = {0};
        if (strcmp(method, "HEAD") == 0 || resp->status == 204 || resp->status == 304)
            rc = 0;
        else if (h.chunked)
            rc = read_chunked(r, &b, err);
        else if (h.content_length >= 0)
            rc = read_bytes(r, &b, (size_t)h.content_length, err);
        else
            rc = read_bytes(r, &b, (size_t)-1, err);
        if (rc == 0 && b.data == NULL)
            rc = body_append(&b, "", 0, err);
        if (rc != 0) {
            free(b.data);
            return rc;
        }
        resp->body = b.data;
        resp->body_len = b.len;
        return 0;
    } while (1);
}

int cstl_http_client_request(const cstl_http_url *url,
                             const char *method,
                             const char *path,
                             const cstl_http_header *headers,
                             size_t n_headers,
                             const char *body,
                             int timeout_ms,
                             cstl_http_response *resp,
                             cstl_error *err)
{
    memset(resp, 0, sizeof(*resp));
    resp->retry_after_s = -1;
    int64_t deadline = mono_ms() + (timeout_ms > 0 ? timeout_ms : 10000);
    size_t blen = body ? strlen(body) : 0;
    size_t cap = CSTL_HTTP_CLIENT_HEAD_MAX;
    char *head = cstl_xcalloc(1, cap);
    int n = snprintf(head, cap,
                     "%s %s%s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n"
                     "User-Agent: constellation-worker\r\nAccept: application/json\r\n",
                     method, url->prefix, path, url->host, url->port);
    for (size_t i = 0; i < n_headers && n > 0 && (size_t)n < cap; i++)
        n += snprintf(head + n, cap - (size_t)n, "%s: %s\r\n", headers[i].name, headers[i].value);
    if (body != NULL && n > 0 && (size_t)n < cap)
        n += snprintf(head + n, cap - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    if (n > 0 && (size_t)n < cap)
        n += snprintf(head + n, cap - (size_t)n, "\r\n");
    if (n <= 0 || (size_t)n >= cap) {
        free(head);
        return cstl_error_set(err, CSTL_ETOOBIG, "the request head is over %zu bytes", cap);
    }
    int fd = -1;
    int rc = connect_to(url, deadline, &fd, err);
    if (rc == 0)
        rc = send_all(fd, head, (size_t)n, deadline, err);
    free(head);
    if (rc == 0 && blen > 0)
        rc = send_all(fd, body, blen, deadline, err);
    if (rc == 0) {
        reader *r = cstl_xcalloc(1, sizeof(*r));
        r->fd = fd;
        r->deadline = deadline;
        rc = read_response(r, method, resp, err);
        free(r);
    }
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        cstl_http_response_free(resp);
        resp->status = 0;
    }
    return rc;
}

void cstl_http_response_free(cstl_http_response *resp)
{
    if (resp == NULL)
        return;
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}
