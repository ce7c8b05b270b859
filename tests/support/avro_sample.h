/*
 * avro_sample.h - deterministic sample values of any schema, as JSON, for the codec tests, the
 * fastavro cross-check and the fuzz seed corpus. Header-only (static functions).
 *
 * Every field gets a value that exercises its type: strings carry the field name and a non-ASCII
 * character, unions take their last branch (the non-null one in ["null", T]), arrays and maps two
 * entries, enums their last symbol, numbers values that need multi-byte varints.
 */
#ifndef CSTL_TESTS_AVRO_SAMPLE_H
#define CSTL_TESTS_AVRO_SAMPLE_H

#include "platform/avro_schema.h"

#include <jansson.h>

#include <stdio.h>

static json_t *cstl_sample_json_(const cstl_avro_node *t, const char *name, int depth)
{
    char buf[128];
    if (depth > 16)
        return json_null();
    switch (t->type) {
    case CSTL_AVRO_NULL:
        return json_null();
    case CSTL_AVRO_BOOLEAN:
        return json_true();
    case CSTL_AVRO_INT:
        return json_integer(-1234567);
    case CSTL_AVRO_LONG:
        return json_integer(1732000000123456LL);
    case CSTL_AVRO_FLOAT:
        return json_real(1.5);
    case CSTL_AVRO_DOUBLE:
        return json_real(-2.25);
    case CSTL_AVRO_STRING:
        snprintf(buf, sizeof buf, "%s-\xc3\xa9t\xc3\xa9", name);
        return json_string(buf);
    case CSTL_AVRO_BYTES:
        return json_string("b\xc3\xbfz");
    case CSTL_AVRO_FIXED: {
        char f[64] = {0};
        for (size_t i = 0; i < t->size && i < 63; i++)
            f[i] = (char)('a' + i % 26);
        return json_string(f);
    }
    case CSTL_AVRO_ENUM:
        return json_string(t->symbols[t->n_symbols - 1]);
    case CSTL_AVRO_UNION:
        return cstl_sample_json_(t->branches[t->n_branches - 1], name, depth + 1);
    case CSTL_AVRO_ARRAY: {
        json_t *a = json_array();
        for (int i = 0; i < 2; i++) {
            snprintf(buf, sizeof buf, "%s%d", name, i);
            json_array_append_new(a, cstl_sample_json_(t->items, buf, depth + 1));
        }
        return a;
    }
    case CSTL_AVRO_MAP: {
        json_t *o = json_object();
        for (int i = 0; i < 2; i++) {
            snprintf(buf, sizeof buf, "%s_key%d", name, i);
            json_object_set_new(o, buf, cstl_sample_json_(t->items, buf, depth + 1));
        }
        return o;
    }
    case CSTL_AVRO_RECORD: {
        json_t *o = json_object();
        for (size_t i = 0; i < t->n_fields; i++)
            json_object_set_new(o, t->fields[i].name,
                                cstl_sample_json_(t->fields[i].type, t->fields[i].name, depth + 1));
        return o;
    }
    }
    return json_null();
}

/* A new JSON sample value of t. */
static inline json_t *cstl_sample_json(const cstl_avro_node *t)
{
    return cstl_sample_json_(t, "v", 0);
}

#endif
