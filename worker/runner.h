/*
 * runner.h - runs one job's process: fork/exec of its argv (no shell) in its own process group,
 * with exactly the environment given, stdout and stderr read through pipes and split into lines,
 * a runtime limit, and cancellation.
 *
 * Ending a run: on the runtime limit or a cancel, the whole process group gets SIGTERM, then
 * SIGKILL after the grace period. When the main process exits on its own, whatever it left in its
 * group is killed at once (SIGKILL), so a job never leaves processes behind. The calling process
 * becomes a child subreaper (PR_SET_CHILD_SUBREAPER) so that the group's orphans are reaped here
 * and the group is really gone, not zombies, when the run ends. The job's main process gets
 * SIGKILL if the thread that started it dies (PR_SET_PDEATHSIG).
 *
 * Threads: a run is started and waited for by one thread; cstl_run_cancel may be called from any
 * thread. The line callback is called on the waiting thread.
 */
#ifndef CSTL_WORKER_RUNNER_H
#define CSTL_WORKER_RUNNER_H

#include "platform/error.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CSTL_RUN_LINE_MAX 16384 /* bytes of one output line; longer lines are split */

typedef enum cstl_run_stream { CSTL_RUN_STDOUT = 0, CSTL_RUN_STDERR = 1 } cstl_run_stream;

/* Called for each line of output (without its newline; line is borrowed for the call). */
typedef void (*cstl_run_line_fn)(void *ud, cstl_run_stream stream, const char *line, size_t len);

typedef struct cstl_run_spec {
    const char *const *argv;  /* program and arguments, NULL-terminated; argv[0] looked up in the
                                 worker's PATH unless it has a '/' */
    const char *const *env;   /* the child's whole environment, "NAME=value", NULL-terminated */
    int64_t runtime_limit_ms; /* 0: none */
    int kill_grace_ms;        /* SIGTERM to SIGKILL */
    size_t line_max;          /* 0: CSTL_RUN_LINE_MAX */
    cstl_run_line_fn on_line; /* may be NULL */
    void *ud;
} cstl_run_spec;

typedef enum cstl_run_end {
    CSTL_RUN_EXITED,        /* exit_code set */
    CSTL_RUN_SIGNALLED,     /* signal set: the process died of a signal nobody here sent */
    CSTL_RUN_TIMED_OUT,     /* the runtime limit was reached and the group killed */
    CSTL_RUN_CANCELLED,     /* cstl_run_cancel was called and the group killed */
    CSTL_RUN_LAUNCH_FAILED, /* launch_errno set: the program could not be executed */
} cstl_run_end;

typedef struct cstl_run_result {
    cstl_run_end end;
    int exit_code;    /* EXITED; also for TIMED_OUT/CANCELLED when the process exited, else -1 */
    int signal;       /* SIGNALLED */
    int launch_errno; /* LAUNCH_FAILED */
    int64_t started_us, finished_us; /* wall clock, UTC microseconds */
    long lines;                      /* lines passed to on_line */
} cstl_run_result;

typedef struct cstl_run cstl_run;

/*
 * Starts a run (spec and what it points to are borrowed until cstl_run_wait returns). Returns a
 * run; a program that cannot be executed is still a run, which ends as CSTL_RUN_LAUNCH_FAILED.
 * NULL with err only when the pipes or the fork fail.
 */
cstl_run *cstl_run_start(const cstl_run_spec *spec, cstl_error *err);

/* The process group id (= the main process's pid), or -1 when the launch failed. */
pid_t cstl_run_pgid(const cstl_run *run);

/* Asks the run to end: SIGTERM to its group, SIGKILL after the grace. Any thread; idempotent. */
void cstl_run_cancel(cstl_run *run);

/* Pumps the output until the run ended and its group is gone; fills *res. Once per run. */
void cstl_run_wait(cstl_run *run, cstl_run_result *res);

/* Frees a run (after cstl_run_wait). NULL is a no-op. */
void cstl_run_free(cstl_run *run);

#endif
