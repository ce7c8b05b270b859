/*
 * waiting.c - the scheduler's published pending reasons (see waiting.h): per job, the last record
 * produced, and the diff of a plan's decisions against them. Each diff stamps the entries of the
 * jobs it was given with a new generation; an entry left with an older one belongs to a job that
 * left the queue and gets its tombstone. O(queued jobs) per diff. Owned by one thread.
 */
#include "commands/waiting.h"

#include "commands/strmap.h"
#include "platform/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MESSAGE_INTERVAL_S 30.0

/* What was published for one job. */
typedef struct published {
    char tenant_id[37];
    int attempts;
    cstl_place_reason reason; /* CSTL_PLACE_NREASONS: unknown, publish again */
    char message[CSTL_PLACE_MESSAGE_MAX];
    int64_t at;
    uint64_t gen; /* the last diff that saw the job queued */
} published;

struct cstl_waiting {
    int64_t message_interval_us;
    cstl_strmap *jobs; /* job id -> published */
    uint64_t gen;
};

cstl_waiting *cstl_waiting_new(double message_interval_s)
{
    cstl_waiting *w = cstl_xcalloc(1, sizeof(*w));
    if (!(message_interval_s > 0))
        message_interval_s = DEFAULT_MESSAGE_INTERVAL_S;
    w->message_interval_us = (int64_t)(message_interval_s * 1e6);
    w->jobs = cstl_strmap_new(free);
    return w;
}

void cstl_waiting_free(cstl_waiting *w)
{
    if (w == NULL)
        return;
    cstl_strmap_free(w->jobs);
    free(w);
}

size_t cstl_waiting_len(const cstl_waiting *w)
{
    return cstl_strmap_len(w->jobs);
}

static published *entry_for(cstl_waiting *w, const char *job_id)
{
    published *e = cstl_strmap_get(w->jobs, job_id);
    if (e == NULL) {
        e = cstl_xcalloc(1, sizeof(*e));
        e->reason = CSTL_PLACE_NREASONS;
        cstl_strmap_put(w->jobs, job_id, e);
    }
    return e;
}

static cstl_waiting_record *append(cstl_waiting_record **out, size_t *nout)
{
    *out = cstl_xrealloc(*out, (*nout + 1) * sizeof(**out));
    cstl_waiting_record *r = &(*out)[(*nout)++];
    memset(r, 0, sizeof(*r));
    return r;
}

/* True when j's decision is to be published now, given what was published (e may be NULL). */
static bool due(const cstl_waiting *w, const published *e, const cstl_waiting_job *j, int64_t now)
{
    if (e == NULL || e->attempts != j->attempts || e->reason != j->reason)
        return true;
    if (strcmp(e->message, j->message != NULL ? j->message : "") == 0)
        return false;
    return now - e->at >= w->message_interval_us;
}

typedef struct gone {
    const char **ids;
    size_t n;
    uint64_t gen;
} gone;

static void collect_gone(void *ud, const char *key, void *value)
{
    gone *g = ud;
    if (((const published *)value)->gen != g->gen)
        g->ids[g->n++] = key;
}

void cstl_waiting_diff(cstl_waiting *w,
                       const cstl_waiting_job *jobs,
                       size_t n,
                       int64_t now_us,
                       cstl_waiting_record **out,
                       size_t *nout)
{
    uint64_t gen = ++w->gen;
    for (size_t i = 0; i < n; i++) {
        const cstl_waiting_job *j = &jobs[i];
        if (j->job_id == NULL || strlen(j->job_id) > 64)
            continue;
        published *e = cstl_strmap_get(w->jobs, j->job_id);
        if (e != NULL)
            e->gen = gen;
        /* being placed, or a decision this build cannot name: keep what was published */
        if (j->reason == CSTL_PLACE_ASSIGNED || (int)j->reason < 0 ||
            j->reason >= CSTL_PLACE_NREASONS || !due(w, e, j, now_us))
            continue;
        e = entry_for(w, j->job_id);
        e->gen = gen;
        snprintf(e->tenant_id, sizeof(e->tenant_id), "%s", j->tenant_id ? j->tenant_id : "");
        e->attempts = j->attempts;
        e->reason = j->reason;
        snprintf(e->message, sizeof(e->message), "%s", j->message ? j->message : "");
        e->at = now_us;
        cstl_waiting_record *r = append(out, nout);
        snprintf(r->job_id, sizeof(r->job_id), "%s", j->job_id);
        snprintf(r->tenant_id, sizeof(r->tenant_id), "%s", e->tenant_id);
        r->attempts = j->attempts;
        r->version = j->version;
        r->reason = j->reason;
        snprintf(r->message, sizeof(r->message), "%s", e->message);
        r->at = now_us;
    }
    gone g = {cstl_xcalloc(cstl_strmap_len(w->jobs) + 1, sizeof(char *)), 0, gen};
    cstl_strmap_each(w->jobs, collect_gone, &g);
    for (size_t i = 0; i < g.n; i++) {
        const published *e = cstl_strmap_get(w->jobs, g.ids[i]);
        cstl_waiting_record *r = append(out, nout);
        snprintf(r->job_id, sizeof(r->job_id), "%s", g.ids[i]);
        snprintf(r->tenant_id, sizeof(r->tenant_id), "%s", e->tenant_id);
        r->tombstone = true;
        r->attempts = e->attempts;
        r->reason = e->reason;
        r->at = now_us;
    }
    /* removed after the records copied the keys */
    for (size_t i = 0; i < g.n; i++)
        cstl_strmap_remove(w->jobs, (*out)[*nout - g.n + i].job_id);
    free(g.ids);
}

void cstl_waiting_seen(cstl_waiting *w,
                       const char *job_id,
                       const char *tenant_id,
                       int attempts,
                       cstl_place_reason reason,
                       const char *message,
                       int64_t at)
{
    if (job_id == NULL || *job_id == '\0' || strlen(job_id) > 64)
        return;
    published *e = entry_for(w, job_id);
    snprintf(e->tenant_id, sizeof(e->tenant_id), "%s", tenant_id ? tenant_id : "");
    e->attempts = attempts;
    e->reason = (int)reason >= 0 && reason < CSTL_PLACE_NREASONS ? reason : CSTL_PLACE_NREASONS;
    snprintf(e->message, sizeof(e->message), "%s", message ? message : "");
    e->at = at;
}

void cstl_waiting_clear(cstl_waiting *w, const char *job_id)
{
    if (job_id != NULL)
        cstl_strmap_remove(w->jobs, job_id);
}

void cstl_waiting_failed(cstl_waiting *w, const cstl_waiting_record *r)
{
    published *e = cstl_strmap_get(w->jobs, r->job_id);
    if (r->tombstone) {
        if (e != NULL)
            return; /* queued again and published since: that record supersedes the tombstone */
        e = entry_for(w, r->job_id);
        snprintf(e->tenant_id, sizeof(e->tenant_id), "%s", r->tenant_id);
        e->attempts = r->attempts;
        e->at = r->at;
        return; /* the next diff does not see it queued: the tombstone is owed again */
    }
    /* unless superseded: publish again while queued, and owe a tombstone once it is not */
    if (e != NULL && e->at <= r->at)
        e->reason = CSTL_PLACE_NREASONS;
}
