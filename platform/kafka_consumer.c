/*
 * kafka_consumer.c - the read_committed consumer (see kafka.h).
 *
 * Invariants: offsets are never committed or stored by librdkafka on its own (auto commit and
 * auto offset store are off): the command handler commits them inside its Kafka transaction and
 * projectors keep them in PostgreSQL. The rebalance callback runs inside rd_kafka_consumer_poll
 * and rd_kafka_consumer_close on the caller's thread; it works for both the cooperative protocol
 * (incremental assign/unassign, the default) and the eager one (assign/unassign everything), so
 * a deployment may switch partition.assignment.strategy without code changes.
 */
#include "platform/kafka_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cstl_kafka_consumer {
    rd_kafka_t *rk;
    cstl_kafka_rebalance_cb hook;
    void *opaque;
    int hook_code; /* a failed assignment hook, returned by the next poll */
    cstl_error hook_error;
};

static bool cooperative(rd_kafka_t *rk)
{
    const char *proto = rd_kafka_rebalance_protocol(rk);
    return proto != NULL && strcmp(proto, "COOPERATIVE") == 0;
}

static void record_failure(cstl_kafka_consumer *c, int code, const cstl_error *e)
{
    if (c->hook_code != 0)
        return;
    c->hook_code = code;
    if (e != NULL)
        c->hook_error = *e;
    else
        cstl_error_set(&c->hook_error, code, "rebalance failed");
}

static void on_rebalance(rd_kafka_t *rk,
                         rd_kafka_resp_err_t what,
                         rd_kafka_topic_partition_list_t *parts,
                         void *opaque)
{
    cstl_kafka_consumer *c = opaque;
    bool coop = cooperative(rk);
    cstl_error e;
    int rc;
    if (what == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        /* Start from the group's committed offsets unless the hook says otherwise. */
        for (int i = 0; i < parts->cnt; i++)
            parts->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
        if (c->hook != NULL) {
            rc = c->hook(c->opaque, c, CSTL_KAFKA_ASSIGNED, parts);
            if (rc != 0) {
                cstl_error_set(&e, rc, "rebalance hook refused the assignment of %d partitions",
                               parts->cnt);
                record_failure(c, rc, &e);
                return;
            }
        }
        if (coop)
            rc = cstl_kafka_error_take(&e, rd_kafka_incremental_assign(rk, parts),
                                       "cannot assign partitions");
        else
            rc = cstl_kafka_error_from_code(&e, rd_kafka_assign(rk, parts),
                                            "cannot assign partitions");
        if (rc != 0)
            record_failure(c, rc, &e);
        return;
    }
    /* Revoked, or lost: tell the hook first, while the partitions are still assigned. */
    if (c->hook != NULL && what == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        c->hook(c->opaque, c, rd_kafka_assignment_lost(rk) ? CSTL_KAFKA_LOST : CSTL_KAFKA_REVOKED,
                parts);
    if (coop) {
        rd_kafka_error_t *kerr = rd_kafka_incremental_unassign(rk, parts);
        if (kerr != NULL)
            rd_kafka_error_destroy(kerr);
    } else {
        rd_kafka_assign(rk, NULL);
    }
}

cstl_kafka_consumer *cstl_kafka_consumer_new(const cstl_kafka_conf *conf,
                                             const char *group_id,
                                             cstl_kafka_rebalance_cb hook,
                                             void *opaque,
                                             cstl_error *err)
{
    if (group_id == NULL || *group_id == '\0') {
        cstl_error_set(err, CSTL_EINVAL, "kafka consumer group id is not set");
        return NULL;
    }
    /* read_committed: never see records of open or aborted transactions. Offsets are committed by
     * the owner (transaction or PostgreSQL), never automatically. cooperative-sticky: a
     * rebalance only moves the partitions that must move, so members keep the aggregate state
     * they restored for the others. */
    const char *defaults[] = {
        "group.id",
        group_id,
        "isolation.level",
        "read_committed",
        "enable.auto.commit",
        "false",
        "enable.auto.offset.store",
        "false",
        "auto.offset.reset",
        "earliest",
        "partition.assignment.strategy",
        "cooperative-sticky",
        "enable.partition.eof",
        "false",
        NULL,
    };
    rd_kafka_conf_t *rc = cstl_kafka_conf_build(conf, defaults, err);
    if (rc == NULL)
        return NULL;
    cstl_kafka_consumer *c = cstl_xcalloc(1, sizeof(*c));
    c->hook = hook;
    c->opaque = opaque;
    rd_kafka_conf_set_rebalance_cb(rc, on_rebalance);
    rd_kafka_conf_set_opaque(rc, c);
    char errstr[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, errstr, sizeof(errstr));
    if (c->rk == NULL) {
        rd_kafka_conf_destroy(rc);
        free(c);
        cstl_error_set(err, CSTL_ECONFIG, "cannot create kafka consumer: %s", errstr);
        return NULL;
    }
    /* Route every event (including error events) to the consumer queue served by poll. */
    rd_kafka_poll_set_consumer(c->rk);
    return c;
}

int cstl_kafka_consumer_subscribe(cstl_kafka_consumer *c,
                                  const char *const *topics,
                                  size_t n,
                                  cstl_error *err)
{
    if (c == NULL || topics == NULL || n == 0)
        return cstl_error_set(err, CSTL_EINVAL, "kafka subscription needs at least one topic");
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        if (topics[i] == NULL || *topics[i] == '\0') {
            rd_kafka_topic_partition_list_destroy(list);
            return cstl_error_set(err, CSTL_EINVAL, "empty topic name in subscription");
        }
        rd_kafka_topic_partition_list_add(list, topics[i], RD_KAFKA_PARTITION_UA);
    }
    rd_kafka_resp_err_t rc = rd_kafka_subscribe(c->rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR)
        return cstl_kafka_error_from_code(err, rc, "cannot subscribe");
    return 0;
}

int cstl_kafka_consumer_assign(cstl_kafka_consumer *c,
                               const rd_kafka_topic_partition_list_t *partitions,
                               cstl_error *err)
{
    if (c == NULL || partitions == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "kafka assignment needs a partition list");
    rd_kafka_resp_err_t rc = rd_kafka_assign(c->rk, partitions);
    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR)
        return cstl_kafka_error_from_code(err, rc, "cannot assign partitions");
    return 0;
}

int cstl_kafka_consumer_poll(cstl_kafka_consumer *c,
                             int timeout_ms,
                             rd_kafka_message_t **out,
                             cstl_error *err)
{
    *out = NULL;
    if (c == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "kafka poll needs a consumer");
    if (c->hook_code != 0) {
        if (err != NULL)
            *err = c->hook_error;
        return c->hook_code;
    }
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(c->rk, timeout_ms);
    if (c->hook_code != 0) {
        if (msg != NULL)
            rd_kafka_message_destroy(msg);
        if (err != NULL)
            *err = c->hook_error;
        return c->hook_code;
    }
    if (msg == NULL)
        return 0;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        *out = msg;
        return 0;
    }
    rd_kafka_resp_err_t code = msg->err;
    if (code == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        rd_kafka_message_destroy(msg);
        return 0;
    }
    char context[300];
    if (msg->rkt != NULL)
        snprintf(context, sizeof(context), "consumer error on \"%s\" [%d]",
                 rd_kafka_topic_name(msg->rkt), (int)msg->partition);
    else
        snprintf(context, sizeof(context), "consumer error");
    int rc = cstl_kafka_error_from_handle(err, c->rk, code, context);
    if (err != NULL && msg->payload != NULL && msg->len > 0)
        cstl_error_detail(err, "%.*s", (int)(msg->len < 400 ? msg->len : 400),
                          (const char *)msg->payload);
    rd_kafka_message_destroy(msg);
    return rc;
}

int cstl_kafka_consumer_watermarks(cstl_kafka_consumer *c,
                                   const char *topic,
                                   int32_t partition,
                                   int64_t *low,
                                   int64_t *high,
                                   int timeout_ms,
                                   cstl_error *err)
{
    if (c == NULL || topic == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "watermarks need a consumer and a topic");
    int64_t lo = -1, hi = -1;
    rd_kafka_resp_err_t rc =
        rd_kafka_query_watermark_offsets(c->rk, topic, partition, &lo, &hi, timeout_ms);
    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR) {
        char context[300];
        snprintf(context, sizeof(context), "cannot query watermarks of \"%s\" [%d]", topic,
                 (int)partition);
        return cstl_kafka_error_from_code(err, rc, context);
    }
    if (low != NULL)
        *low = lo;
    if (high != NULL)
        *high = hi;
    return 0;
}

int cstl_kafka_consumer_committed(cstl_kafka_consumer *c,
                                  rd_kafka_topic_partition_list_t *partitions,
                                  int timeout_ms,
                                  cstl_error *err)
{
    if (c == NULL || partitions == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "committed offsets need a partition list");
    rd_kafka_resp_err_t rc = rd_kafka_committed(c->rk, partitions, timeout_ms);
    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR)
        return cstl_kafka_error_from_code(err, rc, "cannot fetch committed offsets");
    for (int i = 0; i < partitions->cnt; i++) {
        if (partitions->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            char context[300];
            snprintf(context, sizeof(context), "cannot fetch committed offset of \"%s\" [%d]",
                     partitions->elems[i].topic, (int)partitions->elems[i].partition);
            return cstl_kafka_error_from_code(err, partitions->elems[i].err, context);
        }
    }
    return 0;
}

rd_kafka_consumer_group_metadata_t *cstl_kafka_consumer_group_metadata(cstl_kafka_consumer *c)
{
    return c == NULL ? NULL : rd_kafka_consumer_group_metadata(c->rk);
}

rd_kafka_t *cstl_kafka_consumer_handle(cstl_kafka_consumer *c)
{
    return c == NULL ? NULL : c->rk;
}

int cstl_kafka_consumer_close(cstl_kafka_consumer *c, cstl_error *err)
{
    if (c == NULL)
        return 0;
    rd_kafka_resp_err_t rc = rd_kafka_consumer_close(c->rk);
    int code = 0;
    if (rc != RD_KAFKA_RESP_ERR_NO_ERROR)
        code = cstl_kafka_error_from_code(err, rc, "cannot close consumer");
    rd_kafka_destroy(c->rk);
    free(c);
    return code;
}
