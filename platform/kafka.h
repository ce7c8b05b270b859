/*
 * kafka.h - Constellation's Kafka clients over librdkafka: common configuration, the idempotent
 * and the transactional producer, the read_committed consumer, topic administration, the key
 * partitioner and the classification of Kafka errors into CSTL_E* codes.
 *
 * Handles are opaque. Every *_free / *_close accepts NULL. Functions that can fail return 0 or a
 * negative CSTL_E* code and fill an optional cstl_error; a Kafka failure carries origin
 * CSTL_ORIGIN_KAFKA and the rd_kafka_resp_err_t in origin_code. These functions never log; only
 * librdkafka's own log and error events are forwarded to platform/log.h, component "kafka".
 *
 * Threads: a cstl_kafka_conf is not thread-safe while it is being built, and read-only (safe to
 * share) once clients are made from it. A producer, consumer or admin handle is used by one thread
 * at a time; callbacks (delivery reports, rebalance hooks) run on the thread that calls into the
 * handle, never on librdkafka's internal threads.
 *
 * docs/kafka.md explains the settings chosen and the error classes.
 */
#ifndef CSTL_PLATFORM_KAFKA_H
#define CSTL_PLATFORM_KAFKA_H

#include "platform/error.h"

#include <librdkafka/rdkafka.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Any partition: let librdkafka choose (murmur2 of the key, as Java's client does). */
#define CSTL_KAFKA_PARTITION_UA RD_KAFKA_PARTITION_UA

/* ---------------------------------------------------------------------------------------------
 * Errors
 */

/*
 * Fills err (may be NULL) from a librdkafka error object and returns the CSTL_E* code:
 *   fenced (RD_KAFKA_RESP_ERR__FENCED, PRODUCER_FENCED, INVALID_PRODUCER_EPOCH) -> CSTL_EFENCED
 *   rd_kafka_error_is_fatal                                       -> CSTL_EKAFKA_FATAL
 *   rd_kafka_error_txn_requires_abort                             -> CSTL_EKAFKA_ABORT
 *   rd_kafka_error_is_retriable                                   -> CSTL_EKAFKA
 *   otherwise                                                     -> as cstl_kafka_error_from_code
 * The message is "<context>: <kafka's description>"; the detail names the Kafka error code.
 * Does not take ownership of kerr. kerr must not be NULL.
 */
int cstl_kafka_error_from(cstl_error *err, const rd_kafka_error_t *kerr, const char *context);

/*
 * Fills err (may be NULL) from a bare error code (delivery reports, admin results) and returns the
 * CSTL_E* code: fenced -> CSTL_EFENCED, RD_KAFKA_RESP_ERR__FATAL -> CSTL_EKAFKA_FATAL, timeouts ->
 * CSTL_ETIMEDOUT, unknown topic or partition -> CSTL_ENOTFOUND, message too large ->
 * CSTL_ETOOBIG, authorization failures -> CSTL_EFORBIDDEN, invalid arguments and configuration ->
 * CSTL_EINVAL, anything else -> CSTL_EKAFKA (retriable). code must not be NO_ERROR.
 */
int cstl_kafka_error_from_code(cstl_error *err, rd_kafka_resp_err_t code, const char *context);

/* ---------------------------------------------------------------------------------------------
 * Configuration
 */

typedef struct cstl_kafka_conf cstl_kafka_conf;

/*
 * A new configuration with bootstrap.servers = brokers and client.id = client_id, librdkafka's log
 * forwarded to cstl_log (component "kafka", fields "facility" and "client"; syslog levels 0-3 ->
 * error, 4 -> warn, 5-6 -> info, 7 -> debug) and its error events logged the same way. Returns
 * NULL and fills err (CSTL_EINVAL/CSTL_ECONFIG) when an argument is empty or rejected. The
 * result is owned by the caller: cstl_kafka_conf_free. Clients copy it, so it may be freed once
 * the clients are made.
 */
cstl_kafka_conf *cstl_kafka_conf_new(const char *brokers, const char *client_id, cstl_error *err);

/*
 * Adds a librdkafka setting. Settings added here are applied after each client's own defaults,
 * so they override them (e.g. isolation.level for a test that must see aborted records); the
 * transactional.id is set by cstl_kafka_txn_producer_new and cannot be set here. Returns 0, or
 * CSTL_ECONFIG naming the key and the value when librdkafka rejects it. Strings are copied.
 */
int cstl_kafka_conf_set(cstl_kafka_conf *conf, const char *key, const char *value, cstl_error *err);

/* Frees conf; NULL is a no-op. */
void cstl_kafka_conf_free(cstl_kafka_conf *conf);

/* ---------------------------------------------------------------------------------------------
 * Producers
 */

typedef struct cstl_kafka_producer cstl_kafka_producer;

/* Outcome of one produced record, passed to a delivery callback. Borrowed for the callback. */
typedef struct cstl_kafka_delivery {
    const char *topic;
    int32_t partition;
    int64_t offset;          /* -1 when unknown or on failure */
    int code;                /* 0 or a CSTL_E* code */
    const cstl_error *error; /* NULL on success */
} cstl_kafka_delivery;

/* Called once per record sent with a callback, on the thread that polls, flushes or commits. */
typedef void (*cstl_kafka_delivery_cb)(void *opaque, const cstl_kafka_delivery *delivery);

/*
 * An idempotent producer (enable.idempotence=true, acks=all, partitioner murmur2_random). Copies
 * conf. Returns NULL and fills err on failure. Owned by the caller: cstl_kafka_producer_free.
 */
cstl_kafka_producer *cstl_kafka_producer_new(const cstl_kafka_conf *conf, cstl_error *err);

/*
 * A transactional producer with the given transactional.id (idempotent as above). It cannot
 * send until cstl_kafka_producer_init_transactions succeeds. Copies conf and transactional_id.
 * Returns NULL and fills err on failure. Owned by the caller: cstl_kafka_producer_free.
 */
cstl_kafka_producer *cstl_kafka_txn_producer_new(const cstl_kafka_conf *conf,
                                                 const char *transactional_id,
                                                 cstl_error *err);

/*
 * Queues one record. topic: borrowed for the call. partition: >= 0 or CSTL_KAFKA_PARTITION_UA.
 * key and value: copied, may be NULL. headers: ownership passes to the producer on success
 * (librdkafka frees them after delivery); on failure the caller still owns and must free them.
 * cb (may be NULL) is called once with the outcome; without cb, a failed delivery is reported by
 * the next cstl_kafka_producer_flush. Returns 0 once queued, CSTL_EKAFKA when the local queue is
 * full (poll or flush and retry), or another code from cstl_kafka_error_from_code.
 */
int cstl_kafka_producer_send(cstl_kafka_producer *p,
                             const char *topic,
                             int32_t partition,
                             const void *key,
                             size_t key_len,
                             const void *value,
                             size_t value_len,
                             rd_kafka_headers_t *headers,
                             cstl_kafka_delivery_cb cb,
                             void *opaque,
                             cstl_error *err);

/*
 * Sends one record and waits up to timeout_ms for its delivery report (serving other callbacks
 * meanwhile). Arguments as cstl_kafka_producer_send. On success stores the partition and offset
 * in *partition_out and *offset_out (each may be NULL). Returns 0, the delivery's error code, or
 * CSTL_ETIMEDOUT (the record may still be delivered later). Not for transactional producers,
 * whose records are only visible once committed.
 */
int cstl_kafka_producer_send_wait(cstl_kafka_producer *p,
                                  const char *topic,
                                  int32_t partition,
                                  const void *key,
                                  size_t key_len,
                                  const void *value,
                                  size_t value_len,
                                  rd_kafka_headers_t *headers,
                                  int timeout_ms,
                                  int32_t *partition_out,
                                  int64_t *offset_out,
                                  cstl_error *err);

/* Serves delivery callbacks and error events for up to timeout_ms. Returns how many were served. */
int cstl_kafka_producer_poll(cstl_kafka_producer *p, int timeout_ms);

/*
 * Waits up to timeout_ms for every queued record to be delivered, serving callbacks. Returns 0,
 * CSTL_ETIMEDOUT when records remain, or the error of the first record sent without a callback
 * that failed since the previous flush (then cleared).
 */
int cstl_kafka_producer_flush(cstl_kafka_producer *p, int timeout_ms, cstl_error *err);

/*
 * Registers the transactional.id with the coordinator, fencing older producers with the same id
 * and aborting their open transaction. Call once, before cstl_kafka_producer_begin. Retriable
 * failures (CSTL_EKAFKA, CSTL_ETIMEDOUT) may be retried with the same handle.
 */
int cstl_kafka_producer_init_transactions(cstl_kafka_producer *p, int timeout_ms, cstl_error *err);

/* Begins a transaction. Returns 0 or a code of cstl_kafka_error_from. */
int cstl_kafka_producer_begin(cstl_kafka_producer *p, cstl_error *err);

/*
 * Adds a consumer's offsets to the open transaction: they are committed for the consumer's group
 * if and only if the transaction commits. offsets: each entry's offset is the next offset to
 * consume (last processed + 1); borrowed. group: from cstl_kafka_consumer_group_metadata; borrowed.
 */
int cstl_kafka_producer_send_offsets(cstl_kafka_producer *p,
                                     const rd_kafka_topic_partition_list_t *offsets,
                                     const rd_kafka_consumer_group_metadata_t *group,
                                     int timeout_ms,
                                     cstl_error *err);

/*
 * Commits the open transaction, first flushing its records (delivery callbacks run here).
 * CSTL_EKAFKA_ABORT: call cstl_kafka_producer_abort, then retry the batch. CSTL_EFENCED or
 * CSTL_EKAFKA_FATAL: free the producer (another instance owns the id, or the producer is broken).
 * CSTL_EKAFKA/CSTL_ETIMEDOUT: the commit may be retried.
 */
int cstl_kafka_producer_commit(cstl_kafka_producer *p, int timeout_ms, cstl_error *err);

/* Aborts the open transaction; its records are never seen by read_committed consumers. */
int cstl_kafka_producer_abort(cstl_kafka_producer *p, int timeout_ms, cstl_error *err);

/* The librdkafka handle, for what this module does not wrap. Borrowed for the producer's life. */
rd_kafka_t *cstl_kafka_producer_handle(cstl_kafka_producer *p);

/* Flushes for up to 10 s (records still queued are lost), then frees p; NULL is a no-op. */
void cstl_kafka_producer_free(cstl_kafka_producer *p);

/* ---------------------------------------------------------------------------------------------
 * Consumer
 */

typedef struct cstl_kafka_consumer cstl_kafka_consumer;

typedef enum cstl_kafka_rebalance_event {
    CSTL_KAFKA_ASSIGNED = 1, /* partitions were added to this member */
    CSTL_KAFKA_REVOKED = 2,  /* partitions are being taken away (finish or drop work on them) */
    CSTL_KAFKA_LOST = 3,     /* partitions were lost (session timeout): others may own them now */
} cstl_kafka_rebalance_event;

/*
 * A rebalance hook, called on the thread in cstl_kafka_consumer_poll or _close. partitions lists
 * only the partitions that change (cooperative protocol). On CSTL_KAFKA_ASSIGNED the hook may set
 * each entry's offset to where consumption must start (e.g. offsets stored in PostgreSQL), or
 * leave RD_KAFKA_OFFSET_INVALID for the group's committed offset (else auto.offset.reset); the
 * list is then assigned. partitions is borrowed for the call. A non-zero return on assignment
 * leaves the partitions unassigned, and that code is returned by the next cstl_kafka_consumer_poll.
 */
typedef int (*cstl_kafka_rebalance_cb)(void *opaque,
                                       cstl_kafka_consumer *consumer,
                                       cstl_kafka_rebalance_event event,
                                       rd_kafka_topic_partition_list_t *partitions);

/*
 * A consumer in group_id (required: librdkafka needs a group even for manual assignment; nothing
 * is committed by itself) with isolation.level=read_committed, enable.auto.commit=false,
 * enable.auto.offset.store=false, auto.offset.reset=earliest and the cooperative-sticky assignor.
 * hook (may be NULL) is called on rebalances with opaque. Copies conf and group_id. Returns NULL
 * and fills err on failure. Owned by the caller: cstl_kafka_consumer_close.
 */
cstl_kafka_consumer *cstl_kafka_consumer_new(const cstl_kafka_conf *conf,
                                             const char *group_id,
                                             cstl_kafka_rebalance_cb hook,
                                             void *opaque,
                                             cstl_error *err);

/* Subscribes to topics (n names, borrowed), replacing an earlier subscription. */
int cstl_kafka_consumer_subscribe(cstl_kafka_consumer *c,
                                  const char *const *topics,
                                  size_t n,
                                  cstl_error *err);

/*
 * Assigns partitions manually (no group membership), each starting at its entry's offset (an
 * offset, RD_KAFKA_OFFSET_BEGINNING or RD_KAFKA_OFFSET_END). partitions is borrowed.
 */
int cstl_kafka_consumer_assign(cstl_kafka_consumer *c,
                               const rd_kafka_topic_partition_list_t *partitions,
                               cstl_error *err);

/*
 * Waits up to timeout_ms for a record. Returns 0 with *out set to a record, owned by the caller
 * (free with rd_kafka_message_destroy), or to NULL when none arrived (partition-end events are
 * dropped: use cstl_kafka_consumer_watermarks). Returns a negative code for a consumer error: a
 * retriable one (CSTL_EKAFKA) is informational, librdkafka keeps retrying; CSTL_EKAFKA_FATAL
 * means close the consumer. Also returns a failure of the rebalance hook.
 */
int cstl_kafka_consumer_poll(cstl_kafka_consumer *c,
                             int timeout_ms,
                             rd_kafka_message_t **out,
                             cstl_error *err);

/*
 * Queries the broker for a partition's low and high watermarks. For a read_committed consumer the
 * high one is the last stable offset: records at and after it are not readable yet.
 */
int cstl_kafka_consumer_watermarks(cstl_kafka_consumer *c,
                                   const char *topic,
                                   int32_t partition,
                                   int64_t *low,
                                   int64_t *high,
                                   int timeout_ms,
                                   cstl_error *err);

/* Fills each entry's offset with the group's committed offset (RD_KAFKA_OFFSET_INVALID if none). */
int cstl_kafka_consumer_committed(cstl_kafka_consumer *c,
                                  rd_kafka_topic_partition_list_t *partitions,
                                  int timeout_ms,
                                  cstl_error *err);

/*
 * The group metadata for cstl_kafka_producer_send_offsets. New, owned by the caller: free with
 * rd_kafka_consumer_group_metadata_destroy.
 */
rd_kafka_consumer_group_metadata_t *cstl_kafka_consumer_group_metadata(cstl_kafka_consumer *c);

/* The librdkafka handle, for what this module does not wrap. Borrowed for the consumer's life. */
rd_kafka_t *cstl_kafka_consumer_handle(cstl_kafka_consumer *c);

/*
 * Leaves the group (the hook sees the revocation) and frees c; NULL is a no-op. Returns 0 or the
 * close error (c is freed in both cases).
 */
int cstl_kafka_consumer_close(cstl_kafka_consumer *c, cstl_error *err);

/* ---------------------------------------------------------------------------------------------
 * Administration
 */

typedef struct cstl_kafka_admin cstl_kafka_admin;

/* A topic to create. Everything is borrowed for the call. */
typedef struct cstl_kafka_topic_spec {
    const char *name;
    int32_t partitions;         /* >= 1 */
    int16_t replication_factor; /* >= 1 */
    const char *const *config;  /* key, value, key, value, ... ended by NULL; may be NULL */
} cstl_kafka_topic_spec;

/* An admin client. Copies conf. Owned by the caller: cstl_kafka_admin_free. */
cstl_kafka_admin *cstl_kafka_admin_new(const cstl_kafka_conf *conf, cstl_error *err);

/* Frees a; NULL is a no-op. */
void cstl_kafka_admin_free(cstl_kafka_admin *a);

/*
 * Creates n topics idempotently in one request, then waits until the new topics appear in the
 * cluster's metadata. A topic that already exists counts as present if it has the requested
 * partition count, and is a CSTL_ECONFLICT error naming both counts if not (the partitioner and
 * partition ownership depend on it: refuse rather than run against the wrong layout). Counts go
 * to *created and *existing (each may be NULL). Every topic is tried; the first error is
 * returned.
 */
int cstl_kafka_admin_create_topics(cstl_kafka_admin *a,
                                   const cstl_kafka_topic_spec *specs,
                                   size_t n,
                                   int timeout_ms,
                                   size_t *created,
                                   size_t *existing,
                                   cstl_error *err);

/* Deletes n topics (names borrowed); a topic that does not exist is not an error. */
int cstl_kafka_admin_delete_topics(
    cstl_kafka_admin *a, const char *const *names, size_t n, int timeout_ms, cstl_error *err);

/* Stores a topic's partition count in *out; CSTL_ENOTFOUND when the topic does not exist. */
int cstl_kafka_admin_partition_count(
    cstl_kafka_admin *a, const char *topic, int timeout_ms, int32_t *out, cstl_error *err);

/* ---------------------------------------------------------------------------------------------
 * Partitioner
 */

/*
 * The partition of a key among partitions, exactly as Kafka's Java client computes it:
 * toPositive(murmur2(key)) % partitions, so every producer agrees on an aggregate's partition.
 * key may be NULL only when len is 0 (the empty key). Returns -1 when partitions < 1.
 * Pure, thread-safe.
 */
int32_t cstl_kafka_partition_for_key(const void *key, size_t len, int32_t partitions);

#endif
