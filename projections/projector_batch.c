/*
 * projector_batch.c - applies one batch of consumed records to one version of a projection, in
 * one PostgreSQL transaction together with its projection_offsets rows.
 *
 * Invariants:
 *   - A batch's transaction first takes a transaction-level advisory lock per (offsets key, topic,
 *     partition) of the batch, in sorted order, then reads the stored offsets and skips records
 *     below them. Two processes that briefly both hold a partition (a rebalance, a zombie after a
 *     lost session) therefore never apply a record twice.
 *   - A batch is first applied as one pipeline: every event's statement is recorded, then all are
 *     sent in one go (cstl_pg_pipeline), so a batch costs a handful of round trips, not one per
 *     event. When a statement changed nothing and has an existence check (a replay, or an event
 *     for an unknown aggregate), the transaction is rolled back and redone one event at a time.
 *     When one cannot be applied, it is redone with a SAVEPOINT per record, so the bad one is
 *     dead-lettered alone.
 *   - A batch's statements may be built ahead of its transaction, without a connection
 *     (proj_plan_build: recorded through apply, grouped into waves, array parameters written). The
 *     plan is used only when no record of the batch is below the stored offsets read under the
 *     advisory locks; otherwise the statements are recorded again in the transaction, for the
 *     records not skipped. Either way the same statements run in the same transaction.
 *   - Dead letters are produced and flushed before COMMIT: a committed offset past a poison record
 *     implies the record is in the DLQ. A redone transaction may produce a dead letter again (at
 *     least once in the DLQ; its cstl_dlq_* headers identify the record).
 * Thread: the caller's (one projector thread per proj_core); proj_items_prepare and
 * proj_plan_build any thread, on items no other thread touches meanwhile.
 */
#include "platform/codec.h"
#include "projections/projector_internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TX_ATTEMPTS 3

int64_t proj_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void proj_sleep_ms(int ms, const volatile int *stop)
{
    int64_t until = proj_now_ms() + ms;
    while (!(stop && *stop)) {
        int64_t left = until - proj_now_ms();
        if (left <= 0)
            break;
        struct timespec ts = {0, (left > 20 ? 20 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void proj_core_set_version(proj_core *c, int version)
{
    c->version = version;
    snprintf(c->schema, sizeof(c->schema), "%s_v%d", c->proj->name, version);
    snprintf(c->offsets_key, sizeof(c->offsets_key), "%s", c->schema);
}

/* True when topic is one of proj's telemetry topics (whatever the topic prefix). */
static bool is_telemetry(const cstl_projection *proj, const char *topic)
{
    size_t tlen = strlen(topic);
    for (const char *const *t = proj->telemetry; t != NULL && *t != NULL; t++) {
        size_t n = strlen(*t);
        if (tlen >= n && (tlen == n || topic[tlen - n - 1] == '.') &&
            strcmp(topic + tlen - n, *t) == 0)
            return true;
    }
    return false;
}

/* The value of header name into out (size n), or "" when absent or too long. */
static void header_text(rd_kafka_headers_t *hdrs, const char *name, char *out, size_t n)
{
    const void *v = NULL;
    size_t len = 0;
    out[0] = '\0';
    if (hdrs != NULL &&
        rd_kafka_header_get_last(hdrs, name, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR && v != NULL &&
        len < n) {
        memcpy(out, v, len);
        out[len] = '\0';
    }
}

/* Marks it as a dead letter for the reason formatted (replacing an earlier one). */
static void set_dead(proj_item *it, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_dead(proj_item *it, const char *fmt, ...)
{
    char buf[1100];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    free(it->dlq_reason);
    it->dlq_reason = cstl_xstrdup(buf);
}

/* Forgets the reason it was to be dead-lettered for. */
static void clear_dead(proj_item *it)
{
    free(it->dlq_reason);
    it->dlq_reason = NULL;
}

/* A telemetry record: the value decoded, the headers made of what the record has (see
 * projection.h); it->dlq_reason says why when the value cannot be decoded. */
static void prepare_telemetry(proj_item *it)
{
    rd_kafka_message_t *m = it->msg;
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = NULL;
    memset(&it->h, 0, sizeof(it->h));
    header_text(hdrs, "ce_type", it->h.type, sizeof(it->h.type));
    header_text(hdrs, "cstl_tenant", it->h.tenant, sizeof(it->h.tenant));
    if (m->key != NULL && m->key_len < sizeof(it->h.subject)) {
        memcpy(it->h.subject, m->key, m->key_len);
        it->h.subject[m->key_len] = '\0';
    }
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);
    it->h.time_us = ts > 0 ? ts * 1000 : 0;
    it->h.version = m->offset;
    cstl_error err;
    const cstl_schema_entry *writer = NULL;
    if (cstl_codec_writer(m->payload, m->len, &writer, &err) != 0 ||
        cstl_codec_decode_json(m->payload, m->len, writer->latest, &it->data, &err) != 0) {
        set_dead(it, "%s", err.message);
        it->data = NULL;
        return;
    }
    const char *dot = strrchr(writer->fullname, '.');
    it->type = dot ? dot + 1 : writer->fullname;
}

void proj_items_prepare(const cstl_projection *proj, proj_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        proj_item *it = &items[i];
        rd_kafka_message_t *m = it->msg;
        it->data = NULL;
        it->type = NULL;
        it->skip = false;
        clear_dead(it);
        if (is_telemetry(proj, rd_kafka_topic_name(m->rkt))) {
            prepare_telemetry(it);
            continue;
        }
        cstl_error err;
        rd_kafka_headers_t *hdrs = NULL;
        const cstl_schema_entry *writer = NULL;
        if (m->payload == NULL) { /* a tombstone: see the apply contract */
            memset(&it->h, 0, sizeof(it->h));
            if (m->key == NULL || m->key_len == 0 || m->key_len > CSTL_EVENT_HEADER_MAX) {
                set_dead(it, "a record without a value needs a key of 1 to %d bytes",
                         CSTL_EVENT_HEADER_MAX);
                continue;
            }
            memcpy(it->h.subject, m->key, m->key_len);
            it->data = json_pack("{s:s%}", "key", (const char *)m->key, m->key_len);
            if (it->data == NULL)
                set_dead(it, "the key of a record without a value is not UTF-8");
            else
                it->type = CSTL_PROJ_TOMBSTONE;
            continue;
        }
        if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            set_dead(it, "the record has no headers");
            continue;
        }
        if (cstl_event_headers_parse(hdrs, &it->h, &err) != 0 ||
            cstl_codec_writer(m->payload, m->len, &writer, &err) != 0 ||
            cstl_codec_decode_json(m->payload, m->len, writer->latest, &it->data, &err) != 0) {
            set_dead(it, "%s", err.message);
            it->data = NULL;
            continue;
        }
        const char *dot = strrchr(writer->fullname, '.');
        it->type = dot ? dot + 1 : writer->fullname;
    }
}

void proj_items_release(proj_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_decref(items[i].data);
        items[i].data = NULL;
        clear_dead(&items[i]);
    }
}

int proj_active_version(cstl_pg_conn *pg, const char *projection, int *out, cstl_error *err)
{
    PGresult *res = NULL;
    const char *params[] = {projection};
    int rc = cstl_pg_exec(pg,
                          "SELECT active_version FROM public.projection_versions "
                          "WHERE projection = $1",
                          1, params, &res, err);
    if (rc != 0)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return cstl_error_set(err, CSTL_ENOTFOUND,
                              "projection \"%s\" has no active version: run constellation migrate",
                              projection);
    }
    *out = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return 0;
}

int proj_offsets_load(cstl_pg_conn *pg,
                      const char *key,
                      void (*fn)(void *ud, const char *topic, int32_t partition, int64_t next),
                      void *ud,
                      cstl_error *err)
{
    PGresult *res = NULL;
    const char *params[] = {key};
    int rc = cstl_pg_exec(pg,
                          "SELECT topic, partition, next_offset FROM public.projection_offsets "
                          "WHERE projection = $1",
                          1, params, &res, err);
    if (rc != 0)
        return rc;
    for (int i = 0; i < PQntuples(res); i++)
        fn(ud, PQgetvalue(res, i, 0), (int32_t)strtol(PQgetvalue(res, i, 1), NULL, 10),
           strtoll(PQgetvalue(res, i, 2), NULL, 10));
    PQclear(res);
    return 0;
}

/* A recorded statement and its wave: statements of one kind and one wave touch distinct
 * aggregates, so they can run as one set statement. */
typedef struct wave_ref {
    size_t index; /* in the sink */
    size_t wave;  /* how many earlier statements of the batch have the same aggregate */
    const cstl_proj_sink *sink;
} wave_ref;

/* One statement of the pipeline as planned: a recorded statement, or several of one kind and
 * wave that run as one set statement if the statement has a set form (known only once a
 * connection asked PostgreSQL for its parameter types; else they run one by one). */
typedef struct piped_group {
    size_t first, m;                    /* refs[first .. first + m) */
    bool set;                           /* m > 1: through the set form if there is one */
    char name[96];                      /* the set form's statement name */
    char *params[CSTL_PROJ_MAX_PARAMS]; /* the set form's text[] parameters, binary */
    int lengths[CSTL_PROJ_MAX_PARAMS];
    int nparams;
} piped_group;

struct proj_plan {
    cstl_proj_sink sink; /* the batch's statements, in record order */
    wave_ref *refs;      /* sink's statements, in pipeline order */
    piped_group *groups;
    size_t ng;
    bool ready; /* built, and every record's statements recorded */
};

/* The distinct (topic, partition) of a batch, sorted, with the next offset after the batch. */
typedef struct batch_part {
    const char *topic;
    int32_t partition;
    int64_t next;   /* last offset in the batch + 1 */
    int64_t stored; /* stored next offset, -1 when none */
} batch_part;

typedef struct batch_ctx {
    proj_core *core;
    proj_item *items;
    size_t n;
    batch_part *parts;
    size_t nparts;
    bool piped;             /* the batch's statements in one pipeline */
    bool need_seq;          /* a piped statement changed nothing and needs an existence check */
    bool slow;              /* a savepoint per record */
    bool need_slow;         /* a record failed without savepoints */
    proj_plan own;          /* the statements recorded in the transaction */
    const proj_plan *ahead; /* or built ahead of it (may be NULL) */
    bool in_tx;             /* the caller's transaction: no version check */
} batch_ctx;

static int part_cmp(const void *a, const void *b)
{
    const batch_part *x = a, *y = b;
    int c = strcmp(x->topic, y->topic);
    return c != 0 ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

static void collect_parts(batch_ctx *b)
{
    b->parts = cstl_xcalloc(b->n ? b->n : 1, sizeof(batch_part));
    b->nparts = 0;
    for (size_t i = 0; i < b->n; i++) {
        rd_kafka_message_t *m = b->items[i].msg;
        const char *topic = rd_kafka_topic_name(m->rkt);
        batch_part *p = NULL;
        for (size_t k = 0; k < b->nparts; k++)
            if (b->parts[k].partition == m->partition && strcmp(b->parts[k].topic, topic) == 0)
                p = &b->parts[k];
        if (p == NULL) {
            p = &b->parts[b->nparts++];
            *p = (batch_part){.topic = topic, .partition = m->partition, .next = 0, .stored = -1};
        }
        if (m->offset + 1 > p->next)
            p->next = m->offset + 1;
    }
    qsort(b->parts, b->nparts, sizeof(batch_part), part_cmp);
}

/* Text arrays of the batch's topics, partitions and next offsets: {"a","b"}, {0,1}, {5,7}. */
static void part_arrays(const batch_ctx *b, char **topics, char **parts, char **nexts)
{
    size_t cap = 64 + b->nparts * (PROJ_NAME_MAX + 48);
    *topics = cstl_xmalloc(cap), *parts = cstl_xmalloc(cap), *nexts = cstl_xmalloc(cap);
    size_t a = 0, p = 0, o = 0;
    a += (size_t)snprintf(*topics + a, cap - a, "{");
    p += (size_t)snprintf(*parts + p, cap - p, "{");
    o += (size_t)snprintf(*nexts + o, cap - o, "{");
    for (size_t k = 0; k < b->nparts; k++) {
        const char *sep = k ? "," : "";
        a += (size_t)snprintf(*topics + a, cap - a, "%s\"%s\"", sep, b->parts[k].topic);
        p += (size_t)snprintf(*parts + p, cap - p, "%s%d", sep, (int)b->parts[k].partition);
        o += (size_t)snprintf(*nexts + o, cap - o, "%s%" PRId64, sep, b->parts[k].next);
    }
    snprintf(*topics + a, cap - a, "}");
    snprintf(*parts + p, cap - p, "}");
    snprintf(*nexts + o, cap - o, "}");
}

static int
lock_and_read_offsets(batch_ctx *b, const char *topics, const char *parts, cstl_error *err)
{
    const char *params[] = {b->core->offsets_key, topics, parts};
    int rc = cstl_pg_exec_prepared(
        b->core->pg, "proj_lock",
        "SELECT pg_advisory_xact_lock(hashtext($1 || '/' || x.t || '/' || x.p)) FROM "
        "unnest($2::text[], $3::int[]) WITH ORDINALITY AS x(t, p, i) ORDER BY x.i",
        3, params, NULL, err);
    if (rc != 0)
        return rc;
    PGresult *res = NULL;
    rc = cstl_pg_exec_prepared(b->core->pg, "proj_offsets",
                               "SELECT topic, partition, next_offset FROM "
                               "public.projection_offsets WHERE projection = $1",
                               1, params, &res, err);
    if (rc != 0)
        return rc;
    for (int i = 0; i < PQntuples(res); i++)
        for (size_t k = 0; k < b->nparts; k++)
            if (strcmp(b->parts[k].topic, PQgetvalue(res, i, 0)) == 0 &&
                b->parts[k].partition == (int32_t)strtol(PQgetvalue(res, i, 1), NULL, 10))
                b->parts[k].stored = strtoll(PQgetvalue(res, i, 2), NULL, 10);
    PQclear(res);
    return 0;
}

static int64_t stored_of(const batch_ctx *b, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    for (size_t k = 0; k < b->nparts; k++)
        if (b->parts[k].partition == m->partition && strcmp(b->parts[k].topic, topic) == 0)
            return b->parts[k].stored;
    return -1;
}

static int produce_dead_letter(proj_core *c, proj_item *it, cstl_error *err)
{
    rd_kafka_message_t *m = it->msg;
    rd_kafka_headers_t *orig = NULL;
    rd_kafka_headers_t *hdrs = rd_kafka_message_headers(m, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR
                                   ? rd_kafka_headers_copy(orig)
                                   : rd_kafka_headers_new(6);
    char part[16], off[24];
    snprintf(part, sizeof(part), "%d", (int)m->partition);
    snprintf(off, sizeof(off), "%" PRId64, m->offset);
    rd_kafka_header_add(hdrs, "cstl_dlq_reason", -1, it->dlq_reason, -1);
    rd_kafka_header_add(hdrs, "cstl_dlq_projection", -1, c->offsets_key, -1);
    rd_kafka_header_add(hdrs, "cstl_dlq_topic", -1, rd_kafka_topic_name(m->rkt), -1);
    rd_kafka_header_add(hdrs, "cstl_dlq_partition", -1, part, -1);
    rd_kafka_header_add(hdrs, "cstl_dlq_offset", -1, off, -1);
    int rc;
    for (int tries = 0;; tries++) {
        rc = cstl_kafka_producer_send(c->dlq, c->dlq_topic, CSTL_KAFKA_PARTITION_UA, m->key,
                                      m->key_len, m->payload, m->len, hdrs, NULL, NULL, err);
        if (rc != CSTL_EKAFKA || tries >= 100)
            break;
        cstl_kafka_producer_poll(c->dlq, 10); /* local queue full: let it drain */
    }
    if (rc != 0)
        rd_kafka_headers_destroy(hdrs);
    return rc;
}

static int apply_one(batch_ctx *b, proj_item *it, cstl_error *err)
{
    proj_core *c = b->core;
    if (b->piped) {
        cstl_proj_sink_install(&b->own.sink);
        int rc = c->proj->apply(c->pg, &it->h, it->type, it->data, err);
        cstl_proj_sink_install(NULL);
        if (rc != 0 && !cstl_projection_error_retriable(rc))
            b->need_slow = true;
        return rc;
    }
    if (!b->slow) {
        int rc = c->proj->apply(c->pg, &it->h, it->type, it->data, err);
        if (rc != 0 && !cstl_projection_error_retriable(rc))
            b->need_slow = true;
        return rc;
    }
    int rc = cstl_pg_exec(c->pg, "SAVEPOINT proj_event", 0, NULL, NULL, err);
    if (rc != 0)
        return rc;
    cstl_error aerr;
    rc = c->proj->apply(c->pg, &it->h, it->type, it->data, &aerr);
    if (rc == 0)
        return cstl_pg_exec(c->pg, "RELEASE SAVEPOINT proj_event", 0, NULL, NULL, err);
    if (cstl_projection_error_retriable(rc)) {
        *err = aerr;
        return rc;
    }
    set_dead(it, "%s%s%s", aerr.message, aerr.detail[0] ? ": " : "", aerr.detail);
    return cstl_pg_exec(c->pg, "ROLLBACK TO SAVEPOINT proj_event", 0, NULL, NULL, err);
}

/* ---- waves: many events of distinct aggregates in one statement ------------------------------ */

/* The set form of each statement (cstl_projection.set_sql), by statement name, for every
 * connection: the text depends only on the statement and its parameter types. */
typedef struct set_form {
    char name[80];
    char *sql; /* NULL: the statement has no set form */
} set_form;

static pthread_mutex_t set_mu = PTHREAD_MUTEX_INITIALIZER;
static set_form *set_forms;
static size_t nset_forms;

static int set_form_get(proj_core *c, const cstl_proj_stmt *st, const char **sql, cstl_error *err)
{
    *sql = NULL;
    pthread_mutex_lock(&set_mu);
    for (size_t i = 0; i < nset_forms; i++)
        if (strcmp(set_forms[i].name, st->name) == 0) {
            *sql = set_forms[i].sql;
            pthread_mutex_unlock(&set_mu);
            return 0;
        }
    pthread_mutex_unlock(&set_mu);
    char *types[CSTL_PROJ_MAX_PARAMS];
    int rc = cstl_pg_param_types(c->pg, st->name, st->sql, st->n, types, err);
    if (rc != 0)
        return rc;
    char *form = c->proj->set_sql(st->sql, (const char *const *)types, st->n);
    for (int i = 0; i < st->n; i++)
        free(types[i]);
    pthread_mutex_lock(&set_mu);
    bool known = false;
    for (size_t i = 0; i < nset_forms && !known; i++)
        known = strcmp(set_forms[i].name, st->name) == 0;
    if (!known) {
        set_forms = cstl_xrealloc(set_forms, (nset_forms + 1) * sizeof(set_form));
        set_form *f = &set_forms[nset_forms++];
        snprintf(f->name, sizeof(f->name), "%s", st->name);
        f->sql = form;
        form = NULL;
    }
    for (size_t i = 0; i < nset_forms; i++)
        if (strcmp(set_forms[i].name, st->name) == 0)
            *sql = set_forms[i].sql;
    pthread_mutex_unlock(&set_mu);
    free(form);
    return 0;
}

static int by_key(const void *a, const void *b)
{
    const wave_ref *x = a, *y = b;
    const char *kx = x->sink->stmts[x->index].v[0], *ky = y->sink->stmts[y->index].v[0];
    int c = strcmp(kx ? kx : "", ky ? ky : "");
    return c != 0 ? c : (x->index > y->index) - (x->index < y->index);
}

static int by_wave(const void *a, const void *b)
{
    const wave_ref *x = a, *y = b;
    if (x->wave != y->wave)
        return (x->wave > y->wave) - (x->wave < y->wave);
    int c = strcmp(x->sink->stmts[x->index].name, y->sink->stmts[y->index].name);
    return c != 0 ? c : (x->index > y->index) - (x->index < y->index);
}

/* Parameter p of the statements refs[0..m) as a binary text[] of *len bytes. New buffer. */
static char *array_param(const cstl_proj_sink *k, const wave_ref *refs, size_t m, int p, int *len)
{
    const char **v = cstl_xcalloc(m ? m : 1, sizeof(const char *));
    for (size_t i = 0; i < m; i++)
        v[i] = k->stmts[refs[i].index].v[p];
    char *out = cstl_proj_text_array_binary(v, m, len);
    free(v);
    return out;
}

/* Empties plan, keeping the sink's capacity. */
static void plan_reset(proj_plan *pl)
{
    for (size_t g = 0; g < pl->ng; g++)
        for (int p = 0; p < pl->groups[g].nparams; p++)
            free(pl->groups[g].params[p]);
    free(pl->groups);
    free(pl->refs);
    pl->groups = NULL;
    pl->refs = NULL;
    pl->ng = 0;
    pl->ready = false;
    cstl_proj_sink_clear(&pl->sink);
}

/* Orders the recorded statements of plan into waves and groups, with the set statements' array
 * parameters. Needs no connection. */
static void plan_group(proj_plan *pl, const cstl_projection *proj)
{
    const cstl_proj_sink *k = &pl->sink;
    pl->refs = cstl_xcalloc(k->n ? k->n : 1, sizeof(wave_ref));
    pl->groups = cstl_xcalloc(k->n ? k->n : 1, sizeof(piped_group));
    pl->ng = 0;
    pl->ready = true;
    wave_ref *refs = pl->refs;
    for (size_t i = 0; i < k->n; i++)
        refs[i] = (wave_ref){.index = i, .sink = k};
    if (proj->set_sql != NULL) {
        /* one_wave: every statement in wave 0, in batch order within its kind */
        if (!proj->one_wave) {
            qsort(refs, k->n, sizeof(wave_ref), by_key);
            for (size_t i = 1; i < k->n; i++) {
                const char *prev = k->stmts[refs[i - 1].index].v[0];
                const char *key = k->stmts[refs[i].index].v[0];
                if (strcmp(prev ? prev : "", key ? key : "") == 0)
                    refs[i].wave = refs[i - 1].wave + 1;
            }
        }
        qsort(refs, k->n, sizeof(wave_ref), by_wave);
    }
    for (size_t i = 0; i < k->n;) {
        size_t j = i + 1;
        while (proj->set_sql != NULL && j < k->n && refs[j].wave == refs[i].wave &&
               strcmp(k->stmts[refs[j].index].name, k->stmts[refs[i].index].name) == 0)
            j++;
        piped_group *g = &pl->groups[pl->ng++];
        *g = (piped_group){.first = i, .m = j - i, .set = j - i > 1};
        if (g->set) {
            const cstl_proj_stmt *st = &k->stmts[refs[i].index];
            snprintf(g->name, sizeof(g->name), "%s_set", st->name);
            g->nparams = st->n;
            for (int p = 0; p < st->n; p++)
                g->params[p] = array_param(k, refs + i, j - i, p, &g->lengths[p]);
        }
        i = j;
    }
}

proj_plan *proj_plan_new(void)
{
    return cstl_xcalloc(1, sizeof(proj_plan));
}

void proj_plan_build(proj_plan *plan, const cstl_projection *proj, const proj_item *items, size_t n)
{
    plan_reset(plan);
    bool ok = true;
    cstl_proj_sink_install(&plan->sink);
    for (size_t i = 0; ok && i < n; i++) {
        if (items[i].dlq_reason != NULL)
            continue;
        cstl_error err;
        /* with a sink installed apply only records: no connection */
        ok = proj->apply(NULL, &items[i].h, items[i].type, items[i].data, &err) == 0;
    }
    cstl_proj_sink_install(NULL);
    if (!ok) {
        plan_reset(plan); /* the transaction records again and meets the failure there */
        return;
    }
    plan_group(plan, proj);
}

void proj_plan_clear(proj_plan *plan)
{
    plan_reset(plan);
}

void proj_plan_free(proj_plan *plan)
{
    if (plan == NULL)
        return;
    plan_reset(plan);
    cstl_proj_sink_free(&plan->sink);
    free(plan);
}

/* Runs plan's statements in one pipeline: a group of one kind in one wave (no two of the same
 * aggregate) as one set statement when the statement has a set form. A statement that changed
 * nothing and has an existence check is either a replay or an event for an unknown aggregate (a
 * dead letter); only a run one event at a time can tell which, so the batch is redone so. */
static int run_pipeline(batch_ctx *b, const proj_plan *pl, cstl_error *err)
{
    const cstl_proj_sink *k = &pl->sink;
    const wave_ref *refs = pl->refs;
    proj_core *c = b->core;
    if (k->n == 0)
        return 0;
    cstl_pg_piped *pp = cstl_xcalloc(k->n, sizeof(cstl_pg_piped));
    size_t *first = cstl_xcalloc(k->n, sizeof(size_t)), *count = cstl_xcalloc(k->n, sizeof(size_t));
    size_t np = 0;
    int rc = 0;
    for (size_t g = 0; rc == 0 && g < pl->ng; g++) {
        const piped_group *gr = &pl->groups[g];
        const char *form = NULL;
        if (gr->set)
            rc = set_form_get(c, &k->stmts[refs[gr->first].index], &form, err);
        if (form != NULL) {
            pp[np] = (cstl_pg_piped){.name = gr->name,
                                     .sql = form,
                                     .nparams = gr->nparams,
                                     .params = (const char *const *)gr->params,
                                     .lengths = gr->lengths,
                                     .binary = true};
            first[np] = gr->first, count[np++] = gr->m;
            continue;
        }
        for (size_t i = gr->first; rc == 0 && i < gr->first + gr->m; i++) {
            const cstl_proj_stmt *st = &k->stmts[refs[i].index];
            pp[np] = (cstl_pg_piped){.name = st->name,
                                     .sql = st->sql,
                                     .nparams = st->n,
                                     .params = (const char *const *)st->v};
            first[np] = i, count[np++] = 1;
        }
    }
    if (rc == 0)
        rc = cstl_pg_pipeline(c->pg, pp, np, err);
    if (rc != 0 && !cstl_projection_error_retriable(rc))
        b->need_slow = true;
    for (size_t e = 0; rc == 0 && e < np; e++) {
        bool check = false;
        for (size_t i = first[e]; i < first[e] + count[e]; i++)
            check |= k->stmts[refs[i].index].check_exists;
        if (check && pp[e].count < (long)count[e]) {
            b->need_seq = true;
            rc = cstl_error_set(err, CSTL_ECONFLICT,
                                "statement \"%s\" changed %ld of %zu rows: redoing the batch one "
                                "event at a time",
                                pp[e].name, pp[e].count, count[e]);
        }
    }
    free(pp);
    free(first);
    free(count);
    return rc;
}

/* The projection's batch_begin, with the data of the records the batch applies. */
static int begin_batch(batch_ctx *b, cstl_error *err)
{
    const json_t **data = cstl_xcalloc(b->n ? b->n : 1, sizeof(const json_t *));
    size_t m = 0;
    for (size_t i = 0; i < b->n; i++)
        if (!b->items[i].skip && b->items[i].dlq_reason == NULL)
            data[m++] = b->items[i].data;
    int rc = b->core->proj->batch_begin(b->core->pg, data, m, err);
    free(data);
    return rc;
}

static int batch_body(cstl_pg_conn *conn, void *ud, cstl_error *err)
{
    batch_ctx *b = ud;
    proj_core *c = b->core;
    (void)conn;
    /* a redone transaction starts from the decoded state: forget dead letters of apply */
    for (size_t i = 0; i < b->n; i++) {
        b->items[i].skip = false;
        if (b->items[i].data != NULL)
            clear_dead(&b->items[i]);
    }
    int rc;
    if (c->check_version && !b->in_tx) {
        char v[16];
        snprintf(v, sizeof(v), "%d", c->version);
        const char *params[] = {c->proj->name, v};
        PGresult *res = NULL;
        rc = cstl_pg_exec_prepared(c->pg, "proj_version",
                                   "SELECT active_version = $2::int FROM "
                                   "public.projection_versions WHERE projection = $1 FOR SHARE",
                                   2, params, &res, err);
        if (rc != 0)
            return rc;
        int same = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
        PQclear(res);
        if (!same)
            return cstl_error_set(err, CSTL_ECONFLICT, "projection \"%s\" switched versions",
                                  c->proj->name);
    }
    char search_path[PROJ_NAME_MAX + 16];
    snprintf(search_path, sizeof(search_path), "%s, public", c->schema);
    const char *sp[] = {search_path};
    rc = cstl_pg_exec_prepared(c->pg, "proj_search_path",
                               "SELECT set_config('search_path', $1, true)", 1, sp, NULL, err);
    if (rc != 0)
        return rc;

    char *topics, *parts, *nexts;
    part_arrays(b, &topics, &parts, &nexts);
    rc = lock_and_read_offsets(b, topics, parts, err);
    bool skipped = false;
    for (size_t i = 0; rc == 0 && i < b->n; i++)
        if (b->items[i].msg->offset < stored_of(b, b->items[i].msg))
            b->items[i].skip = skipped = true;
    if (rc == 0 && c->proj->batch_begin != NULL)
        rc = begin_batch(b, err);
    /* a plan built ahead holds the statements of every record: usable when none is skipped */
    const proj_plan *plan =
        b->piped && !skipped && b->ahead != NULL && b->ahead->ready ? b->ahead : NULL;
    for (size_t i = 0; rc == 0 && plan == NULL && i < b->n; i++) {
        proj_item *it = &b->items[i];
        if (!it->skip && it->dlq_reason == NULL)
            rc = apply_one(b, it, err);
    }
    if (rc == 0 && b->piped && plan == NULL) {
        plan_group(&b->own, c->proj);
        plan = &b->own;
    }
    if (rc == 0 && b->piped)
        rc = run_pipeline(b, plan, err);
    if (rc == 0 && c->proj->batch_end != NULL)
        rc = c->proj->batch_end(c->pg, err);
    plan_reset(&b->own);
    if (rc == 0) {
        const char *params[] = {c->offsets_key, topics, parts, nexts};
        rc = cstl_pg_exec_prepared(
            c->pg, "proj_store_offsets",
            "INSERT INTO public.projection_offsets (projection, topic, partition, next_offset, "
            "updated_at) SELECT $1, x.t, x.p, x.o, now() FROM unnest($2::text[], $3::int[], "
            "$4::bigint[]) AS x(t, p, o) ON CONFLICT (projection, topic, partition) DO UPDATE "
            "SET next_offset = GREATEST(projection_offsets.next_offset, excluded.next_offset), "
            "updated_at = now()",
            4, params, NULL, err);
    }
    free(topics), free(parts), free(nexts);
    size_t dead = 0;
    for (size_t i = 0; rc == 0 && i < b->n; i++) {
        if (b->items[i].skip || b->items[i].dlq_reason == NULL)
            continue;
        rc = c->dlq ? produce_dead_letter(c, &b->items[i], err) : 0;
        dead++;
    }
    if (rc == 0 && dead > 0 && c->dlq != NULL)
        rc = cstl_kafka_producer_flush(c->dlq, c->kafka_timeout_ms, err);
    if (rc == CSTL_ETIMEDOUT)
        rc = cstl_error_set(err, CSTL_EKAFKA, "dead letters were not delivered in %d ms",
                            c->kafka_timeout_ms);
    return rc;
}

static void count_outcome(proj_core *c, const batch_ctx *b)
{
    uint64_t applied = 0, dead = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (b->items[i].skip)
            continue;
        if (b->items[i].dlq_reason != NULL)
            dead++;
        else
            applied++;
    }
    c->applied += applied, c->dead += dead;
    cstl_metrics_counter_add(c->m_applied, (double)applied);
    cstl_metrics_counter_add(c->m_dlq, (double)dead);
}

int proj_core_apply(proj_core *c, proj_item *items, size_t n, proj_plan *plan, cstl_error *err)
{
    int64_t t0 = proj_now_ms();
    batch_ctx b = {.core = c, .items = items, .n = n, .piped = true, .ahead = plan};
    collect_parts(&b);
    int rc = cstl_pg_tx(c->pg, batch_body, &b, TX_ATTEMPTS, err);
    if (rc != 0 && b.need_seq && !b.need_slow) {
        b.piped = false;
        rc = cstl_pg_tx(c->pg, batch_body, &b, TX_ATTEMPTS, err);
    }
    if (rc != 0 && b.need_slow) {
        b.piped = false;
        b.slow = true;
        rc = cstl_pg_tx(c->pg, batch_body, &b, TX_ATTEMPTS, err);
    }
    plan_reset(&b.own);
    cstl_proj_sink_free(&b.own.sink);
    if (rc == 0) {
        count_outcome(c, &b);
        cstl_metrics_histogram_observe(c->m_batch, (double)(proj_now_ms() - t0) / 1000.0);
    }
    free(b.parts);
    return rc;
}

int proj_core_apply_in_tx(proj_core *c, proj_item *items, size_t n, cstl_error *err)
{
    batch_ctx b = {.core = c, .items = items, .n = n, .slow = true, .in_tx = true};
    collect_parts(&b);
    int rc = batch_body(c->pg, &b, err);
    if (rc == 0)
        count_outcome(c, &b);
    cstl_proj_sink_free(&b.own.sink);
    free(b.parts);
    return rc;
}
