/*
 * http_deferred.c - deferred responses (see http.h): a handler returns without answering and the
 * answer is given later from any thread, while the connection waits without holding a thread.
 *
 * The handle's lock makes "the handler returned, no answer yet, suspend" atomic with respect to
 * "answer, resume": an answer either finds the connection suspended and resumes it, or finds it
 * not parked yet, in which case the server thread sees the answer when it parks and queues it at
 * once. The answer is written into the request under the handle's lock, the only time a thread
 * other than the connection's touches the request.
 *
 * Lifetime: the handle has two references, the owner's (given back by the one completing call)
 * and the request's (given back when the request is freed, which detaches it). Whichever goes
 * last frees it, so a late answer to a request that is gone finds the handle and is refused.
 *
 * Stop: MHD must not be stopped with a suspended connection, so once the grace period is over
 * every deferred request still waiting is answered 503 and resumed, and later deferrals (a
 * request read meanwhile on a kept-alive connection) are answered 503 at once.
 */
#include "platform/http_internal.h"

#include <stdlib.h>

struct cstl_http_deferred {
    pthread_mutex_t lock;
    cstl_http_server *server;
    cstl_http_request *req; /* NULL once the request was freed */
    int refs;
    bool suspended;
    bool answered;
    struct cstl_http_deferred *prev, *next; /* in server->deferreds, guarded by server->lock */
};

static void deferred_unref(cstl_http_deferred *d)
{
    pthread_mutex_lock(&d->lock);
    int left = --d->refs;
    pthread_mutex_unlock(&d->lock);
    if (left > 0)
        return;
    pthread_mutex_destroy(&d->lock);
    free(d);
}

static void respond_stopping(cstl_http_request *req, void *ud)
{
    (void)ud;
    cstl_http_set_header(req, "Retry-After", "1");
    cstl_http_respond_problem(req, 503, "unavailable", "service unavailable",
                              "the server is stopping, retry later", NULL);
}

/* Answers d with fn under its lock and resumes the connection when it is parked. Returns 0, or
 * CSTL_ESHUTDOWN when d was answered already or its request is gone (fn not called). */
static int deferred_answer(cstl_http_deferred *d, cstl_http_deferred_fn fn, void *ud)
{
    pthread_mutex_lock(&d->lock);
    cstl_http_request *req = d->req;
    if (req == NULL || d->answered) {
        pthread_mutex_unlock(&d->lock);
        return CSTL_ESHUTDOWN;
    }
    fn(req, ud);
    if (!req->responded)
        cstl_http_respond_internal(req);
    d->answered = true;
    if (d->suspended) {
        d->suspended = false;
        MHD_resume_connection(req->conn);
    }
    pthread_mutex_unlock(&d->lock);
    return 0;
}

cstl_http_deferred *cstl_http_defer(cstl_http_request *req)
{
    if (req == NULL || req->responded || req->deferred != NULL || req->stream != NULL)
        return NULL;
    cstl_http_deferred *d = cstl_xcalloc(1, sizeof(*d));
    pthread_mutex_init(&d->lock, NULL);
    d->server = req->server;
    d->req = req;
    d->refs = 2;
    req->deferred = d;
    cstl_http_server *s = req->server;
    pthread_mutex_lock(&s->lock);
    bool closed = s->deferred_closed;
    d->next = s->deferreds;
    if (s->deferreds != NULL)
        s->deferreds->prev = d;
    s->deferreds = d;
    s->ndeferred++;
    pthread_mutex_unlock(&s->lock);
    if (closed)
        deferred_answer(d, respond_stopping, NULL);
    return d;
}

int cstl_http_deferred_complete(cstl_http_deferred *d, cstl_http_deferred_fn fn, void *ud)
{
    if (d == NULL || fn == NULL)
        return CSTL_EINVAL;
    int rc = deferred_answer(d, fn, ud);
    deferred_unref(d);
    return rc;
}

typedef struct json_answer {
    int status;
    json_t *body;
    const char *type_suffix;
    const char *title;
    const char *detail;
} json_answer;

static void answer_json(cstl_http_request *req, void *ud)
{
    json_answer *a = ud;
    json_t *body = a->body;
    a->body = NULL;
    cstl_http_respond_json(req, a->status, body);
}

static void answer_problem(cstl_http_request *req, void *ud)
{
    const json_answer *a = ud;
    cstl_http_respond_problem(req, a->status, a->type_suffix, a->title, a->detail, NULL);
}

int cstl_http_deferred_respond_json(cstl_http_deferred *d, int status, json_t *body)
{
    json_answer a = {.status = status, .body = body};
    int rc = cstl_http_deferred_complete(d, answer_json, &a);
    json_decref(a.body); /* not taken when the request was gone */
    return rc;
}

int cstl_http_deferred_respond_problem(cstl_http_deferred *d,
                                       int status,
                                       const char *type_suffix,
                                       const char *title,
                                       const char *detail)
{
    json_answer a = {
        .status = status, .type_suffix = type_suffix, .title = title, .detail = detail};
    return cstl_http_deferred_complete(d, answer_problem, &a);
}

size_t cstl_http_deferred_count(cstl_http_server *server)
{
    pthread_mutex_lock(&server->lock);
    size_t n = server->ndeferred;
    pthread_mutex_unlock(&server->lock);
    return n;
}

bool cstl_http_deferred_park(cstl_http_request *req)
{
    cstl_http_deferred *d = req->deferred;
    pthread_mutex_lock(&d->lock);
    bool park = !d->answered;
    if (park) {
        d->suspended = true;
        MHD_suspend_connection(req->conn);
    }
    pthread_mutex_unlock(&d->lock);
    return park;
}

bool cstl_http_deferred_ready(cstl_http_request *req)
{
    cstl_http_deferred *d = req->deferred;
    if (d == NULL)
        return false;
    pthread_mutex_lock(&d->lock);
    bool ready = d->answered && !d->suspended;
    pthread_mutex_unlock(&d->lock);
    return ready;
}

void cstl_http_deferred_request_done(cstl_http_request *req)
{
    cstl_http_deferred *d = req->deferred;
    if (d == NULL)
        return;
    req->deferred = NULL;
    pthread_mutex_lock(&d->lock);
    d->req = NULL;
    pthread_mutex_unlock(&d->lock);
    cstl_http_server *s = d->server;
    pthread_mutex_lock(&s->lock);
    if (d->prev != NULL)
        d->prev->next = d->next;
    else
        s->deferreds = d->next;
    if (d->next != NULL)
        d->next->prev = d->prev;
    s->ndeferred--;
    pthread_mutex_unlock(&s->lock);
    deferred_unref(d);
}

size_t cstl_http_deferred_stop_all(cstl_http_server *server)
{
    /* Take a reference to each under the server's lock, answer them outside it: answering
     * resumes connections, and MHD may be completing requests (which take the lock) meanwhile. */
    pthread_mutex_lock(&server->lock);
    server->deferred_closed = true;
    size_t n = server->ndeferred, i = 0;
    cstl_http_deferred **all = cstl_xcalloc(n > 0 ? n : 1, sizeof(cstl_http_deferred *));
    for (cstl_http_deferred *d = server->deferreds; d != NULL && i < n; d = d->next) {
        pthread_mutex_lock(&d->lock);
        d->refs++;
        pthread_mutex_unlock(&d->lock);
        all[i++] = d;
    }
    pthread_mutex_unlock(&server->lock);
    size_t answered = 0;
    for (size_t k = 0; k < i; k++) {
        if (deferred_answer(all[k], respond_stopping, NULL) == 0)
            answered++;
        deferred_unref(all[k]);
    }
    free(all);
    return answered;
}
