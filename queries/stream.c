/*
 * stream.c - GET /v1/stream: Server-Sent Events of the caller's tenant's job, worker and GPU
 * changes, resumable with Last-Event-ID.
 *
 * One hub consumer (read_committed, manual assignment of every partition of the jobs and fleet
 * events topics, starting at their ends) feeds bounded per-client rings. It also reads the job
 * logs topic, only to tell the job log streams (logs.c) of new lines: its records are not
 * streamed here, and its partitions are not part of the event ids. Jobs events go to their
 * tenant's clients only; fleet events go to every client with job ids removed (a fleet event does
 * not say whose job it names). Every event id is the position vector of the hub after that event
 * ("v1.j0-15.j1-7.f0-3": topic, partition, next offset), so a client resuming with it gets a
 * catch-up consumer of its own that reads from those offsets up to where the hub was when the
 * client registered, while the hub's later events wait in the client's pending queue; then the
 * queue is appended and the client is live: no gap, no duplicate.
 *
 * Threads: the hub thread consumes and sends heartbeats; a catch-up thread per resuming client;
 * HTTP threads run the handler and the stream producer (sse_read). hub->lock guards every client's
 * ring and the client list. Wakes happen outside hub->lock (the stream lock is taken before
 * hub->lock in sse_read), with a client reference held.
 */
#include "platform/codec.h"
#include "platform/events.h"
#include "platform/id.h"
#include "platform/kafka.h"
#include "platform/log.h"
#include "queries/internal.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARTS       128
#define CATCHUP_IDLE_MS 5000
#define CATCHUP_MAX_MS  30000
#define POLL_MS         100
#define RESUME_FRAME                                                                               \
    "event: resume\ndata: {\"reason\":\"the client fell behind; reconnect with "                   \
    "Last-Event-ID\"}\n\n"

typedef struct part {
    char tag; /* 'j' jobs, 'f' fleet, 'l' job logs (hints for logs.c only) */
    int32_t partition;
} part;

static const char TAGS[3] = {'j', 'f', 'l'};

typedef struct sse_client sse_client;

typedef struct wake_list {
    sse_client **items;
    size_t n, cap;
} wake_list;

struct query_hub {
    cstl_query_api *api;
    const char *topics[3]; /* by tag: jobs, fleet, logs ("" none) */
    pthread_mutex_t lock;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    atomic_bool ready;
    part parts[MAX_PARTS];
    size_t nparts;
    int64_t pos[MAX_PARTS];  /* next offset per part, as far as the hub has dispatched */
    int64_t seen[MAX_PARTS]; /* 1 + the offset of the last record read per part; -1 none */
    sse_client *clients;
    size_t nclients;     /* streams open or being opened */
    size_t ncatchup;     /* catch-up threads running */
    pthread_cond_t idle; /* signalled when ncatchup drops */
};

struct sse_client {
    query_hub *hub;
    char tenant[37];
    cstl_http_stream *stream;
    char **ring;
    size_t cap, head, count, off;
    char **pending; /* live frames held while catching up */
    size_t npending;
    bool live, overflow, resume_sent, done;
    long long last_ms;
    int refs;
    int64_t from[MAX_PARTS]; /* catch-up: start offsets, then the client's own positions */
    int64_t until[MAX_PARTS];
    pthread_t thread;
    sse_client *prev, *next;
};

/* Frees a client nobody refers to any more; touches nothing of the hub. */
static void client_free(sse_client *c)
{
    for (size_t i = 0; i < c->count; i++)
        free(c->ring[(c->head + i) % c->cap]);
    for (size_t i = 0; i < c->npending; i++)
        free(c->pending[i]);
    free(c->ring);
    free(c->pending);
    cstl_http_stream_release(c->stream);
    free(c);
}

static void client_unref(sse_client *c)
{
    query_hub *hub = c->hub;
    pthread_mutex_lock(&hub->lock);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&hub->lock);
    if (last)
        client_free(c);
}

/* Appends a frame (taken) to c's ring, or marks it overflowed. hub->lock held. */
static void push_locked(sse_client *c, char *frame, bool to_pending)
{
    if (c->overflow) {
        free(frame);
        return;
    }
    if (to_pending) {
        if (c->npending == c->cap) {
            c->overflow = true;
            free(frame);
            return;
        }
        c->pending[c->npending++] = frame;
        return;
    }
    if (c->count == c->cap) {
        c->overflow = true;
        free(frame);
        return;
    }
    c->ring[(c->head + c->count++) % c->cap] = frame;
    c->last_ms = query_now_ms();
}

/* The stream producer: copies buffered frames into buf. Runs on an HTTP thread. */
static long sse_read(void *ud, char *buf, size_t max)
{
    sse_client *c = ud;
    query_hub *hub = c->hub;
    size_t n = 0;
    pthread_mutex_lock(&hub->lock);
    while (n < max && c->count > 0) {
        const char *f = c->ring[c->head];
        size_t len = strlen(f) - c->off;
        size_t take = len < max - n ? len : max - n;
        memcpy(buf + n, f + c->off, take);
        n += take;
        c->off += take;
        if (c->off == strlen(f)) {
            free(c->ring[c->head]);
            c->head = (c->head + 1) % c->cap;
            c->count--;
            c->off = 0;
        }
    }
    long rc = (long)n;
    if (n == 0 && c->overflow) {
        if (!c->resume_sent && max >= sizeof(RESUME_FRAME)) {
            memcpy(buf, RESUME_FRAME, sizeof(RESUME_FRAME) - 1);
            c->resume_sent = true;
            rc = (long)sizeof(RESUME_FRAME) - 1;
        } else {
            rc = CSTL_HTTP_STREAM_END;
        }
    }
    pthread_mutex_unlock(&hub->lock);
    return rc;
}

/* The server is finished with the stream: unlink the client. */
static void sse_done(void *ud)
{
    sse_client *c = ud;
    query_hub *hub = c->hub;
    pthread_mutex_lock(&hub->lock);
    c->done = true;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (hub->clients == c)
        hub->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    hub->nclients--;
    pthread_mutex_unlock(&hub->lock);
    client_unref(c); /* the stream handle is released with the client, after the last wake */
}

/* Adds c to the list to wake, taking a reference. hub->lock held. */
static void wake_add_locked(wake_list *w, sse_client *c)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 64;
        w->items = cstl_xrealloc(w->items, w->cap * sizeof(sse_client *));
    }
    c->refs++;
    w->items[w->n++] = c;
}

/* Wakes the clients of w and drops their references; empties w. */
static void wake_all(wake_list *w)
{
    for (size_t i = 0; i < w->n; i++) {
        cstl_http_stream_wake(w->items[i]->stream);
        client_unref(w->items[i]);
    }
    w->n = 0;
}

static int part_index(const query_hub *hub, char tag, int32_t partition)
{
    for (size_t i = 0; i < hub->nparts; i++)
        if (hub->parts[i].tag == tag && hub->parts[i].partition == partition)
            return (int)i;
    return -1;
}

static char *format_id(const query_hub *hub, const int64_t *pos)
{
    size_t cap = 8 + hub->nparts * 28, o = 0;
    char *id = cstl_xmalloc(cap);
    o += (size_t)snprintf(id, cap, "v1");
    for (size_t i = 0; i < hub->nparts; i++)
        if (hub->parts[i].tag != 'l')
            o += (size_t)snprintf(id + o, cap - o, ".%c%" PRId32 "-%" PRId64, hub->parts[i].tag,
                                  hub->parts[i].partition, pos[i]);
    return id;
}

/* Parses a Last-Event-ID into offsets (parts it does not name keep what out holds). */
static int parse_id(const query_hub *hub, const char *text, int64_t *out)
{
    if (strncmp(text, "v1", 2) != 0 || strlen(text) > 4096)
        return CSTL_EINVAL;
    const char *p = text + 2;
    while (*p == '.') {
        char tag = p[1];
        char *end;
        long partition = strtol(p + 2, &end, 10);
        if ((tag != 'j' && tag != 'f') || end == p + 2 || *end != '-')
            return CSTL_EINVAL;
        const char *num = end + 1;
        long long off = strtoll(num, &end, 10);
        if (end == num || off < 0 || partition < 0 || partition > INT32_MAX)
            return CSTL_EINVAL;
        int i = part_index(hub, tag, (int32_t)partition);
        if (i < 0)
            return CSTL_EINVAL;
        out[i] = off;
        p = end;
    }
    return *p == '\0' ? 0 : CSTL_EINVAL;
}

static void strip_job_ids(json_t *data)
{
    json_object_del(data, "job_id");
    json_object_del(data, "job_ids");
}

/*
 * Decodes a record into the payload shown to clients. Sets *tenant (borrowed from h) for jobs
 * events, NULL for fleet events (shown to every tenant). NULL when the record is not an event.
 */
static json_t *record_payload(const rd_kafka_message_t *m, char tag, cstl_event_headers *h)
{
    rd_kafka_headers_t *hdrs = NULL;
    const cstl_schema_entry *writer = NULL;
    json_t *data = NULL;
    cstl_error err;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        cstl_event_headers_parse(hdrs, h, &err) != 0 ||
        cstl_codec_writer(m->payload, m->len, &writer, &err) != 0 ||
        cstl_codec_decode_json(m->payload, m->len, writer->latest, &data, &err) != 0)
        return NULL;
    if (tag == 'f')
        strip_job_ids(data);
    char time[CSTL_EVENT_TIME_STRLEN + 1] = "";
    cstl_event_time_format(h->time_us, time);
    return json_pack("{s:s,s:s,s:s,s:I,s:s,s:o}", "id", h->id, "type", h->type, "subject",
                     h->subject, "version", (json_int_t)h->version, "time", time, "data", data);
}

/* "jobs.JobSubmitted" from "io.constellation.jobs.JobSubmitted.v1". */
static void event_name(const char *type, char *out, size_t n)
{
    const char *p = strncmp(type, "io.constellation.", 17) == 0 ? type + 17 : type;
    snprintf(out, n, "%s", p);
    char *v = strrchr(out, '.');
    if (v != NULL && v[1] == 'v')
        *v = '\0';
}

static char *make_frame(const char *id, const char *name, json_t *payload)
{
    char *data = json_dumps(payload, JSON_COMPACT);
    if (data == NULL)
        cstl_panic("cannot serialize an event");
    size_t len = strlen(id) + strlen(name) + strlen(data) + 32;
    char *frame = cstl_xmalloc(len);
    snprintf(frame, len, "id: %s\nevent: %s\ndata: %s\n\n", id, name, data);
    free(data);
    return frame;
}

/* Dispatches one hub record to the clients; collects those to wake. hub->lock held. */
static void
dispatch_locked(query_hub *hub, const rd_kafka_message_t *m, char tag, int idx, wake_list *wake)
{
    hub->pos[idx] = m->offset + 1;
    cstl_event_headers h;
    json_t *payload = record_payload(m, tag, &h);
    if (payload == NULL)
        return;
    char name[300];
    event_name(h.type, name, sizeof(name));
    char *id = format_id(hub, hub->pos);
    char *frame = make_frame(id, name, payload);
    free(id);
    json_decref(payload);
    for (sse_client *c = hub->clients; c != NULL; c = c->next) {
        if (tag == 'j' && strcmp(c->tenant, h.tenant) != 0)
            continue;
        push_locked(c, cstl_xstrdup(frame), !c->live);
        if (c->live)
            wake_add_locked(wake, c);
    }
    free(frame);
}

static cstl_kafka_consumer *consumer_new(query_hub *hub, const char *what, cstl_error *err)
{
    char client_id[128], group[160];
    char uuid[CSTL_UUID_STRLEN + 1];
    cstl_uuid_v7_string(uuid);
    snprintf(client_id, sizeof(client_id), "constellation-queries-%s", what);
    snprintf(group, sizeof(group), "constellation-queries-%s-%s", what, uuid);
    cstl_kafka_conf *conf = cstl_kafka_conf_new(hub->api->cfg->kafka_brokers, client_id, err);
    if (conf == NULL)
        return NULL;
    cstl_kafka_consumer *c = cstl_kafka_consumer_new(conf, group, NULL, NULL, err);
    cstl_kafka_conf_free(conf);
    return c;
}

static int topic_index(char tag)
{
    return tag == 'j' ? 0 : tag == 'f' ? 1 : 2;
}

/* Assigns c the hub's partitions at offsets; those of the logs topic only when logs is set. */
static int assign_at(
    query_hub *hub, cstl_kafka_consumer *c, const int64_t *offsets, bool logs, cstl_error *err)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)hub->nparts);
    for (size_t i = 0; i < hub->nparts; i++)
        if (logs || hub->parts[i].tag != 'l')
            rd_kafka_topic_partition_list_add(list, hub->topics[topic_index(hub->parts[i].tag)],
                                              hub->parts[i].partition)
                ->offset = offsets[i];
    int rc = cstl_kafka_consumer_assign(c, list, err);
    rd_kafka_topic_partition_list_destroy(list);
    return rc;
}

/* Finds the partitions and their ends; the hub starts there. */
static int hub_discover(query_hub *hub, cstl_kafka_consumer *c, cstl_error *err)
{
    rd_kafka_t *rk = cstl_kafka_consumer_handle(c);
    hub->nparts = 0;
    for (int t = 0; t < 3; t++) {
        if (hub->topics[t][0] == '\0')
            continue;
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, hub->topics[t], NULL);
        rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 5000);
        rd_kafka_topic_destroy(rkt);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            return cstl_kafka_error_from_code(err, e, "topic metadata");
        int np = md->topic_cnt == 1 && md->topics[0].err == 0 ? md->topics[0].partition_cnt : 0;
        rd_kafka_metadata_destroy(md);
        if (np == 0)
            return cstl_error_set(err, CSTL_EUNAVAILABLE, "topic \"%s\" has no partitions",
                                  hub->topics[t]);
        for (int p = 0; p < np && hub->nparts < MAX_PARTS; p++) {
            int64_t lo, hi;
            if (cstl_kafka_consumer_watermarks(c, hub->topics[t], p, &lo, &hi, 5000, err) != 0)
                return err->code;
            hub->parts[hub->nparts] = (part){TAGS[t], p};
            hub->seen[hub->nparts] = -1;
            hub->pos[hub->nparts++] = hi;
        }
    }
    return assign_at(hub, c, hub->pos, true, err);
}

static void heartbeat_locked(query_hub *hub, wake_list *wake)
{
    long long now = query_now_ms();
    long long every = (long long)hub->api->cfg->sse_heartbeat_s * 1000;
    for (sse_client *c = hub->clients; c != NULL; c = c->next) {
        if (now - c->last_ms < every || c->overflow)
            continue;
        if (c->count < c->cap)
            push_locked(c, cstl_xstrdup(": heartbeat\n\n"), false);
        c->last_ms = now;
        wake_add_locked(wake, c);
    }
}

/* The tag of a topic the hub reads. */
static char tag_of(const query_hub *hub, const char *topic)
{
    for (int t = 0; t < 3; t++)
        if (hub->topics[t][0] != '\0' && strcmp(topic, hub->topics[t]) == 0)
            return TAGS[t];
    return 0;
}

static void *hub_main(void *arg)
{
    query_hub *hub = arg;
    cstl_error err;
    cstl_kafka_consumer *c = NULL;
    int backoff = 100;
    wake_list wake = {0};
    while (!atomic_load(&hub->stop)) {
        if (c == NULL) {
            c = consumer_new(hub, "hub", &err);
            if (c != NULL && hub_discover(hub, c, &err) != 0) {
                cstl_kafka_consumer_close(c, NULL);
                c = NULL;
            }
            if (c == NULL) {
                cstl_log(CSTL_LOG_WARN, "queries", "event stream not ready: %s", err.message);
                for (int i = 0; i < backoff / POLL_MS && !atomic_load(&hub->stop); i++) {
                    struct timespec ts = {0, POLL_MS * 1000000L};
                    nanosleep(&ts, NULL);
                }
                backoff = backoff < 5000 ? backoff * 2 : 5000;
                continue;
            }
            atomic_store(&hub->ready, true);
        }
        rd_kafka_message_t *m = NULL;
        int rc = cstl_kafka_consumer_poll(c, POLL_MS, &m, &err);
        char tag = 0;
        pthread_mutex_lock(&hub->lock);
        if (rc == 0 && m != NULL) {
            tag = tag_of(hub, rd_kafka_topic_name(m->rkt));
            int idx = part_index(hub, tag, m->partition);
            if (idx >= 0) {
                hub->seen[idx] = m->offset + 1;
                if (tag == 'l')
                    hub->pos[idx] = m->offset + 1;
                else
                    dispatch_locked(hub, m, tag, idx, &wake);
            }
        }
        heartbeat_locked(hub, &wake);
        pthread_mutex_unlock(&hub->lock);
        if (m != NULL && (tag == 'j' || tag == 'l'))
            query_logs_hint(hub->api, tag, m->partition, m->offset + 1, m->key, m->key_len);
        if (m != NULL)
            rd_kafka_message_destroy(m);
        wake_all(&wake);
        if (rc == CSTL_EKAFKA_FATAL) {
            cstl_log(CSTL_LOG_WARN, "queries", "event stream consumer failed: %s", err.message);
            cstl_kafka_consumer_close(c, NULL);
            c = NULL;
        }
    }
    free(wake.items);
    cstl_kafka_consumer_close(c, NULL);
    return NULL;
}

/* True when the catch-up consumer's position reached the goal on every partition. */
static bool caught_up(query_hub *hub, cstl_kafka_consumer *c, const sse_client *cl)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)hub->nparts);
    for (size_t i = 0; i < hub->nparts; i++)
        rd_kafka_topic_partition_list_add(list, hub->topics[topic_index(hub->parts[i].tag)],
                                          hub->parts[i].partition);
    bool done = rd_kafka_position(cstl_kafka_consumer_handle(c), list) == 0;
    for (size_t i = 0; done && i < hub->nparts; i++) {
        if (hub->parts[i].tag == 'l')
            continue; /* not read by a catch-up */
        int64_t at = list->elems[i].offset;
        if (at < 0)
            at = cl->from[i]; /* nothing fetched yet: where it starts */
        done = at >= cl->until[i];
    }
    rd_kafka_topic_partition_list_destroy(list);
    return done;
}

/* Catch-up of a resuming client: from its offsets up to where the hub was at registration. */
static void *catchup_main(void *arg)
{
    sse_client *cl = arg;
    query_hub *hub = cl->hub;
    cstl_error err;
    cstl_kafka_consumer *c = consumer_new(hub, "catchup", &err);
    bool ok = c != NULL && assign_at(hub, c, cl->from, false, &err) == 0;
    long long start = query_now_ms(), last = start;
    while (ok && !atomic_load(&hub->stop)) {
        pthread_mutex_lock(&hub->lock);
        bool gone = cl->done || cl->overflow;
        pthread_mutex_unlock(&hub->lock);
        if (gone || caught_up(hub, c, cl))
            break;
        /* Transaction markers may keep a position short of the goal: silence ends it too. */
        long long now = query_now_ms();
        if (now - last > CATCHUP_IDLE_MS || now - start > CATCHUP_MAX_MS)
            break;
        rd_kafka_message_t *m = NULL;
        if (cstl_kafka_consumer_poll(c, POLL_MS, &m, &err) != 0 || m == NULL)
            continue;
        last = query_now_ms();
        char tag = tag_of(hub, rd_kafka_topic_name(m->rkt));
        int idx = tag == 'l' ? -1 : part_index(hub, tag, m->partition);
        if (idx >= 0 && m->offset >= cl->from[idx] && m->offset < cl->until[idx]) {
            cl->from[idx] = m->offset + 1;
            cstl_event_headers h;
            json_t *payload = record_payload(m, tag, &h);
            if (payload != NULL && (tag == 'f' || strcmp(h.tenant, cl->tenant) == 0)) {
                char name[300];
                event_name(h.type, name, sizeof(name));
                char *id = format_id(hub, cl->from);
                pthread_mutex_lock(&hub->lock);
                push_locked(cl, make_frame(id, name, payload), false);
                pthread_mutex_unlock(&hub->lock);
                free(id);
                cstl_http_stream_wake(cl->stream);
            }
            json_decref(payload);
        }
        rd_kafka_message_destroy(m);
    }
    cstl_kafka_consumer_close(c, NULL);
    pthread_mutex_lock(&hub->lock);
    for (size_t i = 0; i < cl->npending; i++)
        push_locked(cl, cl->pending[i], false);
    cl->npending = 0;
    cl->live = true;
    if (!ok)
        cl->overflow = true; /* ends the stream with a resume event */
    pthread_mutex_unlock(&hub->lock);
    cstl_http_stream_wake(cl->stream);
    pthread_mutex_lock(&hub->lock);
    bool drop = --cl->refs == 0;
    hub->ncatchup--; /* the hub may be freed once this is 0 and the lock released */
    pthread_cond_broadcast(&hub->idle);
    pthread_mutex_unlock(&hub->lock);
    if (drop)
        client_free(cl);
    return NULL;
}

static int handle_stream(cstl_http_request *req, void *ud)
{
    static const char *const known[] = {"last_event_id", NULL};
    cstl_query_api *api = ud;
    query_hub *hub = api->hub;
    cstl_principal who;
    if (query_authenticate(api, req, &who) != 0 || query_check_params(req, known) != 0)
        return 0;
    if (!atomic_load(&hub->ready)) {
        cstl_http_set_header(req, "Retry-After", "2");
        return cstl_http_respond_problem(req, 503, "unavailable", "service unavailable",
                                         "the event stream is not ready yet", NULL);
    }
    const char *last = cstl_http_request_header(req, "Last-Event-ID");
    if (last == NULL)
        last = cstl_http_request_query(req, "last_event_id");
    sse_client *c = cstl_xcalloc(1, sizeof(*c));
    c->hub = hub;
    snprintf(c->tenant, sizeof(c->tenant), "%s", who.tenant_id);
    c->cap = (size_t)api->cfg->sse_buffer_events;
    c->ring = cstl_xcalloc(c->cap, sizeof(*c->ring));
    c->pending = cstl_xcalloc(c->cap, sizeof(*c->pending));
    c->refs = 1;
    pthread_mutex_lock(&hub->lock);
    memcpy(c->from, hub->pos, sizeof(c->from));
    memcpy(c->until, hub->pos, sizeof(c->until));
    int bad = last != NULL && *last != '\0' ? parse_id(hub, last, c->from) : 0;
    bool full = hub->nclients >= (size_t)api->cfg->sse_max_streams;
    if (bad == 0 && !full)
        hub->nclients++; /* reserved; released by sse_done or below */
    pthread_mutex_unlock(&hub->lock);
    if (bad != 0 || full) {
        client_unref(c);
        if (bad != 0)
            return query_bad_param(req, "Last-Event-ID", last, "not an event id of this stream");
        cstl_http_set_header(req, "Retry-After", "5");
        return cstl_http_respond_problem(req, 503, "too-many-streams", "too many streams",
                                         "the server has as many event streams open as it allows",
                                         NULL);
    }
    bool catchup = false;
    for (size_t i = 0; i < hub->nparts; i++)
        catchup = catchup || c->from[i] < c->until[i];
    c->live = !catchup;
    push_locked(c, cstl_xstrdup("retry: 2000\n: connected\n\n"), false);
    cstl_http_set_header(req, "Cache-Control", "no-cache");
    cstl_http_set_header(req, "X-Accel-Buffering", "no");
    c->refs++; /* the stream's, dropped by sse_done */
    /* Cannot fail: the request has not been answered. The stream is read only once the handler
     * has returned, so linking the client afterwards loses nothing. */
    cstl_http_respond_stream(req, 200, "text/event-stream", sse_read, c, sse_done, &c->stream);
    if (cstl_http_request_set_send_buffer(req, api->cfg->sse_send_buffer_bytes) != 0)
        cstl_log(CSTL_LOG_WARN, "queries", "cannot bound an event stream's send buffer to %d bytes",
                 api->cfg->sse_send_buffer_bytes);
    pthread_mutex_lock(&hub->lock);
    c->next = hub->clients;
    if (hub->clients != NULL)
        hub->clients->prev = c;
    hub->clients = c;
    if (catchup)
        hub->ncatchup++;
    pthread_mutex_unlock(&hub->lock);
    if (catchup) {
        /* The thread owns the handler's reference from here on. */
        if (pthread_create(&c->thread, NULL, catchup_main, c) == 0) {
            pthread_detach(c->thread);
            return 0;
        }
        pthread_mutex_lock(&hub->lock);
        c->overflow = true; /* ends the stream with a resume event */
        c->live = true;
        hub->ncatchup--;
        pthread_mutex_unlock(&hub->lock);
    }
    client_unref(c);
    return 0;
}

int query_stream_start(cstl_query_api *api, cstl_http_server *http, cstl_error *err)
{
    query_hub *hub = cstl_xcalloc(1, sizeof(*hub));
    hub->api = api;
    hub->topics[0] = api->jobs_topic;
    hub->topics[1] = api->fleet_topic;
    hub->topics[2] = api->logs_topic;
    pthread_mutex_init(&hub->lock, NULL);
    pthread_cond_init(&hub->idle, NULL);
    api->hub = hub;
    int rc = cstl_http_route(http, "GET", "/v1/stream", handle_stream, api, err);
    if (rc != 0)
        return rc;
    if (pthread_create(&hub->thread, NULL, hub_main, hub) != 0)
        return cstl_error_set(err, CSTL_EINTERNAL, "cannot start the event stream thread");
    hub->thread_started = true;
    return 0;
}

void query_stream_stop(cstl_query_api *api)
{
    query_hub *hub = api->hub;
    if (hub == NULL)
        return;
    atomic_store(&hub->stop, true);
    if (hub->thread_started)
        pthread_join(hub->thread, NULL);
    /* The HTTP server has stopped, so every stream is done; catch-up threads see stop. */
    pthread_mutex_lock(&hub->lock);
    while (hub->ncatchup > 0)
        pthread_cond_wait(&hub->idle, &hub->lock);
    pthread_mutex_unlock(&hub->lock);
    pthread_cond_destroy(&hub->idle);
    pthread_mutex_destroy(&hub->lock);
    free(hub);
    api->hub = NULL;
}

bool query_hub_ready(query_hub *hub)
{
    return hub != NULL && atomic_load(&hub->ready);
}

int32_t query_hub_partitions(query_hub *hub, char tag)
{
    if (!query_hub_ready(hub))
        return 0; /* the partitions are being found */
    int32_t n = 0;
    pthread_mutex_lock(&hub->lock);
    for (size_t i = 0; i < hub->nparts; i++)
        n += hub->parts[i].tag == tag;
    pthread_mutex_unlock(&hub->lock);
    return n;
}

int64_t query_hub_seen(query_hub *hub, char tag, int32_t partition)
{
    if (!query_hub_ready(hub))
        return -1;
    pthread_mutex_lock(&hub->lock);
    int i = part_index(hub, tag, partition);
    int64_t seen = i >= 0 ? hub->seen[i] : -1;
    pthread_mutex_unlock(&hub->lock);
    return seen;
}
