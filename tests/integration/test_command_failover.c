/*
 * Failover test of the command handler against the real broker: two handler processes
 * (tests/support/command_handler_runner) share the partitions of constellation.jobs.commands;
 * four client threads stream SubmitJob commands with unique ids (a command whose reply times out
 * is sent again with the same id, as a real client would); one handler is SIGKILLed midway. Then
 * the whole events topic is read back (read_committed) and counted by cstl_causation: every
 * command that got an ACCEPTED (or DUPLICATE) reply has exactly one event, none has two.
 * Bounded: about 30 s on a laptop, 90 s at most.
 */
#include "commands/client.h"
#include "platform/events.h"
#include "platform/id.h"
#include "platform/kafka.h"
#include "platform/log.h"
#include "platform/topics.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* cmocka needs the standard headers above; keep it last. */
// clang-format off
#include <cmocka.h>
// clang-format on

#ifndef CSTL_HANDLER_RUNNER
#error "CSTL_HANDLER_RUNNER must name the command_handler_runner executable"
#endif

#define N_COMMANDS 400
#define N_THREADS  4
#define GROUP      "constellation-commands-failover-test"

static const char *brokers;
static cstl_cmd_client *client;
static char tenant[37];

typedef struct cmd {
    char job[37], id[37];
    int outcome; /* -1: no reply */
} cmd;

static cmd cmds[N_COMMANDS];
static atomic_int sent;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static pid_t spawn(const char *instance)
{
    pid_t pid = fork();
    if (pid == 0) {
        execl(CSTL_HANDLER_RUNNER, CSTL_HANDLER_RUNNER, instance, GROUP, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void *sender(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = t; i < N_COMMANDS; i += N_THREADS) {
        cmd *c = &cmds[i];
        json_t *payload =
            json_pack("{s:s,s:s,s:i,s:I,s:i,s:I,s:i,s:{s:[s],s:{}}}", "job_id", c->job, "tenant_id",
                      tenant, "gpu_count", 1, "min_gpu_memory_mib", (json_int_t)1024, "priority", 0,
                      "runtime_limit_seconds", (json_int_t)60, "retry_limit", 0, "parameters",
                      "command", "true", "environment");
        cstl_cmd_request req = {.context = "jobs",
                                .command_type = "SubmitJob",
                                .command_id = c->id,
                                .tenant_id = tenant,
                                .aggregate_id = c->job,
                                .expected_version = -1,
                                .issued_by = "failover-test",
                                .payload = payload,
                                .want_reply = 1};
        c->outcome = -1;
        for (int attempt = 0; attempt < 4 && c->outcome < 0; attempt++) {
            cstl_cmd_reply r;
            cstl_error err;
            if (cstl_cmd_client_send(client, &req, 10000, &r, &err) == 0)
                c->outcome = (int)r.outcome;
        }
        json_decref(payload);
        atomic_fetch_add(&sent, 1);
    }
    return NULL;
}

/* Counts the events of every partition of the jobs events topic by causation. */
static void count_events(int *counts)
{
    cstl_error err;
    cstl_kafka_conf *conf = cstl_kafka_conf_new(brokers, "failover-reader", &err);
    cstl_kafka_conf_set(conf, "enable.partition.eof", "true", &err);
    char group[80], id[37];
    snprintf(group, sizeof(group), "failover-reader-%s", cstl_uuid_v7_string(id));
    cstl_kafka_consumer *c = cstl_kafka_consumer_new(conf, group, NULL, NULL, &err);
    assert_non_null(c);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(6);
    for (int p = 0; p < 6; p++)
        rd_kafka_topic_partition_list_add(l, "constellation.jobs.events", p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(cstl_kafka_consumer_assign(c, l, &err), 0);
    rd_kafka_topic_partition_list_destroy(l);
    int eofs = 0;
    int64_t deadline = mono_ms() + 30000;
    while (eofs < 6 && mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(cstl_kafka_consumer_handle(c), 100);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eofs++;
        } else if (m->err == 0) {
            rd_kafka_headers_t *hdrs = NULL;
            cstl_event_headers h;
            if (rd_kafka_message_headers(m, &hdrs) == 0 &&
                cstl_event_headers_parse(hdrs, &h, &err) == 0) {
                for (int i = 0; i < N_COMMANDS; i++)
                    if (strcmp(h.causation, cmds[i].id) == 0)
                        counts[i]++;
            }
        }
        rd_kafka_message_destroy(m);
    }
    assert_int_equal(eofs, 6);
    cstl_kafka_consumer_close(c, NULL);
    cstl_kafka_conf_free(conf);
}

static void test_failover_exactly_once(void **state)
{
    (void)state;
    int64_t t0 = mono_ms();
    pid_t a = spawn("failover-a");
    pid_t b = spawn("failover-b");
    assert_true(a > 0 && b > 0);
    pthread_t threads[N_THREADS];
    for (int t = 0; t < N_THREADS; t++)
        pthread_create(&threads[t], NULL, sender, (void *)(intptr_t)t);
    while (atomic_load(&sent) < N_COMMANDS / 2 && mono_ms() - t0 < 60000)
        usleep(10 * 1000);
    int64_t killed_at = mono_ms();
    kill(a, SIGKILL); /* mid-stream: possibly mid-transaction */
    waitpid(a, NULL, 0);
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(threads[t], NULL);
    int64_t done_at = mono_ms();
    kill(b, SIGTERM);
    int status = 0;
    waitpid(b, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    int *counts = calloc(N_COMMANDS, sizeof(int));
    count_events(counts);
    int accepted = 0, duplicate = 0, unanswered = 0, twice = 0;
    for (int i = 0; i < N_COMMANDS; i++) {
        if (cmds[i].outcome == CSTL_CMD_ACCEPTED)
            accepted++;
        else if (cmds[i].outcome == CSTL_CMD_DUPLICATE)
            duplicate++;
        else if (cmds[i].outcome < 0)
            unanswered++;
        if (counts[i] > 1)
            twice++;
        if (cmds[i].outcome == CSTL_CMD_ACCEPTED || cmds[i].outcome == CSTL_CMD_DUPLICATE)
            assert_int_equal(counts[i], 1);
        else
            assert_true(counts[i] <= 1);
    }
    fprintf(stderr,
            "failover: %d commands, %d accepted, %d duplicate (retried after a lost reply), %d "
            "unanswered, %d with two event sets; kill at %.1f s, all answered %.1f s later\n",
            N_COMMANDS, accepted, duplicate, unanswered, twice, (double)(killed_at - t0) / 1000.0,
            (double)(done_at - killed_at) / 1000.0);
    assert_int_equal(twice, 0);
    assert_int_equal(accepted + duplicate, N_COMMANDS);
    free(counts);
}

static int setup(void **state)
{
    (void)state;
    cstl_log_set_level(CSTL_LOG_ERROR);
    brokers = getenv("CONSTELLATION_KAFKA_BROKERS");
    if (brokers == NULL || *brokers == '\0')
        brokers = "127.0.0.1:9092";
    cstl_error err;
    if (cstl_topics_create_all(brokers, NULL, 0, 30000, NULL, &err) != 0) {
        fprintf(stderr, "cannot create topics on %s: %s\n", brokers, err.message);
        return -1;
    }
    cstl_uuid_v7_string(tenant);
    for (int i = 0; i < N_COMMANDS; i++) {
        cstl_uuid_v7_string(cmds[i].job);
        cstl_uuid_v7_string(cmds[i].id);
    }
    char id[37], instance[64];
    snprintf(instance, sizeof(instance), "failover-client-%s", cstl_uuid_v7_string(id));
    cstl_cmd_client_options o = {.brokers = brokers, .instance_id = instance};
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failover_exactly_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
