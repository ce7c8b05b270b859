/*
 * embed.h - files compiled into the binary (topic catalog, SQL migrations, schemas).
 *
 * The build turns each listed source file into a NUL-terminated byte array, so the binary never
 * reads the source tree at run time. The table is immutable and safe to read from any thread.
 */
#ifndef CSTL_PLATFORM_EMBED_H
#define CSTL_PLATFORM_EMBED_H

#include <stddef.h>

typedef struct cstl_embedded_file {
    const char *path; /* relative to the repository root, e.g. "schemas/topics.json" */
    const char *data; /* size bytes followed by a NUL */
    size_t size;
} cstl_embedded_file;

/* Every embedded file, sorted by path, ended by an entry whose path is NULL. */
extern const cstl_embedded_file cstl_embedded_files[];

/* The embedded file at path, or NULL if none. Borrowed, valid for the life of the process. */
const cstl_embedded_file *cstl_embed_find(const char *path);

#endif
