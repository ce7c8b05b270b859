/*
 * views.c - the command API's views of tenants and fleet, kept from the events (see views.h).
 *
 * Invariants: the maps only change on the reader thread (or a test's cstl_views_apply), always
 * under the mutex; readers copy what they need out under the same mutex. A partition counts as
 * caught up when the reader got its end-of-partition event or a record at or past the end offset
 * seen at start; ready is set once, when every partition has, and never goes back.
 *
 * Threads: the reader thread (poll, decode, apply), any HTTP thread (lookups), the service thread
 * (new, start, stop, free).
 */
#include "commands/views.h"

#include "platform/codec.h"
#include "platform/events.h"
#include "platform/kafka.h"
#include "platform/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VIEWS_MAX_PARTITIONS 256
#define VIEWS_POLL_MS        200

typedef struct views_partition {
    char topic[256];
    int32_t partition;
    int64_t end; /* end offset seen at start */
    bool done;
} views_partition;

struct cstl_views {
    cstl_auth *auth;
    cstl_kafka_consumer *consumer; /* NULL without brokers */
    views_partition *parts;
    int n_parts;
    pthread_t thread;
    bool running;
    atomic_bool stop;
    atomic_bool ready;
    pthread_mutex_t mu;
    json_t *tenants; /* tenant id -> {"suspended": bool} */
    json_t *workers; /* worker id -> {"tenant": id, "gpus": [uuid...], "count": n, "memory": mib} */
    json_t *gpus;    /* gpu uuid -> worker id */
    json_t *runs;    /* job id -> {"run": id, "worker": id, "tenant": id, "ended": wall us or 0} */
    long runs_applied; /* job events applied, for the periodic sweep of ended runs */
};

#define VIEWS_RUN_KEEP_US (3600LL * 1000000) /* an ended run stays known for an hour */
#define VIEWS_SWEEP_EVERY 4096               /* job events between sweeps */

/* ---- applying events --------------------------------------------------------------------- */

static const char *
str_field(const json_t *data, const char *name, const char *type, cstl_error *err)
{
    const char *s = json_string_value(json_object_get(data, name));
    if (s == NULL)
        cstl_error_set(err, CSTL_EDECODE, "%s event has no string field \"%s\"", type, name);
    return s;
}

static void worker_forget(cstl_views *v, const char *worker_id)
{
    json_t *w = json_object_get(v->workers, worker_id);
    if (w == NULL)
        return;
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(w, "gpus"), i, u)
    {
        const char *owner = json_string_value(json_object_get(v->gpus, json_string_value(u)));
        if (owner != NULL && strcmp(owner, worker_id) == 0)
            json_object_del(v->gpus, json_string_value(u));
    }
    json_object_del(v->workers, worker_id);
}

static int
apply_worker_registered(cstl_views *v, const json_t *data, const char *tenant_id, cstl_error *err)
{
    const char *id = str_field(data, "worker_id", "WorkerRegistered", err);
    json_t *gpus = json_object_get(data, "gpus");
    if (id == NULL)
        return CSTL_EDECODE;
    if (!json_is_array(gpus))
        return cstl_error_set(err, CSTL_EDECODE, "WorkerRegistered event has no array \"gpus\"");
    worker_forget(v, id); /* a re-registration replaces the GPU list */
    json_t *uuids = json_array();
    json_int_t memory = 0;
    size_t i;
    json_t *g;
    json_array_foreach(gpus, i, g)
    {
        const char *uuid = json_string_value(json_object_get(g, "uuid"));
        if (uuid == NULL)
            continue;
        json_array_append_new(uuids, json_string(uuid));
        json_object_set_new(v->gpus, uuid, json_string(id));
        json_int_t m = json_integer_value(json_object_get(g, "memory_mib"));
        if (m > memory)
            memory = m;
    }
    json_object_set_new(v->workers, id,
                        json_pack("{s:s,s:o,s:I,s:I}", "tenant", tenant_id ? tenant_id : "", "gpus",
                                  uuids, "count", (json_int_t)json_array_size(gpus), "memory",
                                  memory));
    return 0;
}

static int64_t views_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Forgets runs that ended more than VIEWS_RUN_KEEP_US ago; a retried report of one is 404. */
static void runs_sweep(cstl_views *v)
{
    int64_t cut = views_now_us() - VIEWS_RUN_KEEP_US;
    const char *k;
    json_t *r, *tmp;
    json_object_foreach_safe(v->runs, tmp, k, r)
    {
        json_int_t ended = json_integer_value(json_object_get(r, "ended"));
        if (ended > 0 && ended < cut)
            json_object_del(v->runs, k);
    }
}

/* The runs view: the current run of each job (its worker and tenant), for the workers' reports. */
static int apply_job_event(
    cstl_views *v, const char *type, const json_t *data, const char *tenant_id, cstl_error *err)
{
    if (++v->runs_applied % VIEWS_SWEEP_EVERY == 0)
        runs_sweep(v);
    if (strcmp(type, "JobAssigned") == 0) {
        const char *job = str_field(data, "job_id", type, err);
        const char *run = job ? str_field(data, "run_id", type, err) : NULL;
        const char *worker = run ? str_field(data, "worker_id", type, err) : NULL;
        if (worker == NULL)
            return CSTL_EDECODE;
        json_object_set_new(v->runs, job,
                            json_pack("{s:s,s:s,s:s,s:I}", "run", run, "worker", worker, "tenant",
                                      tenant_id ? tenant_id : "", "ended", (json_int_t)0));
        return 0;
    }
    /* the run ends (RunFinished) or is abandoned (requeued, failed without a report) */
    bool ends = strcmp(type, "RunFinished") == 0 || strcmp(type, "JobRequeued") == 0 ||
                strcmp(type, "JobFailed") == 0 || strcmp(type, "JobSucceeded") == 0;
    if (!ends)
        return 0;
    const char *job = str_field(data, "job_id", type, err);
    if (job == NULL)
        return CSTL_EDECODE;
    json_t *r = json_object_get(v->runs, job);
    if (r != NULL && json_integer_value(json_object_get(r, "ended")) == 0)
        json_object_set_new(r, "ended", json_integer(views_now_us()));
    return 0;
}

static int apply_locked(
    cstl_views *v, const char *type, const json_t *data, const char *tenant_id, cstl_error *err)
{
    if (strncmp(type, "Job", 3) == 0 || strncmp(type, "Run", 3) == 0)
        return apply_job_event(v, type, data, tenant_id, err);
    if (strcmp(type, "TenantCreated") == 0) {
        const char *id = str_field(data, "tenant_id", type, err);
        if (id == NULL)
            return CSTL_EDECODE;
        if (json_object_get(v->tenants, id) == NULL)
            json_object_set_new(v->tenants, id, json_pack("{s:b}", "suspended", 0));
        return 0;
    }
    if (strcmp(type, "TenantSuspended") == 0) {
        const char *id = str_field(data, "tenant_id", type, err);
        if (id == NULL)
            return CSTL_EDECODE;
        json_object_set_new(v->tenants, id, json_pack("{s:b}", "suspended", 1));
        if (v->auth != NULL)
            cstl_auth_tenant_set_suspended(v->auth, id, true);
        return 0;
    }
    if (strcmp(type, "ApiKeyIssued") == 0) {
        const char *tenant = str_field(data, "tenant_id", type, err);
        const char *key = tenant ? str_field(data, "key_id", type, err) : NULL;
        const char *hash = key ? str_field(data, "key_hash", type, err) : NULL;
        const char *role_name = hash ? str_field(data, "role", type, err) : NULL;
        if (role_name == NULL)
            return CSTL_EDECODE;
        cstl_role role;
        if (cstl_role_parse(role_name, &role) != 0)
            return cstl_error_set(err, CSTL_EDECODE,
                                  "ApiKeyIssued event has an unknown role \"%s\"", role_name);
        json_t *exp = json_object_get(data, "expires_at");
        /* microseconds to seconds, rounding down: a key expires no later than it says */
        int64_t expires_s = json_is_integer(exp) ? json_integer_value(exp) / 1000000 : 0;
        if (json_is_integer(exp) && expires_s <= 0)
            expires_s = 1; /* expired since the epoch, not "never" */
        if (v->auth != NULL) {
            int rc = cstl_auth_key_put(v->auth, key, tenant, hash, role, expires_s);
            if (rc != 0)
                return cstl_error_set(err, rc, "cannot store api key \"%s\": %s", key,
                                      cstl_strerror(rc));
        }
        return 0;
    }
    if (strcmp(type, "ApiKeyRevoked") == 0) {
        const char *key = str_field(data, "key_id", type, err);
        if (key == NULL)
            return CSTL_EDECODE;
        if (v->auth != NULL)
            cstl_auth_key_revoke(v->auth, key);
        return 0;
    }
    if (strcmp(type, "WorkerRegistered") == 0)
        return apply_worker_registered(v, data, tenant_id, err);
    if (strcmp(type, "WorkerDeregistered") == 0) {
        const char *id = str_field(data, "worker_id", type, err);
        if (id == NULL)
            return CSTL_EDECODE;
        worker_forget(v, id);
        return 0;
    }
    return 0;
}

int cstl_views_apply(cstl_views *v,
                     const char *event_type,
                     const json_t *data,
                     const char *tenant_id,
                     cstl_error *err)
{
    pthread_mutex_lock(&v->mu);
    int rc = apply_locked(v, event_type, data, tenant_id, err);
    pthread_mutex_unlock(&v->mu);
    return rc;
}

/* ---- lookups ----------------------------------------------------------------------------- */

static void copy_id(char out[37], const char *s)
{
    if (out != NULL)
        snprintf(out, 37, "%s", s ? s : "");
}

int cstl_views_tenant(cstl_views *v, const char *tenant_id, bool *suspended)
{
    pthread_mutex_lock(&v->mu);
    json_t *t = json_object_get(v->tenants, tenant_id);
    if (t != NULL && suspended != NULL)
        *suspended = json_is_true(json_object_get(t, "suspended"));
    pthread_mutex_unlock(&v->mu);
    return t != NULL ? 0 : CSTL_ENOTFOUND;
}

int cstl_views_gpu_worker(cstl_views *v,
                          const char *gpu_uuid,
                          char worker_id[37],
                          char tenant_out[37])
{
    int rc = CSTL_ENOTFOUND;
    pthread_mutex_lock(&v->mu);
    const char *w = json_string_value(json_object_get(v->gpus, gpu_uuid));
    if (w != NULL) {
        copy_id(worker_id, w);
        copy_id(tenant_out,
                json_string_value(json_object_get(json_object_get(v->workers, w), "tenant")));
        rc = 0;
    }
    pthread_mutex_unlock(&v->mu);
    return rc;
}

int cstl_views_run(
    cstl_views *v, const char *job_id, const char *run_id, char worker_out[37], char tenant_out[37])
{
    int rc = CSTL_ENOTFOUND;
    pthread_mutex_lock(&v->mu);
    json_t *r = json_object_get(v->runs, job_id);
    const char *run = json_string_value(json_object_get(r, "run"));
    if (run != NULL && strcmp(run, run_id) == 0) {
        copy_id(worker_out, json_string_value(json_object_get(r, "worker")));
        copy_id(tenant_out, json_string_value(json_object_get(r, "tenant")));
        rc = 0;
    }
    pthread_mutex_unlock(&v->mu);
    return rc;
}

int cstl_views_worker(cstl_views *v, const char *worker_id, char tenant_out[37])
{
    pthread_mutex_lock(&v->mu);
    json_t *w = json_object_get(v->workers, worker_id);
    if (w != NULL)
        copy_id(tenant_out, json_string_value(json_object_get(w, "tenant")));
    pthread_mutex_unlock(&v->mu);
    return w != NULL ? 0 : CSTL_ENOTFOUND;
}

void cstl_views_fleet_max(cstl_views *v, int *max_gpus, int64_t *max_gpu_memory_mib)
{
    json_int_t gpus = 0, memory = 0;
    pthread_mutex_lock(&v->mu);
    const char *k;
    json_t *w;
    json_object_foreach(v->workers, k, w)
    {
        json_int_t n = json_integer_value(json_object_get(w, "count"));
        json_int_t m = json_integer_value(json_object_get(w, "memory"));
        gpus = n > gpus ? n : gpus;
        memory = m > memory ? m : memory;
    }
    pthread_mutex_unlock(&v->mu);
    if (max_gpus != NULL)
        *max_gpus = (int)gpus;
    if (max_gpu_memory_mib != NULL)
        *max_gpu_memory_mib = memory;
}

bool cstl_views_ready(cstl_views *v)
{
    return atomic_load(&v->ready);
}

/* ---- the reader -------------------------------------------------------------------------- */

static void
mark_done(cstl_views *v, const char *topic, int32_t partition, int64_t next_offset, bool eof)
{
    bool all = true;
    for (int i = 0; i < v->n_parts; i++) {
        views_partition *p = &v->parts[i];
        if (!p->done && p->partition == partition && strcmp(p->topic, topic) == 0 &&
            (eof || next_offset >= p->end))
            p->done = true;
        all = all && p->done;
    }
    if (all)
        atomic_store(&v->ready, true);
}

static void handle_record(cstl_views *v, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    cstl_error err;
    cstl_event_headers h;
    rd_kafka_headers_t *hdrs = NULL;
    const cstl_schema_entry *writer = NULL;
    json_t *data = NULL;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        cstl_event_headers_parse(hdrs, &h, &err) != 0 ||
        cstl_codec_writer(m->payload, m->len, &writer, &err) != 0 ||
        cstl_codec_decode_json(m->payload, m->len, NULL, &data, &err) != 0) {
        if (hdrs == NULL)
            cstl_error_set(&err, CSTL_EDECODE, "the record has no headers");
        goto skip;
    }
    const char *dot = strrchr(writer->fullname, '.');
    if (cstl_views_apply(v, dot ? dot + 1 : writer->fullname, data, h.tenant, &err) != 0)
        goto skip;
    json_decref(data);
    return;
skip:
    json_decref(data);
    /* A poison event does not stop the views: the command handler owns the log's integrity. */
    cstl_log_fields(CSTL_LOG_WARN, "views",
                    json_pack("{s:s,s:i,s:I}", "topic", topic, "partition", (int)m->partition,
                              "offset", (json_int_t)m->offset),
                    "skipping an event the views cannot read: %s", err.message);
}

static void *reader_main(void *arg)
{
    cstl_views *v = arg;
    rd_kafka_t *rk = cstl_kafka_consumer_handle(v->consumer);
    while (!atomic_load(&v->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, VIEWS_POLL_MS);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            mark_done(v, rd_kafka_topic_name(m->rkt), m->partition, m->offset, true);
        } else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            cstl_log(CSTL_LOG_WARN, "views", "reading the tenants, fleet and jobs events: %s",
                     rd_kafka_message_errstr(m));
        } else {
            handle_record(v, m);
            if (!atomic_load(&v->ready))
                mark_done(v, rd_kafka_topic_name(m->rkt), m->partition, m->offset + 1, false);
        }
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

static int setup_partitions(cstl_views *v, const char *prefix, int timeout_ms, cstl_error *err)
{
    static const char *const topics[] = {"constellation.tenants.events",
                                         "constellation.fleet.events", "constellation.jobs.events"};
    rd_kafka_t *rk = cstl_kafka_consumer_handle(v->consumer);
    v->parts = cstl_xcalloc(VIEWS_MAX_PARTITIONS, sizeof(*v->parts));
    rd_kafka_topic_partition_list_t *assign = rd_kafka_topic_partition_list_new(16);
    int rc = 0;
    for (size_t t = 0; t < CSTL_ARRAY_LEN(topics) && rc == 0; t++) {
        char name[256];
        snprintf(name, sizeof(name), "%s%s", prefix ? prefix : "", topics[t]);
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, name, NULL);
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
        rd_kafka_topic_destroy(rkt);
        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
            rc = cstl_kafka_error_from_code(err, kerr, "cannot read the topic metadata");
            break;
        }
        if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR ||
            md->topics[0].partition_cnt < 1) {
            rc = cstl_error_set(err, CSTL_ENOTFOUND,
                                "topic \"%s\" does not exist (run `constellation topics create`)",
                                name);
            rd_kafka_metadata_destroy(md);
            break;
        }
        int n = md->topics[0].partition_cnt;
        rd_kafka_metadata_destroy(md);
        for (int32_t p = 0; p < n && rc == 0; p++) {
            if (v->n_parts >= VIEWS_MAX_PARTITIONS) {
                rc = cstl_error_set(err, CSTL_ETOOBIG, "more than %d partitions to read",
                                    VIEWS_MAX_PARTITIONS);
                break;
            }
            int64_t low = 0, high = 0;
            /* Right after the topics were created their leaders may not be known yet. */
            for (int waited = 0;; waited += 200) {
                rc = cstl_kafka_consumer_watermarks(v->consumer, name, p, &low, &high, timeout_ms,
                                                    err);
                if (rc == 0 || !cstl_error_is_retriable(rc) || waited >= timeout_ms)
                    break;
                struct timespec pause = {0, 200L * 1000 * 1000};
                nanosleep(&pause, NULL);
            }
            views_partition *vp = &v->parts[v->n_parts++];
            snprintf(vp->topic, sizeof(vp->topic), "%s", name);
            vp->partition = p;
            vp->end = high;
            vp->done = high <= low;
            rd_kafka_topic_partition_list_add(assign, name, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        }
    }
    if (rc == 0)
        rc = cstl_kafka_consumer_assign(v->consumer, assign, err);
    rd_kafka_topic_partition_list_destroy(assign);
    if (rc == 0)
        mark_done(v, "", -1, 0, false); /* every partition may be empty */
    return rc;
}

cstl_views *cstl_views_new(const cstl_views_options *opts, cstl_error *err)
{
    cstl_views *v = cstl_xcalloc(1, sizeof(*v));
    v->auth = opts->auth;
    pthread_mutex_init(&v->mu, NULL);
    v->tenants = json_object();
    v->workers = json_object();
    v->gpus = json_object();
    v->runs = json_object();
    if (opts->brokers == NULL) {
        atomic_store(&v->ready, true);
        return v;
    }
    char client_id[256], group[256];
    snprintf(client_id, sizeof(client_id), "constellation-views-%s",
             opts->instance_id ? opts->instance_id : "");
    /* Never joins: the group id is only there because librdkafka wants one for a consumer. */
    snprintf(group, sizeof(group), "constellation-views-%s",
             opts->instance_id ? opts->instance_id : "");
    cstl_kafka_conf *conf = cstl_kafka_conf_new(opts->brokers, client_id, err);
    if (conf == NULL || cstl_kafka_conf_set(conf, "enable.partition.eof", "true", err) != 0 ||
        cstl_kafka_conf_set(conf, "fetch.wait.max.ms", "100", err) != 0 ||
        (v->consumer = cstl_kafka_consumer_new(conf, group, NULL, NULL, err)) == NULL ||
        setup_partitions(v, opts->topic_prefix, opts->timeout_ms > 0 ? opts->timeout_ms : 10000,
                         err) != 0) {
        cstl_kafka_conf_free(conf);
        cstl_views_free(v);
        return NULL;
    }
    cstl_kafka_conf_free(conf);
    return v;
}

int cstl_views_start(cstl_views *v, cstl_error *err)
{
    if (v->consumer == NULL || v->running)
        return 0;
    if (pthread_create(&v->thread, NULL, reader_main, v) != 0)
        return cstl_error_set(err, CSTL_EINTERNAL, "cannot start the views reader thread");
    v->running = true;
    return 0;
}

void cstl_views_stop(cstl_views *v)
{
    if (v == NULL || !v->running)
        return;
    atomic_store(&v->stop, true);
    pthread_join(v->thread, NULL);
    v->running = false;
}

void cstl_views_free(cstl_views *v)
{
    if (v == NULL)
        return;
    cstl_views_stop(v);
    if (v->consumer != NULL)
        cstl_kafka_consumer_close(v->consumer, NULL);
    free(v->parts);
    json_decref(v->tenants);
    json_decref(v->workers);
    json_decref(v->gpus);
    json_decref(v->runs);
    pthread_mutex_destroy(&v->mu);
    free(v);
}
