/*
 * embed.c - lookup in the table of files compiled into the binary (see embed.h).
 */
#include "platform/embed.h"

#include <string.h>

const cstl_embedded_file *cstl_embed_find(const char *path)
{
    if (path == NULL)
        return NULL;
    for (const cstl_embedded_file *f = cstl_embedded_files; f->path != NULL; f++)
        if (strcmp(f->path, path) == 0)
            return f;
    return NULL;
}
