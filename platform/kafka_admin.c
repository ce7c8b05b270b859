/*
 * kafka_admin.c - topic administration over librdkafka's Admin API (see kafka.h).
 *
 * Invariants: each request waits for its result on a private queue, bounded by the caller's
 * timeout, so nothing is left in flight when a function returns. Creation is idempotent: an
 * existing topic with the requested partition count is success. Called by one thread at a time.
 */
#include "platform/kafka_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cstl_kafka_admin {
    rd_kafka_t *rk;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

cstl_kafka_admin *cstl_kafka_admin_new(const cstl_kafka_conf *conf, cstl_error *err)
{
    const char *defaults[] = {"allow.auto.create.topics", "false", NULL};
    rd_kafka_conf_t *rc = cstl_kafka_conf_build(conf, defaults, err);
    if (rc == NULL)
        return NULL;
    cstl_kafka_admin *a = cstl_xcalloc(1, sizeof(*a));
    char errstr[512];
    a->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, errstr, sizeof(errstr));
    if (a->rk == NULL) {
        rd_kafka_conf_destroy(rc);
        free(a);
        cstl_error_set(err, CSTL_ECONFIG, "cannot create kafka admin client: %s", errstr);
        return NULL;
    }
    return a;
}

void cstl_kafka_admin_free(cstl_kafka_admin *a)
{
    if (a == NULL)
        return;
    rd_kafka_destroy(a->rk);
    free(a);
}

/* Partition count of topic in md, 0 when absent, -1 when present but not ready (no leader). */
static int32_t md_partitions(const rd_kafka_metadata_t *md, const char *topic)
{
    for (int i = 0; i < md->topic_cnt; i++) {
        const rd_kafka_metadata_topic_t *t = &md->topics[i];
        if (strcmp(t->topic, topic) != 0)
            continue;
        if (t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            return 0;
        if (t->err != RD_KAFKA_RESP_ERR_NO_ERROR)
            return -1;
        for (int p = 0; p < t->partition_cnt; p++)
            if (t->partitions[p].leader < 0)
                return -1;
        return t->partition_cnt;
    }
    return 0;
}

static int
fetch_metadata(cstl_kafka_admin *a, int timeout_ms, const rd_kafka_metadata_t **md, cstl_error *err)
{
    rd_kafka_resp_err_t rc = rd_kafka_metadata(a->rk, 1, NULL, md, timeout_ms < 1 ? 1 : timeout_ms);
    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR)
        return cstl_kafka_error_from_code(err, rc, "cannot fetch cluster metadata");
    return 0;
}

int cstl_kafka_admin_partition_count(
    cstl_kafka_admin *a, const char *topic, int timeout_ms, int32_t *out, cstl_error *err)
{
    if (a == NULL || topic == NULL || out == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "partition count needs an admin and a topic");
    const rd_kafka_metadata_t *md = NULL;
    int rc = fetch_metadata(a, timeout_ms, &md, err);
    if (rc != 0)
        return rc;
    int32_t n = 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic) == 0 &&
            md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            n = md->topics[i].partition_cnt;
    }
    rd_kafka_metadata_destroy(md);
    if (n <= 0)
        return cstl_error_set(err, CSTL_ENOTFOUND, "topic \"%s\" does not exist", topic);
    *out = n;
    return 0;
}

/* Waits for an admin result event of type want on q until the deadline. */
static rd_kafka_event_t *
wait_result(rd_kafka_queue_t *q, rd_kafka_event_type_t want, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        rd_kafka_event_t *ev =
            rd_kafka_queue_poll(q, left < 1 ? 1 : (int)(left > 1000 ? 1000 : left));
        if (ev != NULL && rd_kafka_event_type(ev) == want)
            return ev;
        if (ev != NULL)
            rd_kafka_event_destroy(ev);
        if (now_ms() >= deadline)
            return NULL;
    }
}

static rd_kafka_AdminOptions_t *
admin_options(cstl_kafka_admin *a, rd_kafka_admin_op_t op, int timeout_ms)
{
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(a->rk, op);
    char errstr[256];
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, errstr, sizeof(errstr));
    return opts;
}

/* Waits until every topic in names (n, with partitions[i] each) is in the metadata with leaders. */
static int wait_visible(
    cstl_kafka_admin *a, const char *const *names, size_t n, int64_t deadline, cstl_error *err)
{
    const char *missing = names[0];
    for (;;) {
        const rd_kafka_metadata_t *md = NULL;
        int64_t left = deadline - now_ms();
        int rc = fetch_metadata(a, (int)(left > 5000 ? 5000 : left), &md, err);
        size_t ready = 0;
        if (rc == 0) {
            for (size_t i = 0; i < n; i++) {
                if (md_partitions(md, names[i]) > 0)
                    ready++;
                else if (ready == i)
                    missing = names[i];
            }
            rd_kafka_metadata_destroy(md);
            if (ready == n)
                return 0;
        }
        if (now_ms() >= deadline) {
            if (rc != 0)
                return rc;
            return cstl_error_set(err, CSTL_ETIMEDOUT,
                                  "created topic \"%s\" did not appear in the metadata in time",
                                  missing);
        }
        struct timespec ts = {0, 100 * 1000000};
        nanosleep(&ts, NULL);
    }
}

int cstl_kafka_admin_create_topics(cstl_kafka_admin *a,
                                   const cstl_kafka_topic_spec *specs,
                                   size_t n,
                                   int timeout_ms,
                                   size_t *created,
                                   size_t *existing,
                                   cstl_error *err)
{
    if (created != NULL)
        *created = 0;
    if (existing != NULL)
        *existing = 0;
    if (a == NULL || (specs == NULL && n > 0))
        return cstl_error_set(err, CSTL_EINVAL, "topic creation needs an admin and topics");
    if (n == 0)
        return 0;
    int64_t deadline = now_ms() + timeout_ms;
    char errstr[512];
    rd_kafka_NewTopic_t **topics = cstl_xcalloc(n, sizeof(*topics));
    const char **new_names = cstl_xcalloc(n, sizeof(*new_names));
    size_t n_new = 0, n_existing = 0;
    int first = 0;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_AdminOptions_t *opts = NULL;
    rd_kafka_event_t *ev = NULL;

    for (size_t i = 0; i < n; i++) {
        const cstl_kafka_topic_spec *s = &specs[i];
        if (s->name == NULL || s->partitions < 1 || s->replication_factor < 1) {
            first = cstl_error_set(err, CSTL_EINVAL,
                                   "invalid topic \"%s\": needs a name, partitions >= 1 and "
                                   "replication factor >= 1",
                                   s->name ? s->name : "");
            goto done;
        }
        topics[i] = rd_kafka_NewTopic_new(s->name, s->partitions, s->replication_factor, errstr,
                                          sizeof(errstr));
        if (topics[i] == NULL) {
            first = cstl_error_set(err, CSTL_EINVAL, "invalid topic \"%s\": %s", s->name, errstr);
            goto done;
        }
        for (size_t k = 0; s->config != NULL && s->config[k] != NULL; k += 2) {
            rd_kafka_resp_err_t rc =
                rd_kafka_NewTopic_set_config(topics[i], s->config[k], s->config[k + 1]);
            if (rc != RD_KAFKA_RESP_ERR_NO_ERROR) {
                first = cstl_error_set(
                    err, CSTL_EINVAL, "invalid config \"%s\" = \"%s\" of topic \"%s\"",
                    s->config[k], s->config[k + 1] ? s->config[k + 1] : "", s->name);
                goto done;
            }
        }
    }

    q = rd_kafka_queue_new(a->rk);
    opts = admin_options(a, RD_KAFKA_ADMIN_OP_CREATETOPICS, timeout_ms);
    rd_kafka_CreateTopics(a->rk, topics, n, opts, q);
    ev = wait_result(q, RD_KAFKA_EVENT_CREATETOPICS_RESULT, deadline + 1000);
    if (ev == NULL) {
        first = cstl_error_set(err, CSTL_ETIMEDOUT, "creating %zu topics timed out after %d ms", n,
                               timeout_ms);
        goto done;
    }
    if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        first = cstl_kafka_error_from_code(err, rd_kafka_event_error(ev), "cannot create topics");
        goto done;
    }
    size_t cnt = 0;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    for (size_t r = 0; r < cnt; r++) {
        const char *name = rd_kafka_topic_result_name(res[r]);
        rd_kafka_resp_err_t code = rd_kafka_topic_result_error(res[r]);
        const cstl_kafka_topic_spec *s = NULL;
        for (size_t i = 0; i < n && s == NULL; i++)
            if (strcmp(specs[i].name, name) == 0)
                s = &specs[i];
        if (s == NULL)
            continue;
        if (code == RD_KAFKA_RESP_ERR_NO_ERROR) {
            new_names[n_new++] = s->name;
        } else if (code == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            int32_t have = 0;
            cstl_error e;
            int64_t left = deadline - now_ms();
            int rc = cstl_kafka_admin_partition_count(a, name, left < 1000 ? 1000 : (int)left,
                                                      &have, &e);
            if (rc != 0) {
                if (first == 0) {
                    first = rc;
                    if (err != NULL)
                        *err = e;
                }
            } else if (have != s->partitions) {
                if (first == 0)
                    first = cstl_error_set(err, CSTL_ECONFLICT,
                                           "topic \"%s\" exists with %d partitions, expected %d",
                                           name, (int)have, (int)s->partitions);
            } else {
                n_existing++;
            }
        } else if (first == 0) {
            char context[300];
            snprintf(context, sizeof(context), "cannot create topic \"%s\"", name);
            first = cstl_kafka_error_from_code(err, code, context);
            const char *msg = rd_kafka_topic_result_error_string(res[r]);
            if (msg != NULL)
                cstl_error_detail(err, "%s", msg);
        }
    }
    if (n_new > 0) {
        cstl_error e;
        int rc = wait_visible(a, new_names, n_new, deadline, &e);
        if (rc != 0 && first == 0) {
            first = rc;
            if (err != NULL)
                *err = e;
        }
    }

done:
    if (created != NULL)
        *created = n_new;
    if (existing != NULL)
        *existing = n_existing;
    if (ev != NULL)
        rd_kafka_event_destroy(ev);
    if (opts != NULL)
        rd_kafka_AdminOptions_destroy(opts);
    if (q != NULL)
        rd_kafka_queue_destroy(q);
    for (size_t i = 0; i < n; i++)
        if (topics[i] != NULL)
            rd_kafka_NewTopic_destroy(topics[i]);
    free(topics);
    free(new_names);
    return first;
}

int cstl_kafka_admin_delete_topics(
    cstl_kafka_admin *a, const char *const *names, size_t n, int timeout_ms, cstl_error *err)
{
    if (a == NULL || (names == NULL && n > 0))
        return cstl_error_set(err, CSTL_EINVAL, "topic deletion needs an admin and topics");
    if (n == 0)
        return 0;
    rd_kafka_DeleteTopic_t **del = cstl_xcalloc(n, sizeof(*del));
    for (size_t i = 0; i < n; i++)
        del[i] = rd_kafka_DeleteTopic_new(names[i]);
    rd_kafka_queue_t *q = rd_kafka_queue_new(a->rk);
    rd_kafka_AdminOptions_t *opts = admin_options(a, RD_KAFKA_ADMIN_OP_DELETETOPICS, timeout_ms);
    rd_kafka_DeleteTopics(a->rk, del, n, opts, q);
    rd_kafka_event_t *ev =
        wait_result(q, RD_KAFKA_EVENT_DELETETOPICS_RESULT, now_ms() + timeout_ms + 1000);
    int first = 0;
    if (ev == NULL) {
        first = cstl_error_set(err, CSTL_ETIMEDOUT, "deleting %zu topics timed out after %d ms", n,
                               timeout_ms);
    } else if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        first = cstl_kafka_error_from_code(err, rd_kafka_event_error(ev), "cannot delete topics");
    } else {
        size_t cnt = 0;
        const rd_kafka_topic_result_t **res =
            rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &cnt);
        for (size_t r = 0; r < cnt && first == 0; r++) {
            rd_kafka_resp_err_t code = rd_kafka_topic_result_error(res[r]);
            if (code == RD_KAFKA_RESP_ERR_NO_ERROR ||
                code == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                continue;
            char context[300];
            snprintf(context, sizeof(context), "cannot delete topic \"%s\"",
                     rd_kafka_topic_result_name(res[r]));
            first = cstl_kafka_error_from_code(err, code, context);
        }
    }
    if (ev != NULL)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    for (size_t i = 0; i < n; i++)
        rd_kafka_DeleteTopic_destroy(del[i]);
    free(del);
    return first;
}
