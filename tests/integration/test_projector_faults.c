/*
 * Fault tests of the projector service: `constellation projector --projection jobs` processes
 * (CSTL_BIN) on a scratch database and scratch topics (CONSTELLATION_TOPIC_PREFIX), while a stream
 * of job lifecycle events is produced transactionally like the command handler does:
 *   1. the process is killed with SIGKILL at random moments, several times, and restarted;
 *   2. PostgreSQL itself is restarted (`infra/local/stack.sh pg-restart`) under load;
 *   3. two processes split the partitions through the consumer group; one is stopped with SIGTERM
 *      mid-stream and the other takes its partitions over.
 * After each, once caught up, the read model must equal the same events applied directly, in one
 * transaction, to a fresh version (no row lost, none applied twice), and job_history must hold
 * exactly one row per event. Random choices come from one seed, printed (CSTL_TEST_SEED to replay).
 * CSTL_TEST_STACK_NOT_OURS=1 skips the PostgreSQL restart only (a stack shared with others); the
 * test runs alone (CTest RUN_SERIAL) because the restart cuts every session of the server.
 */
#include "../support/job_stream.h"
#include "../support/proj_env.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/wait.h>

// clang-format off
#include <cmocka.h>
// clang-format on


static unsigned test_seed;
static unsigned kill_state;
static js_gen *stream;
static int version_seq = 10;
static char logdir[256];
static pid_t
    running[8]; /* projector processes not reaped yet: killed by teardown after a failure */

static int pick(int n)
{
    return (int)(rand_r(&kill_state) % (unsigned)n);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Starts `constellation projector --projection jobs` on the scratch database and topics, its
 * output appended to <logdir>/<name>.log. Returns its pid. */
static pid_t spawn_projector(const char *name)
{
    const char *bin = getenv("CSTL_BIN");
    if (bin == NULL || *bin == '\0')
        fail_msg("CSTL_BIN is not set (run the test through ctest)");
    static char vars[8][1400];
    snprintf(vars[0], sizeof(vars[0]), "CONSTELLATION_KAFKA_BROKERS=%s", pe.brokers);
    snprintf(vars[1], sizeof(vars[1]), "CONSTELLATION_PG_DSN=%s", pe.dsn);
    snprintf(vars[2], sizeof(vars[2]), "CONSTELLATION_TOPIC_PREFIX=%s", pe.prefix);
    snprintf(vars[3], sizeof(vars[3]), "CONSTELLATION_INSTANCE_ID=%s", name);
    snprintf(vars[4], sizeof(vars[4]), "CONSTELLATION_PROJECTOR_ADDR=127.0.0.1:0");
    snprintf(vars[5], sizeof(vars[5]), "CONSTELLATION_LOG_LEVEL=info");
    snprintf(vars[6], sizeof(vars[6]), "CONSTELLATION_PG_CONNECT_ATTEMPTS=100");
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = cstl_xcalloc(n + 8, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "CONSTELLATION_", 14) != 0)
            envp[k++] = environ[i];
    for (int i = 0; i < 7; i++)
        envp[k++] = vars[i];
    char logpath[400];
    snprintf(logpath, sizeof(logpath), "%s/%s.log", logdir, name);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[] = {(char *)bin, "projector", "--projection", "jobs", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, bin, &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    if (rc != 0)
        fail_msg("cannot start %s: %s", bin, strerror(rc));
    for (size_t i = 0; i < CSTL_ARRAY_LEN(running); i++)
        if (running[i] == 0) {
            running[i] = pid;
            break;
        }
    return pid;
}

/* Sends sig and reaps the process (SIGKILL after 20 s). */
static void stop_projector(pid_t pid, int sig)
{
    for (size_t i = 0; i < CSTL_ARRAY_LEN(running); i++)
        if (running[i] == pid)
            running[i] = 0;
    kill(pid, sig);
    int64_t deadline = pe_now_ms() + 20000;
    int status;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (pe_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("projector %d did not stop within 20 s of signal %d", (int)pid, sig);
        }
        sleep_ms(20);
    }
}

/* Generates n more events of the stream and produces them, 20 per transaction. */
static void produce(size_t n)
{
    size_t from = pe.nevents;
    while (pe.nevents < from + n)
        js_gen_one(stream);
    assert_int_equal(pe_produce(from, pe.nevents, 20), 0);
}

/* Waits until job_history holds one row per produced event. */
static void wait_applied(int timeout_ms)
{
    int64_t deadline = pe_now_ms() + timeout_ms;
    long rows = -1;
    while (pe_now_ms() < deadline) {
        if (!cstl_pg_ok(pe.pg)) {
            cstl_error err;
            cstl_pg_reconnect(pe.pg, &err);
        }
        rows = pe_long(pe.pg, "SELECT count(*) FROM jobs_v1.job_history");
        if (rows == (long)pe.nevents)
            return;
        sleep_ms(200);
    }
    fail_msg("seed %u: %ld of %zu events applied after %d ms", test_seed, rows, pe.nevents,
             timeout_ms);
}

/* The read model equals the whole stream applied directly to a fresh version. */
static void assert_equals_replay(void)
{
    char sql[128], schema[32];
    int v = version_seq++;
    snprintf(sql, sizeof(sql), "SELECT projection_create_version('jobs', %d)", v);
    snprintf(schema, sizeof(schema), "jobs_v%d", v);
    assert_int_equal(pe_sql(pe.pg, sql), 0);
    assert_int_equal(pe_apply_direct(schema, 0, pe.nevents), 0);
    char *a = pe_dump("jobs_v1"), *b = pe_dump(schema);
    assert_non_null(a);
    assert_non_null(b);
    if (strcmp(a, b) != 0) {
        size_t k = 0;
        while (a[k] && a[k] == b[k])
            k++;
        fail_msg("seed %u: jobs_v1 and %s differ at byte %zu: \"%.200s\" vs \"%.200s\"", test_seed,
                 schema, k, a + k, b + k);
    }
    free(a), free(b);
    snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", schema);
    assert_int_equal(pe_sql(pe.pg, sql), 0);
}

static void test_sigkill_at_random_moments(void **state)
{
    (void)state;
    int64_t t0 = pe_now_ms();
    pid_t pid = spawn_projector("crash");
    for (int round = 0; round < 5; round++) {
        produce(400 + (size_t)pick(400));
        sleep_ms(pick(1500));
        stop_projector(pid, SIGKILL);
        if (pick(2))
            produce((size_t)pick(200) + 1); /* while no projector runs */
        pid = spawn_projector("crash");
    }
    produce(300);
    wait_applied(60000);
    stop_projector(pid, SIGTERM);
    assert_equals_replay();
    fprintf(stderr, "seed %u: 5 kills, %zu events, %" PRId64 " ms\n", test_seed, pe.nevents,
            pe_now_ms() - t0);
}

static void test_postgresql_restarted_under_load(void **state)
{
    (void)state;
    const char *not_ours = getenv("CSTL_TEST_STACK_NOT_OURS");
    if (not_ours != NULL && strcmp(not_ours, "1") == 0) {
        fprintf(stderr, "skipped: CSTL_TEST_STACK_NOT_OURS=1, PostgreSQL is not restarted\n");
        skip();
    }
    const char *src = getenv("CSTL_SOURCE_DIR");
    assert_non_null(src);
    int64_t t0 = pe_now_ms();
    pid_t pid = spawn_projector("pgrestart");
    for (int round = 0; round < 2; round++) {
        produce(600);
        sleep_ms(pick(500));
        char cmd[1200];
        snprintf(cmd, sizeof(cmd), "bash '%s/infra/local/stack.sh' pg-restart >&2", src);
        assert_int_equal(system(cmd), 0);
        produce(600);
    }
    cstl_error err;
    assert_int_equal(cstl_pg_reconnect(pe.pg, &err), 0);
    assert_int_equal(cstl_pg_reconnect(pe.admin, &err), 0);
    wait_applied(60000);
    stop_projector(pid, SIGTERM);
    assert_equals_replay();
    fprintf(stderr, "seed %u: 2 postgresql restarts, %zu events, %" PRId64 " ms\n", test_seed,
            pe.nevents, pe_now_ms() - t0);
}

/* The partitions name owns by its log: assigned minus revoked or lost (with the cooperative
 * protocol, assignments are incremental). */
static int log_owned(const char *name)
{
    char path[400], line[4096];
    snprintf(path, sizeof(path), "%s/%s.log", logdir, name);
    FILE *f = fopen(path, "r");
    int owned = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        const char *p = strstr(line, " partitions ");
        if (p == NULL || strstr(line, "\"projector\"") == NULL)
            continue;
        const char *d = p;
        while (d > line && d[-1] >= '0' && d[-1] <= '9')
            d--;
        int n = (int)strtol(d, NULL, 10);
        if (strncmp(p, " partitions assigned", 20) == 0)
            owned += n;
        else if (strncmp(p, " partitions revoked", 19) == 0 ||
                 strncmp(p, " partitions lost", 16) == 0)
            owned -= n;
    }
    if (f != NULL)
        fclose(f);
    return owned;
}

/* The partitions of the jobs projection's topics (its events topic and its telemetry topics). */
static int jobs_partitions(void)
{
    const cstl_projection *p = cstl_projection_find("jobs");
    int topics = 0;
    for (const char *const *c = p->contexts; *c; c++)
        topics++;
    for (const char *const *t = p->topics; t && *t; t++)
        topics++;
    return topics * PE_PARTITIONS;
}

static void test_two_processes_hand_over(void **state)
{
    (void)state;
    int partitions = jobs_partitions();
    int64_t t0 = pe_now_ms();
    pid_t a = spawn_projector("split-a");
    pid_t b = spawn_projector("split-b");
    /* both in the group: each owns some of the partitions */
    int64_t deadline = pe_now_ms() + 30000;
    while (!(log_owned("split-a") >= 1 && log_owned("split-b") >= 1) && pe_now_ms() < deadline) {
        produce(50);
        sleep_ms(200);
    }
    int owned_a = log_owned("split-a"), owned_b = log_owned("split-b");
    if (owned_a < 1 || owned_b < 1 || owned_a + owned_b != partitions)
        fail_msg("the partitions are not split: a owns %d, b owns %d", owned_a, owned_b);
    produce(800);
    sleep_ms(pick(800));
    stop_projector(b, SIGTERM); /* mid-stream */
    produce(800);
    wait_applied(60000);
    /* the survivor took the other's partitions over. The events may all be applied before the
     * rebalance ends (when b owned only partitions of the pending-reasons topic), so the
     * ownership is awaited on its own. */
    deadline = pe_now_ms() + 30000;
    while (log_owned("split-a") != partitions && pe_now_ms() < deadline)
        sleep_ms(100);
    if (log_owned("split-a") != partitions)
        fail_msg("after the handover a owns %d partitions, not %d", log_owned("split-a"),
                 partitions);
    stop_projector(a, SIGTERM);
    assert_equals_replay();
    fprintf(stderr, "seed %u: handover, %zu events, %" PRId64 " ms\n", test_seed, pe.nevents,
            pe_now_ms() - t0);
}

static int setup(void **state)
{
    (void)state;
    const char *s = getenv("CSTL_TEST_SEED");
    test_seed = s && *s ? (unsigned)strtoul(s, NULL, 10) : (unsigned)time(NULL);
    fprintf(stderr, "projector faults: seed %u (CSTL_TEST_SEED=%u to replay)\n", test_seed,
            test_seed);
    kill_state = test_seed;
    js_init(test_seed);
    stream = cstl_xcalloc(1, sizeof(*stream));
    stream->limit = 1L << 30;
    snprintf(logdir, sizeof(logdir), "/tmp/cstl-projector-faults-%d", (int)getpid());
    mkdir(logdir, 0700);
    return pe_setup();
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < CSTL_ARRAY_LEN(running); i++)
        if (running[i] > 0) {
            kill(running[i], SIGKILL);
            waitpid(running[i], NULL, 0);
        }
    free(stream);
    pe_teardown();
    if (getenv("CSTL_TEST_KEEP_LOGS") != NULL) {
        fprintf(stderr, "projector logs kept in %s\n", logdir);
        return 0;
    }
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", logdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", logdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_at_random_moments),
        cmocka_unit_test(test_postgresql_restarted_under_load),
        cmocka_unit_test(test_two_processes_hand_over),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
