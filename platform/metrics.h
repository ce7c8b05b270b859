/*
 * metrics.h - counters, gauges and histograms, rendered in the Prometheus text exposition format
 * 0.0.4 (what GET /metrics serves).
 *
 * A registry (cstl_metrics) holds metric families. A family has a name, a help text, a type and
 * up to CSTL_METRICS_MAX_LABELS label names; it has one child (cstl_metric) per tuple of label
 * values, created on first use. Updating a child takes no lock (atomics); looking a child up takes
 * the family's lock, so hot paths should keep the cstl_metric pointer when the labels are fixed.
 *
 * Lifetimes: families and children live until their registry is freed (or the family is
 * unregistered); pointers to them stay valid until then. Every update function accepts NULL and
 * then does nothing, so `cstl_metrics_counter_inc(cstl_metrics_child(f, v))` is safe even when the
 * child could not be created (too many children, over-long value).
 *
 * Rendering: families are sorted by name; children appear in creation order; `# HELP` and `# TYPE`
 * are written once per family. A family with no child yet renders its HELP and TYPE lines only,
 * except a family without labels, which always has its single child (value 0).
 *
 * All functions are thread-safe unless said otherwise.
 */
#ifndef CSTL_PLATFORM_METRICS_H
#define CSTL_PLATFORM_METRICS_H

#include "platform/error.h"

#include <stdbool.h>
#include <stddef.h>

#define CSTL_METRICS_MAX_LABELS      4     /* label names per family */
#define CSTL_METRICS_MAX_NAME        128   /* bytes in a metric or label name */
#define CSTL_METRICS_MAX_HELP        1024  /* bytes in a help text */
#define CSTL_METRICS_MAX_LABEL_VALUE 256   /* bytes in one label value */
#define CSTL_METRICS_MAX_CHILDREN    10000 /* label-value tuples per family (cardinality cap) */
#define CSTL_METRICS_MAX_BUCKETS     64    /* histogram buckets, +Inf excluded */

typedef struct cstl_metrics cstl_metrics;             /* a registry */
typedef struct cstl_metric_family cstl_metric_family; /* a named metric with label names */
typedef struct cstl_metric cstl_metric;               /* one child: a tuple of label values */
typedef struct cstl_metrics_sink cstl_metrics_sink;   /* where a collect callback writes */

/*
 * A collect callback computes the samples of a callback gauge family at render time, by calling
 * cstl_metrics_sink_add once per label-value tuple. It runs on the rendering thread while the
 * registry's lock is held: it must not register or unregister families of the same registry.
 */
typedef void (*cstl_metrics_collect_fn)(void *ud, cstl_metrics_sink *sink);

/* A new empty registry; never NULL (allocation failure aborts). Free with cstl_metrics_free. */
cstl_metrics *cstl_metrics_new(void);

/* Frees reg, its families and children. NULL is a harmless no-op. No other thread may use reg or
 * any of its families or children during or after this call. */
void cstl_metrics_free(cstl_metrics *reg);

/*
 * The process-wide registry, created on first call and never freed. When rendered it also carries
 * the standard process metrics (process_start_time_seconds, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_cpu_seconds_total), read from /proc.
 */
cstl_metrics *cstl_metrics_default(void);

/*
 * Registers (or finds) a counter family. name must match [a-zA-Z_:][a-zA-Z0-9_:]*; label_names is
 * a NULL-terminated array of at most CSTL_METRICS_MAX_LABELS names matching [a-zA-Z_][a-zA-Z0-9_]*
 * and not starting with "__" (NULL for none). help is copied and may be NULL.
 * Registering a name again with the same type and label names returns the existing family; with a
 * different type or label names it fails with CSTL_EEXISTS. Returns the family (owned by reg) or
 * NULL with err filled (CSTL_EINVAL for an invalid name, CSTL_EEXISTS).
 */
cstl_metric_family *cstl_metrics_counter(cstl_metrics *reg,
                                         const char *name,
                                         const char *help,
                                         const char *const *label_names,
                                         cstl_error *err);

/* Registers (or finds) a gauge family; as cstl_metrics_counter. */
cstl_metric_family *cstl_metrics_gauge(cstl_metrics *reg,
                                       const char *name,
                                       const char *help,
                                       const char *const *label_names,
                                       cstl_error *err);

/*
 * Registers (or finds) a histogram family; as cstl_metrics_counter. buckets holds nbuckets finite
 * upper bounds in strictly increasing order (the +Inf bucket is implicit); buckets NULL selects
 * CSTL_METRICS_LATENCY_BUCKETS. "le" is not allowed as a label name. Registering again requires the
 * same buckets. The buckets are copied.
 */
cstl_metric_family *cstl_metrics_histogram(cstl_metrics *reg,
                                           const char *name,
                                           const char *help,
                                           const char *const *label_names,
                                           const double *buckets,
                                           size_t nbuckets,
                                           cstl_error *err);

/* Default histogram buckets, in seconds: 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10. */
extern const double CSTL_METRICS_LATENCY_BUCKETS[11];

/*
 * Registers a gauge family whose samples are computed by collect(ud, sink) at each render. A name
 * can carry one callback family only: registering an existing name fails with CSTL_EEXISTS.
 * ud is borrowed until cstl_metrics_unregister(reg, name) returns or reg is freed. Returns the
 * family or NULL with err filled.
 */
cstl_metric_family *cstl_metrics_gauge_func(cstl_metrics *reg,
                                            const char *name,
                                            const char *help,
                                            const char *const *label_names,
                                            cstl_metrics_collect_fn collect,
                                            void *ud,
                                            cstl_error *err);

/*
 * Removes the family called name and frees it. After it returns, the family's collect callback (if
 * any) is not running and will not be called again; handles to the family and its children are
 * invalid. Returns 0 or CSTL_ENOTFOUND.
 */
int cstl_metrics_unregister(cstl_metrics *reg, const char *name);

/*
 * Adds one sample to a callback family being rendered. values holds exactly as many strings as the
 * family has label names (NULL when it has none); the caller must not repeat a tuple within one
 * render. Returns 0, or CSTL_EINVAL for a missing or over-long value (the sample is skipped).
 */
int cstl_metrics_sink_add(cstl_metrics_sink *sink, const char *const *values, double value);

/*
 * The child of family for values (an array of as many strings as the family has label names;
 * NULL when it has none), created on first use. Returns a pointer owned by the registry, or NULL
 * when family is NULL or a callback family, values are missing or over CSTL_METRICS_MAX_LABEL_VALUE
 * bytes, or the family already has CSTL_METRICS_MAX_CHILDREN children.
 */
cstl_metric *cstl_metrics_child(cstl_metric_family *family, const char *const *values);

/* Counter updates; no-ops on NULL or on a child of another type. add returns CSTL_EINVAL (and
 * changes nothing) for a negative or NaN amount, else 0. */
void cstl_metrics_counter_inc(cstl_metric *counter);
int cstl_metrics_counter_add(cstl_metric *counter, double amount);

/* Gauge updates; no-ops on NULL or on a child of another type. */
void cstl_metrics_gauge_set(cstl_metric *gauge, double value);
void cstl_metrics_gauge_add(cstl_metric *gauge, double amount);
void cstl_metrics_gauge_inc(cstl_metric *gauge);
void cstl_metrics_gauge_dec(cstl_metric *gauge);

/* Records one observation (NaN is ignored); no-op on NULL or a child of another type. */
void cstl_metrics_histogram_observe(cstl_metric *histogram, double value);

/* The current value of a counter or gauge child, or the observation count of a histogram child;
 * 0 for NULL. For tests and for code that reads its own metrics. */
double cstl_metrics_value(const cstl_metric *metric);

/*
 * Renders every family of reg in the text format 0.0.4 into a new NUL-terminated buffer: *out is
 * malloc'd and owned by the caller (free()), *len is its length without the NUL. Returns 0 (the
 * only failure, allocation, aborts). Runs collect callbacks on the calling thread.
 */
int cstl_metrics_render(cstl_metrics *reg, char **out, size_t *len);

/* True when name is a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*, at most CSTL_METRICS_MAX_NAME
 * bytes). */
bool cstl_metrics_name_valid(const char *name);

#endif
