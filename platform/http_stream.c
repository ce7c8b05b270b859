/*
 * http_stream.c - streamed responses (see http.h): a body of unknown length produced by a
 * callback, for Server-Sent Events.
 *
 * A stream sleeps without a thread while it has nothing to send: its MHD connection is suspended
 * from the content reader when the producer returns 0, and resumed by cstl_http_stream_wake. The
 * stream's lock makes "produce, find nothing, suspend" atomic with respect to "wake": a wake
 * either sees the connection suspended and resumes it, or leaves a pending flag that the reader
 * checks before suspending. Lifetime: reference-counted by the MHD response (dropped when MHD
 * frees it) and by the owner's reference; the owner's done(ud) runs when MHD frees the response.
 * Server stop wakes every stream; a woken reader that sees the server stopping ends the body.
 */
#include "platform/http_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define STREAM_BLOCK ((size_t)16 * 1024)

struct cstl_http_stream {
    pthread_mutex_t lock;
    cstl_http_server *server;
    struct MHD_Connection *conn; /* NULL once the request completed */
    cstl_http_stream_fn fn;
    void *ud;
    void (*done)(void *ud);
    int refs;
    bool suspended;
    bool wake_pending;
    bool ended;
    struct cstl_http_stream *prev, *next; /* in server->streams, guarded by server->lock */
};

static void stream_unref(cstl_http_stream *s)
{
    pthread_mutex_lock(&s->lock);
    int left = --s->refs;
    pthread_mutex_unlock(&s->lock);
    if (left > 0)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    cstl_http_stream *s = cls;
    pthread_mutex_lock(&s->lock);
    if (s->ended || atomic_load(&s->server->stopping) || s->conn == NULL) {
        s->ended = true;
        pthread_mutex_unlock(&s->lock);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    s->wake_pending = false;
    long n = s->fn(s->ud, buf, max);
    if (n < 0 || (size_t)n > max) {
        s->ended = true;
        pthread_mutex_unlock(&s->lock);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (n == 0 && !s->wake_pending) {
        s->suspended = true;
        MHD_suspend_connection(s->conn);
    }
    pthread_mutex_unlock(&s->lock);
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    cstl_http_stream *s = cls;
    cstl_http_server *server = s->server;
    pthread_mutex_lock(&server->lock);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        server->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    server->nstreams--;
    pthread_mutex_unlock(&server->lock);
    pthread_mutex_lock(&s->lock);
    s->ended = true;
    s->conn = NULL;
    pthread_mutex_unlock(&s->lock);
    if (s->done != NULL)
        s->done(s->ud);
    stream_unref(s);
}

int cstl_http_respond_stream(cstl_http_request *req,
                             int status,
                             const char *content_type,
                             cstl_http_stream_fn fn,
                             void *ud,
                             void (*done)(void *ud),
                             cstl_http_stream **out)
{
    if (req->responded || status < 100 || status > 599 || fn == NULL)
        return CSTL_EINVAL;
    cstl_http_stream *s = cstl_xcalloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->server = req->server;
    s->fn = fn;
    s->ud = ud;
    s->done = done;
    s->refs = out != NULL ? 2 : 1;
    req->responded = true;
    req->status = status;
    req->content_type = content_type != NULL ? cstl_http_pool_strdup(req, content_type) : NULL;
    req->stream = s;
    if (out != NULL)
        *out = s;
    return 0;
}

struct MHD_Response *cstl_http_stream_response(cstl_http_request *req)
{
    cstl_http_stream *s = req->stream;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK,
                                                                  stream_read, s, stream_free);
    if (resp == NULL) {
        if (s->done != NULL)
            s->done(s->ud);
        s->done = NULL;
        req->stream = NULL;
        stream_unref(s);
        return NULL;
    }
    s->conn = req->conn;
    cstl_http_server *server = req->server;
    pthread_mutex_lock(&server->lock);
    s->next = server->streams;
    if (server->streams != NULL)
        server->streams->prev = s;
    server->streams = s;
    server->nstreams++;
    pthread_mutex_unlock(&server->lock);
    return resp;
}

void cstl_http_stream_request_done(cstl_http_request *req)
{
    cstl_http_stream *s = req->stream;
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    s->ended = true;
    s->conn = NULL;
    pthread_mutex_unlock(&s->lock);
}

void cstl_http_stream_wake(cstl_http_stream *stream)
{
    cstl_http_stream *s = stream;
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    if (s->suspended && s->conn != NULL) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    } else {
        s->wake_pending = true;
    }
    pthread_mutex_unlock(&s->lock);
}

void cstl_http_stream_release(cstl_http_stream *stream)
{
    if (stream != NULL)
        stream_unref(stream);
}

size_t cstl_http_stream_count(cstl_http_server *server)
{
    pthread_mutex_lock(&server->lock);
    size_t n = server->nstreams;
    pthread_mutex_unlock(&server->lock);
    return n;
}

void cstl_http_stream_stop_all(cstl_http_server *server)
{
    pthread_mutex_lock(&server->lock);
    for (cstl_http_stream *s = server->streams; s != NULL; s = s->next)
        cstl_http_stream_wake(s);
    pthread_mutex_unlock(&server->lock);
}

int cstl_http_request_set_send_buffer(cstl_http_request *req, int bytes)
{
    if (bytes < 0)
        return CSTL_EINVAL;
    if (bytes == 0)
        return 0;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info == NULL)
        return CSTL_EIO;
    return setsockopt(info->connect_fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes)) == 0
               ? 0
               : CSTL_EIO;
}
