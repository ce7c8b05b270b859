/*
 * error.c - the error table's lookups, the error record, and the allocation helpers.
 *
 * Everything here is reentrant and may be called from any thread.
 */
#include "platform/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct error_entry {
    int code;
    int klass;
    const char *name;
    const char *message;
} error_entry;

static const error_entry error_entries[] = {
#define CSTL_ERROR_ENTRY_(name, value, klass, msg)                                                 \
    {(value), CSTL_ECLASS_##klass, "CSTL_" #name, msg},
    CSTL_ERROR_TABLE(CSTL_ERROR_ENTRY_)
#undef CSTL_ERROR_ENTRY_
};

static const error_entry *error_find(int code)
{
    for (size_t i = 0; i < CSTL_ARRAY_LEN(error_entries); i++)
        if (error_entries[i].code == code)
            return &error_entries[i];
    return NULL;
}

const char *cstl_strerror(int code)
{
    const error_entry *e = error_find(code);
    return e ? e->message : "unknown error";
}

const char *cstl_error_name(int code)
{
    const error_entry *e = error_find(code);
    return e ? e->name : "CSTL_E?";
}

int cstl_error_class(int code)
{
    const error_entry *e = error_find(code);
    return e ? e->klass : CSTL_ECLASS_FATAL;
}

bool cstl_error_is_retriable(int code)
{
    return cstl_error_class(code) == CSTL_ECLASS_RETRIABLE;
}

bool cstl_error_is_fatal(int code)
{
    return cstl_error_class(code) == CSTL_ECLASS_FATAL;
}

int cstl_error_vset(cstl_error *err, int code, const char *fmt, va_list ap)
{
    if (err == NULL)
        return code;
    memset(err, 0, sizeof(*err));
    err->code = code;
    if (fmt != NULL)
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
    else
        snprintf(err->message, sizeof(err->message), "%s", cstl_strerror(code));
    return code;
}

int cstl_error_set(cstl_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cstl_error_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int cstl_error_detail(cstl_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
    return err->code;
}

void cstl_error_clear(cstl_error *err)
{
    if (err != NULL)
        memset(err, 0, sizeof(*err));
}

_Noreturn void cstl_panic(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("constellation: panic: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void *cstl_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        cstl_panic("out of memory allocating %zu bytes", size);
    return p;
}

void *cstl_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL)
        cstl_panic("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *cstl_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL)
        cstl_panic("out of memory reallocating to %zu bytes", size);
    return p;
}

char *cstl_xstrdup(const char *s)
{
    return cstl_xstrndup(s, strlen(s));
}

char *cstl_xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = cstl_xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}
