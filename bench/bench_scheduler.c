/*
 * bench_scheduler.c - the scheduler end to end, next to Slurm's published sustained rate of 500
 * jobs/s: jobs submitted through the command API, admitted, placed by `constellation scheduler` on
 * about 1,000 fake GPUs of real worker agents, run (`true`) and finished.
 *
 * 1. Flood: 10,000 one-GPU jobs are submitted and admitted while no scheduler runs, then the
 *    scheduler is started. Reports placements per second (the JobAssigned events of those jobs):
 *    for the first 1,000 (every GPU free) and for all 10,000 (each GPU used ten times, so runs
 *    start, finish and release their GPUs in between: the sustained rate), and the time from the
 *    scheduler's start to its first placement (start-up and reading the log).
 * 2. Open loop, with the scheduler running and the fleet idle: submissions at fixed rates for 10 s
 *    each. Reports submit -> assigned latency p50/p99, from each request's scheduled send time to
 *    its JobAssigned's event time (ce_time), so a stall anywhere on the way is charged.
 *
 * Needs (bench/run.sh sets them up): CSTL_BENCH_ADDR (host:port of `constellation commands`),
 * CSTL_BENCH_TOKEN (a member key of CSTL_BENCH_TENANT), CSTL_BENCH_TENANT, CSTL_BENCH_MODEL (the
 * GPU model of the bench's workers), CSTL_BENCH_BIN (the constellation binary), CSTL_BENCH_WORK (a
 * directory for the scheduler's log), CSTL_BENCH_WORKER_PIDS (the workers, stopped at the end so
 * the scheduler marks them lost), CONSTELLATION_KAFKA_BROKERS. Loopback only; every wait is
 * bounded.
 */
#include "load.h"

#include "commands/event_reader.h"
#include "commands/strmap.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FLOOD_JOBS     10000
#define FIRST_JOBS     1000
#define STEP_SECONDS   10
#define SETTLE_SECONDS 120 /* the longest wait for a phase's jobs to be admitted or assigned */

/* What the bench knows of one of its jobs. */
typedef struct job {
    double sent_wall;    /* scheduled send time (wall clock, s); 0 = not known yet */
    int64_t admitted_us; /* JobAdmitted's ce_time; 0 = not yet */
    int64_t assigned_us; /* first JobAssigned's ce_time; 0 = not yet */
    int phase;
} job;

typedef struct bench {
    const char *tenant;
    pthread_mutex_t lock;
    cstl_strmap *jobs; /* job id -> job */
    int phase;
    long admitted[8], assigned[8], created[8];
    cstl_strmap *lost; /* worker ids marked lost */
    atomic_bool stop;
    cstl_event_reader *reader;
    double mono_to_wall; /* wall - monotonic clock, s */
} bench;

static job *job_get(bench *b, const char *id)
{
    job *j = cstl_strmap_get(b->jobs, id);
    if (j == NULL) {
        j = calloc(1, sizeof(*j));
        if (j == NULL)
            abort();
        j->phase = -1;
        cstl_strmap_put(b->jobs, id, j);
    }
    return j;
}

static void on_event(void *ud,
                     const char *context,
                     const char *type,
                     const json_t *data,
                     const cstl_event_headers *h)
{
    bench *b = ud;
    if (strcmp(context, "fleet") == 0) {
        if (strcmp(type, "WorkerLost") == 0) {
            pthread_mutex_lock(&b->lock);
            cstl_strmap_put(b->lost, h->subject, NULL);
            pthread_mutex_unlock(&b->lock);
        }
        return;
    }
    (void)data;
    if (strcmp(h->tenant, b->tenant) != 0)
        return;
    bool admitted = strcmp(type, "JobAdmitted") == 0;
    bool assigned = strcmp(type, "JobAssigned") == 0;
    if (!admitted && !assigned)
        return;
    pthread_mutex_lock(&b->lock);
    job *j = job_get(b, h->subject);
    if (admitted && j->admitted_us == 0) {
        j->admitted_us = h->time_us;
        if (j->phase >= 0)
            b->admitted[j->phase]++;
    } else if (assigned && j->assigned_us == 0) {
        j->assigned_us = h->time_us;
        if (j->phase >= 0)
            b->assigned[j->phase]++;
    }
    pthread_mutex_unlock(&b->lock);
}

static void *reader_main(void *arg)
{
    bench *b = arg;
    while (!atomic_load(&b->stop))
        if (cstl_event_reader_poll(b->reader, 100, on_event, b) < 0)
            usleep(100000);
    return NULL;
}

/* A 201's body carries the job id: {"id":"...", ...}. */
static void on_created(void *ud, const char *body, size_t len, double scheduled, double done)
{
    (void)done;
    bench *b = ud;
    const char *p = memmem(body, len, "\"id\":\"", 6);
    if (p == NULL || (size_t)(body + len - p) < 6 + 36)
        return;
    char id[37];
    memcpy(id, p + 6, 36);
    id[36] = '\0';
    pthread_mutex_lock(&b->lock);
    job *j = job_get(b, id);
    j->sent_wall = scheduled + b->mono_to_wall;
    j->phase = b->phase;
    b->created[b->phase]++;
    if (j->admitted_us != 0)
        b->admitted[b->phase]++;
    if (j->assigned_us != 0)
        b->assigned[b->phase]++;
    pthread_mutex_unlock(&b->lock);
}

static long counter(bench *b, const long *which, int phase)
{
    pthread_mutex_lock(&b->lock);
    long n = which[phase];
    pthread_mutex_unlock(&b->lock);
    return n;
}

/* Waits until the phase's counter reaches want, at most SETTLE_SECONDS. */
static bool wait_count(bench *b, const long *which, int phase, long want)
{
    double until = bench_now_s() + SETTLE_SECONDS;
    while (counter(b, which, phase) < want) {
        if (bench_now_s() > until)
            return false;
        usleep(20000);
    }
    return true;
}

typedef struct collect {
    int phase;
    double *v;
    long n;
    bool latency; /* assigned - sent (s), else the assigned time (s) */
} collect;

static void collect_one(void *ud, const char *key, void *value)
{
    (void)key;
    collect *c = ud;
    const job *j = value;
    if (j->phase != c->phase || j->assigned_us == 0)
        return;
    if (c->latency && j->sent_wall == 0)
        return;
    c->v[c->n++] =
        c->latency ? (double)j->assigned_us / 1e6 - j->sent_wall : (double)j->assigned_us / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static collect gather(bench *b, int phase, bool latency)
{
    pthread_mutex_lock(&b->lock);
    collect c = {phase, malloc(sizeof(double) * (cstl_strmap_len(b->jobs) + 1)), 0, latency};
    if (c.v == NULL)
        abort();
    cstl_strmap_each(b->jobs, collect_one, &c);
    pthread_mutex_unlock(&b->lock);
    qsort(c.v, (size_t)c.n, sizeof(double), cmp_double);
    return c;
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pid_t start_scheduler(const char *bin, const char *work)
{
    char log[4096];
    snprintf(log, sizeof(log), "%s/scheduler.log", work);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    setenv("CONSTELLATION_SCHEDULER_ADDR", "127.0.0.1:0", 1);
    setenv("CONSTELLATION_SCHEDULER_HEARTBEAT_TIMEOUT_S", "3", 1);
    char *argv[] = {(char *)bin, "scheduler", NULL};
    pid_t pid = -1;
    if (posix_spawn(&pid, bin, &fa, NULL, argv, environ) != 0)
        pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

/* Stops the workers and waits (bounded) until the scheduler marked each one lost, so the next
 * benchmark on this stack does not see a fleet that is gone. */
static void stop_workers(bench *b, const char *pids)
{
    char *copy = strdup(pids != NULL ? pids : "");
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(copy, " ", &save); tok != NULL;
         tok = strtok_r(NULL, " ", &save)) {
        pid_t p = (pid_t)strtol(tok, NULL, 10);
        if (p > 0 && kill(p, SIGKILL) == 0)
            n++;
    }
    free(copy);
    pthread_mutex_lock(&b->lock);
    size_t before = cstl_strmap_len(b->lost);
    pthread_mutex_unlock(&b->lock);
    double until = bench_now_s() + 20;
    while (bench_now_s() < until) {
        pthread_mutex_lock(&b->lock);
        size_t now = cstl_strmap_len(b->lost);
        pthread_mutex_unlock(&b->lock);
        if (now >= before + (size_t)n)
            break;
        usleep(100000);
    }
}

static int request_for(char *req, size_t cap, const char *token, const char *model)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"name\":\"bench\",\"gpu_count\":1,\"gpu_model\":\"%s\",\"priority\":100,"
             "\"runtime_limit_seconds\":60,\"parameters\":{\"command\":[\"true\"]}}",
             model);
    int n = snprintf(req, cap,
                     "POST /v1/jobs HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     token, strlen(body), body);
    return n > 0 && (size_t)n < cap ? n : -1;
}

int main(void)
{
    const char *addr = getenv("CSTL_BENCH_ADDR"), *token = getenv("CSTL_BENCH_TOKEN");
    const char *tenant = getenv("CSTL_BENCH_TENANT"), *model = getenv("CSTL_BENCH_MODEL");
    const char *bin = getenv("CSTL_BENCH_BIN"), *work = getenv("CSTL_BENCH_WORK");
    const char *brokers = getenv("CONSTELLATION_KAFKA_BROKERS");
    if (addr == NULL || token == NULL || tenant == NULL || model == NULL || bin == NULL ||
        work == NULL || brokers == NULL) {
        printf("bench_scheduler: skipped (needs the fleet bench/run.sh starts: run it through "
               "make bench)\n");
        return 0;
    }
    bench_load_opts o = {.conns = 64, .duration = 120, .max_requests = FLOOD_JOBS};
    char req[2048];
    int req_len = request_for(req, sizeof(req), token, model);
    if (bench_load_addr(addr, &o.addr) != 0 || req_len < 0) {
        fprintf(stderr, "bench_scheduler: bad CSTL_BENCH_ADDR or token\n");
        return 1;
    }
    o.request = req;
    o.request_len = (size_t)req_len;

    bench b = {.tenant = tenant, .jobs = cstl_strmap_new(free), .lost = cstl_strmap_new(NULL)};
    pthread_mutex_init(&b.lock, NULL);
    b.mono_to_wall = wall_s() - bench_now_s();
    static const char *const contexts[] = {"jobs", "fleet"};
    cstl_error err;
    b.reader = cstl_event_reader_new(brokers, "bench-scheduler", contexts, 2, 10000, &err);
    if (b.reader == NULL) {
        fprintf(stderr, "bench_scheduler: %s\n", err.message);
        return 1;
    }
    pthread_t reader;
    pthread_create(&reader, NULL, reader_main, &b);
    o.ud = &b;
    o.on_created = on_created;
    int status = 0;

    /* 1. the flood: queued first, then the scheduler starts */
    b.phase = 0;
    bench_load_result sub = bench_load_run(&o);
    bool all_admitted = wait_count(&b, b.admitted, 0, sub.ok);
    double t_start = wall_s();
    pid_t sched = start_scheduler(bin, work);
    if (sched < 0) {
        fprintf(stderr, "bench_scheduler: cannot start %s scheduler\n", bin);
        status = 1;
        goto out;
    }
    bool all_assigned = wait_count(&b, b.assigned, 0, sub.ok);
    collect at = gather(&b, 0, false);
    printf("%ld jobs of 1 GPU (%ld submitted at %.0f/s, %s admitted) onto the bench's fake GPUs; "
           "broker, command service, scheduler and workers on this machine\n",
           sub.ok, sub.ok, sub.ok_per_s, all_admitted ? "all" : "NOT all");
    printf("%-44s %12s %s\n", "step", "placed/s", "");
    printf("%-44s %12.0f %s\n", "Slurm, published sustained rate", 500.0, "(anchor)");
    if (at.n > FIRST_JOBS)
        printf("%-44s %12.0f first placement %.2f s after the scheduler started\n",
               "first 1,000 placements (every GPU free)",
               (FIRST_JOBS - 1) / (at.v[FIRST_JOBS - 1] - at.v[0]), at.v[0] - t_start);
    if (at.n > 1)
        printf("%-44s %12.0f %ld of %ld placed%s\n", "all placements (GPUs reused, sustained)",
               (double)(at.n - 1) / (at.v[at.n - 1] - at.v[0]), at.n, sub.ok,
               all_assigned ? "" : " within the time limit");
    free(at.v);

    /* 2. open loop: submit -> assigned latency */
    printf("%-44s %12s %9s %9s %8s\n", "open loop, submit -> JobAssigned", "assigned/s", "p50 ms",
           "p99 ms", "missing");
    static const double rates[] = {250, 500, 1000};
    for (int i = 0; i < 3; i++) {
        pthread_mutex_lock(&b.lock);
        b.phase = i + 1;
        pthread_mutex_unlock(&b.lock);
        o.rate = rates[i];
        o.duration = STEP_SECONDS;
        o.max_requests = 0;
        bench_load_result r = bench_load_run(&o);
        wait_count(&b, b.assigned, i + 1, r.ok);
        collect lat = gather(&b, i + 1, true);
        collect when = gather(&b, i + 1, false);
        char name[64];
        snprintf(name, sizeof(name), "%.0f submissions/s for %d s", rates[i], STEP_SECONDS);
        double span = when.n > 1 ? when.v[when.n - 1] - when.v[0] : 0;
        printf("%-44s %12.0f %9.1f %9.1f %8ld\n", name, span > 0 ? (double)(when.n - 1) / span : 0,
               lat.n ? lat.v[lat.n / 2] * 1000 : 0,
               lat.n ? lat.v[(long)((double)lat.n * 0.99)] * 1000 : 0, r.ok - lat.n);
        free(lat.v);
        free(when.v);
        if (lat.n < r.ok / 2)
            break; /* far behind: a higher rate only queues */
    }
    printf("targets: >= 5000 placements/s; p99 submit -> assigned <= 100 ms at 1000 "
           "submissions/s\n");

    stop_workers(&b, getenv("CSTL_BENCH_WORKER_PIDS"));
    kill(sched, SIGTERM);
    waitpid(sched, NULL, 0);
out:
    atomic_store(&b.stop, true);
    pthread_join(reader, NULL);
    cstl_event_reader_free(b.reader);
    cstl_strmap_free(b.jobs);
    cstl_strmap_free(b.lost);
    pthread_mutex_destroy(&b.lock);
    return status;
}
