/* Unit tests for platform/shutdown.c: signals are taken synchronously, requests wake the waiter. */
#include "platform/shutdown.h"

#include <cmocka.h>

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>

static long ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

static void test_timeout_without_signal(void **state)
{
    (void)state;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(cstl_shutdown_wait(250), 0);
    long ms = ms_since(&t0);
    assert_true(ms >= 200 && ms < 2000);
    assert_false(cstl_shutdown_requested());
}

static void test_sigterm_is_taken_by_wait(void **state)
{
    (void)state;
    /* The signal is blocked: raising it does not kill the process, the waiter collects it. */
    assert_int_equal(kill(getpid(), SIGTERM), 0);
    assert_int_equal(cstl_shutdown_wait(2000), SIGTERM);
    assert_true(cstl_shutdown_requested());
}

static void *request_later(void *arg)
{
    (void)arg;
    usleep(150 * 1000);
    cstl_shutdown_request();
    return NULL;
}

static void test_request_from_another_thread(void **state)
{
    (void)state;
    cstl_shutdown_reset();
    assert_false(cstl_shutdown_requested());
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, request_later, NULL), 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(cstl_shutdown_wait(-1), -1);
    long ms = ms_since(&t0);
    assert_true(ms >= 100 && ms < 2000);
    pthread_join(t, NULL);
}

int main(void)
{
    if (cstl_shutdown_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timeout_without_signal),
        cmocka_unit_test(test_sigterm_is_taken_by_wait),
        cmocka_unit_test(test_request_from_another_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
