/*
 * test_runner.c - job processes: exit codes, signals, the environment given (and only it), output
 * lines on both streams with the line cap, launch failures, the runtime limit killing the whole
 * group (a grandchild included), and cancellation ending the group within 2 seconds.
 */
#include "worker/runner.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define MAX_LINES 64

typedef struct lines {
    int n;
    int stream[MAX_LINES];
    char text[MAX_LINES][256];
} lines;

static void on_line(void *ud, cstl_run_stream stream, const char *line, size_t len)
{
    lines *l = ud;
    if (l->n >= MAX_LINES)
        return;
    l->stream[l->n] = (int)stream;
    snprintf(l->text[l->n], sizeof(l->text[0]), "%.*s", (int)len, line);
    l->n++;
}

static const char *const ENV[] = {"PATH=/usr/bin:/bin", "CUDA_VISIBLE_DEVICES=GPU-a,GPU-b",
                                  "JOB_VAR=hello world", NULL};

static void run_sh(const char *script, int64_t limit_ms, lines *l, cstl_run_result *res)
{
    const char *argv[] = {"sh", "-c", script, NULL};
    cstl_run_spec spec = {.argv = argv,
                          .env = ENV,
                          .runtime_limit_ms = limit_ms,
                          .kill_grace_ms = 500,
                          .line_max = 100,
                          .on_line = on_line,
                          .ud = l};
    cstl_error err;
    cstl_run *r = cstl_run_start(&spec, &err);
    assert_non_null(r);
    cstl_run_wait(r, res);
    cstl_run_free(r);
}

static long elapsed_ms(const cstl_run_result *res)
{
    return (long)((res->finished_us - res->started_us) / 1000);
}

static bool pid_alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

static void test_exit_codes(void **state)
{
    (void)state;
    lines l = {0};
    cstl_run_result res;
    run_sh("exit 0", 0, &l, &res);
    assert_int_equal(res.end, CSTL_RUN_EXITED);
    assert_int_equal(res.exit_code, 0);
    run_sh("exit 3", 0, &l, &res);
    assert_int_equal(res.end, CSTL_RUN_EXITED);
    assert_int_equal(res.exit_code, 3);
    assert_true(res.finished_us >= res.started_us);
}

static void test_signalled(void **state)
{
    (void)state;
    lines l = {0};
    cstl_run_result res;
    run_sh("kill -SEGV $$", 0, &l, &res);
    assert_int_equal(res.end, CSTL_RUN_SIGNALLED);
    assert_int_equal(res.signal, SIGSEGV);
    assert_int_equal(res.exit_code, -1);
}

static void test_environment_and_lines(void **state)
{
    (void)state;
    lines l = {0};
    cstl_run_result res;
    run_sh("echo \"cuda=$CUDA_VISIBLE_DEVICES\"; echo \"var=$JOB_VAR\" >&2; "
           "echo \"home=${HOME:-unset}\"; printf 'no newline'",
           0, &l, &res);
    assert_int_equal(res.end, CSTL_RUN_EXITED);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(l.n, 4);
    assert_int_equal(res.lines, 4);
    int found = 0;
    for (int i = 0; i < l.n; i++) {
        if (strcmp(l.text[i], "cuda=GPU-a,GPU-b") == 0 && l.stream[i] == CSTL_RUN_STDOUT)
            found |= 1;
        if (strcmp(l.text[i], "var=hello world") == 0 && l.stream[i] == CSTL_RUN_STDERR)
            found |= 2;
        if (strcmp(l.text[i], "home=unset") == 0) /* nothing of the worker's own environment */
            found |= 4;
        if (strcmp(l.text[i], "no newline") == 0)
            found |= 8;
    }
    assert_int_equal(found, 15);
}

static void test_long_line_split(void **state)
{
    (void)state;
    lines l = {0};
    cstl_run_result res;
    /* 250 bytes on one line with a cap of 100: 100 + 100 + 50 */
    run_sh("printf '%0250d\\n' 0", 0, &l, &res);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(strlen(l.text[0]), 100);
    assert_int_equal(strlen(l.text[1]), 100);
    assert_int_equal(strlen(l.text[2]), 50);
}

static void test_launch_failed(void **state)
{
    (void)state;
    const char *argv[] = {"no-such-program-here", NULL};
    cstl_run_spec spec = {.argv = argv, .env = ENV};
    cstl_error err;
    cstl_run *r = cstl_run_start(&spec, &err);
    assert_non_null(r);
    assert_int_equal(cstl_run_pgid(r), -1);
    cstl_run_result res;
    cstl_run_wait(r, &res);
    cstl_run_free(r);
    assert_int_equal(res.end, CSTL_RUN_LAUNCH_FAILED);
    assert_int_equal(res.launch_errno, ENOENT);
    /* a path that exists but is not a program: exec fails in the child */
    char path[] = "/tmp/cstl-runner-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\x7f\x01junk", 6), 6);
    close(fd);
    const char *argv2[] = {path, NULL};
    spec.argv = argv2;
    r = cstl_run_start(&spec, &err);
    assert_non_null(r);
    cstl_run_wait(r, &res);
    cstl_run_free(r);
    assert_int_equal(res.end, CSTL_RUN_LAUNCH_FAILED);
    unlink(path);
    assert_true(res.launch_errno == EACCES || res.launch_errno == ENOEXEC);
}

/* The grandchild's pid is printed first; it ignores SIGTERM, so only SIGKILL ends it. */
static const char GRANDCHILD[] = "sh -c 'trap \"\" TERM; echo $$; exec sleep 30' & "
                                 "wait";

static void test_runtime_limit_kills_group(void **state)
{
    (void)state;
    lines l = {0};
    cstl_run_result res;
    run_sh(GRANDCHILD, 600, &l, &res);
    assert_int_equal(res.end, CSTL_RUN_TIMED_OUT);
    assert_true(l.n >= 1);
    pid_t grandchild = (pid_t)strtol(l.text[0], NULL, 10);
    assert_true(grandchild > 0);
    assert_false(pid_alive(grandchild));
    /* limit 600 ms + grace 500 ms, with slack for a loaded machine */
    assert_true(elapsed_ms(&res) >= 550 && elapsed_ms(&res) < 2500);
}

typedef struct cancel_arg {
    cstl_run *run;
    int after_ms;
} cancel_arg;

static void *cancel_later(void *p)
{
    cancel_arg *a = p;
    struct timespec ts = {a->after_ms / 1000, (long)(a->after_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    cstl_run_cancel(a->run);
    return NULL;
}

static void test_cancel_within_two_seconds(void **state)
{
    (void)state;
    lines l = {0};
    const char *argv[] = {"sh", "-c", GRANDCHILD, NULL};
    cstl_run_spec spec = {
        .argv = argv, .env = ENV, .kill_grace_ms = 1000, .on_line = on_line, .ud = &l};
    cstl_error err;
    cstl_run *r = cstl_run_start(&spec, &err);
    assert_non_null(r);
    pid_t pgid = cstl_run_pgid(r);
    assert_true(pgid > 0);
    cancel_arg a = {.run = r, .after_ms = 300};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_later, &a), 0);
    cstl_run_result res;
    cstl_run_wait(r, &res);
    pthread_join(t, NULL);
    cstl_run_free(r);
    assert_int_equal(res.end, CSTL_RUN_CANCELLED);
    long after_cancel = elapsed_ms(&res) - 300;
    assert_true(after_cancel < 2000);
    assert_true(l.n >= 1);
    assert_false(pid_alive((pid_t)strtol(l.text[0], NULL, 10)));
    assert_int_equal(kill(-pgid, 0), -1); /* nobody left in the group */
    assert_int_equal(errno, ESRCH);
}

static void test_leftovers_killed_on_exit(void **state)
{
    (void)state;
    lines l = {0};
    cstl_run_result res;
    /* the main process exits at once, leaving a background sleeper holding stdout */
    run_sh("sleep 30 & echo $!; exit 0", 0, &l, &res);
    assert_int_equal(res.end, CSTL_RUN_EXITED);
    assert_int_equal(res.exit_code, 0);
    assert_true(l.n >= 1);
    assert_false(pid_alive((pid_t)strtol(l.text[0], NULL, 10)));
    assert_true(elapsed_ms(&res) < 2500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_signalled),
        cmocka_unit_test(test_environment_and_lines),
        cmocka_unit_test(test_long_line_split),
        cmocka_unit_test(test_launch_failed),
        cmocka_unit_test(test_runtime_limit_kills_group),
        cmocka_unit_test(test_cancel_within_two_seconds),
        cmocka_unit_test(test_leftovers_killed_on_exit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
