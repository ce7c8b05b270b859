/* Unit tests for platform/metrics.c: registration rules, exact text output, escaping, histograms,
 * callback gauges, concurrency, process metrics, and promtool's verdict on a full rendering. */
#include "platform/error.h"
#include "platform/metrics.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* Renders reg and compares with expected exactly. */
static void assert_render(cstl_metrics *reg, const char *expected)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(cstl_metrics_render(reg, &text, &len), 0);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    assert_string_equal(text, expected);
    free(text);
}

static void test_free_null(void **state)
{
    (void)state;
    cstl_metrics_free(NULL);
    cstl_metrics_counter_inc(NULL);
    cstl_metrics_gauge_set(NULL, 1);
    cstl_metrics_histogram_observe(NULL, 1);
    assert_null(cstl_metrics_child(NULL, NULL));
    assert_true(cstl_metrics_value(NULL) == 0);
}

static void test_counter_exact(void **state)
{
    (void)state;
    cstl_metrics *reg = cstl_metrics_new();
    cstl_error err;
    cstl_metric_family *f =
        cstl_metrics_counter(reg, "jobs_submitted_total", "Jobs submitted.", NULL, &err);
    assert_non_null(f);
    cstl_metric *c = cstl_metrics_child(f, NULL);
    cstl_metrics_counter_inc(c);
    cstl_metrics_counter_inc(c);
    assert_int_equal(cstl_metrics_counter_add(c, 0.5), 0);
    assert_int_equal(cstl_metrics_counter_add(c, -1), CSTL_EINVAL);
    assert_int_equal(cstl_metrics_counter_add(c, NAN), CSTL_EINVAL);
    assert_true(cstl_metrics_value(c) == 2.5);
    assert_render(reg, "# HELP jobs_submitted_total Jobs submitted.\n"
                       "# TYPE jobs_submitted_total counter\n"
                       "jobs_submitted_total 2.5\n");
    cstl_metrics_free(reg);
}

static void test_unlabelled_shows_zero_and_sorted(void **state)
{
    (void)state;
    cstl_metrics *reg = cstl_metrics_new();
    assert_non_null(cstl_metrics_gauge(reg, "zeta", NULL, NULL, NULL));
    assert_non_null(cstl_metrics_counter(reg, "alpha_total", "A.", NULL, NULL));
    static const char *const labels[] = {"kind", NULL};
    assert_non_null(cstl_metrics_counter(reg, "mid_total", "M.", labels, NULL));
    assert_render(reg, "# HELP alpha_total A.\n"
                       "# TYPE alpha_total counter\n"
                       "alpha_total 0\n"
                       "# HELP mid_total M.\n"
                       "# TYPE mid_total counter\n"
                       "# TYPE zeta gauge\n"
                       "zeta 0\n");
    cstl_metrics_free(reg);
}

static void test_gauge_ops(void **state)
{
    (void)state;
    cstl_metrics *reg = cstl_metrics_new();
    static const char *const labels[] = {"topic", "partition", NULL};
    cstl_metric_family *f = cstl_metrics_gauge(reg, "lag", "Lag.", labels, NULL);
    assert_non_null(f);
    const char *v0[] = {"jobs", "0"}, *v1[] = {"jobs", "1"};
    cstl_metric *g0 = cstl_metrics_child(f, v0);
    cstl_metric *g1 = cstl_metrics_child(f, v1);
    assert_ptr_equal(cstl_metrics_child(f, v0), g0);
    assert_ptr_not_equal(g0, g1);
    cstl_metrics_gauge_set(g0, 10);
    cstl_metrics_gauge_inc(g0);
    cstl_metrics_gauge_dec(g1);
    cstl_metrics_gauge_add(g1, -0.25);
    /* Wrong-type updates are ignored. */
    cstl_metrics_counter_inc(g0);
    cstl_metrics_histogram_observe(g0, 1);
    assert_render(reg, "# HELP lag Lag.\n"
                       "# TYPE lag gauge\n"
                       "lag{topic=\"jobs\",partition=\"0\"} 11\n"
                       "lag{topic=\"jobs\",partition=\"1\"} -1.25\n");
    assert_null(cstl_metrics_child(f, NULL));
    const char *missing[] = {"jobs", NULL};
    assert_null(cstl_metrics_child(f, missing));
    cstl_metrics_free(reg);
}

static void test_escaping(void **state)
{
    (void)state;
    cstl_metrics *reg = cstl_metrics_new();
    static const char *const labels[] = {"path", NULL};
    cstl_metric_family *f =
        cstl_metrics_counter(reg, "esc_total", "Back\\slash \"quoted\"\nnext", labels, NULL);
    const char *v[] = {"a\\b\"c\nd"};
    cstl_metrics_counter_inc(cstl_metrics_child(f, v));
    assert_render(reg, "# HELP esc_total Back\\\\slash \"quoted\"\\nnext\n"
                       "# TYPE esc_total counter\n"
                       "esc_total{path=\"a\\\\b\\\"c\\nd\"} 1\n");
    cstl_metrics_free(reg);
}

static void test_registration_rules(void **state)
{
    (void)state;
    cstl_metrics *reg = cstl_metrics_new();
    cstl_error err;
    static const char *const l1[] = {"a", NULL};
    static const char *const l2[] = {"b", NULL};
    cstl_metric_family *f = cstl_metrics_counter(reg, "x_total", "X.", l1, &err);
    assert_non_null(f);
    assert_ptr_equal(cstl_metrics_counter(reg, "x_total", "other help", l1, &err), f);
    assert_null(cstl_metrics_gauge(reg, "x_total", "X.", l1, &err));
    assert_int_equal(err.code, CSTL_EEXISTS);
    assert_string_equal(err.message, "metric \"x_total\" is already registered as a counter");
    assert_null(cstl_metrics_counter(reg, "x_total", "X.", l2, &err));
    assert_int_equal(err.code, CSTL_EEXISTS);

    static const char *const bad_names[] = {"", "1abc", "a-b", "a b", "é"};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(bad_names); i++) {
        assert_null(cstl_metrics_counter(reg, bad_names[i], NULL, NULL, &err));
        assert_int_equal(err.code, CSTL_EINVAL);
    }
    assert_null(cstl_metrics_counter(reg, NULL, NULL, NULL, &err));
    assert_true(cstl_metrics_name_valid("a:b_c9"));
    assert_true(cstl_metrics_name_valid("_x"));
    assert_null(
        cstl_metrics_counter(reg, "bad_label", NULL, (const char *const[]){"a:b", NULL}, &err));
    assert_string_equal(err.message, "invalid label name \"a:b\" for metric \"bad_label\"");
    assert_null(
        cstl_metrics_counter(reg, "reserved", NULL, (const char *const[]){"__x", NULL}, &err));
    assert_null(
        cstl_metrics_counter(reg, "dup", NULL, (const char *const[]){"a", "a", NULL}, &err));
    assert_null(cstl_metrics_counter(reg, "five", NULL,
                                     (const char *const[]){"a", "b", "c", "d", "e", NULL}, &err));
    assert_non_null(cstl_metrics_counter(reg, "four", NULL,
                                         (const char *const[]){"a", "b", "c", "d", NULL}, &err));
    assert_null(
        cstl_metrics_histogram(reg, "h", NULL, (const char *const[]){"le", NULL}, NULL, 0, &err));
    static const double unsorted[] = {1, 0.5};
    assert_null(cstl_metrics_histogram(reg, "h", NULL, NULL, unsorted, 2, &err));
    static const double inf[] = {1, INFINITY};
    assert_null(cstl_metrics_histogram(reg, "h", NULL, NULL, inf, 2, &err));
    cstl_metric_family *h = cstl_metrics_histogram(reg, "h", NULL, NULL, NULL, 0, &err);
    assert_non_null(h);
    assert_ptr_equal(cstl_metrics_histogram(reg, "h", NULL, NULL, NULL, 0, &err), h);
    static const double other[] = {1, 2};
    assert_null(cstl_metrics_histogram(reg, "h", NULL, NULL, other, 2, &err));
    assert_int_equal(err.code, CSTL_EEXISTS);
    assert_int_equal(cstl_metrics_unregister(reg, "nope"), CSTL_ENOTFOUND);
    assert_int_equal(cstl_metrics_unregister(reg, "h"), 0);
    cstl_metrics_free(reg);
}

static void test_histogram_exact(void **state)
{
    (void)state;
    cstl_metrics *reg = cstl_metrics_new();
    static const double buckets[] = {0.1, 0.5, 1};
    static const char *const labels[] = {"route", NULL};
    cstl_metric_family *f =
        cstl_metrics_histogram(reg, "req_seconds", "Latency.", labels, buckets, 3, NULL);
    assert_non_null(f);
    cstl_metric *h = cstl_metrics_child(f, (const char *const[]){"/v1/jobs"});
    cstl_metrics_histogram_observe(h, 0.05);
    cstl_metrics_histogram_observe(h, 0.1); /* le is inclusive */
    cstl_metrics_histogram_observe(h, 0.3);
    cstl_metrics_histogram_observe(h, 2);
    cstl_metrics_histogram_observe(h, NAN); /* ignored */
    assert_true(cstl_metrics_value(h) == 4);
    assert_render(reg, "# HELP req_seconds Latency.\n"
                       "# TYPE req_seconds histogram\n"
                       "req_seconds_bucket{route=\"/v1/jobs\",le=\"0.1\"} 2\n"
                       "req_seconds_bucket{route=\"/v1/jobs\",le=\"0.5\"} 3\n"
                       "req_seconds_bucket{route=\"/v1/jobs\",le=\"1\"} 3\n"
                       "req_seconds_bucket{route=\"/v1/jobs\",le=\"+Inf\"} 4\n"
                       "req_seconds_sum{route=\"/v1/jobs\"} 2.45\n"
                       "req_seconds_count{route=\"/v1/jobs\"} 4\n");
    cstl_metrics_free(reg);
}

static void test_histogram_default_buckets(void **state)
{
    (void)state;
    cstl_metrics *reg = cstl_metrics_new();
    cstl_metric_family *f = cstl_metrics_histogram(reg, "d_seconds", NULL, NULL, NULL, 0, NULL);
    cstl_metrics_histogram_observe(cstl_metrics_child(f, NULL), 0.007);
    char *text = NULL;
    cstl_metrics_render(reg, &text, NULL);
    assert_non_null(strstr(text, "d_seconds_bucket{le=\"0.005\"} 0\n"
                                 "d_seconds_bucket{le=\"0.01\"} 1\n"));
    assert_non_null(strstr(text, "d_seconds_bucket{le=\"10\"} 1\n"
                                 "d_seconds_bucket{le=\"+Inf\"} 1\n"
                                 "d_seconds_sum 0.007\n"
                                 "d_seconds_count 1\n"));
    free(text);
    cstl_metrics_free(reg);
}

static void collect_lag(void *ud, cstl_metrics_sink *sink)
{
    int *calls = ud;
    (*calls)++;
    assert_int_equal(cstl_metrics_sink_add(sink, (const char *const[]){"0"}, 5), 0);
    assert_int_equal(cstl_metrics_sink_add(sink, (const char *const[]){"1"}, 0), 0);
    assert_int_equal(cstl_metrics_sink_add(sink, NULL, 1), CSTL_EINVAL);
}

static void test_gauge_func(void **state)
{
    (void)state;
    cstl_metrics *reg = cstl_metrics_new();
    int calls = 0;
    cstl_error err;
    static const char *const labels[] = {"partition", NULL};
    cstl_metric_family *f =
        cstl_metrics_gauge_func(reg, "consumer_lag", "Lag.", labels, collect_lag, &calls, &err);
    assert_non_null(f);
    assert_null(cstl_metrics_child(f, (const char *const[]){"0"}));
    assert_null(
        cstl_metrics_gauge_func(reg, "consumer_lag", "Lag.", labels, collect_lag, &calls, &err));
    assert_int_equal(err.code, CSTL_EEXISTS);
    assert_null(cstl_metrics_gauge_func(reg, "nocb", NULL, NULL, NULL, NULL, &err));
    assert_render(reg, "# HELP consumer_lag Lag.\n"
                       "# TYPE consumer_lag gauge\n"
                       "consumer_lag{partition=\"0\"} 5\n"
                       "consumer_lag{partition=\"1\"} 0\n");
    assert_int_equal(calls, 1);
    assert_int_equal(cstl_metrics_unregister(reg, "consumer_lag"), 0);
    assert_render(reg, "");
    assert_int_equal(calls, 1);
    cstl_metrics_free(reg);
}

static void test_cardinality_cap(void **state)
{
    (void)state;
    cstl_metrics *reg = cstl_metrics_new();
    cstl_metric_family *f =
        cstl_metrics_counter(reg, "many_total", NULL, (const char *const[]){"k", NULL}, NULL);
    char value[32];
    for (int i = 0; i < CSTL_METRICS_MAX_CHILDREN; i++) {
        snprintf(value, sizeof(value), "v%d", i);
        assert_non_null(cstl_metrics_child(f, (const char *const[]){value}));
    }
    assert_null(cstl_metrics_child(f, (const char *const[]){"one-too-many"}));
    assert_non_null(cstl_metrics_child(f, (const char *const[]){"v42"}));
    char long_value[CSTL_METRICS_MAX_LABEL_VALUE + 2];
    memset(long_value, 'x', sizeof(long_value) - 1);
    long_value[sizeof(long_value) - 1] = '\0';
    assert_null(cstl_metrics_child(f, (const char *const[]){long_value}));
    cstl_metrics_free(reg);
}

enum { THREADS = 8, ITERATIONS = 50000 };

static void *hammer(void *arg)
{
    cstl_metrics *reg = arg;
    cstl_metric_family *c =
        cstl_metrics_counter(reg, "hits_total", NULL, (const char *const[]){"k", NULL}, NULL);
    cstl_metric_family *g = cstl_metrics_gauge(reg, "level", NULL, NULL, NULL);
    cstl_metric_family *h = cstl_metrics_histogram(reg, "obs", NULL, NULL, NULL, 0, NULL);
    for (int i = 0; i < ITERATIONS; i++) {
        /* Look the child up every time, so lookup and creation race too. */
        cstl_metrics_counter_inc(cstl_metrics_child(c, (const char *const[]){"same"}));
        cstl_metrics_counter_add(cstl_metrics_child(c, (const char *const[]){"half"}), 0.5);
        cstl_metrics_gauge_inc(cstl_metrics_child(g, NULL));
        cstl_metrics_histogram_observe(cstl_metrics_child(h, NULL), 0.01);
        if (i % 10000 == 0) {
            char *text = NULL;
            cstl_metrics_render(reg, &text, NULL);
            free(text);
        }
    }
    return NULL;
}

static void test_concurrency_exact_totals(void **state)
{
    (void)state;
    cstl_metrics *reg = cstl_metrics_new();
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, hammer, reg), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    cstl_metric_family *c =
        cstl_metrics_counter(reg, "hits_total", NULL, (const char *const[]){"k", NULL}, NULL);
    assert_true(cstl_metrics_value(cstl_metrics_child(c, (const char *const[]){"same"})) ==
                THREADS * ITERATIONS);
    assert_true(cstl_metrics_value(cstl_metrics_child(c, (const char *const[]){"half"})) ==
                THREADS * ITERATIONS * 0.5);
    cstl_metric_family *g = cstl_metrics_gauge(reg, "level", NULL, NULL, NULL);
    assert_true(cstl_metrics_value(cstl_metrics_child(g, NULL)) == THREADS * ITERATIONS);
    cstl_metric_family *h = cstl_metrics_histogram(reg, "obs", NULL, NULL, NULL, 0, NULL);
    assert_true(cstl_metrics_value(cstl_metrics_child(h, NULL)) == THREADS * ITERATIONS);
    char *text = NULL;
    cstl_metrics_render(reg, &text, NULL);
    assert_non_null(strstr(text, "hits_total{k=\"same\"} 400000\n"));
    assert_non_null(strstr(text, "obs_count 400000\n"));
    free(text);
    cstl_metrics_free(reg);
}

static void test_default_process_metrics(void **state)
{
    (void)state;
    cstl_metrics *reg = cstl_metrics_default();
    assert_ptr_equal(cstl_metrics_default(), reg);
    char *text = NULL;
    cstl_metrics_render(reg, &text, NULL);
    const char *p = strstr(text, "\nprocess_start_time_seconds ");
    assert_non_null(p);
    double start = strtod(p + strlen("\nprocess_start_time_seconds "), NULL);
    assert_true(start > 1.6e9);
    p = strstr(text, "\nprocess_resident_memory_bytes ");
    assert_non_null(p);
    assert_true(strtod(p + strlen("\nprocess_resident_memory_bytes "), NULL) > 0);
    assert_non_null(strstr(text, "# TYPE process_open_fds gauge\nprocess_open_fds "));
    assert_non_null(strstr(text, "\nprocess_virtual_memory_bytes "));
    free(text);
}

static void collect_two(void *ud, cstl_metrics_sink *sink)
{
    (void)ud;
    cstl_metrics_sink_add(sink, (const char *const[]){"jobs", "0"}, 12);
    cstl_metrics_sink_add(sink, (const char *const[]){"jobs", "1"}, 0);
}

/* Every kind of metric, with labels and awkward values, must pass promtool's own linter. */
static void test_promtool_accepts(void **state)
{
    (void)state;
    const char *promtool = "/usr/bin/promtool";
    if (access(promtool, X_OK) != 0) {
        const char *skip = getenv("CSTL_SKIP_PROMTOOL");
        if (skip != NULL && strcmp(skip, "1") == 0)
            skip();
        fail_msg("promtool not found at \"%s\": install prometheus (promtool) or set "
                 "CSTL_SKIP_PROMTOOL=1",
                 promtool);
    }
    cstl_metrics *reg = cstl_metrics_new();
    static const char *const method_route[] = {"method", "route", NULL};
    cstl_metric_family *c = cstl_metrics_counter(
        reg, "http_requests_total", "HTTP requests \"served\"\nby route.", method_route, NULL);
    cstl_metrics_counter_add(cstl_metrics_child(c, (const char *const[]){"GET", "/v1/jobs/{id}"}),
                             3);
    cstl_metrics_counter_inc(cstl_metrics_child(c, (const char *const[]){"POST", "a\\b\"c\nd"}));
    cstl_metric_family *g = cstl_metrics_gauge(reg, "queue_depth", "Jobs waiting.", NULL, NULL);
    cstl_metrics_gauge_set(cstl_metrics_child(g, NULL), -2.5e-7);
    cstl_metric_family *h =
        cstl_metrics_histogram(reg, "http_request_duration_seconds", "Latency.",
                               (const char *const[]){"route", NULL}, NULL, 0, NULL);
    cstl_metrics_histogram_observe(cstl_metrics_child(h, (const char *const[]){"/healthz"}), 0.2);
    cstl_metrics_histogram_observe(cstl_metrics_child(h, (const char *const[]){"/metrics"}), 20);
    assert_non_null(cstl_metrics_gauge_func(reg, "consumer_lag", "Lag by partition.",
                                            (const char *const[]){"topic", "partition", NULL},
                                            collect_two, NULL, NULL));
    char *text = NULL;
    size_t len = 0;
    cstl_metrics_render(reg, &text, &len);
    char path[] = "/tmp/cstl-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    free(text);
    cstl_metrics_free(reg);
    char command[256];
    snprintf(command, sizeof(command), "%s check metrics < %s 2>&1", promtool, path);
    FILE *p = popen(command, "r");
    assert_non_null(p);
    char output[4096];
    size_t n = fread(output, 1, sizeof(output) - 1, p);
    output[n] = '\0';
    int status = pclose(p);
    unlink(path);
    if (status != 0)
        fail_msg("promtool rejected the rendering (status %d): %s", status, output);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_null),
        cmocka_unit_test(test_counter_exact),
        cmocka_unit_test(test_unlabelled_shows_zero_and_sorted),
        cmocka_unit_test(test_gauge_ops),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_registration_rules),
        cmocka_unit_test(test_histogram_exact),
        cmocka_unit_test(test_histogram_default_buckets),
        cmocka_unit_test(test_gauge_func),
        cmocka_unit_test(test_cardinality_cap),
        cmocka_unit_test(test_concurrency_exact_totals),
        cmocka_unit_test(test_default_process_metrics),
        cmocka_unit_test(test_promtool_accepts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
