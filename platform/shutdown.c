/*
 * shutdown.c - synchronous signal handling for graceful shutdown (see shutdown.h).
 *
 * No asynchronous signal handler runs: signals stay blocked and are collected with sigtimedwait
 * in slices of 100 ms, between which the programmatic request flag is checked.
 */
#include "platform/shutdown.h"

#include "platform/error.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

static atomic_bool shutdown_flag;

int cstl_shutdown_init(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return CSTL_EINTERNAL;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int cstl_shutdown_wait(int timeout_ms)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (atomic_load(&shutdown_flag))
            return -1;
        struct timespec slice = {0, 100 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &slice);
        if (sig > 0) {
            atomic_store(&shutdown_flag, true);
            return sig;
        }
        if (timeout_ms >= 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long elapsed =
                (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            if (elapsed >= timeout_ms)
                return 0;
        }
    }
}

bool cstl_shutdown_requested(void)
{
    return atomic_load(&shutdown_flag);
}

void cstl_shutdown_request(void)
{
    atomic_store(&shutdown_flag, true);
}

void cstl_shutdown_reset(void)
{
    atomic_store(&shutdown_flag, false);
}
