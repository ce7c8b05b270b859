/*
 * placement.c - the scheduler's placement decision (see placement.h for the policy).
 *
 * One pass: the jobs are ordered (priorities, then a weighted fair-share interleaving of tenants,
 * then age) as they are decided, each either placed on the best-fitting worker, or reserving the
 * worker it waits for, or blocked by the first job that reserved one of its workers. Only the jobs
 * placed charge their tenant in the interleaving. Sizes are bounded by the input; the work is
 * O(jobs x (tenants + workers x GPUs)).
 */
#include "commands/placement.h"

#include "platform/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const reason_names[CSTL_PLACE_NREASONS] = {
    [CSTL_PLACE_ASSIGNED] = "ASSIGNED",
    [CSTL_PLACE_NO_WORKERS] = "NO_ONLINE_WORKERS",
    [CSTL_PLACE_GPU_MODEL_ABSENT] = "GPU_MODEL_ABSENT",
    [CSTL_PLACE_NO_GPU_WITH_MEMORY] = "NO_GPU_WITH_MEMORY",
    [CSTL_PLACE_NOT_ENOUGH_GPUS] = "NOT_ENOUGH_GPUS_ON_ANY_WORKER",
    [CSTL_PLACE_GPUS_DRAINED] = "GPUS_DRAINED",
    [CSTL_PLACE_WAITING_FOR_GPUS] = "WAITING_FOR_GPUS",
    [CSTL_PLACE_HIGHER_PRIORITY] = "HIGHER_PRIORITY_AHEAD",
    [CSTL_PLACE_TENANT_AT_SHARE] = "TENANT_AT_FAIR_SHARE",
    [CSTL_PLACE_EARLIER_JOBS] = "EARLIER_JOBS_AHEAD",
};

const char *cstl_place_reason_name(cstl_place_reason reason)
{
    if ((int)reason < 0 || reason >= CSTL_PLACE_NREASONS)
        return "UNKNOWN";
    return reason_names[reason];
}

cstl_place_reason cstl_place_reason_parse(const char *name)
{
    for (int r = 0; name != NULL && r < CSTL_PLACE_NREASONS; r++)
        if (strcmp(reason_names[r], name) == 0)
            return (cstl_place_reason)r;
    return CSTL_PLACE_NREASONS;
}

double cstl_place_decay(double usage_gpu_s, double elapsed_s, double half_life_s)
{
    if (elapsed_s <= 0 || half_life_s <= 0)
        return usage_gpu_s;
    return usage_gpu_s * exp2(-elapsed_s / half_life_s);
}

/* A tenant that has jobs in this round. */
typedef struct share {
    const char *tenant_id;
    double weight;
    double usage;   /* recent usage plus what this round's placements have charged it */
    size_t given;   /* jobs placed in the order so far (its tenant positions) */
    size_t waiting; /* order position + 1 of its job reserving a worker at this priority, or 0 */
} share;

typedef struct place_round {
    const cstl_place_input *in;
    share *shares;
    size_t nshares;
    size_t *job_share;   /* per job: index into shares */
    size_t *order;       /* job indices in scheduling order */
    bool *used;          /* per worker x GPU: taken in this round (flattened) */
    size_t *gpu_base;    /* per worker: first index into used */
    size_t *reserved_by; /* per worker: the order position + 1 of the job reserving it, or 0 */
} place_round;

static bool model_wanted(const cstl_place_job *j)
{
    return j->gpu_model != NULL && j->gpu_model[0] != '\0';
}

/* The GPU has the model and memory j asks for (drained and held not considered). */
static bool gpu_qualifies(const cstl_place_job *j, const cstl_place_gpu *g)
{
    if (model_wanted(j) && (g->model == NULL || strcmp(g->model, j->gpu_model) != 0))
        return false;
    return g->memory_mib >= j->min_gpu_memory_mib;
}

static int validate(const cstl_place_input *in)
{
    if (in == NULL || !(in->charge_s > 0) || (in->njobs > 0 && in->jobs == NULL) ||
        (in->nworkers > 0 && in->workers == NULL) || (in->ntenants > 0 && in->tenants == NULL))
        return CSTL_EINVAL;
    for (size_t i = 0; i < in->nworkers; i++) {
        const cstl_place_worker *w = &in->workers[i];
        if (w->worker_id == NULL || w->ngpus > CSTL_PLACE_MAX_GPUS ||
            (w->ngpus > 0 && w->gpus == NULL))
            return CSTL_EINVAL;
        for (size_t g = 0; g < w->ngpus; g++)
            if (w->gpus[g].uuid == NULL)
                return CSTL_EINVAL;
    }
    for (size_t i = 0; i < in->ntenants; i++)
        if (in->tenants[i].tenant_id == NULL || !(in->tenants[i].weight > 0))
            return CSTL_EINVAL;
    for (size_t i = 0; i < in->njobs; i++) {
        const cstl_place_job *j = &in->jobs[i];
        if (j->job_id == NULL || j->tenant_id == NULL || j->gpu_count < 1 ||
            j->gpu_count > CSTL_PLACE_MAX_GPUS)
            return CSTL_EINVAL;
    }
    return 0;
}

/* Index of the share of tenant_id, added (with its weight and usage from the input) if new. */
static size_t share_of(place_round *r, const char *tenant_id)
{
    for (size_t i = 0; i < r->nshares; i++)
        if (strcmp(r->shares[i].tenant_id, tenant_id) == 0)
            return i;
    share *s = &r->shares[r->nshares];
    s->tenant_id = tenant_id;
    s->weight = 1;
    s->usage = 0;
    s->given = 0;
    for (size_t i = 0; i < r->in->ntenants; i++) {
        if (strcmp(r->in->tenants[i].tenant_id, tenant_id) == 0) {
            s->weight = r->in->tenants[i].weight;
            s->usage = r->in->tenants[i].usage_gpu_s > 0 ? r->in->tenants[i].usage_gpu_s : 0;
            break;
        }
    }
    return r->nshares++;
}

/* Priority (high first), then tenant, then age, then id: the within-tenant order per priority.
 * ctx: the jobs. */
static int by_priority_tenant_age(const void *a, const void *b, void *ctx)
{
    const cstl_place_job *jobs = ctx;
    const cstl_place_job *x = &jobs[*(const size_t *)a];
    const cstl_place_job *y = &jobs[*(const size_t *)b];
    if (x->priority != y->priority)
        return x->priority > y->priority ? -1 : 1;
    int c = strcmp(x->tenant_id, y->tenant_id);
    if (c != 0)
        return c;
    if (x->submitted_at != y->submitted_at)
        return x->submitted_at < y->submitted_at ? -1 : 1;
    return strcmp(x->job_id, y->job_id);
}

/* What the fleet offers j, free or not. */
typedef struct fleet_fit {
    bool any_gpu;        /* some online worker has a GPU */
    bool model_seen;     /* some online GPU has the model (or no model was asked for) */
    bool memory_seen;    /* some online GPU of that model has the memory */
    int most_on_one;     /* most qualifying GPUs on one online worker, drained included */
    int most_undrained;  /* the same without drained GPUs */
    int64_t largest_mib; /* largest memory among GPUs of the model */
} fleet_fit;

static fleet_fit fit_fleet(const cstl_place_input *in, const cstl_place_job *j)
{
    fleet_fit f = {.model_seen = !model_wanted(j)};
    for (size_t w = 0; w < in->nworkers; w++) {
        const cstl_place_worker *wk = &in->workers[w];
        if (!wk->online)
            continue;
        int q = 0, undrained = 0;
        for (size_t g = 0; g < wk->ngpus; g++) {
            const cstl_place_gpu *gpu = &wk->gpus[g];
            f.any_gpu = true;
            bool model_ok =
                !model_wanted(j) || (gpu->model != NULL && strcmp(gpu->model, j->gpu_model) == 0);
            if (!model_ok)
                continue;
            f.model_seen = true;
            if (gpu->memory_mib > f.largest_mib)
                f.largest_mib = gpu->memory_mib;
            if (gpu->memory_mib < j->min_gpu_memory_mib)
                continue;
            f.memory_seen = true;
            q++;
            undrained += !gpu->drained;
        }
        if (q > f.most_on_one)
            f.most_on_one = q;
        if (undrained > f.most_undrained)
            f.most_undrained = undrained;
    }
    return f;
}

/* Qualifying GPUs of worker w that are usable now (not drained, held or taken this round). */
static int free_qualifying(const place_round *r, size_t w, const cstl_place_job *j)
{
    const cstl_place_worker *wk = &r->in->workers[w];
    int n = 0;
    for (size_t g = 0; g < wk->ngpus; g++) {
        const cstl_place_gpu *gpu = &wk->gpus[g];
        if (!gpu->drained && !gpu->held && !r->used[r->gpu_base[w] + g] && gpu_qualifies(j, gpu))
            n++;
    }
    return n;
}

static int free_any(const place_round *r, size_t w)
{
    const cstl_place_worker *wk = &r->in->workers[w];
    int n = 0;
    for (size_t g = 0; g < wk->ngpus; g++)
        n += !wk->gpus[g].drained && !wk->gpus[g].held && !r->used[r->gpu_base[w] + g];
    return n;
}

/* Qualifying GPUs of worker w that are not drained, busy or not. */
static int capacity(const place_round *r, size_t w, const cstl_place_job *j)
{
    const cstl_place_worker *wk = &r->in->workers[w];
    int n = 0;
    for (size_t g = 0; g < wk->ngpus; g++)
        n += !wk->gpus[g].drained && gpu_qualifies(j, &wk->gpus[g]);
    return n;
}

/* Orders the GPU indices of a worker: smaller memory first, then uuid. ctx: its GPUs. */
static int by_memory_uuid(const void *a, const void *b, void *ctx)
{
    const cstl_place_gpu *gpus = ctx;
    const cstl_place_gpu *x = &gpus[*(const size_t *)a];
    const cstl_place_gpu *y = &gpus[*(const size_t *)b];
    if (x->memory_mib != y->memory_mib)
        return x->memory_mib < y->memory_mib ? -1 : 1;
    return strcmp(x->uuid, y->uuid);
}

/* Takes the gpu_count smallest qualifying free GPUs of worker w for j into d. */
static void take_gpus(place_round *r, size_t w, const cstl_place_job *j, cstl_place_decision *d)
{
    const cstl_place_worker *wk = &r->in->workers[w];
    size_t cand[CSTL_PLACE_MAX_GPUS];
    size_t n = 0;
    for (size_t g = 0; g < wk->ngpus; g++) {
        const cstl_place_gpu *gpu = &wk->gpus[g];
        if (!gpu->drained && !gpu->held && !r->used[r->gpu_base[w] + g] && gpu_qualifies(j, gpu))
            cand[n++] = g;
    }
    qsort_r(cand, n, sizeof(*cand), by_memory_uuid, (void *)wk->gpus);
    for (int k = 0; k < j->gpu_count; k++) {
        d->gpus[k] = cand[k];
        r->used[r->gpu_base[w] + cand[k]] = true;
    }
    d->worker = w;
}

/* The reason and message of a job that fits nowhere in the fleet, or CSTL_PLACE_ASSIGNED if it
 * fits somewhere once GPUs free up. */
static cstl_place_reason
never_fits(const cstl_place_input *in, const cstl_place_job *j, char *msg, size_t n)
{
    fleet_fit f = fit_fleet(in, j);
    if (!f.any_gpu) {
        snprintf(msg, n, "no worker with GPUs is online");
        return CSTL_PLACE_NO_WORKERS;
    }
    if (!f.model_seen) {
        snprintf(msg, n, "no online worker has a GPU of model \"%s\"", j->gpu_model);
        return CSTL_PLACE_GPU_MODEL_ABSENT;
    }
    if (!f.memory_seen) {
        snprintf(msg, n, "no online GPU%s%s%s has %lld MiB of memory (the largest has %lld MiB)",
                 model_wanted(j) ? " of model \"" : "", model_wanted(j) ? j->gpu_model : "",
                 model_wanted(j) ? "\"" : "", (long long)j->min_gpu_memory_mib,
                 (long long)f.largest_mib);
        return CSTL_PLACE_NO_GPU_WITH_MEMORY;
    }
    if (f.most_on_one < j->gpu_count) {
        snprintf(msg, n,
                 "no online worker has %d GPUs that qualify (at most %d on one worker); a job "
                 "runs on a single worker",
                 j->gpu_count, f.most_on_one);
        return CSTL_PLACE_NOT_ENOUGH_GPUS;
    }
    if (f.most_undrained < j->gpu_count) {
        snprintf(msg, n,
                 "%d GPUs that qualify exist on one worker, but some are drained (at most %d "
                 "undrained on one worker)",
                 j->gpu_count, f.most_undrained);
        return CSTL_PLACE_GPUS_DRAINED;
    }
    return CSTL_PLACE_ASSIGNED;
}

/* Decides the job at order position pos (0-based) into d. */
static void decide_one(place_round *r, size_t pos, cstl_place_decision *d)
{
    const cstl_place_input *in = r->in;
    size_t ji = r->order[pos];
    const cstl_place_job *j = &in->jobs[ji];
    d->reason = never_fits(in, j, d->message, sizeof(d->message));
    if (d->reason != CSTL_PLACE_ASSIGNED)
        return;
    /* best fit among the unreserved workers where it fits now */
    size_t best = SIZE_MAX;
    int best_left = 0, best_free = 0;
    /* the worker to reserve if it fits nowhere now; and the earliest reservation in its way */
    size_t wait = SIZE_MAX, blocker_pos = SIZE_MAX;
    int wait_free = 0;
    for (size_t w = 0; w < in->nworkers; w++) {
        if (!in->workers[w].online || capacity(r, w, j) < j->gpu_count)
            continue;
        if (r->reserved_by[w] != 0) {
            if (r->reserved_by[w] - 1 < blocker_pos)
                blocker_pos = r->reserved_by[w] - 1;
            continue;
        }
        int fq = free_qualifying(r, w, j);
        if (fq >= j->gpu_count) {
            int left = fq - j->gpu_count, fa = free_any(r, w);
            if (best == SIZE_MAX || left < best_left || (left == best_left && fa < best_free)) {
                best = w;
                best_left = left;
                best_free = fa;
            }
        } else if (wait == SIZE_MAX || fq > wait_free) {
            wait = w;
            wait_free = fq;
        }
    }
    if (best != SIZE_MAX) {
        take_gpus(r, best, j, d);
        snprintf(d->message, sizeof(d->message), "assigned to %d GPU%s on worker %s", j->gpu_count,
                 j->gpu_count == 1 ? "" : "s", in->workers[best].worker_id);
        return;
    }
    size_t sh = r->job_share[ji];
    if (wait != SIZE_MAX && r->shares[sh].waiting != 0) {
        /* its tenant's first waiting job of this priority holds a reservation: this one waits
         * behind it without taking a second worker from the others */
        d->blocked_by = r->order[r->shares[sh].waiting - 1];
        d->reason = CSTL_PLACE_EARLIER_JOBS;
        snprintf(d->message, sizeof(d->message),
                 "earlier job %s of the same tenant is next in line for GPUs; this one waits "
                 "for GPUs that fit it to be free",
                 in->jobs[d->blocked_by].job_id);
        return;
    }
    if (wait != SIZE_MAX) {
        r->reserved_by[wait] = pos + 1;
        r->shares[sh].waiting = pos + 1;
        d->reason = CSTL_PLACE_WAITING_FOR_GPUS;
        snprintf(d->message, sizeof(d->message),
                 "next in line for %d GPU%s on worker %s, where %d %s free now", j->gpu_count,
                 j->gpu_count == 1 ? "" : "s", in->workers[wait].worker_id, wait_free,
                 wait_free == 1 ? "is" : "are");
        return;
    }
    /* every worker it fits on is reserved by a job earlier in the order */
    size_t bi = r->order[blocker_pos];
    const cstl_place_job *b = &in->jobs[bi];
    d->blocked_by = bi;
    if (b->priority > j->priority) {
        d->reason = CSTL_PLACE_HIGHER_PRIORITY;
        snprintf(d->message, sizeof(d->message),
                 "job %s of higher priority (%d > %d) goes first on the GPUs that fit", b->job_id,
                 b->priority, j->priority);
    } else if (strcmp(b->tenant_id, j->tenant_id) != 0) {
        d->reason = CSTL_PLACE_TENANT_AT_SHARE;
        snprintf(d->message, sizeof(d->message),
                 "the tenant has had its fair share of GPU time; job %s of a tenant further below "
                 "its share goes first",
                 b->job_id);
    } else {
        d->reason = CSTL_PLACE_EARLIER_JOBS;
        snprintf(d->message, sizeof(d->message),
                 "earlier job %s of the same tenant goes first on the GPUs that fit", b->job_id);
    }
}

/*
 * Orders and decides every job into out: per priority level, repeatedly the oldest remaining job
 * of the tenant furthest below its share. A job given GPUs charges its tenant gpu_count x
 * charge_s for the rest of the round; a job that waits charges nothing, so its tenant's next
 * jobs still come before those of tenants above their share and can take GPUs that are free now.
 */
static void place_in_order(place_round *r, cstl_place_decision *out)
{
    const cstl_place_input *in = r->in;
    size_t *sorted = cstl_xcalloc(in->njobs + 1, sizeof(*sorted));
    for (size_t i = 0; i < in->njobs; i++)
        sorted[i] = i;
    qsort_r(sorted, in->njobs, sizeof(*sorted), by_priority_tenant_age, (void *)in->jobs);
    /* per share: the next undecided job of the current level, as an index into sorted */
    size_t *next = cstl_xcalloc(r->nshares + 1, sizeof(*next));
    size_t *end = cstl_xcalloc(r->nshares + 1, sizeof(*end));
    size_t pos = 0;
    for (size_t lo = 0; lo < in->njobs;) {
        size_t hi = lo;
        while (hi < in->njobs && in->jobs[sorted[hi]].priority == in->jobs[sorted[lo]].priority)
            hi++;
        for (size_t s = 0; s < r->nshares; s++)
            next[s] = end[s] = r->shares[s].waiting = 0;
        /* within [lo, hi) each tenant's jobs are contiguous (sorted by tenant) */
        for (size_t k = lo; k < hi; k++) {
            size_t s = r->job_share[sorted[k]];
            if (end[s] == 0)
                next[s] = k;
            end[s] = k + 1;
        }
        for (size_t left = hi - lo; left > 0; left--) {
            size_t best = SIZE_MAX;
            double best_u = 0;
            for (size_t s = 0; s < r->nshares; s++) {
                if (next[s] >= end[s])
                    continue;
                double u = r->shares[s].usage / r->shares[s].weight;
                if (best == SIZE_MAX || u < best_u ||
                    (u == best_u &&
                     strcmp(r->shares[s].tenant_id, r->shares[best].tenant_id) < 0)) {
                    best = s;
                    best_u = u;
                }
            }
            size_t j = sorted[next[best]++];
            cstl_place_decision *d = &out[pos];
            memset(d, 0, sizeof(*d));
            d->job = j;
            d->position = pos + 1;
            d->tenant_position = ++r->shares[best].given;
            d->worker = SIZE_MAX;
            d->blocked_by = SIZE_MAX;
            r->order[pos] = j;
            decide_one(r, pos, d);
            if (d->reason == CSTL_PLACE_ASSIGNED)
                r->shares[best].usage += (double)in->jobs[j].gpu_count * in->charge_s;
            pos++;
        }
        lo = hi;
    }
    free(end);
    free(next);
    free(sorted);
}

int cstl_place(const cstl_place_input *in, cstl_place_decision *out)
{
    if (validate(in) != 0 || (in->njobs > 0 && out == NULL))
        return CSTL_EINVAL;
    place_round r = {.in = in};
    r.shares = cstl_xcalloc(in->njobs + 1, sizeof(*r.shares));
    r.job_share = cstl_xcalloc(in->njobs + 1, sizeof(*r.job_share));
    r.order = cstl_xcalloc(in->njobs + 1, sizeof(*r.order));
    r.gpu_base = cstl_xcalloc(in->nworkers + 1, sizeof(*r.gpu_base));
    r.reserved_by = cstl_xcalloc(in->nworkers + 1, sizeof(*r.reserved_by));
    size_t ngpus = 0;
    for (size_t w = 0; w < in->nworkers; w++) {
        r.gpu_base[w] = ngpus;
        ngpus += in->workers[w].ngpus;
    }
    r.used = cstl_xcalloc(ngpus + 1, sizeof(*r.used));
    for (size_t i = 0; i < in->njobs; i++)
        r.job_share[i] = share_of(&r, in->jobs[i].tenant_id);
    place_in_order(&r, out);
    free(r.used);
    free(r.reserved_by);
    free(r.gpu_base);
    free(r.order);
    free(r.job_share);
    free(r.shares);
    return 0;
}
