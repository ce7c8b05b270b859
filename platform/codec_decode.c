/*
 * codec_decode.c - the bounded, resolving Avro binary decoder behind cstl_codec_decode.
 *
 * Reads Avro binary written with a writer schema into an avro-c generic value of a reader schema,
 * applying the Avro schema resolution rules as it goes. It trusts nothing in the input:
 *   - a string, bytes or map key length must fit in what is left of the input, so no allocation is
 *     ever larger than the input itself;
 *   - an array or map block count must fit in the bytes left (unless its items can be empty), and
 *     all blocks of a message together hold at most CSTL_CODEC_MAX_ITEMS values;
 *   - records, arrays, maps and unions nest at most CSTL_CODEC_MAX_DEPTH deep;
 *   - varints are at most 10 bytes, union indexes and enum ordinals are range-checked, booleans
 *     are 0 or 1, and the value must end exactly at the end of the input.
 * Re-entrant: all state lives in the per-call decoder.
 */
#include "platform/codec.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RECORD_FIELDS 1024

typedef struct dec {
    const unsigned char *base, *p, *end;
    size_t items;
    cstl_error *err;
    char *scratch; /* NUL-terminated copies for avro-c's string setters */
    size_t scratch_cap;
    char small[256];
} dec;

static size_t left(const dec *d)
{
    return (size_t)(d->end - d->p);
}
static size_t off(const dec *d)
{
    return (size_t)(d->p - d->base);
}

static int fail(dec *d, const char *what)
{
    return cstl_error_set(d->err, CSTL_EDECODE, "%s at offset %zu", what, off(d));
}

static int read_long(dec *d, int64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (d->p >= d->end)
            return fail(d, "truncated input in a varint");
        unsigned char b = *d->p++;
        if (shift == 63 && (b & 0x7e))
            return fail(d, "varint overflows 64 bits");
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)((v >> 1) ^ (0 - (v & 1)));
            return 0;
        }
    }
    return fail(d, "varint longer than 10 bytes");
}

static int read_int(dec *d, int32_t *out)
{
    int64_t v = 0;
    int rc = read_long(d, &v);
    if (rc != 0)
        return rc;
    if (v < INT32_MIN || v > INT32_MAX)
        return fail(d, "int out of range");
    *out = (int32_t)v;
    return 0;
}

/* A length prefix: non-negative and no larger than the input left. */
static int read_len(dec *d, size_t *out)
{
    int64_t v = 0;
    int rc = read_long(d, &v);
    if (rc != 0)
        return rc;
    if (v < 0)
        return cstl_error_set(d->err, CSTL_EDECODE, "negative length %" PRId64 " at offset %zu", v,
                              off(d));
    if ((uint64_t)v > left(d))
        return cstl_error_set(d->err, CSTL_EDECODE,
                              "length %" PRId64 " at offset %zu exceeds the %zu bytes left", v,
                              off(d), left(d));
    *out = (size_t)v;
    return 0;
}

static int take(dec *d, size_t n, const unsigned char **out)
{
    if (n > left(d))
        return cstl_error_set(d->err, CSTL_EDECODE,
                              "truncated input: %zu bytes needed at offset %zu, %zu left", n,
                              off(d), left(d));
    *out = d->p;
    d->p += n;
    return 0;
}

/* The smallest encoding of a value of t: lets zero-byte items (null, empty records) be counted
 * against CSTL_CODEC_MAX_ITEMS rather than against the bytes left. */
static size_t min_size(const cstl_avro_node *t, int depth)
{
    if (depth > CSTL_CODEC_MAX_DEPTH)
        return 0;
    switch (t->type) {
    case CSTL_AVRO_NULL:
        return 0;
    case CSTL_AVRO_FLOAT:
        return 4;
    case CSTL_AVRO_DOUBLE:
        return 8;
    case CSTL_AVRO_FIXED:
        return t->size;
    case CSTL_AVRO_RECORD: {
        size_t n = 0;
        for (size_t i = 0; i < t->n_fields; i++)
            n += min_size(t->fields[i].type, depth + 1);
        return n;
    }
    default:
        return 1;
    }
}

/* Reads a block count of an array or map; 0 ends the value. */
static int read_block(dec *d, const cstl_avro_node *item, size_t *count)
{
    int64_t n = 0;
    int rc = read_long(d, &n);
    if (rc != 0)
        return rc;
    if (n < 0) {
        if (n == INT64_MIN)
            return fail(d, "invalid block count");
        n = -n;
        size_t bytes = 0;
        if ((rc = read_len(d, &bytes)) != 0)
            return rc;
    }
    size_t per = item ? min_size(item, 0) : 1; /* a map entry has a key: at least 1 byte */
    if (per > 0 && (uint64_t)n > left(d) / per)
        return cstl_error_set(d->err, CSTL_EDECODE,
                              "block of %" PRId64 " items at offset %zu exceeds the %zu bytes left",
                              n, off(d), left(d));
    if ((uint64_t)n > CSTL_CODEC_MAX_ITEMS - d->items)
        return cstl_error_set(d->err, CSTL_EDECODE, "more than %u items in one message",
                              CSTL_CODEC_MAX_ITEMS);
    d->items += (size_t)n;
    *count = (size_t)n;
    return 0;
}

static const char *scratch_copy(dec *d, const unsigned char *s, size_t n)
{
    char *buf = d->small;
    if (n + 1 > sizeof d->small) {
        if (n + 1 > d->scratch_cap) {
            d->scratch = cstl_xrealloc(d->scratch, n + 1);
            d->scratch_cap = n + 1;
        }
        buf = d->scratch;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

static int avro_fail(dec *d, const char *what)
{
    return cstl_error_set(d->err, CSTL_EINTERNAL, "avro-c cannot %s: %s", what, avro_strerror());
}

/* ---- skipping what the reader does not want ----------------------------------------------- */

static int skip(dec *d, const cstl_avro_node *w, int depth)
{
    const unsigned char *p = NULL;
    size_t n = 0;
    int64_t l = 0;
    int rc = 0;
    if (depth > CSTL_CODEC_MAX_DEPTH)
        return fail(d, "values nested too deep");
    switch (w->type) {
    case CSTL_AVRO_NULL:
        return 0;
    case CSTL_AVRO_BOOLEAN:
        return take(d, 1, &p);
    case CSTL_AVRO_INT:
    case CSTL_AVRO_LONG:
    case CSTL_AVRO_ENUM:
        return read_long(d, &l);
    case CSTL_AVRO_FLOAT:
        return take(d, 4, &p);
    case CSTL_AVRO_DOUBLE:
        return take(d, 8, &p);
    case CSTL_AVRO_FIXED:
        return take(d, w->size, &p);
    case CSTL_AVRO_BYTES:
    case CSTL_AVRO_STRING:
        if ((rc = read_len(d, &n)) != 0)
            return rc;
        return take(d, n, &p);
    case CSTL_AVRO_RECORD:
        for (size_t i = 0; i < w->n_fields && rc == 0; i++)
            rc = skip(d, w->fields[i].type, depth + 1);
        return rc;
    case CSTL_AVRO_UNION:
        if ((rc = read_long(d, &l)) != 0)
            return rc;
        if (l < 0 || (uint64_t)l >= w->n_branches)
            return fail(d, "union index out of range");
        return skip(d, w->branches[l], depth + 1);
    case CSTL_AVRO_ARRAY:
    case CSTL_AVRO_MAP:
        for (;;) {
            if ((rc = read_block(d, w->type == CSTL_AVRO_ARRAY ? w->items : NULL, &n)) != 0)
                return rc;
            if (n == 0)
                return 0;
            for (size_t i = 0, k; i < n; i++) {
                if (w->type == CSTL_AVRO_MAP &&
                    ((rc = read_len(d, &k)) != 0 || (rc = take(d, k, &p)) != 0))
                    return rc;
                if ((rc = skip(d, w->items, depth + 1)) != 0)
                    return rc;
            }
        }
    }
    return fail(d, "unknown writer type");
}

/* ---- resolution ---------------------------------------------------------------------------- */

static bool names_match(const cstl_avro_node *w, const cstl_avro_node *r)
{
    if (strcmp(w->fullname, r->fullname) == 0 || strcmp(w->name, r->name) == 0)
        return true;
    for (size_t i = 0; i < r->n_aliases; i++)
        if (strcmp(r->aliases[i], w->fullname) == 0)
            return true;
    return false;
}

/* Whether a writer type can be read as a reader type: 2 same, 1 by promotion, 0 not. */
static int readable(const cstl_avro_node *w, const cstl_avro_node *r)
{
    if (w->type == r->type) {
        if (w->fullname && r->fullname && !names_match(w, r))
            return 0;
        return 2;
    }
    switch (w->type) {
    case CSTL_AVRO_INT:
        return r->type == CSTL_AVRO_LONG || r->type == CSTL_AVRO_FLOAT ||
               r->type == CSTL_AVRO_DOUBLE;
    case CSTL_AVRO_LONG:
        return r->type == CSTL_AVRO_FLOAT || r->type == CSTL_AVRO_DOUBLE;
    case CSTL_AVRO_FLOAT:
        return r->type == CSTL_AVRO_DOUBLE;
    case CSTL_AVRO_STRING:
        return r->type == CSTL_AVRO_BYTES;
    case CSTL_AVRO_BYTES:
        return r->type == CSTL_AVRO_STRING;
    default:
        return 0;
    }
}

/* The reader union branch a writer type goes to: an exact match first, then a promotion. */
static int pick_branch(const cstl_avro_node *w, const cstl_avro_node *ru)
{
    for (int want = 2; want >= 1; want--)
        for (size_t i = 0; i < ru->n_branches; i++)
            if (readable(w, ru->branches[i]) == want)
                return (int)i;
    return -1;
}

static int
decode(dec *d, const cstl_avro_node *w, const cstl_avro_node *r, avro_value_t *v, int depth);

static int
decode_record(dec *d, const cstl_avro_node *w, const cstl_avro_node *r, avro_value_t *v, int depth)
{
    int rc;
    avro_value_t child;
    if (w == r) { /* the same schema: fields map one to one */
        for (size_t i = 0; i < w->n_fields; i++) {
            if (avro_value_get_by_index(v, i, &child, NULL) != 0)
                return avro_fail(d, "get a record field");
            if ((rc = decode(d, w->fields[i].type, r->fields[i].type, &child, depth + 1)) != 0)
                return rc;
        }
        return 0;
    }
    if (r->n_fields > MAX_RECORD_FIELDS)
        return cstl_error_set(d->err, CSTL_ESCHEMA, "record \"%s\" has too many fields",
                              r->fullname);
    uint64_t set[MAX_RECORD_FIELDS / 64] = {0};
    for (size_t i = 0; i < w->n_fields; i++) {
        const cstl_avro_field *wf = &w->fields[i];
        size_t j = r->n_fields;
        for (size_t k = 0; k < r->n_fields && j == r->n_fields; k++) {
            if (strcmp(r->fields[k].name, wf->name) == 0)
                j = k;
            for (size_t a = 0; a < r->fields[k].n_aliases && j == r->n_fields; a++)
                if (strcmp(r->fields[k].aliases[a], wf->name) == 0)
                    j = k;
        }
        if (j == r->n_fields) { /* removed from the reader: skip it */
            if ((rc = skip(d, wf->type, depth + 1)) != 0)
                return rc;
            continue;
        }
        if (avro_value_get_by_index(v, j, &child, NULL) != 0)
            return avro_fail(d, "get a record field");
        if ((rc = decode(d, wf->type, r->fields[j].type, &child, depth + 1)) != 0)
            return rc;
        set[j / 64] |= UINT64_C(1) << (j % 64);
    }
    for (size_t j = 0; j < r->n_fields; j++) {
        if (set[j / 64] & (UINT64_C(1) << (j % 64)))
            continue;
        if (!r->fields[j].default_value)
            return cstl_error_set(d->err, CSTL_ESCHEMA,
                                  "field \"%s\" of \"%s\" is not in the writer schema and has no "
                                  "default",
                                  r->fields[j].name, r->fullname);
        if (avro_value_get_by_index(v, j, &child, NULL) != 0)
            return avro_fail(d, "get a record field");
        if ((rc = cstl_codec_value_from_json(r->fields[j].type, r->fields[j].default_value, &child,
                                             d->err)) != 0)
            return rc;
    }
    return 0;
}

static int decode_string(dec *d, const cstl_avro_node *r, avro_value_t *v)
{
    size_t n = 0;
    const unsigned char *p = NULL;
    int rc;
    if ((rc = read_len(d, &n)) != 0 || (rc = take(d, n, &p)) != 0)
        return rc;
    if (r->type == CSTL_AVRO_BYTES)
        rc = avro_value_set_bytes(v, (void *)p, n);
    else
        rc = avro_value_set_string_len(v, scratch_copy(d, p, n), n + 1);
    return rc ? avro_fail(d, "set a string") : 0;
}

static int decode_float(dec *d, const cstl_avro_node *w, const cstl_avro_node *r, avro_value_t *v)
{
    const unsigned char *p = NULL;
    int rc = take(d, w->type == CSTL_AVRO_FLOAT ? 4 : 8, &p);
    if (rc != 0)
        return rc;
    if (w->type == CSTL_AVRO_FLOAT) {
        uint32_t bits =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        float f;
        memcpy(&f, &bits, 4);
        rc = r->type == CSTL_AVRO_FLOAT ? avro_value_set_float(v, f)
                                        : avro_value_set_double(v, (double)f);
    } else {
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++)
            bits |= (uint64_t)p[i] << (8 * i);
        double x;
        memcpy(&x, &bits, 8);
        rc = avro_value_set_double(v, x);
    }
    return rc ? avro_fail(d, "set a number") : 0;
}

static int decode_number(dec *d, const cstl_avro_node *w, const cstl_avro_node *r, avro_value_t *v)
{
    int64_t x = 0;
    int rc;
    if (w->type == CSTL_AVRO_INT) {
        int32_t i = 0;
        if ((rc = read_int(d, &i)) != 0)
            return rc;
        x = i;
    } else if ((rc = read_long(d, &x)) != 0) {
        return rc;
    }
    switch (r->type) {
    case CSTL_AVRO_INT:
        rc = avro_value_set_int(v, (int32_t)x);
        break;
    case CSTL_AVRO_LONG:
        rc = avro_value_set_long(v, x);
        break;
    case CSTL_AVRO_FLOAT:
        rc = avro_value_set_float(v, (float)x);
        break;
    default:
        rc = avro_value_set_double(v, (double)x);
        break;
    }
    return rc ? avro_fail(d, "set a number") : 0;
}

static int decode_enum(dec *d, const cstl_avro_node *w, const cstl_avro_node *r, avro_value_t *v)
{
    int64_t i = 0;
    int rc = read_long(d, &i);
    if (rc != 0)
        return rc;
    if (i < 0 || (uint64_t)i >= w->n_symbols)
        return fail(d, "enum ordinal out of range");
    int ri = -1;
    if (w == r) {
        ri = (int)i;
    } else {
        for (size_t k = 0; k < r->n_symbols && ri < 0; k++)
            if (strcmp(r->symbols[k], w->symbols[i]) == 0)
                ri = (int)k;
        if (ri < 0)
            ri = r->enum_default;
        if (ri < 0)
            return cstl_error_set(
                d->err, CSTL_ESCHEMA,
                "enum symbol \"%s\" is not in reader \"%s\", which has no default", w->symbols[i],
                r->fullname);
    }
    return avro_value_set_enum(v, ri) ? avro_fail(d, "set an enum") : 0;
}

static int
decode_list(dec *d, const cstl_avro_node *w, const cstl_avro_node *r, avro_value_t *v, int depth)
{
    size_t n = 0;
    int rc;
    avro_value_t child;
    for (;;) {
        if ((rc = read_block(d, w->type == CSTL_AVRO_ARRAY ? w->items : NULL, &n)) != 0)
            return rc;
        if (n == 0)
            return 0;
        for (size_t i = 0; i < n; i++) {
            if (w->type == CSTL_AVRO_ARRAY) {
                if (avro_value_append(v, &child, NULL) != 0)
                    return avro_fail(d, "append to an array");
            } else {
                size_t klen = 0;
                const unsigned char *k = NULL;
                if ((rc = read_len(d, &klen)) != 0 || (rc = take(d, klen, &k)) != 0)
                    return rc;
                if (memchr(k, 0, klen))
                    return fail(d, "map key contains a NUL byte");
                if (avro_value_add(v, scratch_copy(d, k, klen), &child, NULL, NULL) != 0)
                    return avro_fail(d, "add to a map");
            }
            if ((rc = decode(d, w->items, r->items, &child, depth + 1)) != 0)
                return rc;
        }
    }
}

static int
decode(dec *d, const cstl_avro_node *w, const cstl_avro_node *r, avro_value_t *v, int depth)
{
    int rc;
    if (depth > CSTL_CODEC_MAX_DEPTH)
        return fail(d, "values nested too deep");
    if (w->type == CSTL_AVRO_UNION) {
        int64_t i = 0;
        if ((rc = read_long(d, &i)) != 0)
            return rc;
        if (i < 0 || (uint64_t)i >= w->n_branches)
            return fail(d, "union index out of range");
        if (w == r) {
            avro_value_t branch;
            if (avro_value_set_branch(v, (int)i, &branch) != 0)
                return avro_fail(d, "set a union branch");
            return decode(d, w->branches[i], r->branches[i], &branch, depth + 1);
        }
        return decode(d, w->branches[i], r, v, depth + 1);
    }
    if (r->type == CSTL_AVRO_UNION) {
        int b = pick_branch(w, r);
        if (b < 0)
            return cstl_error_set(d->err, CSTL_ESCHEMA,
                                  "writer type \"%s\" is not in the reader union",
                                  cstl_avro_node_describe(w));
        avro_value_t branch;
        if (avro_value_set_branch(v, b, &branch) != 0)
            return avro_fail(d, "set a union branch");
        return decode(d, w, r->branches[b], &branch, depth + 1);
    }
    if (w != r && !readable(w, r))
        return cstl_error_set(d->err, CSTL_ESCHEMA, "writer type \"%s\" cannot be read as \"%s\"",
                              cstl_avro_node_describe(w), cstl_avro_node_describe(r));
    const unsigned char *p = NULL;
    switch (w->type) {
    case CSTL_AVRO_NULL:
        return avro_value_set_null(v) ? avro_fail(d, "set null") : 0;
    case CSTL_AVRO_BOOLEAN:
        if ((rc = take(d, 1, &p)) != 0)
            return rc;
        if (p[0] > 1)
            return fail(d, "boolean is neither 0 nor 1");
        return avro_value_set_boolean(v, p[0]) ? avro_fail(d, "set a boolean") : 0;
    case CSTL_AVRO_INT:
    case CSTL_AVRO_LONG:
        return decode_number(d, w, r, v);
    case CSTL_AVRO_FLOAT:
    case CSTL_AVRO_DOUBLE:
        return decode_float(d, w, r, v);
    case CSTL_AVRO_BYTES:
    case CSTL_AVRO_STRING:
        return decode_string(d, r, v);
    case CSTL_AVRO_FIXED:
        if (w->size != r->size)
            return cstl_error_set(d->err, CSTL_ESCHEMA, "fixed \"%s\" changed size", r->fullname);
        if ((rc = take(d, w->size, &p)) != 0)
            return rc;
        return avro_value_set_fixed(v, (void *)p, w->size) ? avro_fail(d, "set a fixed") : 0;
    case CSTL_AVRO_ENUM:
        return decode_enum(d, w, r, v);
    case CSTL_AVRO_RECORD:
        return decode_record(d, w, r, v, depth);
    case CSTL_AVRO_ARRAY:
    case CSTL_AVRO_MAP:
        return decode_list(d, w, r, v, depth);
    case CSTL_AVRO_UNION:
        break;
    }
    return fail(d, "unknown writer type");
}

int cstl_codec_decode_raw(const void *data,
                          size_t len,
                          const cstl_avro_node *writer,
                          const cstl_avro_node *reader,
                          avro_value_t *out,
                          cstl_error *err)
{
    if ((!data && len) || !writer || !reader || !out)
        return cstl_error_set(err, CSTL_EINVAL, "no input, schema or output value");
    if (len > CSTL_CODEC_MAX_MESSAGE)
        return cstl_error_set(err, CSTL_ETOOBIG, "input of %zu bytes exceeds the %u byte limit",
                              len, CSTL_CODEC_MAX_MESSAGE);
    dec d = {.base = data, .p = data, .end = (const unsigned char *)data + len, .err = err};
    if (avro_value_reset(out) != 0)
        return cstl_error_set(err, CSTL_EINTERNAL, "avro-c cannot reset a value: %s",
                              avro_strerror());
    int rc = decode(&d, writer, reader, out, 0);
    if (rc == 0 && d.p != d.end)
        rc = cstl_error_set(err, CSTL_EDECODE, "%zu trailing bytes after the value at offset %zu",
                            left(&d), off(&d));
    free(d.scratch);
    return rc;
}
