/*
 * Integration tests for the command handler runtime and the command client against the real
 * broker at CONSTELLATION_KAFKA_BROKERS: ACCEPTED with one event and its CloudEvents headers,
 * DUPLICATE, VERSION_MISMATCH, REJECTED, a poison envelope answered FAILED and dead-lettered,
 * restore after a restart (state, duplicates, snapshots every 2 events used on restore), a
 * late transaction of a fenced owner refused by the broker, and asynchronous sends (many in
 * flight from one thread; a reply wait that runs out).
 *
 * Topic names are fixed by context, so the catalog's topics are created as they are
 * (idempotently) and every test uses fresh aggregate ids (UUIDv7): runs do not interfere. The
 * handler serves the jobs context with the real Job aggregate, wrapped to count restores.
 */
#include "commands/client.h"
#include "commands/envelope.h"
#include "commands/handler.h"
#include "platform/codec.h"
#include "platform/events.h"
#include "platform/id.h"
#include "platform/kafka.h"
#include "platform/log.h"
#include "platform/topics.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* cmocka needs the standard headers above; keep it last. */
// clang-format off
#include <cmocka.h>
// clang-format on

#define TIMEOUT_MS 30000
#define WAIT_MS    20000
#define GROUP      "constellation-commands-test"

static const char *brokers;
static char tenant[37];
static cstl_cmd_client *client;
static char client_id[64];

/* ---- the Job aggregate, counting restores from snapshots ----------------------------------- */

static atomic_int restores;
static cstl_aggregate_type job_type;

static void *counting_restore(const json_t *snapshot, cstl_error *err)
{
    atomic_fetch_add(&restores, 1);
    return cstl_job_aggregate.restore(snapshot, err);
}

/* ---- a handler on its own thread ----------------------------------------------------------- */

typedef struct running {
    cstl_cmd_handler *h;
    pthread_t thread;
    int rc;
} running;

static void *run_main(void *arg)
{
    running *r = arg;
    cstl_error err;
    r->rc = cstl_cmd_handler_run(r->h, &err);
    if (r->rc != 0)
        fprintf(stderr, "handler stopped: %s\n", err.message);
    return NULL;
}

static running *start_handler(const char *instance)
{
    const cstl_aggregate_type *types[] = {&job_type};
    cstl_cmd_handler_options o = {
        .brokers = brokers,
        .instance_id = instance,
        .contexts = types,
        .n_contexts = 1,
        .group_id = GROUP,
        .snapshot_every = 2,
        .metrics = NULL,
    };
    cstl_error err;
    running *r = calloc(1, sizeof(*r));
    r->h = cstl_cmd_handler_new(&o, &err);
    if (r->h == NULL)
        fail_msg("cannot make a handler: %s", err.message);
    pthread_create(&r->thread, NULL, run_main, r);
    /* Ready when it owns every partition of jobs (it is the group's only member). */
    for (int i = 0; i < 600 && cstl_cmd_handler_ready_partitions(r->h) < 6; i++)
        usleep(100 * 1000);
    assert_int_equal(cstl_cmd_handler_ready_partitions(r->h), 6);
    return r;
}

static void stop_handler(running *r)
{
    cstl_cmd_handler_stop(r->h);
    pthread_join(r->thread, NULL);
    assert_int_equal(r->rc, 0);
    cstl_cmd_handler_free(r->h);
    free(r);
}

/* ---- commands ------------------------------------------------------------------------------ */

static json_t *submit_payload(const char *job_id)
{
    return json_pack("{s:s,s:s,s:i,s:I,s:i,s:I,s:i,s:{s:[s,s],s:{}}}", "job_id", job_id,
                     "tenant_id", tenant, "gpu_count", 1, "min_gpu_memory_mib", (json_int_t)1024,
                     "priority", 0, "runtime_limit_seconds", (json_int_t)60, "retry_limit", 1,
                     "parameters", "command", "python", "train.py", "environment");
}

static int send_cmd(const char *type,
                    const char *job_id,
                    const char *command_id,
                    int64_t expected,
                    json_t *payload,
                    cstl_cmd_reply *reply)
{
    cstl_cmd_request req = {.context = "jobs",
                            .command_type = type,
                            .command_id = command_id,
                            .tenant_id = tenant,
                            .aggregate_id = job_id,
                            .expected_version = expected,
                            .issued_by = "test",
                            .payload = payload,
                            .want_reply = 1};
    cstl_error err;
    int rc = cstl_cmd_client_send(client, &req, WAIT_MS, reply, &err);
    if (rc != 0)
        fprintf(stderr, "send %s: %s\n", type, err.message);
    json_decref(payload);
    return rc;
}

static json_t *cancel_payload(const char *job_id)
{
    return json_pack("{s:s,s:s}", "job_id", job_id, "reason", "test");
}

/* ---- reading topics back ------------------------------------------------------------------- */

typedef struct record {
    cstl_event_headers h;
    json_t *value;
    int64_t offset;
} record;

/* Reads topic partition p to its end (read_committed) and returns the records keyed key. */
static int read_keyed(const char *topic, const char *key, record *out, int max, int events)
{
    cstl_error err;
    cstl_kafka_conf *conf = cstl_kafka_conf_new(brokers, "test-reader", &err);
    assert_non_null(conf);
    assert_int_equal(cstl_kafka_conf_set(conf, "enable.partition.eof", "true", &err), 0);
    char group[80], id[37];
    snprintf(group, sizeof(group), "test-reader-%s", cstl_uuid_v7_string(id));
    cstl_kafka_consumer *c = cstl_kafka_consumer_new(conf, group, NULL, NULL, &err);
    assert_non_null(c);
    cstl_kafka_conf *aconf = cstl_kafka_conf_new(brokers, "test-reader", &err);
    cstl_kafka_admin *a = cstl_kafka_admin_new(aconf, &err);
    int32_t n = 0;
    assert_int_equal(cstl_kafka_admin_partition_count(a, topic, TIMEOUT_MS, &n, &err), 0);
    cstl_kafka_admin_free(a);
    cstl_kafka_conf_free(aconf);
    int32_t p = cstl_kafka_partition_for_key(key, strlen(key), n);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(cstl_kafka_consumer_assign(c, l, &err), 0);
    rd_kafka_topic_partition_list_destroy(l);
    int count = 0;
    /* Bounded by time, not by records: the topics keep every earlier run's records. */
    time_t deadline = time(NULL) + 60;
    while (time(NULL) < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cstl_kafka_consumer_handle(c), 100);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            break;
        }
        if (m->err == 0 && m->key_len == strlen(key) && memcmp(m->key, key, m->key_len) == 0) {
            if (count < max) {
                record *r = &out[count];
                memset(r, 0, sizeof(*r));
                r->offset = m->offset;
                if (events) {
                    rd_kafka_headers_t *hdrs = NULL;
                    assert_int_equal(rd_kafka_message_headers(m, &hdrs), 0);
                    assert_int_equal(cstl_event_headers_parse(hdrs, &r->h, &err), 0);
                    assert_int_equal(
                        cstl_codec_decode_json(m->payload, m->len, NULL, &r->value, &err), 0);
                } else {
                    r->value = json_loadb(m->payload, m->len, 0, NULL);
                }
            }
            count++;
        }
        rd_kafka_message_destroy(m);
    }
    cstl_kafka_consumer_close(c, NULL);
    cstl_kafka_conf_free(conf);
    return count;
}

static void free_records(record *r, int n)
{
    for (int i = 0; i < n; i++)
        json_decref(r[i].value);
}

/* ---- setup --------------------------------------------------------------------------------- */

static running *handler;

static int setup(void **state)
{
    (void)state;
    cstl_log_set_level(CSTL_LOG_WARN);
    brokers = getenv("CONSTELLATION_KAFKA_BROKERS");
    if (brokers == NULL || *brokers == '\0')
        brokers = "127.0.0.1:9092";
    cstl_error err;
    if (cstl_topics_create_all(brokers, NULL, 0, TIMEOUT_MS, NULL, &err) != 0) {
        fprintf(stderr, "cannot create topics on %s: %s\n", brokers, err.message);
        return -1;
    }
    job_type = cstl_job_aggregate;
    job_type.restore = counting_restore;
    cstl_uuid_v7_string(tenant);
    char id[37];
    snprintf(client_id, sizeof(client_id), "test-%s", cstl_uuid_v7_string(id));
    cstl_cmd_client_options o = {.brokers = brokers, .instance_id = client_id};
    client = cstl_cmd_client_new(&o, &err);
    if (client == NULL) {
        fprintf(stderr, "cannot make a client: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cstl_cmd_client_free(client);
    return 0;
}

/* ---- tests --------------------------------------------------------------------------------- */

static char job1[37], submit1[37];

static void test_accepted_duplicate_mismatch_rejected(void **state)
{
    (void)state;
    handler = start_handler("test-handler-1");
    cstl_uuid_v7_string(job1);
    cstl_uuid_v7_string(submit1);
    cstl_cmd_reply r;
    assert_int_equal(send_cmd("SubmitJob", job1, submit1, -1, submit_payload(job1), &r), 0);
    assert_int_equal(r.outcome, CSTL_CMD_ACCEPTED);
    assert_int_equal(r.version, 1);
    assert_string_equal(r.aggregate_id, job1);
    assert_string_equal(r.command_id, submit1);

    record ev[4];
    int n = read_keyed("constellation.jobs.events", job1, ev, 4, 1);
    assert_int_equal(n, 1);
    assert_string_equal(ev[0].h.type, "io.constellation.jobs.JobSubmitted.v1");
    assert_string_equal(ev[0].h.subject, job1);
    assert_string_equal(ev[0].h.causation, submit1);
    assert_string_equal(ev[0].h.correlation, submit1);
    assert_string_equal(ev[0].h.tenant, tenant);
    assert_string_equal(ev[0].h.source, "constellation/commands/test-handler-1");
    assert_int_equal(ev[0].h.version, 1);
    assert_string_equal(json_string_value(json_object_get(ev[0].value, "job_id")), job1);
    free_records(ev, 1);

    /* The same command id again: the first outcome, no new event. */
    assert_int_equal(send_cmd("SubmitJob", job1, submit1, -1, submit_payload(job1), &r), 0);
    assert_int_equal(r.outcome, CSTL_CMD_DUPLICATE);
    assert_int_equal(r.version, 1);
    assert_string_equal(r.aggregate_id, job1);

    /* Expected version that does not hold. */
    char id[37];
    assert_int_equal(
        send_cmd("CancelJob", job1, cstl_uuid_v7_string(id), 5, cancel_payload(job1), &r), 0);
    assert_int_equal(r.outcome, CSTL_CMD_VERSION_MISMATCH);
    assert_string_equal(r.error_code, "version_mismatch");

    /* A business rule: the job exists already. */
    assert_int_equal(
        send_cmd("SubmitJob", job1, cstl_uuid_v7_string(id), -1, submit_payload(job1), &r), 0);
    assert_int_equal(r.outcome, CSTL_CMD_REJECTED);
    assert_string_equal(r.error_code, "job_already_exists");
    assert_int_equal(r.version, -1);

    /* Cancelling a job that does not exist. */
    char other[37];
    cstl_uuid_v7_string(other);
    assert_int_equal(
        send_cmd("CancelJob", other, cstl_uuid_v7_string(id), -1, cancel_payload(other), &r), 0);
    assert_int_equal(r.outcome, CSTL_CMD_REJECTED);
    assert_string_equal(r.error_code, "job_not_found");

    n = read_keyed("constellation.jobs.events", job1, ev, 4, 1);
    assert_int_equal(n, 1);
    free_records(ev, 1);
    assert_int_equal(read_keyed("constellation.jobs.events", other, ev, 4, 1), 0);

    /* The client remembers replies. */
    assert_int_equal(cstl_cmd_client_lookup(client, submit1, &r), 0);
    assert_int_equal(r.outcome, CSTL_CMD_DUPLICATE);
    assert_int_equal(cstl_cmd_client_lookup(client, "nope", &r), CSTL_ENOTFOUND);
}

static void test_poison_envelope(void **state)
{
    (void)state;
    /* An envelope with a tenant id that is not a uuid, but a readable reply_to. */
    char job[37], cmd[37];
    cstl_uuid_v7_string(job);
    cstl_uuid_v7_string(cmd);
    cstl_cmd_envelope env = {0};
    snprintf(env.command_id, sizeof(env.command_id), "%s", cmd);
    snprintf(env.tenant_id, sizeof(env.tenant_id), "not-a-tenant");
    snprintf(env.command_type, sizeof(env.command_type), "io.constellation.jobs.CancelJob.v1");
    snprintf(env.aggregate_id, sizeof(env.aggregate_id), "%s", job);
    env.expected_version = -1;
    snprintf(env.correlation_id, sizeof(env.correlation_id), "%s", cmd);
    snprintf(env.reply_to, sizeof(env.reply_to), "%s", client_id);
    cstl_codec_buf buf = {0};
    cstl_error err;
    assert_int_equal(cstl_cmd_envelope_encode(&env, &buf, &err), 0);
    cstl_kafka_conf *conf = cstl_kafka_conf_new(brokers, "test-poison", &err);
    cstl_kafka_producer *p = cstl_kafka_producer_new(conf, &err);
    assert_non_null(p);
    int32_t part = cstl_kafka_partition_for_key(job, strlen(job), 6);
    assert_int_equal(cstl_kafka_producer_send_wait(p, "constellation.jobs.commands", part, job,
                                                   strlen(job), buf.data, buf.len, NULL, TIMEOUT_MS,
                                                   NULL, NULL, &err),
                     0);
    cstl_codec_buf_free(&buf);
    cstl_cmd_reply r;
    int rc = CSTL_ENOTFOUND;
    for (int i = 0; i < 200 && rc != 0; i++) {
        rc = cstl_cmd_client_lookup(client, cmd, &r);
        if (rc != 0)
            usleep(50 * 1000);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(r.outcome, CSTL_CMD_FAILED);
    assert_string_equal(r.error_code, "invalid_envelope");
    /* The record is in the dead-letter topic, keyed as it was. */
    record dl[2];
    int n = read_keyed("constellation.dlq", job, dl, 2, 0);
    assert_int_equal(n, 1);
    free_records(dl, 1);

    /* A valid envelope on a partition its aggregate does not hash to: refused, not handled. */
    char job2[37], cmd2[37];
    cstl_uuid_v7_string(job2);
    cstl_uuid_v7_string(cmd2);
    json_t *pl = cancel_payload(job2);
    const cstl_schema_entry *ce =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), "jobs.CancelJob");
    cstl_codec_buf pbuf = {0};
    assert_int_equal(cstl_codec_encode_json(ce, pl, &pbuf, &err), 0);
    json_decref(pl);
    memset(&env, 0, sizeof(env));
    snprintf(env.command_id, sizeof(env.command_id), "%s", cmd2);
    snprintf(env.tenant_id, sizeof(env.tenant_id), "%s", tenant);
    snprintf(env.command_type, sizeof(env.command_type), "%s", ce->ce_type);
    snprintf(env.aggregate_id, sizeof(env.aggregate_id), "%s", job2);
    env.expected_version = -1;
    snprintf(env.correlation_id, sizeof(env.correlation_id), "%s", cmd2);
    snprintf(env.reply_to, sizeof(env.reply_to), "%s", client_id);
    env.payload = pbuf.data;
    env.payload_len = pbuf.len;
    assert_int_equal(cstl_cmd_envelope_encode(&env, &buf, &err), 0);
    int32_t wrong = (cstl_kafka_partition_for_key(job2, strlen(job2), 6) + 1) % 6;
    assert_int_equal(cstl_kafka_producer_send_wait(p, "constellation.jobs.commands", wrong, job2,
                                                   strlen(job2), buf.data, buf.len, NULL,
                                                   TIMEOUT_MS, NULL, NULL, &err),
                     0);
    cstl_codec_buf_free(&buf);
    cstl_codec_buf_free(&pbuf);
    rc = CSTL_ENOTFOUND;
    for (int i = 0; i < 200 && rc != 0; i++) {
        rc = cstl_cmd_client_lookup(client, cmd2, &r);
        if (rc != 0)
            usleep(50 * 1000);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(r.outcome, CSTL_CMD_INVALID);
    assert_string_equal(r.error_code, "wrong_partition");
    cstl_kafka_producer_free(p);
    cstl_kafka_conf_free(conf);
}

static void test_client_validates_payload(void **state)
{
    (void)state;
    /* Nothing is sent: the payload does not fit the schema, and the error names the field. */
    char job[37], id[37];
    cstl_uuid_v7_string(job);
    json_t *pl = submit_payload(job);
    json_object_set_new(pl, "gpu_count", json_string("two"));
    cstl_cmd_request req = {.context = "jobs",
                            .command_type = "SubmitJob",
                            .command_id = cstl_uuid_v7_string(id),
                            .tenant_id = tenant,
                            .aggregate_id = job,
                            .expected_version = -1,
                            .payload = pl,
                            .want_reply = 1};
    cstl_cmd_reply r;
    cstl_error err;
    assert_int_equal(cstl_cmd_client_send(client, &req, 1000, &r, &err), CSTL_EINVAL);
    assert_non_null(strstr(err.message, "gpu_count"));
    json_decref(pl);
    req.command_type = "NoSuchCommand";
    pl = json_object();
    req.payload = pl;
    assert_int_equal(cstl_cmd_client_send(client, &req, 1000, &r, &err), CSTL_EINVAL);
    assert_non_null(strstr(err.message, "\"jobs.NoSuchCommand\""));
    req.command_type = "SubmitJob";
    req.command_id = "not-a-uuid";
    assert_int_equal(cstl_cmd_client_send(client, &req, 1000, &r, &err), CSTL_EINVAL);
    json_decref(pl);
}

static void test_restart_restores_state_and_snapshots(void **state)
{
    (void)state;
    stop_handler(handler);
    handler = start_handler("test-handler-2");
    cstl_cmd_reply r;
    char id[37];
    /* The new owner knows the job is at version 1 and that submit1 was handled. */
    assert_int_equal(
        send_cmd("CancelJob", job1, cstl_uuid_v7_string(id), 1, cancel_payload(job1), &r), 0);
    assert_int_equal(r.outcome, CSTL_CMD_ACCEPTED);
    assert_int_equal(r.version, 2);
    assert_int_equal(send_cmd("SubmitJob", job1, submit1, -1, submit_payload(job1), &r), 0);
    assert_int_equal(r.outcome, CSTL_CMD_DUPLICATE);
    assert_int_equal(r.version, 1);

    /* Version 2 crossed the snapshot interval (2): one snapshot at version 2. */
    record snaps[4];
    int n = read_keyed("constellation.jobs.snapshots", job1, snaps, 4, 0);
    assert_int_equal(n, 1);
    assert_non_null(snaps[0].value);
    assert_int_equal(json_integer_value(json_object_get(snaps[0].value, "version")), 2);
    record ev[4];
    assert_int_equal(read_keyed("constellation.jobs.events", job1, ev, 4, 1), 2);
    assert_int_equal(json_integer_value(json_object_get(snaps[0].value, "events_offset")),
                     ev[1].offset);
    assert_string_equal(ev[1].h.type, "io.constellation.jobs.JobCancelled.v1");
    assert_int_equal(ev[1].h.version, 2);
    free_records(ev, 2);
    free_records(snaps, 1);

    /* A third owner restores the job from its snapshot and sees it cancelled. */
    stop_handler(handler);
    int before = atomic_load(&restores);
    handler = start_handler("test-handler-3");
    assert_true(atomic_load(&restores) > before);
    assert_int_equal(
        send_cmd("CancelJob", job1, cstl_uuid_v7_string(id), -1, cancel_payload(job1), &r), 0);
    assert_int_equal(r.outcome, CSTL_CMD_REJECTED);
    assert_string_equal(r.error_code, "job_already_finished");
    assert_int_equal(
        send_cmd("CancelJob", job1, cstl_uuid_v7_string(id), 1, cancel_payload(job1), &r), 0);
    assert_int_equal(r.outcome, CSTL_CMD_VERSION_MISMATCH);
    stop_handler(handler);
    handler = NULL;
}

static void test_fenced_late_transaction(void **state)
{
    (void)state;
    /* Two owners of one partition's transactional id: the second's init fences the first, whose
     * late transaction the broker refuses. */
    cstl_error err;
    cstl_kafka_conf *conf = cstl_kafka_conf_new(brokers, "test-fence", &err);
    char txid[80], id[37];
    snprintf(txid, sizeof(txid), "constellation-cmd-test-%s-0", cstl_uuid_v7_string(id));
    cstl_kafka_producer *old = cstl_kafka_txn_producer_new(conf, txid, &err);
    cstl_kafka_producer *new_owner = cstl_kafka_txn_producer_new(conf, txid, &err);
    assert_int_equal(cstl_kafka_producer_init_transactions(old, TIMEOUT_MS, &err), 0);
    assert_int_equal(cstl_kafka_producer_begin(old, &err), 0);
    assert_int_equal(cstl_kafka_producer_send(old, "constellation.dlq", 0, "k", 1, "v", 1, NULL,
                                              NULL, NULL, &err),
                     0);
    assert_int_equal(cstl_kafka_producer_init_transactions(new_owner, TIMEOUT_MS, &err), 0);
    int rc = cstl_kafka_producer_commit(old, TIMEOUT_MS, &err);
    assert_int_equal(rc, CSTL_EFENCED);
    cstl_kafka_producer_free(old);
    cstl_kafka_producer_free(new_owner);
    cstl_kafka_conf_free(conf);
}

/* ---- asynchronous sends --------------------------------------------------------------------- */

#define ASYNC_N 200

typedef struct async_outcomes {
    pthread_mutex_t lock;
    int finished, accepted, timed_out, other;
} async_outcomes;

static void count_outcome(void *ud, int rc, const cstl_cmd_reply *reply, const cstl_error *err)
{
    (void)err;
    async_outcomes *o = ud;
    pthread_mutex_lock(&o->lock);
    if (rc == 0 && reply != NULL && reply->outcome == CSTL_CMD_ACCEPTED && reply->version == 1)
        o->accepted++;
    else if (rc == CSTL_ETIMEDOUT)
        o->timed_out++;
    else
        o->other++;
    o->finished++;
    pthread_mutex_unlock(&o->lock);
}

static void wait_finished(async_outcomes *o, int n, int seconds)
{
    for (int i = 0; i < seconds * 10; i++) {
        pthread_mutex_lock(&o->lock);
        int f = o->finished;
        pthread_mutex_unlock(&o->lock);
        if (f >= n)
            return;
        usleep(100 * 1000);
    }
}

static int send_async_submit(int wait_ms, async_outcomes *o)
{
    char job[37], cmd[37];
    cstl_uuid_v7_string(job);
    cstl_uuid_v7_string(cmd);
    json_t *payload = submit_payload(job);
    cstl_cmd_request req = {.context = "jobs",
                            .command_type = "SubmitJob",
                            .command_id = cmd,
                            .tenant_id = tenant,
                            .aggregate_id = job,
                            .expected_version = -1,
                            .issued_by = "test",
                            .payload = payload,
                            .want_reply = 1};
    cstl_error err;
    int rc = cstl_cmd_client_send_async(client, &req, wait_ms, count_outcome, o, &err);
    json_decref(payload);
    return rc;
}

/* Many commands in flight from one thread, each finished once by its completion; then, with no
 * handler running, a reply wait that runs out finishes with CSTL_ETIMEDOUT. */
static void test_async_sends(void **state)
{
    (void)state;
    running *r = start_handler("test-async");
    async_outcomes o = {.lock = PTHREAD_MUTEX_INITIALIZER};
    for (int i = 0; i < ASYNC_N; i++)
        assert_int_equal(send_async_submit(WAIT_MS, &o), 0);
    wait_finished(&o, ASYNC_N, 60);
    assert_int_equal(o.finished, ASYNC_N);
    assert_int_equal(o.accepted, ASYNC_N);
    stop_handler(r);

    async_outcomes t = {.lock = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(send_async_submit(300, &t), 0);
    wait_finished(&t, 1, 30);
    assert_int_equal(t.finished, 1);
    assert_int_equal(t.timed_out, 1);

    /* nothing sent, no completion: an invalid payload is refused at once */
    cstl_cmd_request bad = {.context = "jobs",
                            .command_type = "NoSuchCommand",
                            .command_id = "0190b5d2-7a3c-7def-8123-456789abcdef",
                            .tenant_id = tenant,
                            .aggregate_id = "x",
                            .expected_version = -1,
                            .payload = json_object(),
                            .want_reply = 1};
    cstl_error err;
    assert_int_equal(cstl_cmd_client_send_async(client, &bad, 100, count_outcome, &t, &err),
                     CSTL_EINVAL);
    json_decref((json_t *)bad.payload);
    usleep(200 * 1000);
    assert_int_equal(t.finished, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted_duplicate_mismatch_rejected),
        cmocka_unit_test(test_poison_envelope),
        cmocka_unit_test(test_client_validates_payload),
        cmocka_unit_test(test_restart_restores_state_and_snapshots),
        cmocka_unit_test(test_fenced_late_transaction),
        cmocka_unit_test(test_async_sends),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
