/*
 * rebuild.h - `constellation rebuild NAME`: builds a projection into a new schema version from
 * offset 0 while the active version keeps serving, then switches the views of schema read to it
 * atomically (docs/read-side.md).
 */
#ifndef CSTL_PROJECTIONS_REBUILD_H
#define CSTL_PROJECTIONS_REBUILD_H

#include "platform/error.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct cstl_rebuild_options {
    const char *projection;   /* required */
    const char *brokers;      /* required */
    const char *pg_dsn;       /* required */
    const char *topic_prefix; /* NULL: "constellation." */
    const char *client_id;    /* NULL: "constellation-rebuild" */
    bool drop_old;            /* drop the previous version's schema and offsets in the switch */
    int batch_max;            /* 0: 20000 */
    int kafka_timeout_ms;     /* 0: 10000 */
} cstl_rebuild_options;

typedef struct cstl_rebuild_report {
    int old_version, new_version;
    uint64_t applied, dead_lettered;
} cstl_rebuild_report;

/*
 * Rebuilds: takes a session advisory lock per projection (a second concurrent rebuild fails with
 * CSTL_ECONFLICT), creates <name>_v<N+1> (replacing the leftovers of an interrupted rebuild),
 * applies every record from offset 0 up to the end offsets seen at start with its own offsets
 * rows (<name>_v<N+1>), then in one transaction holding the projection_versions row FOR UPDATE
 * (live projectors wait) applies the records produced meanwhile, activates the new version and
 * optionally drops the old one. Live projectors then reopen on the new version's offsets.
 * report may be NULL. Returns 0 or the first error (the active version is untouched then).
 */
int cstl_projection_rebuild(const cstl_rebuild_options *o,
                            cstl_rebuild_report *report,
                            cstl_error *err);

#endif
