/*
 * shutdown.h - graceful shutdown on SIGTERM and SIGINT.
 *
 * A service calls cstl_shutdown_init() first thing in main, before it starts any thread: it blocks
 * SIGTERM and SIGINT in the calling thread, so every thread created afterwards inherits the mask
 * and the signals are only ever taken synchronously by cstl_shutdown_wait(). Loops anywhere poll
 * cstl_shutdown_requested() (an atomic load) to stop taking new work, then drain.
 */
#ifndef CSTL_PLATFORM_SHUTDOWN_H
#define CSTL_PLATFORM_SHUTDOWN_H

#include <stdbool.h>

/* Blocks SIGTERM/SIGINT in the calling thread and ignores SIGPIPE. Returns 0 or CSTL_EINTERNAL. */
int cstl_shutdown_init(void);

/*
 * Waits up to timeout_ms (-1: forever) for SIGTERM/SIGINT or cstl_shutdown_request().
 * Returns the signal number, -1 for a programmatic request, or 0 on timeout. Once it returns
 * non-zero, cstl_shutdown_requested() is true. Call from one thread (usually main).
 */
int cstl_shutdown_wait(int timeout_ms);

/* True once shutdown has been requested (by a signal seen in cstl_shutdown_wait or a request). */
bool cstl_shutdown_requested(void);

/* Requests shutdown from any thread; wakes cstl_shutdown_wait within 100 ms. */
void cstl_shutdown_request(void);

/* Clears a past request, so one process can test several shutdowns. Not for services. */
void cstl_shutdown_reset(void);

#endif
