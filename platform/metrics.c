/*
 * metrics.c - metric registry and Prometheus text format 0.0.4 rendering (see metrics.h).
 *
 * Invariants: a registry's family array is guarded by reg->lock, which render holds for its whole
 * run (so unregister can promise a callback is not running). A family's child table and creation
 * list are guarded by family->lock; children are never removed before the family is freed, so
 * a child pointer handed out stays valid. Values are atomics: counters and gauges keep the bit
 * pattern of a double in an atomic uint64 updated by compare-and-swap; histograms keep one atomic
 * count per bucket (not cumulative) and the sum as a double bit pattern. Callable from any thread.
 */
#include "platform/metrics.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define FAMILY_HASH_SIZE 256

enum metric_kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM, KIND_GAUGE_FUNC };

static const char *const kind_names[] = {"counter", "gauge", "histogram", "gauge"};
static const char *const kind_words[] = {"counter", "gauge", "histogram", "callback gauge"};

const double CSTL_METRICS_LATENCY_BUCKETS[11] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                 0.5,   1.0,  2.5,   5.0,  10.0};

struct cstl_metric {
    cstl_metric *hash_next;
    cstl_metric *order_next;
    cstl_metric_family *family;
    int kind;
    uint64_t hash;
    _Atomic uint64_t bits;    /* counter/gauge value, or histogram sum */
    _Atomic uint64_t *counts; /* histogram: nbuckets + 1 non-cumulative counts */
    const char *values[CSTL_METRICS_MAX_LABELS];
};

struct cstl_metric_family {
    char *name;
    char *help;
    int kind;
    size_t nlabels;
    char *labels[CSTL_METRICS_MAX_LABELS];
    double *buckets;
    size_t nbuckets;
    cstl_metrics_collect_fn collect;
    void *collect_ud;
    pthread_mutex_t lock;
    cstl_metric *table[FAMILY_HASH_SIZE];
    cstl_metric *first;
    cstl_metric *last;
    size_t nchildren;
};

struct cstl_metrics {
    pthread_mutex_t lock;
    cstl_metric_family **families;
    size_t nfamilies;
    size_t cap;
};

/* A growing output buffer. */
typedef struct sbuf {
    char *p;
    size_t len;
    size_t cap;
} sbuf;

struct cstl_metrics_sink {
    cstl_metric_family *family;
    sbuf *out;
};

static void sb_reserve(sbuf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    b->p = cstl_xrealloc(b->p, cap);
    b->cap = cap;
}

static void sb_add(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* Appends s escaped for a label value (quote true) or a HELP text (quote false). */
static void sb_escaped(sbuf *b, const char *s, bool quote)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            sb_add(b, "\\\\", 2);
        else if (*s == '\n')
            sb_add(b, "\\n", 2);
        else if (*s == '"' && quote)
            sb_add(b, "\\\"", 2);
        else
            sb_add(b, s, 1);
    }
}

/* The shortest of %.15g / %.17g that reads back as v; Prometheus spellings for the specials. */
static void format_double(double v, char out[40])
{
    if (isnan(v)) {
        snprintf(out, 40, "%s", "NaN");
    } else if (isinf(v)) {
        snprintf(out, 40, "%s", v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(out, 40, "%.15g", v);
        if (strtod(out, NULL) != v)
            snprintf(out, 40, "%.17g", v);
    }
}

static void sb_double(sbuf *b, double v)
{
    char text[40];
    format_double(v, text);
    sb_str(b, text);
}

static double bits_to_double(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof(bits));
    return bits;
}

static void atomic_add_double(_Atomic uint64_t *target, double amount)
{
    uint64_t old = atomic_load_explicit(target, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(target, &old,
                                                  double_to_bits(bits_to_double(old) + amount),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

bool cstl_metrics_name_valid(const char *name)
{
    if (name == NULL || name[0] == '\0' || strlen(name) > CSTL_METRICS_MAX_NAME)
        return false;
    for (const char *p = name; *p != '\0'; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(p != name && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool label_name_valid(const char *name)
{
    if (!cstl_metrics_name_valid(name) || strchr(name, ':') != NULL)
        return false;
    return strncmp(name, "__", 2) != 0;
}

cstl_metrics *cstl_metrics_new(void)
{
    cstl_metrics *reg = cstl_xcalloc(1, sizeof(*reg));
    pthread_mutex_init(&reg->lock, NULL);
    return reg;
}

static void family_free(cstl_metric_family *f)
{
    if (f == NULL)
        return;
    cstl_metric *c = f->first;
    while (c != NULL) {
        cstl_metric *next = c->order_next;
        free(c->counts);
        free(c);
        c = next;
    }
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    pthread_mutex_destroy(&f->lock);
    free(f->buckets);
    free(f->help);
    free(f->name);
    free(f);
}

void cstl_metrics_free(cstl_metrics *reg)
{
    if (reg == NULL)
        return;
    for (size_t i = 0; i < reg->nfamilies; i++)
        family_free(reg->families[i]);
    free(reg->families);
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p != '\0'; p++)
            h = (h ^ *p) * 1099511628211ull;
        h = (h ^ 0xffu) * 1099511628211ull; /* separator, so ("ab","") != ("a","b") */
    }
    return h;
}

/* A new child (the family lock is held by the caller, or the family is not yet published). */
static cstl_metric *child_create(cstl_metric_family *f, const char *const *values, uint64_t hash)
{
    size_t total = 0;
    for (size_t i = 0; i < f->nlabels; i++)
        total += strlen(values[i]) + 1;
    cstl_metric *c = cstl_xcalloc(1, sizeof(*c) + total);
    char *blob = (char *)(c + 1);
    for (size_t i = 0; i < f->nlabels; i++) {
        size_t n = strlen(values[i]) + 1;
        memcpy(blob, values[i], n);
        c->values[i] = blob;
        blob += n;
    }
    c->family = f;
    c->kind = f->kind;
    c->hash = hash;
    atomic_init(&c->bits, double_to_bits(0.0));
    if (f->kind == KIND_HISTOGRAM) {
        c->counts = cstl_xcalloc(f->nbuckets + 1, sizeof(*c->counts));
        for (size_t i = 0; i <= f->nbuckets; i++)
            atomic_init(&c->counts[i], 0);
    }
    size_t slot = hash % FAMILY_HASH_SIZE;
    c->hash_next = f->table[slot];
    f->table[slot] = c;
    if (f->last != NULL)
        f->last->order_next = c;
    else
        f->first = c;
    f->last = c;
    f->nchildren++;
    return c;
}

cstl_metric *cstl_metrics_child(cstl_metric_family *family, const char *const *values)
{
    if (family == NULL || family->kind == KIND_GAUGE_FUNC)
        return NULL;
    if (family->nlabels > 0 && values == NULL)
        return NULL;
    for (size_t i = 0; i < family->nlabels; i++)
        if (values[i] == NULL || strlen(values[i]) > CSTL_METRICS_MAX_LABEL_VALUE)
            return NULL;
    uint64_t hash = hash_values(values, family->nlabels);
    pthread_mutex_lock(&family->lock);
    cstl_metric *c = family->table[hash % FAMILY_HASH_SIZE];
    for (; c != NULL; c = c->hash_next) {
        if (c->hash != hash)
            continue;
        size_t i = 0;
        while (i < family->nlabels && strcmp(c->values[i], values[i]) == 0)
            i++;
        if (i == family->nlabels)
            break;
    }
    if (c == NULL && family->nchildren < CSTL_METRICS_MAX_CHILDREN)
        c = child_create(family, values, hash);
    pthread_mutex_unlock(&family->lock);
    return c;
}

static cstl_metric_family *find_family(cstl_metrics *reg, const char *name, size_t *index)
{
    for (size_t i = 0; i < reg->nfamilies; i++) {
        if (strcmp(reg->families[i]->name, name) == 0) {
            if (index != NULL)
                *index = i;
            return reg->families[i];
        }
    }
    return NULL;
}

/* True when an existing family has the shape asked for (same labels; same buckets). */
static bool family_same_shape(const cstl_metric_family *f,
                              const char *const *labels,
                              size_t nlabels,
                              const double *buckets,
                              size_t nbuckets)
{
    if (f->nlabels != nlabels)
        return false;
    for (size_t i = 0; i < nlabels; i++)
        if (strcmp(f->labels[i], labels[i]) != 0)
            return false;
    if (f->kind == KIND_HISTOGRAM) {
        if (f->nbuckets != nbuckets)
            return false;
        for (size_t i = 0; i < nbuckets; i++)
            if (f->buckets[i] != buckets[i])
                return false;
    }
    return true;
}

static cstl_metric_family *family_register(cstl_metrics *reg,
                                           int kind,
                                           const char *name,
                                           const char *help,
                                           const char *const *labels,
                                           const double *buckets,
                                           size_t nbuckets,
                                           cstl_metrics_collect_fn collect,
                                           void *ud,
                                           cstl_error *err)
{
    if (reg == NULL) {
        cstl_error_set(err, CSTL_EINVAL, "metric registry is missing");
        return NULL;
    }
    if (!cstl_metrics_name_valid(name)) {
        cstl_error_set(err, CSTL_EINVAL, "invalid metric name \"%.*s\"", CSTL_METRICS_MAX_NAME,
                       name ? name : "");
        return NULL;
    }
    if (help != NULL && strlen(help) > CSTL_METRICS_MAX_HELP) {
        cstl_error_set(err, CSTL_EINVAL, "help text of metric \"%s\" is over %d bytes", name,
                       CSTL_METRICS_MAX_HELP);
        return NULL;
    }
    size_t nlabels = 0;
    while (labels != NULL && labels[nlabels] != NULL) {
        const char *l = labels[nlabels];
        if (nlabels == CSTL_METRICS_MAX_LABELS) {
            cstl_error_set(err, CSTL_EINVAL, "metric \"%s\" has more than %d labels", name,
                           CSTL_METRICS_MAX_LABELS);
            return NULL;
        }
        if (!label_name_valid(l) || (kind == KIND_HISTOGRAM && strcmp(l, "le") == 0)) {
            cstl_error_set(err, CSTL_EINVAL, "invalid label name \"%.*s\" for metric \"%s\"",
                           CSTL_METRICS_MAX_NAME, l, name);
            return NULL;
        }
        for (size_t j = 0; j < nlabels; j++) {
            if (strcmp(labels[j], l) == 0) {
                cstl_error_set(err, CSTL_EINVAL, "duplicate label name \"%s\" for metric \"%s\"", l,
                               name);
                return NULL;
            }
        }
        nlabels++;
    }
    if (kind == KIND_HISTOGRAM) {
        if (buckets == NULL) {
            buckets = CSTL_METRICS_LATENCY_BUCKETS;
            nbuckets = CSTL_ARRAY_LEN(CSTL_METRICS_LATENCY_BUCKETS);
        }
        if (nbuckets == 0 || nbuckets > CSTL_METRICS_MAX_BUCKETS) {
            cstl_error_set(err, CSTL_EINVAL, "histogram \"%s\" needs 1 to %d buckets, not %zu",
                           name, CSTL_METRICS_MAX_BUCKETS, nbuckets);
            return NULL;
        }
        for (size_t i = 0; i < nbuckets; i++) {
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
                cstl_error_set(err, CSTL_EINVAL,
                               "buckets of histogram \"%s\" must be finite and increasing", name);
                return NULL;
            }
        }
    }

    pthread_mutex_lock(&reg->lock);
    cstl_metric_family *f = find_family(reg, name, NULL);
    if (f != NULL) {
        bool same = f->kind == kind && kind != KIND_GAUGE_FUNC &&
                    family_same_shape(f, labels, nlabels, buckets, nbuckets);
        pthread_mutex_unlock(&reg->lock);
        if (same)
            return f;
        if (f->kind != kind)
            cstl_error_set(err, CSTL_EEXISTS, "metric \"%s\" is already registered as a %s", name,
                           kind_words[f->kind]);
        else
            cstl_error_set(err, CSTL_EEXISTS, "metric \"%s\" is already registered with other %s",
                           name, kind == KIND_GAUGE_FUNC ? "callback" : "labels or buckets");
        return NULL;
    }
    f = cstl_xcalloc(1, sizeof(*f));
    f->name = cstl_xstrdup(name);
    f->help = help != NULL ? cstl_xstrdup(help) : NULL;
    f->kind = kind;
    f->nlabels = nlabels;
    for (size_t i = 0; i < nlabels; i++)
        f->labels[i] = cstl_xstrdup(labels[i]);
    if (kind == KIND_HISTOGRAM) {
        f->buckets = cstl_xmalloc(nbuckets * sizeof(double));
        memcpy(f->buckets, buckets, nbuckets * sizeof(double));
        f->nbuckets = nbuckets;
    }
    f->collect = collect;
    f->collect_ud = ud;
    pthread_mutex_init(&f->lock, NULL);
    /* A family without labels always shows its one child, as Prometheus clients do. */
    if (nlabels == 0 && kind != KIND_GAUGE_FUNC)
        child_create(f, NULL, hash_values(NULL, 0));
    if (reg->nfamilies == reg->cap) {
        reg->cap = reg->cap ? reg->cap * 2 : 16;
        reg->families = cstl_xrealloc(reg->families, reg->cap * sizeof(cstl_metric_family *));
    }
    reg->families[reg->nfamilies++] = f;
    pthread_mutex_unlock(&reg->lock);
    return f;
}

cstl_metric_family *cstl_metrics_counter(cstl_metrics *reg,
                                         const char *name,
                                         const char *help,
                                         const char *const *label_names,
                                         cstl_error *err)
{
    return family_register(reg, KIND_COUNTER, name, help, label_names, NULL, 0, NULL, NULL, err);
}

cstl_metric_family *cstl_metrics_gauge(cstl_metrics *reg,
                                       const char *name,
                                       const char *help,
                                       const char *const *label_names,
                                       cstl_error *err)
{
    return family_register(reg, KIND_GAUGE, name, help, label_names, NULL, 0, NULL, NULL, err);
}

cstl_metric_family *cstl_metrics_histogram(cstl_metrics *reg,
                                           const char *name,
                                           const char *help,
                                           const char *const *label_names,
                                           const double *buckets,
                                           size_t nbuckets,
                                           cstl_error *err)
{
    return family_register(reg, KIND_HISTOGRAM, name, help, label_names, buckets, nbuckets, NULL,
                           NULL, err);
}

cstl_metric_family *cstl_metrics_gauge_func(cstl_metrics *reg,
                                            const char *name,
                                            const char *help,
                                            const char *const *label_names,
                                            cstl_metrics_collect_fn collect,
                                            void *ud,
                                            cstl_error *err)
{
    if (collect == NULL) {
        cstl_error_set(err, CSTL_EINVAL, "callback gauge \"%s\" has no callback", name ? name : "");
        return NULL;
    }
    return family_register(reg, KIND_GAUGE_FUNC, name, help, label_names, NULL, 0, collect, ud,
                           err);
}

int cstl_metrics_unregister(cstl_metrics *reg, const char *name)
{
    if (reg == NULL || name == NULL)
        return CSTL_ENOTFOUND;
    size_t index = 0;
    pthread_mutex_lock(&reg->lock);
    cstl_metric_family *f = find_family(reg, name, &index);
    if (f != NULL) {
        memmove(&reg->families[index], &reg->families[index + 1],
                (reg->nfamilies - index - 1) * sizeof(cstl_metric_family *));
        reg->nfamilies--;
    }
    pthread_mutex_unlock(&reg->lock);
    if (f == NULL)
        return CSTL_ENOTFOUND;
    family_free(f);
    return 0;
}

void cstl_metrics_counter_inc(cstl_metric *counter)
{
    if (counter != NULL && counter->kind == KIND_COUNTER)
        atomic_add_double(&counter->bits, 1.0);
}

int cstl_metrics_counter_add(cstl_metric *counter, double amount)
{
    if (isnan(amount) || amount < 0)
        return CSTL_EINVAL;
    if (counter != NULL && counter->kind == KIND_COUNTER)
        atomic_add_double(&counter->bits, amount);
    return 0;
}

void cstl_metrics_gauge_set(cstl_metric *gauge, double value)
{
    if (gauge != NULL && gauge->kind == KIND_GAUGE)
        atomic_store_explicit(&gauge->bits, double_to_bits(value), memory_order_relaxed);
}

void cstl_metrics_gauge_add(cstl_metric *gauge, double amount)
{
    if (gauge != NULL && gauge->kind == KIND_GAUGE)
        atomic_add_double(&gauge->bits, amount);
}

void cstl_metrics_gauge_inc(cstl_metric *gauge)
{
    cstl_metrics_gauge_add(gauge, 1.0);
}

void cstl_metrics_gauge_dec(cstl_metric *gauge)
{
    cstl_metrics_gauge_add(gauge, -1.0);
}

void cstl_metrics_histogram_observe(cstl_metric *histogram, double value)
{
    if (histogram == NULL || histogram->kind != KIND_HISTOGRAM || isnan(value))
        return;
    const cstl_metric_family *f = histogram->family;
    size_t i = 0;
    while (i < f->nbuckets && value > f->buckets[i])
        i++;
    atomic_fetch_add_explicit(&histogram->counts[i], 1, memory_order_relaxed);
    atomic_add_double(&histogram->bits, value);
}

double cstl_metrics_value(const cstl_metric *metric)
{
    if (metric == NULL)
        return 0;
    if (metric->kind != KIND_HISTOGRAM)
        return bits_to_double(atomic_load_explicit(&metric->bits, memory_order_relaxed));
    uint64_t total = 0;
    for (size_t i = 0; i <= metric->family->nbuckets; i++)
        total += atomic_load_explicit(&metric->counts[i], memory_order_relaxed);
    return (double)total;
}

/* Writes `name{l1="v1",...,extra}` (suffix appended to the name; extra may be NULL). */
static void render_series(sbuf *b,
                          const cstl_metric_family *f,
                          const char *suffix,
                          const char *const *values,
                          const char *extra)
{
    sb_str(b, f->name);
    if (suffix != NULL)
        sb_str(b, suffix);
    if (f->nlabels == 0 && extra == NULL)
        return;
    sb_add(b, "{", 1);
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i > 0)
            sb_add(b, ",", 1);
        sb_str(b, f->labels[i]);
        sb_add(b, "=\"", 2);
        sb_escaped(b, values[i], true);
        sb_add(b, "\"", 1);
    }
    if (extra != NULL) {
        if (f->nlabels > 0)
            sb_add(b, ",", 1);
        sb_str(b, extra);
    }
    sb_add(b, "}", 1);
}

static void render_sample(sbuf *b,
                          const cstl_metric_family *f,
                          const char *suffix,
                          const char *const *values,
                          const char *extra,
                          double value)
{
    render_series(b, f, suffix, values, extra);
    sb_add(b, " ", 1);
    sb_double(b, value);
    sb_add(b, "\n", 1);
}

int cstl_metrics_sink_add(cstl_metrics_sink *sink, const char *const *values, double value)
{
    const cstl_metric_family *f = sink->family;
    if (f->nlabels > 0 && values == NULL)
        return CSTL_EINVAL;
    for (size_t i = 0; i < f->nlabels; i++)
        if (values[i] == NULL || strlen(values[i]) > CSTL_METRICS_MAX_LABEL_VALUE)
            return CSTL_EINVAL;
    render_sample(sink->out, f, NULL, values, NULL, value);
    return 0;
}

static void render_histogram(sbuf *b, const cstl_metric_family *f, const cstl_metric *c)
{
    uint64_t cumulative = 0;
    char le[64], bound[40];
    for (size_t i = 0; i <= f->nbuckets; i++) {
        cumulative += atomic_load_explicit(&c->counts[i], memory_order_relaxed);
        if (i < f->nbuckets)
            format_double(f->buckets[i], bound);
        else
            strcpy(bound, "+Inf");
        snprintf(le, sizeof(le), "le=\"%s\"", bound);
        render_sample(b, f, "_bucket", c->values, le, (double)cumulative);
    }
    /* _count is the +Inf bucket, so the two always agree even while observations race. */
    render_sample(b, f, "_sum", c->values, NULL,
                  bits_to_double(atomic_load_explicit(&c->bits, memory_order_relaxed)));
    render_sample(b, f, "_count", c->values, NULL, (double)cumulative);
}

static void render_family(sbuf *b, cstl_metric_family *f)
{
    if (f->help != NULL) {
        sb_str(b, "# HELP ");
        sb_str(b, f->name);
        sb_add(b, " ", 1);
        sb_escaped(b, f->help, false);
        sb_add(b, "\n", 1);
    }
    sb_str(b, "# TYPE ");
    sb_str(b, f->name);
    sb_add(b, " ", 1);
    sb_str(b, kind_names[f->kind]);
    sb_add(b, "\n", 1);
    if (f->kind == KIND_GAUGE_FUNC) {
        cstl_metrics_sink sink = {.family = f, .out = b};
        f->collect(f->collect_ud, &sink);
        return;
    }
    pthread_mutex_lock(&f->lock);
    const cstl_metric *c = f->first;
    for (; c != NULL; c = c->order_next) {
        if (f->kind == KIND_HISTOGRAM)
            render_histogram(b, f, c);
        else
            render_sample(b, f, NULL, c->values, NULL,
                          bits_to_double(atomic_load_explicit(&c->bits, memory_order_relaxed)));
    }
    pthread_mutex_unlock(&f->lock);
}

static int family_cmp(const void *a, const void *b)
{
    const cstl_metric_family *fa = *(cstl_metric_family *const *)a;
    const cstl_metric_family *fb = *(cstl_metric_family *const *)b;
    return strcmp(fa->name, fb->name);
}

int cstl_metrics_render(cstl_metrics *reg, char **out, size_t *len)
{
    sbuf b = {0};
    sb_reserve(&b, 0);
    b.p[0] = '\0';
    if (reg != NULL) {
        pthread_mutex_lock(&reg->lock);
        qsort(reg->families, reg->nfamilies, sizeof(cstl_metric_family *), family_cmp);
        for (size_t i = 0; i < reg->nfamilies; i++)
            render_family(&b, reg->families[i]);
        pthread_mutex_unlock(&reg->lock);
    }
    *out = b.p;
    if (len != NULL)
        *len = b.len;
    return 0;
}

/* Standard process metrics (default registry only). */

static double process_start_time;

/* Start time from /proc: boot time plus the process's start in clock ticks since boot. */
static double read_process_start_time(void)
{
    double boot = 0, ticks = 0;
    char line[256];
    FILE *fp = fopen("/proc/stat", "re");
    if (fp != NULL) {
        while (fgets(line, sizeof(line), fp) != NULL)
            if (strncmp(line, "btime ", 6) == 0)
                boot = strtod(line + 6, NULL);
        fclose(fp);
    }
    char stat[1024];
    fp = fopen("/proc/self/stat", "re");
    size_t n = fp != NULL ? fread(stat, 1, sizeof(stat) - 1, fp) : 0;
    if (fp != NULL)
        fclose(fp);
    stat[n] = '\0';
    const char *p = strrchr(stat, ')');
    /* starttime is field 22; fields after the command name start at field 3. */
    for (int field = 2; p != NULL && field < 22; field++) {
        p = strchr(p + 1, ' ');
    }
    long hz = sysconf(_SC_CLK_TCK);
    if (p != NULL && boot > 0 && hz > 0) {
        ticks = strtod(p + 1, NULL);
        return boot + ticks / (double)hz;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void collect_start_time(void *ud, cstl_metrics_sink *sink)
{
    (void)ud;
    cstl_metrics_sink_add(sink, NULL, process_start_time);
}

static void collect_memory(void *ud, cstl_metrics_sink *sink)
{
    unsigned long long size = 0, resident = 0;
    FILE *fp = fopen("/proc/self/statm", "re");
    if (fp == NULL)
        return;
    char line[128];
    int got = 0; /* numbers read: the first two fields are the total and resident pages */
    if (fgets(line, sizeof(line), fp) != NULL) {
        char *p = line, *end = NULL;
        size = strtoull(p, &end, 10);
        got += end != p;
        p = end;
        resident = strtoull(p, &end, 10);
        got += end != p;
    }
    fclose(fp);
    if (got != 2)
        return;
    double page = (double)sysconf(_SC_PAGESIZE);
    cstl_metrics_sink_add(sink, NULL, (double)(ud != NULL ? resident : size) * page);
}

static void collect_open_fds(void *ud, cstl_metrics_sink *sink)
{
    (void)ud;
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return;
    long count = 0;
    for (struct dirent *e = readdir(dir); e != NULL; e = readdir(dir))
        if (e->d_name[0] != '.')
            count++;
    closedir(dir);
    cstl_metrics_sink_add(sink, NULL, (double)(count - 1)); /* the directory's own fd */
}

static cstl_metrics *default_registry;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_init(void)
{
    static int resident_flag;
    default_registry = cstl_metrics_new();
    process_start_time = read_process_start_time();
    cstl_metrics *r = default_registry;
    CSTL_ASSERT(cstl_metrics_gauge_func(r, "process_start_time_seconds",
                                        "Start time of the process since unix epoch in seconds.",
                                        NULL, collect_start_time, NULL, NULL) != NULL);
    CSTL_ASSERT(cstl_metrics_gauge_func(r, "process_resident_memory_bytes",
                                        "Resident memory size in bytes.", NULL, collect_memory,
                                        &resident_flag, NULL) != NULL);
    CSTL_ASSERT(cstl_metrics_gauge_func(r, "process_virtual_memory_bytes",
                                        "Virtual memory size in bytes.", NULL, collect_memory, NULL,
                                        NULL) != NULL);
    CSTL_ASSERT(cstl_metrics_gauge_func(r, "process_open_fds", "Number of open file descriptors.",
                                        NULL, collect_open_fds, NULL, NULL) != NULL);
}

cstl_metrics *cstl_metrics_default(void)
{
    pthread_once(&default_once, default_init);
    return default_registry;
}
