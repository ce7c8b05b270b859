/*
 * codec_json.c - the JSON <-> avro-c value bridge (see codec.h): command bodies arrive as JSON
 * and field defaults are JSON, so both directions walk our schema tree next to the avro-c value.
 *
 * Errors name the path of the offending value ("parameters.command[2]"). Recursion is bounded by
 * the schema's depth (CSTL_AVRO_SCHEMA_MAX_DEPTH) plus CSTL_CODEC_MAX_DEPTH for recursive types.
 * Re-entrant.
 */
#include "platform/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN 256

typedef struct jctx {
    cstl_error *err;
    char path[PATH_MAX_LEN];
} jctx;

static int jfail(jctx *c, const char *what)
{
    return cstl_error_set(c->err, CSTL_EINVAL, "%s at \"%s\"", what,
                          c->path[0] ? c->path : "(root)");
}

/* Appends ".name" or "[i]" to the path; returns the old length to restore. */
static size_t path_push(jctx *c, const char *name, size_t index)
{
    size_t n = strlen(c->path);
    if (name)
        snprintf(c->path + n, PATH_MAX_LEN - n, "%s%s", n ? "." : "", name);
    else
        snprintf(c->path + n, PATH_MAX_LEN - n, "[%zu]", index);
    return n;
}

/* Shallow test: could json be a value of t? Used to pick a union branch. */
static bool accepts(const cstl_avro_node *t, json_t *j)
{
    switch (t->type) {
    case CSTL_AVRO_NULL:
        return json_is_null(j);
    case CSTL_AVRO_BOOLEAN:
        return json_is_boolean(j);
    case CSTL_AVRO_INT:
        return json_is_integer(j) && json_integer_value(j) >= INT32_MIN &&
               json_integer_value(j) <= INT32_MAX;
    case CSTL_AVRO_LONG:
        return json_is_integer(j);
    case CSTL_AVRO_FLOAT:
    case CSTL_AVRO_DOUBLE:
        return json_is_number(j);
    case CSTL_AVRO_STRING:
    case CSTL_AVRO_BYTES:
        return json_is_string(j);
    case CSTL_AVRO_FIXED:
        return json_is_string(j);
    case CSTL_AVRO_ENUM:
        for (size_t i = 0; json_is_string(j) && i < t->n_symbols; i++)
            if (strcmp(t->symbols[i], json_string_value(j)) == 0)
                return true;
        return false;
    case CSTL_AVRO_RECORD:
    case CSTL_AVRO_MAP:
        return json_is_object(j);
    case CSTL_AVRO_ARRAY:
        return json_is_array(j);
    case CSTL_AVRO_UNION:
        return false;
    }
    return false;
}

/* Bytes in JSON: a string whose code points 0-255 are the bytes (the Avro JSON encoding). */
static int latin1_bytes(jctx *c, json_t *j, unsigned char **out, size_t *len)
{
    const unsigned char *s = (const unsigned char *)json_string_value(j);
    size_t n = json_string_length(j), k = 0;
    unsigned char *b = cstl_xmalloc(n + 1);
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            b[k++] = s[i++];
        } else if ((s[i] & 0xe0) == 0xc0 && i + 1 < n && s[i] <= 0xc3) {
            b[k++] = (unsigned char)(((s[i] & 0x1f) << 6) | (s[i + 1] & 0x3f));
            i += 2;
        } else {
            free(b);
            return jfail(c, "bytes must be code points 0 to 255");
        }
    }
    *out = b;
    *len = k;
    return 0;
}

static int from_json(jctx *c, const cstl_avro_node *t, json_t *j, avro_value_t *v, int depth);

static int record_from_json(jctx *c, const cstl_avro_node *t, json_t *j, avro_value_t *v, int depth)
{
    if (!json_is_object(j))
        return jfail(c, "expected an object");
    const char *key;
    json_t *val;
    json_object_foreach(j, key, val)
    {
        bool known = false;
        for (size_t i = 0; i < t->n_fields && !known; i++)
            known = strcmp(t->fields[i].name, key) == 0;
        if (!known) {
            size_t n = path_push(c, key, 0);
            int rc = jfail(c, "unknown field");
            c->path[n] = '\0';
            return rc;
        }
    }
    for (size_t i = 0; i < t->n_fields; i++) {
        const cstl_avro_field *f = &t->fields[i];
        json_t *fv = json_object_get(j, f->name);
        size_t n = path_push(c, f->name, 0);
        if (!fv)
            fv = f->default_value;
        if (!fv)
            return jfail(c, "missing field");
        avro_value_t child;
        if (avro_value_get_by_index(v, i, &child, NULL) != 0)
            return jfail(c, "cannot get the field");
        int rc = from_json(c, f->type, fv, &child, depth + 1);
        if (rc != 0)
            return rc;
        c->path[n] = '\0';
    }
    return 0;
}

static int union_from_json(jctx *c, const cstl_avro_node *t, json_t *j, avro_value_t *v, int depth)
{
    int b = -1;
    for (size_t i = 0; i < t->n_branches && b < 0; i++)
        if (accepts(t->branches[i], j))
            b = (int)i;
    /* the tagged form {"string": "x"} of the Avro JSON encoding */
    if (b < 0 && json_is_object(j) && json_object_size(j) == 1) {
        const char *key = json_object_iter_key(json_object_iter(j));
        for (size_t i = 0; i < t->n_branches && b < 0; i++) {
            const cstl_avro_node *br = t->branches[i];
            if (strcmp(key, cstl_avro_node_describe(br)) == 0 ||
                (br->name && strcmp(key, br->name) == 0)) {
                b = (int)i;
                j = json_object_iter_value(json_object_iter(j));
            }
        }
    }
    if (b < 0)
        return jfail(c, "value matches no type of the union");
    avro_value_t branch;
    if (avro_value_set_branch(v, b, &branch) != 0)
        return jfail(c, "cannot set the union branch");
    return from_json(c, t->branches[b], j, &branch, depth + 1);
}

static int from_json(jctx *c, const cstl_avro_node *t, json_t *j, avro_value_t *v, int depth)
{
    if (depth > CSTL_AVRO_SCHEMA_MAX_DEPTH + CSTL_CODEC_MAX_DEPTH)
        return jfail(c, "value nested too deep");
    int rc = 0;
    switch (t->type) {
    case CSTL_AVRO_NULL:
        if (!json_is_null(j))
            return jfail(c, "expected null");
        rc = avro_value_set_null(v);
        break;
    case CSTL_AVRO_BOOLEAN:
        if (!json_is_boolean(j))
            return jfail(c, "expected a boolean");
        rc = avro_value_set_boolean(v, json_is_true(j));
        break;
    case CSTL_AVRO_INT:
        if (!accepts(t, j))
            return jfail(c, "expected a 32-bit integer");
        rc = avro_value_set_int(v, (int32_t)json_integer_value(j));
        break;
    case CSTL_AVRO_LONG:
        if (!json_is_integer(j))
            return jfail(c, "expected an integer");
        rc = avro_value_set_long(v, json_integer_value(j));
        break;
    case CSTL_AVRO_FLOAT:
    case CSTL_AVRO_DOUBLE:
        if (!json_is_number(j))
            return jfail(c, "expected a number");
        rc = t->type == CSTL_AVRO_FLOAT ? avro_value_set_float(v, (float)json_number_value(j))
                                        : avro_value_set_double(v, json_number_value(j));
        break;
    case CSTL_AVRO_STRING:
        if (!json_is_string(j))
            return jfail(c, "expected a string");
        rc = avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1);
        break;
    case CSTL_AVRO_BYTES:
    case CSTL_AVRO_FIXED: {
        if (!json_is_string(j))
            return jfail(c, "expected a string");
        unsigned char *b;
        size_t n;
        if ((rc = latin1_bytes(c, j, &b, &n)) != 0)
            return rc;
        if (t->type == CSTL_AVRO_FIXED && n != t->size) {
            free(b);
            return jfail(c, "wrong size for a fixed");
        }
        rc = t->type == CSTL_AVRO_BYTES ? avro_value_set_bytes(v, b, n)
                                        : avro_value_set_fixed(v, b, n);
        free(b);
        break;
    }
    case CSTL_AVRO_ENUM:
        if (!accepts(t, j))
            return jfail(c, "expected a symbol of the enum");
        for (size_t i = 0; i < t->n_symbols; i++)
            if (strcmp(t->symbols[i], json_string_value(j)) == 0)
                rc = avro_value_set_enum(v, (int)i);
        break;
    case CSTL_AVRO_RECORD:
        return record_from_json(c, t, j, v, depth);
    case CSTL_AVRO_UNION:
        return union_from_json(c, t, j, v, depth);
    case CSTL_AVRO_ARRAY: {
        if (!json_is_array(j))
            return jfail(c, "expected an array");
        if (json_array_size(j) > CSTL_CODEC_MAX_ITEMS)
            return jfail(c, "array too long");
        avro_value_reset(v);
        for (size_t i = 0; i < json_array_size(j); i++) {
            avro_value_t child;
            if (avro_value_append(v, &child, NULL) != 0)
                return jfail(c, "cannot append");
            size_t n = path_push(c, NULL, i);
            if ((rc = from_json(c, t->items, json_array_get(j, i), &child, depth + 1)) != 0)
                return rc;
            c->path[n] = '\0';
        }
        return 0;
    }
    case CSTL_AVRO_MAP: {
        if (!json_is_object(j))
            return jfail(c, "expected an object");
        avro_value_reset(v);
        const char *key;
        json_t *val;
        json_object_foreach(j, key, val)
        {
            avro_value_t child;
            if (avro_value_add(v, key, &child, NULL, NULL) != 0)
                return jfail(c, "cannot add to a map");
            size_t n = path_push(c, key, 0);
            if ((rc = from_json(c, t->items, val, &child, depth + 1)) != 0)
                return rc;
            c->path[n] = '\0';
        }
        return 0;
    }
    }
    return rc ? jfail(c, "avro-c rejected the value") : 0;
}

int cstl_codec_value_from_json(const cstl_avro_node *node,
                               json_t *json,
                               avro_value_t *value,
                               cstl_error *err)
{
    if (!node || !json || !value)
        return cstl_error_set(err, CSTL_EINVAL, "no schema, json or value");
    jctx c = {.err = err};
    return from_json(&c, node, json, value, 0);
}

static json_t *latin1_string(const unsigned char *b, size_t n)
{
    char *s = cstl_xmalloc(2 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i] < 0x80) {
            s[k++] = (char)b[i];
        } else {
            s[k++] = (char)(0xc0 | (b[i] >> 6));
            s[k++] = (char)(0x80 | (b[i] & 0x3f));
        }
    }
    json_t *j = json_stringn(s, k);
    free(s);
    return j;
}

static json_t *to_json(jctx *c, const cstl_avro_node *t, avro_value_t *v, int depth)
{
    if (depth > CSTL_AVRO_SCHEMA_MAX_DEPTH + CSTL_CODEC_MAX_DEPTH) {
        jfail(c, "value nested too deep");
        return NULL;
    }
    json_t *out = NULL;
    switch (t->type) {
    case CSTL_AVRO_NULL:
        return json_null();
    case CSTL_AVRO_BOOLEAN: {
        int b = 0;
        avro_value_get_boolean(v, &b);
        return json_boolean(b);
    }
    case CSTL_AVRO_INT: {
        int32_t x = 0;
        avro_value_get_int(v, &x);
        return json_integer(x);
    }
    case CSTL_AVRO_LONG: {
        int64_t x = 0;
        avro_value_get_long(v, &x);
        return json_integer(x);
    }
    case CSTL_AVRO_FLOAT: {
        float x = 0;
        avro_value_get_float(v, &x);
        out = json_real((double)x);
        break;
    }
    case CSTL_AVRO_DOUBLE: {
        double x = 0;
        avro_value_get_double(v, &x);
        out = json_real(x);
        break;
    }
    case CSTL_AVRO_STRING: {
        const char *s = NULL;
        size_t n = 0;
        avro_value_get_string(v, &s, &n);
        out = json_stringn(s ? s : "", n ? n - 1 : 0);
        if (!out)
            jfail(c, "string is not valid utf-8");
        return out;
    }
    case CSTL_AVRO_BYTES: {
        const void *b = NULL;
        size_t n = 0;
        avro_value_get_bytes(v, &b, &n);
        return latin1_string(b, n);
    }
    case CSTL_AVRO_FIXED: {
        const void *b = NULL;
        size_t n = 0;
        avro_value_get_fixed(v, &b, &n);
        return latin1_string(b, n);
    }
    case CSTL_AVRO_ENUM: {
        int i = 0;
        avro_value_get_enum(v, &i);
        if (i < 0 || (size_t)i >= t->n_symbols)
            break;
        return json_string(t->symbols[i]);
    }
    case CSTL_AVRO_UNION: {
        int d = -1;
        avro_value_t branch;
        if (avro_value_get_discriminant(v, &d) != 0 || d < 0 || (size_t)d >= t->n_branches ||
            avro_value_get_current_branch(v, &branch) != 0) {
            jfail(c, "union has no branch set");
            return NULL;
        }
        return to_json(c, t->branches[d], &branch, depth + 1);
    }
    case CSTL_AVRO_RECORD: {
        out = json_object();
        for (size_t i = 0; i < t->n_fields; i++) {
            avro_value_t child;
            avro_value_get_by_index(v, i, &child, NULL);
            size_t n = path_push(c, t->fields[i].name, 0);
            json_t *f = to_json(c, t->fields[i].type, &child, depth + 1);
            if (!f) {
                json_decref(out);
                return NULL;
            }
            c->path[n] = '\0';
            json_object_set_new(out, t->fields[i].name, f);
        }
        return out;
    }
    case CSTL_AVRO_ARRAY:
    case CSTL_AVRO_MAP: {
        size_t count = 0;
        avro_value_get_size(v, &count);
        out = t->type == CSTL_AVRO_ARRAY ? json_array() : json_object();
        for (size_t i = 0; i < count; i++) {
            avro_value_t child;
            const char *key = NULL;
            avro_value_get_by_index(v, i, &child, &key);
            size_t n = path_push(c, t->type == CSTL_AVRO_MAP ? key : NULL, i);
            json_t *e = to_json(c, t->items, &child, depth + 1);
            if (!e) {
                json_decref(out);
                return NULL;
            }
            c->path[n] = '\0';
            if (t->type == CSTL_AVRO_ARRAY)
                json_array_append_new(out, e);
            else
                json_object_set_new(out, key, e);
        }
        return out;
    }
    }
    if (!out)
        jfail(c, "value cannot be shown as json");
    return out;
}

json_t *cstl_codec_value_to_json(const cstl_avro_node *node, avro_value_t *value, cstl_error *err)
{
    if (!node || !value) {
        cstl_error_set(err, CSTL_EINVAL, "no schema or value");
        return NULL;
    }
    jctx c = {.err = err};
    return to_json(&c, node, value, 0);
}
