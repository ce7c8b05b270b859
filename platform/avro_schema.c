/*
 * avro_schema.c - parses Avro schema JSON into a cstl_avro_node tree, computes its Parsing
 * Canonical Form and CRC-64-AVRO fingerprint (see avro_schema.h).
 *
 * Invariants: every node and string of a schema is allocated in the schema's own list and freed
 * with it; named types are registered before their fields are parsed, so recursive references
 * resolve to the same node. Parsing is re-entrant: no global state except the CRC table, built
 * once under pthread_once.
 */
#include "platform/avro_schema.h"

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cstl_avro_schema {
    json_t *json;  /* owns the defaults the fields borrow */
    void **allocs; /* every allocation of the tree */
    size_t n_allocs, cap_allocs;
    cstl_avro_node **named; /* named types, for references by name */
    size_t n_named, cap_named;
    const cstl_avro_node *root;
    char *canonical;
    uint64_t fingerprint;
};

/* ---- CRC-64-AVRO --------------------------------------------------------------------------- */

#define CRC64_AVRO_EMPTY UINT64_C(0xc15d213aa4d7a795)

static uint64_t crc64_table[256];
static pthread_once_t crc64_once = PTHREAD_ONCE_INIT;

static void crc64_init(void)
{
    for (int i = 0; i < 256; i++) {
        uint64_t fp = (uint64_t)i;
        for (int j = 0; j < 8; j++)
            fp = (fp >> 1) ^ (CRC64_AVRO_EMPTY & (0 - (fp & 1)));
        crc64_table[i] = fp;
    }
}

uint64_t cstl_avro_crc64(const void *data, size_t len)
{
    pthread_once(&crc64_once, crc64_init);
    const unsigned char *p = data;
    uint64_t fp = CRC64_AVRO_EMPTY;
    for (size_t i = 0; i < len; i++)
        fp = (fp >> 8) ^ crc64_table[(fp ^ p[i]) & 0xff];
    return fp;
}

/* ---- allocation within a schema ------------------------------------------------------------ */

static void *sch_alloc(cstl_avro_schema *s, size_t size)
{
    if (s->n_allocs == s->cap_allocs) {
        s->cap_allocs = s->cap_allocs ? s->cap_allocs * 2 : 32;
        s->allocs = cstl_xrealloc(s->allocs, s->cap_allocs * sizeof(void *));
    }
    void *p = cstl_xcalloc(1, size ? size : 1);
    s->allocs[s->n_allocs++] = p;
    return p;
}

static char *sch_strdup(cstl_avro_schema *s, const char *text)
{
    size_t n = strlen(text);
    char *p = sch_alloc(s, n + 1);
    memcpy(p, text, n);
    return p;
}

const char *cstl_avro_type_name(cstl_avro_type type)
{
    static const char *const names[] = {"null",   "boolean", "int",    "long",   "float",
                                        "double", "bytes",   "string", "record", "enum",
                                        "array",  "map",     "union",  "fixed"};
    return (unsigned)type < CSTL_ARRAY_LEN(names) ? names[type] : "?";
}

const char *cstl_avro_node_describe(const cstl_avro_node *node)
{
    return node->fullname ? node->fullname : cstl_avro_type_name(node->type);
}

static int primitive_type(const char *name)
{
    for (int t = CSTL_AVRO_NULL; t <= CSTL_AVRO_STRING; t++)
        if (strcmp(name, cstl_avro_type_name((cstl_avro_type)t)) == 0)
            return t;
    return -1;
}

/* ---- parsing ------------------------------------------------------------------------------- */

typedef struct parser {
    cstl_avro_schema *s;
    cstl_error *err;
} parser;

static bool valid_simple_name(const char *p, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)p[0]) || p[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)p[i]) || p[i] == '_'))
            return false;
    return true;
}

static bool valid_full_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > CSTL_AVRO_NAME_MAX)
        return false;
    const char *start = name;
    for (;;) {
        const char *dot = strchr(start, '.');
        size_t n = dot ? (size_t)(dot - start) : strlen(start);
        if (!valid_simple_name(start, n))
            return false;
        if (!dot)
            return true;
        start = dot + 1;
    }
}

/* Joins namespace and name into a full name (a dotted name is already full). */
static char *make_fullname(parser *ps, const char *ns, const char *name)
{
    if (strchr(name, '.') || ns == NULL || ns[0] == '\0')
        return sch_strdup(ps->s, name);
    size_t n = strlen(ns) + 1 + strlen(name) + 1;
    char *p = sch_alloc(ps->s, n);
    snprintf(p, n, "%s.%s", ns, name);
    return p;
}

static const cstl_avro_node *lookup_named(parser *ps, const char *ns, const char *name)
{
    char buf[2 * CSTL_AVRO_NAME_MAX + 2];
    if (!strchr(name, '.') && ns && ns[0]) {
        snprintf(buf, sizeof buf, "%s.%s", ns, name);
        for (size_t i = 0; i < ps->s->n_named; i++)
            if (strcmp(ps->s->named[i]->fullname, buf) == 0)
                return ps->s->named[i];
    }
    for (size_t i = 0; i < ps->s->n_named; i++)
        if (strcmp(ps->s->named[i]->fullname, name) == 0)
            return ps->s->named[i];
    return NULL;
}

static int register_named(parser *ps, cstl_avro_node *node)
{
    if (lookup_named(ps, NULL, node->fullname))
        return cstl_error_set(ps->err, CSTL_ESCHEMA, "type \"%s\" is defined twice",
                              node->fullname);
    if (ps->s->n_named == ps->s->cap_named) {
        ps->s->cap_named = ps->s->cap_named ? ps->s->cap_named * 2 : 8;
        ps->s->named = cstl_xrealloc(ps->s->named, ps->s->cap_named * sizeof(*ps->s->named));
    }
    ps->s->named[ps->s->n_named++] = node;
    return 0;
}

static const char *last_dot_name(const char *fullname)
{
    const char *dot = strrchr(fullname, '.');
    return dot ? dot + 1 : fullname;
}

/* The namespace a named type's fullname implies, for the types nested in it. */
static char *namespace_of(parser *ps, const char *fullname)
{
    const char *dot = strrchr(fullname, '.');
    if (!dot)
        return sch_strdup(ps->s, "");
    char *p = sch_alloc(ps->s, (size_t)(dot - fullname) + 1);
    memcpy(p, fullname, (size_t)(dot - fullname));
    return p;
}

static const cstl_avro_node *parse_type(parser *ps, json_t *j, const char *ns, int depth);

/* Reads "name"/"namespace"/"aliases" of a named type into node; returns its namespace. */
static const char *parse_name(parser *ps, json_t *j, const char *ns, cstl_avro_node *node)
{
    const char *name = json_string_value(json_object_get(j, "name"));
    if (name == NULL) {
        cstl_error_set(ps->err, CSTL_ESCHEMA, "a %s type has no \"name\"",
                       cstl_avro_type_name(node->type));
        return NULL;
    }
    json_t *jns = json_object_get(j, "namespace");
    if (jns && !json_is_string(jns) && !json_is_null(jns)) {
        cstl_error_set(ps->err, CSTL_ESCHEMA, "the namespace of \"%s\" is not a string", name);
        return NULL;
    }
    if (jns && json_is_string(jns))
        ns = json_string_value(jns);
    node->fullname = make_fullname(ps, ns, name);
    if (!valid_full_name(node->fullname)) {
        cstl_error_set(ps->err, CSTL_ESCHEMA, "invalid type name \"%s\"", node->fullname);
        return NULL;
    }
    node->name = last_dot_name(node->fullname);
    const char *own_ns = namespace_of(ps, node->fullname);
    json_t *aliases = json_object_get(j, "aliases");
    if (aliases) {
        if (!json_is_array(aliases)) {
            cstl_error_set(ps->err, CSTL_ESCHEMA, "the aliases of \"%s\" are not an array", name);
            return NULL;
        }
        const char **a = sch_alloc(ps->s, json_array_size(aliases) * sizeof(char *));
        for (size_t i = 0; i < json_array_size(aliases); i++) {
            const char *alias = json_string_value(json_array_get(aliases, i));
            if (!alias || !valid_full_name(alias)) {
                cstl_error_set(ps->err, CSTL_ESCHEMA, "invalid alias of \"%s\"", node->fullname);
                return NULL;
            }
            a[i] = make_fullname(ps, own_ns, alias);
        }
        node->aliases = a;
        node->n_aliases = json_array_size(aliases);
    }
    if (register_named(ps, node) != 0)
        return NULL;
    return own_ns;
}

static bool default_valid(const cstl_avro_node *t, json_t *v, int depth)
{
    if (depth > CSTL_AVRO_SCHEMA_MAX_DEPTH)
        return false;
    switch (t->type) {
    case CSTL_AVRO_NULL:
        return json_is_null(v);
    case CSTL_AVRO_BOOLEAN:
        return json_is_boolean(v);
    case CSTL_AVRO_INT:
        return json_is_integer(v) && json_integer_value(v) >= INT32_MIN &&
               json_integer_value(v) <= INT32_MAX;
    case CSTL_AVRO_LONG:
        return json_is_integer(v);
    case CSTL_AVRO_FLOAT:
    case CSTL_AVRO_DOUBLE:
        return json_is_number(v);
    case CSTL_AVRO_BYTES:
    case CSTL_AVRO_STRING:
        return json_is_string(v);
    case CSTL_AVRO_FIXED:
        return json_is_string(v) && json_string_length(v) == t->size;
    case CSTL_AVRO_ENUM:
        if (!json_is_string(v))
            return false;
        for (size_t i = 0; i < t->n_symbols; i++)
            if (strcmp(t->symbols[i], json_string_value(v)) == 0)
                return true;
        return false;
    case CSTL_AVRO_ARRAY: {
        if (!json_is_array(v))
            return false;
        for (size_t i = 0; i < json_array_size(v); i++)
            if (!default_valid(t->items, json_array_get(v, i), depth + 1))
                return false;
        return true;
    }
    case CSTL_AVRO_MAP: {
        if (!json_is_object(v))
            return false;
        const char *k;
        json_t *e;
        json_object_foreach(v, k, e) if (!default_valid(t->items, e, depth + 1)) return false;
        return true;
    }
    case CSTL_AVRO_UNION:
        return t->n_branches > 0 && default_valid(t->branches[0], v, depth + 1);
    case CSTL_AVRO_RECORD: {
        if (!json_is_object(v))
            return false;
        for (size_t i = 0; i < t->n_fields; i++) {
            json_t *fv = json_object_get(v, t->fields[i].name);
            if (fv ? !default_valid(t->fields[i].type, fv, depth + 1)
                   : t->fields[i].default_value == NULL)
                return false;
        }
        return true;
    }
    }
    return false;
}

static const cstl_avro_node *
parse_record(parser *ps, json_t *j, const char *ns, int depth, cstl_avro_node *node)
{
    const char *own_ns = parse_name(ps, j, ns, node);
    if (!own_ns)
        return NULL;
    json_t *fields = json_object_get(j, "fields");
    if (!json_is_array(fields)) {
        cstl_error_set(ps->err, CSTL_ESCHEMA, "record \"%s\" has no \"fields\" array",
                       node->fullname);
        return NULL;
    }
    size_t n = json_array_size(fields);
    cstl_avro_field *f = sch_alloc(ps->s, n * sizeof(*f));
    node->fields = f;
    for (size_t i = 0; i < n; i++) {
        json_t *jf = json_array_get(fields, i);
        const char *name = json_string_value(json_object_get(jf, "name"));
        if (!name || !valid_simple_name(name, strlen(name))) {
            cstl_error_set(ps->err, CSTL_ESCHEMA, "record \"%s\" has a field with an invalid name",
                           node->fullname);
            return NULL;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(f[k].name, name) == 0) {
                cstl_error_set(ps->err, CSTL_ESCHEMA, "record \"%s\" has two fields \"%s\"",
                               node->fullname, name);
                return NULL;
            }
        f[i].name = sch_strdup(ps->s, name);
        json_t *jt = json_object_get(jf, "type");
        if (!jt) {
            cstl_error_set(ps->err, CSTL_ESCHEMA, "field \"%s\" of \"%s\" has no type", name,
                           node->fullname);
            return NULL;
        }
        f[i].type = parse_type(ps, jt, own_ns, depth + 1);
        if (!f[i].type)
            return NULL;
        json_t *aliases = json_object_get(jf, "aliases");
        if (json_is_array(aliases)) {
            const char **a = sch_alloc(ps->s, json_array_size(aliases) * sizeof(char *));
            for (size_t k = 0; k < json_array_size(aliases); k++) {
                const char *alias = json_string_value(json_array_get(aliases, k));
                if (!alias || !valid_simple_name(alias, strlen(alias))) {
                    cstl_error_set(ps->err, CSTL_ESCHEMA, "invalid alias of field \"%s\"", name);
                    return NULL;
                }
                a[k] = sch_strdup(ps->s, alias);
            }
            f[i].aliases = a;
            f[i].n_aliases = json_array_size(aliases);
        }
        f[i].default_value = json_object_get(jf, "default");
        node->n_fields = i + 1;
        if (f[i].default_value && !default_valid(f[i].type, f[i].default_value, 0)) {
            cstl_error_set(ps->err, CSTL_ESCHEMA,
                           "the default of field \"%s\" of \"%s\" does not match its type", name,
                           node->fullname);
            return NULL;
        }
    }
    return node;
}

static const cstl_avro_node *parse_enum(parser *ps, json_t *j, const char *ns, cstl_avro_node *node)
{
    if (!parse_name(ps, j, ns, node))
        return NULL;
    json_t *symbols = json_object_get(j, "symbols");
    if (!json_is_array(symbols)) {
        cstl_error_set(ps->err, CSTL_ESCHEMA, "enum \"%s\" has no \"symbols\" array",
                       node->fullname);
        return NULL;
    }
    size_t n = json_array_size(symbols);
    const char **sy = sch_alloc(ps->s, n * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const char *sym = json_string_value(json_array_get(symbols, i));
        if (!sym || !valid_simple_name(sym, strlen(sym))) {
            cstl_error_set(ps->err, CSTL_ESCHEMA, "enum \"%s\" has an invalid symbol",
                           node->fullname);
            return NULL;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(sy[k], sym) == 0) {
                cstl_error_set(ps->err, CSTL_ESCHEMA, "enum \"%s\" has symbol \"%s\" twice",
                               node->fullname, sym);
                return NULL;
            }
        sy[i] = sch_strdup(ps->s, sym);
    }
    node->symbols = sy;
    node->n_symbols = n;
    node->enum_default = -1;
    json_t *def = json_object_get(j, "default");
    if (def) {
        for (size_t i = 0; i < n && json_is_string(def); i++)
            if (strcmp(sy[i], json_string_value(def)) == 0)
                node->enum_default = (int)i;
        if (node->enum_default < 0) {
            cstl_error_set(ps->err, CSTL_ESCHEMA, "the default of enum \"%s\" is not a symbol",
                           node->fullname);
            return NULL;
        }
    }
    return node;
}

static bool same_union_kind(const cstl_avro_node *a, const cstl_avro_node *b)
{
    if (a->type != b->type)
        return false;
    if (a->fullname && b->fullname)
        return strcmp(a->fullname, b->fullname) == 0;
    return true;
}

static const cstl_avro_node *parse_union(parser *ps, json_t *j, const char *ns, int depth)
{
    cstl_avro_node *node = sch_alloc(ps->s, sizeof(*node));
    node->type = CSTL_AVRO_UNION;
    size_t n = json_array_size(j);
    const cstl_avro_node **br = sch_alloc(ps->s, n * sizeof(*br));
    for (size_t i = 0; i < n; i++) {
        br[i] = parse_type(ps, json_array_get(j, i), ns, depth + 1);
        if (!br[i])
            return NULL;
        if (br[i]->type == CSTL_AVRO_UNION) {
            cstl_error_set(ps->err, CSTL_ESCHEMA, "a union contains a union directly");
            return NULL;
        }
        for (size_t k = 0; k < i; k++)
            if (same_union_kind(br[k], br[i])) {
                cstl_error_set(ps->err, CSTL_ESCHEMA, "a union contains \"%s\" twice",
                               cstl_avro_node_describe(br[i]));
                return NULL;
            }
    }
    node->branches = br;
    node->n_branches = n;
    return node;
}

static const cstl_avro_node *parse_type(parser *ps, json_t *j, const char *ns, int depth)
{
    if (depth > CSTL_AVRO_SCHEMA_MAX_DEPTH) {
        cstl_error_set(ps->err, CSTL_ESCHEMA, "types are nested more than %d deep",
                       CSTL_AVRO_SCHEMA_MAX_DEPTH);
        return NULL;
    }
    if (json_is_array(j))
        return parse_union(ps, j, ns, depth);
    const char *tname = NULL;
    if (json_is_string(j)) {
        tname = json_string_value(j);
        int prim = primitive_type(tname);
        if (prim < 0) {
            const cstl_avro_node *named = lookup_named(ps, ns, tname);
            if (!named)
                cstl_error_set(ps->err, CSTL_ESCHEMA, "unknown type \"%s\"", tname);
            return named;
        }
        cstl_avro_node *node = sch_alloc(ps->s, sizeof(*node));
        node->type = (cstl_avro_type)prim;
        return node;
    }
    if (!json_is_object(j)) {
        cstl_error_set(ps->err, CSTL_ESCHEMA, "a type is neither a name, an object nor a union");
        return NULL;
    }
    json_t *jt = json_object_get(j, "type");
    if (jt && !json_is_string(jt))
        return parse_type(ps, jt, ns, depth + 1);
    tname = json_string_value(jt);
    if (!tname) {
        cstl_error_set(ps->err, CSTL_ESCHEMA, "a type object has no \"type\"");
        return NULL;
    }
    if (primitive_type(tname) >= 0)
        return parse_type(ps, jt, ns, depth + 1);
    cstl_avro_node *node = sch_alloc(ps->s, sizeof(*node));
    if (strcmp(tname, "record") == 0 || strcmp(tname, "error") == 0) {
        node->type = CSTL_AVRO_RECORD;
        return parse_record(ps, j, ns, depth, node);
    }
    if (strcmp(tname, "enum") == 0) {
        node->type = CSTL_AVRO_ENUM;
        return parse_enum(ps, j, ns, node);
    }
    if (strcmp(tname, "array") == 0 || strcmp(tname, "map") == 0) {
        node->type = tname[0] == 'a' ? CSTL_AVRO_ARRAY : CSTL_AVRO_MAP;
        json_t *items = json_object_get(j, node->type == CSTL_AVRO_ARRAY ? "items" : "values");
        if (!items) {
            cstl_error_set(ps->err, CSTL_ESCHEMA, "an %s has no \"%s\"", tname,
                           node->type == CSTL_AVRO_ARRAY ? "items" : "values");
            return NULL;
        }
        node->items = parse_type(ps, items, ns, depth + 1);
        return node->items ? node : NULL;
    }
    if (strcmp(tname, "fixed") == 0) {
        node->type = CSTL_AVRO_FIXED;
        json_t *size = json_object_get(j, "size");
        if (!json_is_integer(size) || json_integer_value(size) < 0 ||
            json_integer_value(size) > (1 << 20)) {
            cstl_error_set(ps->err, CSTL_ESCHEMA, "a fixed type has no valid \"size\"");
            return NULL;
        }
        node->size = (size_t)json_integer_value(size);
        return parse_name(ps, j, ns, node) ? node : NULL;
    }
    const cstl_avro_node *named = lookup_named(ps, ns, tname);
    if (!named)
        cstl_error_set(ps->err, CSTL_ESCHEMA, "unknown type \"%s\"", tname);
    return named;
}

/* ---- canonical form ------------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 256;
        b->p = cstl_xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* A JSON string literal: names and symbols are [A-Za-z0-9_.] only, so nothing needs escaping. */
static void sb_quoted(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    sb_str(b, s);
    sb_put(b, "\"", 1);
}

typedef struct seen {
    const cstl_avro_node **v;
    size_t n, cap;
} seen;

static bool seen_add(seen *s, const cstl_avro_node *node)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i] == node)
            return false;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->v = cstl_xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = node;
    return true;
}

static void canon(sbuf *b, seen *s, const cstl_avro_node *t)
{
    char num[32];
    if (t->fullname && !seen_add(s, t)) {
        sb_quoted(b, t->fullname); /* [FULLNAMES]: later uses are references */
        return;
    }
    switch (t->type) {
    case CSTL_AVRO_RECORD:
        sb_str(b, "{\"name\":");
        sb_quoted(b, t->fullname);
        sb_str(b, ",\"type\":\"record\",\"fields\":[");
        for (size_t i = 0; i < t->n_fields; i++) {
            sb_str(b, i ? ",{\"name\":" : "{\"name\":");
            sb_quoted(b, t->fields[i].name);
            sb_str(b, ",\"type\":");
            canon(b, s, t->fields[i].type);
            sb_str(b, "}");
        }
        sb_str(b, "]}");
        return;
    case CSTL_AVRO_ENUM:
        sb_str(b, "{\"name\":");
        sb_quoted(b, t->fullname);
        sb_str(b, ",\"type\":\"enum\",\"symbols\":[");
        for (size_t i = 0; i < t->n_symbols; i++) {
            if (i)
                sb_str(b, ",");
            sb_quoted(b, t->symbols[i]);
        }
        sb_str(b, "]}");
        return;
    case CSTL_AVRO_FIXED:
        sb_str(b, "{\"name\":");
        sb_quoted(b, t->fullname);
        snprintf(num, sizeof num, ",\"type\":\"fixed\",\"size\":%zu}", t->size);
        sb_str(b, num);
        return;
    case CSTL_AVRO_ARRAY:
    case CSTL_AVRO_MAP:
        sb_str(b, t->type == CSTL_AVRO_ARRAY ? "{\"type\":\"array\",\"items\":"
                                             : "{\"type\":\"map\",\"values\":");
        canon(b, s, t->items);
        sb_str(b, "}");
        return;
    case CSTL_AVRO_UNION:
        sb_str(b, "[");
        for (size_t i = 0; i < t->n_branches; i++) {
            if (i)
                sb_str(b, ",");
            canon(b, s, t->branches[i]);
        }
        sb_str(b, "]");
        return;
    default:
        sb_quoted(b, cstl_avro_type_name(t->type));
        return;
    }
}

/* ---- public -------------------------------------------------------------------------------- */

cstl_avro_schema *cstl_avro_schema_parse(const char *text, size_t len, cstl_error *err)
{
    if (text == NULL) {
        cstl_error_set(err, CSTL_EINVAL, "no schema text");
        return NULL;
    }
    if (len > CSTL_AVRO_SCHEMA_MAX_TEXT) {
        cstl_error_set(err, CSTL_ETOOBIG, "schema text of %zu bytes exceeds the %u byte limit", len,
                       CSTL_AVRO_SCHEMA_MAX_TEXT);
        return NULL;
    }
    json_error_t jerr;
    json_t *json = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!json) {
        cstl_error_set(err, CSTL_ESCHEMA, "schema is not valid json: %s (line %d)", jerr.text,
                       jerr.line);
        return NULL;
    }
    cstl_avro_schema *s = cstl_xcalloc(1, sizeof(*s));
    s->json = json;
    parser ps = {s, err};
    s->root = parse_type(&ps, json, "", 0);
    if (!s->root) {
        cstl_avro_schema_free(s);
        return NULL;
    }
    sbuf b = {0};
    seen sn = {0};
    canon(&b, &sn, s->root);
    free(sn.v);
    s->canonical = b.p;
    s->fingerprint = cstl_avro_crc64(b.p, b.len);
    return s;
}

void cstl_avro_schema_free(cstl_avro_schema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_allocs; i++)
        free(s->allocs[i]);
    free(s->allocs);
    free(s->named);
    free(s->canonical);
    json_decref(s->json);
    free(s);
}

const cstl_avro_node *cstl_avro_schema_root(const cstl_avro_schema *s)
{
    return s->root;
}

const char *cstl_avro_schema_canonical(const cstl_avro_schema *s)
{
    return s->canonical;
}

uint64_t cstl_avro_schema_fingerprint(const cstl_avro_schema *s)
{
    return s->fingerprint;
}
