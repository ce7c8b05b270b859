/*
 * schema_check.c - Avro reader/writer compatibility by the specification's resolution rules (see
 * schema_check.h): promotions int->long/float/double, long->float/double, float->double,
 * string<->bytes; records matched by name or reader alias, fields by name or field alias, added
 * fields need a default; enums lose symbols only when the reader has a default; fixed sizes must
 * agree; every branch of a writer union must be readable; a reader union must hold the writer type.
 * Recursive schemas are guarded by remembering the (reader, writer) pairs already being checked.
 */
#include "platform/schema_check.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cstl_schema_report {
    char **messages;
    size_t n, stored, cap;
};

cstl_schema_report *cstl_schema_report_new(void)
{
    return cstl_xcalloc(1, sizeof(cstl_schema_report));
}

void cstl_schema_report_free(cstl_schema_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->stored; i++)
        free(r->messages[i]);
    free(r->messages);
    free(r);
}

void cstl_schema_report_add(cstl_schema_report *r, const char *fmt, ...)
{
    if (!r)
        return;
    r->n++;
    if (r->stored >= CSTL_SCHEMA_REPORT_MAX)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (r->stored == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->messages = cstl_xrealloc(r->messages, r->cap * sizeof(char *));
    }
    r->messages[r->stored++] = cstl_xstrdup(buf);
}

size_t cstl_schema_report_count(const cstl_schema_report *r)
{
    return r ? r->n : 0;
}

const char *cstl_schema_report_message(const cstl_schema_report *r, size_t i)
{
    return r && i < r->stored ? r->messages[i] : NULL;
}

char *cstl_schema_label(const char *fullname, char *out, size_t size)
{
    static const char prefix[] = "io.constellation.";
    if (strncmp(fullname, prefix, sizeof prefix - 1) == 0)
        fullname += sizeof prefix - 1;
    snprintf(out, size, "%s", fullname);
    return out;
}

#define MAX_PAIRS 256
#define PATH_LEN  512

typedef struct checker {
    const char *label;
    cstl_schema_report *report;
    int broken;
    const cstl_avro_node *pairs[MAX_PAIRS][2];
    size_t n_pairs;
} checker;

static void broken(checker *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void broken(checker *c, const char *path, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    c->broken++;
    if (path[0])
        cstl_schema_report_add(c->report, "%s: field \"%s\" %s", c->label, path, what);
    else
        cstl_schema_report_add(c->report, "%s: %s", c->label, what);
}

static bool promotable(cstl_avro_type w, cstl_avro_type r)
{
    switch (w) {
    case CSTL_AVRO_INT:
        return r == CSTL_AVRO_LONG || r == CSTL_AVRO_FLOAT || r == CSTL_AVRO_DOUBLE;
    case CSTL_AVRO_LONG:
        return r == CSTL_AVRO_FLOAT || r == CSTL_AVRO_DOUBLE;
    case CSTL_AVRO_FLOAT:
        return r == CSTL_AVRO_DOUBLE;
    case CSTL_AVRO_STRING:
        return r == CSTL_AVRO_BYTES;
    case CSTL_AVRO_BYTES:
        return r == CSTL_AVRO_STRING;
    default:
        return false;
    }
}

static bool names_match(const cstl_avro_node *r, const cstl_avro_node *w)
{
    if (strcmp(r->fullname, w->fullname) == 0 || strcmp(r->name, w->name) == 0)
        return true;
    for (size_t i = 0; i < r->n_aliases; i++)
        if (strcmp(r->aliases[i], w->fullname) == 0)
            return true;
    return false;
}

/* Whether w could go to reader branch r at all (the first test resolution applies). */
static bool branch_matches(const cstl_avro_node *r, const cstl_avro_node *w)
{
    if (r->type == w->type)
        return !r->fullname || names_match(r, w);
    return promotable(w->type, r->type);
}

static void check(checker *c, const cstl_avro_node *r, const cstl_avro_node *w, const char *path);

static void sub_path(char *out, const char *path, const char *name)
{
    snprintf(out, PATH_LEN, "%s%s%s", path, path[0] ? "." : "", name);
}

static void
check_record(checker *c, const cstl_avro_node *r, const cstl_avro_node *w, const char *path)
{
    char p[PATH_LEN];
    for (size_t i = 0; i < r->n_fields; i++) {
        const cstl_avro_field *rf = &r->fields[i];
        const cstl_avro_field *wf = NULL;
        for (size_t k = 0; k < w->n_fields && !wf; k++) {
            if (strcmp(w->fields[k].name, rf->name) == 0)
                wf = &w->fields[k];
            for (size_t a = 0; a < rf->n_aliases && !wf; a++)
                if (strcmp(w->fields[k].name, rf->aliases[a]) == 0)
                    wf = &w->fields[k];
        }
        sub_path(p, path, rf->name);
        if (wf)
            check(c, rf->type, wf->type, p);
        else if (!rf->default_value)
            broken(c, p, "was added without a default");
    }
}

static void check(checker *c, const cstl_avro_node *r, const cstl_avro_node *w, const char *path)
{
    for (size_t i = 0; i < c->n_pairs; i++)
        if (c->pairs[i][0] == r && c->pairs[i][1] == w)
            return; /* already being checked: a recursive type */
    if (c->n_pairs < MAX_PAIRS) {
        c->pairs[c->n_pairs][0] = r;
        c->pairs[c->n_pairs][1] = w;
        c->n_pairs++;
    }
    char p[PATH_LEN];
    if (w->type == CSTL_AVRO_UNION) {
        for (size_t i = 0; i < w->n_branches; i++)
            check(c, r, w->branches[i], path);
        return;
    }
    if (r->type == CSTL_AVRO_UNION) {
        const cstl_avro_node *best = NULL;
        for (size_t i = 0; i < r->n_branches && !best; i++)
            if (r->branches[i]->type == w->type && branch_matches(r->branches[i], w))
                best = r->branches[i];
        for (size_t i = 0; i < r->n_branches && !best; i++)
            if (branch_matches(r->branches[i], w))
                best = r->branches[i];
        if (!best)
            broken(c, path, "cannot be read: writer type \"%s\" is not in the reader union",
                   cstl_avro_node_describe(w));
        else
            check(c, best, w, path);
        return;
    }
    if (r->type != w->type) {
        if (!promotable(w->type, r->type))
            broken(c, path, "changed type from %s to %s, which is not a promotion",
                   cstl_avro_node_describe(w), cstl_avro_node_describe(r));
        return;
    }
    switch (r->type) {
    case CSTL_AVRO_RECORD:
        if (!names_match(r, w))
            broken(c, path, "record \"%s\" was renamed to \"%s\" without an alias", w->fullname,
                   r->fullname);
        else
            check_record(c, r, w, path);
        return;
    case CSTL_AVRO_ENUM:
        if (!names_match(r, w)) {
            broken(c, path, "enum \"%s\" was renamed to \"%s\" without an alias", w->fullname,
                   r->fullname);
            return;
        }
        for (size_t i = 0; i < w->n_symbols; i++) {
            bool found = false;
            for (size_t k = 0; k < r->n_symbols && !found; k++)
                found = strcmp(w->symbols[i], r->symbols[k]) == 0;
            if (!found && r->enum_default < 0)
                broken(c, path, "enum \"%s\" lost symbol \"%s\" and has no default", r->fullname,
                       w->symbols[i]);
        }
        return;
    case CSTL_AVRO_FIXED:
        if (!names_match(r, w))
            broken(c, path, "fixed \"%s\" was renamed to \"%s\" without an alias", w->fullname,
                   r->fullname);
        else if (r->size != w->size)
            broken(c, path, "fixed \"%s\" changed size from %zu to %zu", r->fullname, w->size,
                   r->size);
        return;
    case CSTL_AVRO_ARRAY:
        snprintf(p, sizeof p, "%s[]", path);
        check(c, r->items, w->items, p);
        return;
    case CSTL_AVRO_MAP:
        snprintf(p, sizeof p, "%s{}", path);
        check(c, r->items, w->items, p);
        return;
    default:
        return;
    }
}

int cstl_schema_compat_check(const cstl_avro_node *reader,
                             const cstl_avro_node *writer,
                             const char *label,
                             cstl_schema_report *report)
{
    checker *c = cstl_xcalloc(1, sizeof(*c));
    c->label = label ? label : "schema";
    c->report = report;
    check(c, reader, writer, "");
    int rc = c->broken ? CSTL_ESCHEMA : 0;
    free(c);
    return rc;
}
