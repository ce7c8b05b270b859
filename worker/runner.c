/*
 * runner.c - one job process and its group (see runner.h).
 *
 * Between fork and exec the child only calls async-signal-safe functions: the program's path is
 * resolved before the fork, and an exec failure is reported through a close-on-exec status pipe
 * (its errno), so the parent knows whether the exec happened without guessing from exit codes.
 * Invariants: the group is signalled only while it may still have members; the run ends only once
 * waitpid(-pgid) reports no member left (ECHILD), or after a bounded wait for members that are not
 * our descendants.
 */
#include "worker/runner.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RUN_POLL_MS      50
#define RUN_DRAIN_MS     1000 /* after the group is killed, how long to wait for the pipes' ends */
#define RUN_REAP_WAIT_MS 2000 /* members that are not our children: how long to wait for them */

struct cstl_run {
    const cstl_run_spec *spec;
    pid_t pid;
    int launch_errno;
    int fds[2]; /* stdout, stderr read ends; -1 once closed */
    char *buf[2];
    size_t len[2];
    atomic_bool cancel;
    int64_t started_us;
    int64_t start_ms;
    long lines;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The path argv[0] names: itself when it has a '/', else the first executable file in PATH. */
static int resolve_program(const char *name, char *out, size_t size)
{
    if (name == NULL || name[0] == '\0')
        return ENOENT;
    if (strchr(name, '/') != NULL) {
        if (strlen(name) >= size)
            return ENAMETOOLONG;
        snprintf(out, size, "%s", name);
        return 0;
    }
    const char *path = getenv("PATH");
    if (path == NULL || path[0] == '\0')
        path = "/usr/local/bin:/usr/bin:/bin";
    int found_err = ENOENT;
    for (const char *p = path;;) {
        const char *colon = strchr(p, ':');
        size_t dlen = colon ? (size_t)(colon - p) : strlen(p);
        int n = snprintf(out, size, "%.*s%s%s", (int)dlen, p, dlen ? "/" : "", name);
        struct stat st;
        if (n > 0 && (size_t)n < size && stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
            if (access(out, X_OK) == 0)
                return 0;
            found_err = EACCES;
        }
        if (colon == NULL)
            break;
        p = colon + 1;
    }
    return found_err;
}

/* In the child: never returns. Only async-signal-safe calls. */
static void child_exec(const char *program,
                       const cstl_run_spec *spec,
                       int out_w,
                       int err_w,
                       int status_w,
                       pid_t parent)
{
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    static const int reset[] = {SIGPIPE, SIGTERM, SIGINT,  SIGHUP,
                                SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
        signal(reset[i], SIG_DFL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
        goto fail;
    /* keep the status pipe (close-on-exec) above 2; everything else goes */
    if (dup2(status_w, 3) < 0 || fcntl(3, F_SETFD, FD_CLOEXEC) < 0)
        goto fail;
    closefrom(4);
    execve(program, (char *const *)spec->argv, (char *const *)spec->env);
fail:;
    int e = errno;
    ssize_t w = write(3, &e, sizeof(e));
    (void)w;
    _exit(127);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

cstl_run *cstl_run_start(const cstl_run_spec *spec, cstl_error *err)
{
    /* orphans of the job's group are re-parented here, so we can reap them */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    cstl_run *r = cstl_xcalloc(1, sizeof(*r));
    r->spec = spec;
    r->pid = -1;
    r->fds[0] = r->fds[1] = -1;
    size_t max = spec->line_max ? spec->line_max : CSTL_RUN_LINE_MAX;
    r->buf[0] = cstl_xcalloc(1, max + 1);
    r->buf[1] = cstl_xcalloc(1, max + 1);
    r->started_us = wall_us();
    r->start_ms = mono_ms();
    char program[PATH_MAX];
    int e = resolve_program(spec->argv[0], program, sizeof(program));
    if (e != 0) {
        r->launch_errno = e;
        return r;
    }
    int out[2], errp[2], status[2];
    if (pipe2(out, O_CLOEXEC) != 0) {
        cstl_error_set(err, CSTL_EIO, "cannot create a pipe: %s", strerror(errno));
        cstl_run_free(r);
        return NULL;
    }
    if (pipe2(errp, O_CLOEXEC) != 0) {
        close(out[0]);
        close(out[1]);
        cstl_error_set(err, CSTL_EIO, "cannot create a pipe: %s", strerror(errno));
        cstl_run_free(r);
        return NULL;
    }
    if (pipe2(status, O_CLOEXEC) != 0) {
        close(out[0]);
        close(out[1]);
        close(errp[0]);
        close(errp[1]);
        cstl_error_set(err, CSTL_EIO, "cannot create a pipe: %s", strerror(errno));
        cstl_run_free(r);
        return NULL;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        child_exec(program, spec, out[1], errp[1], status[1], parent);
    int fork_errno = errno;
    close(out[1]);
    close(errp[1]);
    close(status[1]);
    if (pid < 0) {
        close(out[0]);
        close(errp[0]);
        close(status[0]);
        cstl_error_set(err, CSTL_EIO, "cannot fork: %s", strerror(fork_errno));
        cstl_run_free(r);
        return NULL;
    }
    setpgid(pid, pid); /* also here, so no signal to the group can precede the child's own call */
    r->pid = pid;
    r->fds[0] = out[0];
    r->fds[1] = errp[0];
    int child_errno = 0;
    ssize_t n;
    do
        n = read(status[0], &child_errno, sizeof(child_errno));
    while (n < 0 && errno == EINTR);
    close(status[0]);
    if (n == (ssize_t)sizeof(child_errno)) {
        r->launch_errno = child_errno ? child_errno : ENOEXEC;
        waitpid(pid, NULL, 0);
        r->pid = -1;
        close_fd(&r->fds[0]);
        close_fd(&r->fds[1]);
    }
    for (int i = 0; i < 2; i++)
        if (r->fds[i] >= 0)
            fcntl(r->fds[i], F_SETFL, fcntl(r->fds[i], F_GETFL) | O_NONBLOCK);
    return r;
}

pid_t cstl_run_pgid(const cstl_run *run)
{
    return run->pid;
}

void cstl_run_cancel(cstl_run *run)
{
    atomic_store(&run->cancel, true);
}

/* ---- output ------------------------------------------------------------------------------ */

static void emit(cstl_run *r, int s, size_t len)
{
    if (r->spec->on_line != NULL)
        r->spec->on_line(r->spec->ud, (cstl_run_stream)s, r->buf[s], len);
    r->lines++;
}

static void take_bytes(cstl_run *r, int s, const char *data, size_t n)
{
    size_t max = r->spec->line_max ? r->spec->line_max : CSTL_RUN_LINE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (data[i] == '\n') {
            emit(r, s, r->len[s]);
            r->len[s] = 0;
            continue;
        }
        r->buf[s][r->len[s]++] = data[i];
        if (r->len[s] == max) { /* a line over the cap goes out in pieces */
            emit(r, s, max);
            r->len[s] = 0;
        }
    }
}

/* Reads what the pipes have, waiting up to wait_ms. */
static void pump(cstl_run *r, int wait_ms)
{
    struct pollfd p[2];
    int n = 0, which[2];
    for (int s = 0; s < 2; s++)
        if (r->fds[s] >= 0) {
            p[n] = (struct pollfd){.fd = r->fds[s], .events = POLLIN};
            which[n++] = s;
        }
    if (n == 0) {
        if (wait_ms > 0) {
            struct timespec ts = {0, (long)wait_ms * 1000000L};
            nanosleep(&ts, NULL);
        }
        return;
    }
    if (poll(p, (nfds_t)n, wait_ms) <= 0)
        return;
    char chunk[8192];
    for (int i = 0; i < n; i++) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        int s = which[i];
        for (int reads = 0; reads < 16; reads++) {
            ssize_t got = read(r->fds[s], chunk, sizeof(chunk));
            if (got > 0) {
                take_bytes(r, s, chunk, (size_t)got);
                continue;
            }
            if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
                if (r->len[s] > 0)
                    emit(r, s, r->len[s]);
                r->len[s] = 0;
                close_fd(&r->fds[s]);
            }
            break;
        }
    }
}

/* ---- the run ----------------------------------------------------------------------------- */

/* Reaps members of the group; true once none is left that we can wait for. */
static bool reap_group(cstl_run *r, int *main_status, bool *main_done)
{
    for (;;) {
        int st = 0;
        pid_t w = waitpid(-r->pid, &st, WNOHANG);
        if (w == r->pid) {
            *main_status = st;
            *main_done = true;
            continue;
        }
        if (w > 0)
            continue;
        if (w < 0 && errno == EINTR)
            continue;
        return w < 0 && errno == ECHILD;
    }
}

void cstl_run_wait(cstl_run *run, cstl_run_result *res)
{
    cstl_run *r = run;
    memset(res, 0, sizeof(*res));
    res->started_us = r->started_us;
    res->exit_code = -1;
    if (r->pid < 0) {
        res->end = CSTL_RUN_LAUNCH_FAILED;
        res->launch_errno = r->launch_errno;
        res->finished_us = wall_us();
        return;
    }
    const cstl_run_spec *spec = r->spec;
    int main_status = 0;
    bool main_done = false, gone = false;
    int64_t term_at = -1, kill_at = -1, killed_at = -1;
    bool timed_out = false, cancelled = false;
    for (;;) {
        pump(r, RUN_POLL_MS);
        int64_t now = mono_ms();
        if (term_at < 0 && atomic_load(&r->cancel))
            cancelled = true, term_at = now;
        if (term_at < 0 && spec->runtime_limit_ms > 0 &&
            now - r->start_ms >= spec->runtime_limit_ms)
            timed_out = true, term_at = now;
        if (term_at == now) {
            kill(-r->pid, SIGTERM);
            kill_at = now + (spec->kill_grace_ms > 0 ? spec->kill_grace_ms : 0);
        }
        gone = reap_group(r, &main_status, &main_done);
        /* the grace is over, or the main process is gone: nothing of the job may outlive it */
        if (killed_at < 0 && (main_done || (kill_at >= 0 && now >= kill_at))) {
            kill(-r->pid, SIGKILL);
            killed_at = now;
        }
        if (main_done && gone)
            break;
        /* members that are not our descendants cannot be waited for: give them a bounded time */
        if (main_done && killed_at >= 0 && now - killed_at > RUN_REAP_WAIT_MS)
            break;
    }
    /* the pipes end when the last writer is gone; a writer outside the group is not waited for */
    for (int64_t until = mono_ms() + RUN_DRAIN_MS;
         (r->fds[0] >= 0 || r->fds[1] >= 0) && mono_ms() < until;)
        pump(r, RUN_POLL_MS);
    for (int s = 0; s < 2; s++) {
        if (r->len[s] > 0)
            emit(r, s, r->len[s]);
        r->len[s] = 0;
        close_fd(&r->fds[s]);
    }
    res->finished_us = wall_us();
    res->lines = r->lines;
    if (WIFEXITED(main_status))
        res->exit_code = WEXITSTATUS(main_status);
    if (cancelled)
        res->end = CSTL_RUN_CANCELLED;
    else if (timed_out)
        res->end = CSTL_RUN_TIMED_OUT;
    else if (WIFSIGNALED(main_status)) {
        res->end = CSTL_RUN_SIGNALLED;
        res->signal = WTERMSIG(main_status);
    } else
        res->end = CSTL_RUN_EXITED;
}

void cstl_run_free(cstl_run *run)
{
    if (run == NULL)
        return;
    close_fd(&run->fds[0]);
    close_fd(&run->fds[1]);
    free(run->buf[0]);
    free(run->buf[1]);
    free(run);
}
