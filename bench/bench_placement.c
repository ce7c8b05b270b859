/*
 * bench_placement.c - the cost of the scheduler's placement decision alone (commands/placement.c,
 * no broker): 10,000 queued jobs of three tenants (1 to 4 GPUs, mixed priorities, some asking for
 * a model or memory) onto 1,000 fake GPUs (125 workers of 8), in rounds: each round decides every
 * queued job, the placed jobs take their GPUs and leave the queue, and when nothing fits any more
 * the GPUs are freed again (the fleet's jobs "finish"), until every job was placed. Reports
 * placements per second of decision time and the time of one round, next to Slurm's published
 * sustained rate of 500 jobs/s. The end-to-end rate (commands through the handlers) is lower; this
 * figure bounds it from above.
 */
#include "commands/placement.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORKERS         125
#define GPUS_PER_WORKER 8
#define JOBS            10000

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

static char wid[WORKERS][16], uid[WORKERS][GPUS_PER_WORKER][32], jid[JOBS][16];
static cstl_place_gpu gpus[WORKERS][GPUS_PER_WORKER];
static cstl_place_worker workers[WORKERS];
static cstl_place_job all[JOBS], queue[JOBS];
static cstl_place_decision out[JOBS];

int main(void)
{
    static const char *const models[] = {"H100", "A100"};
    static const char *const tenants[] = {"tenant-a", "tenant-b", "tenant-c"};
    unsigned seed = 42;
    for (int w = 0; w < WORKERS; w++) {
        snprintf(wid[w], sizeof(wid[w]), "w%03d", w);
        for (int g = 0; g < GPUS_PER_WORKER; g++) {
            snprintf(uid[w][g], sizeof(uid[w][g]), "GPU-%03d-%d", w, g);
            gpus[w][g] = (cstl_place_gpu){
                .uuid = uid[w][g], .model = models[w % 2], .memory_mib = w % 2 ? 40960 : 81920};
        }
        workers[w] = (cstl_place_worker){
            .worker_id = wid[w], .gpus = gpus[w], .ngpus = GPUS_PER_WORKER, .online = true};
    }
    for (int j = 0; j < JOBS; j++) {
        snprintf(jid[j], sizeof(jid[j]), "job-%05d", j);
        /* every job fits the fleet: a model is asked for only with memory it has */
        const char *model = rnd(&seed) % 5 ? NULL : models[rnd(&seed) % 2];
        bool big = rnd(&seed) % 4 == 0 && (model == NULL || strcmp(model, "H100") == 0);
        all[j] = (cstl_place_job){.job_id = jid[j],
                                  .tenant_id = tenants[rnd(&seed) % 3],
                                  .gpu_count = 1 + (int)(rnd(&seed) % 4),
                                  .min_gpu_memory_mib = big ? 60000 : 0,
                                  .gpu_model = model,
                                  .priority = (int)(rnd(&seed) % 3),
                                  .submitted_at = j};
    }
    cstl_place_tenant weights[] = {{"tenant-a", 1, 0}, {"tenant-b", 2, 0}, {"tenant-c", 1, 0}};
    size_t left = JOBS, placed = 0, rounds = 0;
    memcpy(queue, all, sizeof(all));
    double spent = 0, worst = 0;
    bool fleet_free = true;
    while (left > 0) {
        cstl_place_input in = {.workers = workers,
                               .nworkers = WORKERS,
                               .tenants = weights,
                               .ntenants = 3,
                               .jobs = queue,
                               .njobs = left,
                               .charge_s = 60};
        double t0 = now();
        if (cstl_place(&in, out) != 0) {
            fprintf(stderr, "bench_placement: the placement refused its input\n");
            return 1;
        }
        double dt = now() - t0;
        spent += dt;
        worst = dt > worst ? dt : worst;
        rounds++;
        size_t kept = 0, now_placed = 0;
        static unsigned char gone[JOBS];
        memset(gone, 0, left);
        for (size_t k = 0; k < left; k++) {
            if (out[k].reason != CSTL_PLACE_ASSIGNED)
                continue;
            gone[out[k].job] = 1;
            now_placed++;
            for (int g = 0; g < queue[out[k].job].gpu_count; g++)
                gpus[out[k].worker][out[k].gpus[g]].held = true;
        }
        for (size_t k = 0; k < left; k++)
            if (!gone[k])
                queue[kept++] = queue[k];
        placed += now_placed;
        left = kept;
        if (now_placed == 0) { /* the fleet is full: its jobs finish */
            if (fleet_free) {
                fprintf(stderr, "bench_placement: %zu jobs fit nowhere\n", left);
                return 1;
            }
            for (int w = 0; w < WORKERS; w++)
                for (int g = 0; g < GPUS_PER_WORKER; g++)
                    gpus[w][g].held = false;
        }
        fleet_free = now_placed == 0;
    }
    printf("placement decision: %d jobs onto %d GPUs in %zu rounds\n", JOBS,
           WORKERS * GPUS_PER_WORKER, rounds);
    printf("  placements/s of decision time  %12.0f   (anchor: Slurm's published sustained "
           "500 jobs/s; target 5,000/s)\n",
           (double)placed / spent);
    printf("  round with 10,000 queued       %12.1f ms (worst round)\n", worst * 1000);
    printf("  mean round                     %12.1f ms\n", spent / (double)rounds * 1000);
    return 0;
}
