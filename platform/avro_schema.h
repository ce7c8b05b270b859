/*
 * avro_schema.h - Avro schemas as a read-only tree, their Parsing Canonical Form and fingerprint.
 *
 * This is Constellation's own model of an Avro schema, parsed from JSON text with jansson. It is
 * what the canonical form, the CRC-64-AVRO fingerprint, the compatibility checker
 * (platform/schema_check.h) and the resolving decoder (platform/codec.h) work on; avro-c's own
 * avro_schema_t is only used to build avro-c values. A parsed schema is immutable and may be read
 * from any number of threads at once.
 *
 * Canonical form and fingerprint follow the Avro 1.11 specification exactly ("Parsing Canonical
 * Form for Schemas" and "Schema Fingerprints": CRC-64-AVRO, EMPTY = 0xc15d213aa4d7a795).
 */
#ifndef CSTL_PLATFORM_AVRO_SCHEMA_H
#define CSTL_PLATFORM_AVRO_SCHEMA_H

#include "platform/error.h"

#include <jansson.h>

#include <stddef.h>
#include <stdint.h>

/* Caps on schema text: a schema is trusted input (compiled in or read from git), but the caps keep
 * a mistaken one from exhausting the stack. */
#define CSTL_AVRO_SCHEMA_MAX_TEXT  (1u << 20) /* bytes of JSON */
#define CSTL_AVRO_SCHEMA_MAX_DEPTH 32         /* nesting of types within types */
#define CSTL_AVRO_NAME_MAX         255        /* bytes of a full name */

typedef enum cstl_avro_type {
    CSTL_AVRO_NULL = 0,
    CSTL_AVRO_BOOLEAN,
    CSTL_AVRO_INT,
    CSTL_AVRO_LONG,
    CSTL_AVRO_FLOAT,
    CSTL_AVRO_DOUBLE,
    CSTL_AVRO_BYTES,
    CSTL_AVRO_STRING,
    CSTL_AVRO_RECORD,
    CSTL_AVRO_ENUM,
    CSTL_AVRO_ARRAY,
    CSTL_AVRO_MAP,
    CSTL_AVRO_UNION,
    CSTL_AVRO_FIXED,
} cstl_avro_type;

typedef struct cstl_avro_node cstl_avro_node;

typedef struct cstl_avro_field {
    const char *name;
    const char *const *aliases; /* n_aliases names this field had before (for renames) */
    size_t n_aliases;
    const cstl_avro_node *type;
    json_t *default_value; /* borrowed from the schema; NULL when the field has no default */
} cstl_avro_field;

/* One type. Named types (record, enum, fixed) appear once in the tree and are pointed to again
 * wherever they are referenced by name, so a tree can be a graph; walkers must guard recursion. */
struct cstl_avro_node {
    cstl_avro_type type;
    const char *fullname;       /* named types: namespace.name; NULL otherwise */
    const char *name;           /* named types: the part after the last dot */
    const char *const *aliases; /* named types: full names this type had before */
    size_t n_aliases;
    const cstl_avro_field *fields; /* record */
    size_t n_fields;
    const char *const *symbols; /* enum */
    size_t n_symbols;
    int enum_default;                      /* enum: index of the default symbol, -1 when none */
    const cstl_avro_node *items;           /* array items, map values */
    const cstl_avro_node *const *branches; /* union */
    size_t n_branches;
    size_t size; /* fixed */
};

/* A parsed schema: an opaque owner of its node tree. */
typedef struct cstl_avro_schema cstl_avro_schema;

/*
 * Parses schema JSON text of len bytes. Returns a new schema (free with cstl_avro_schema_free) or
 * NULL with err set to CSTL_ESCHEMA naming what is wrong (unknown type, bad name, duplicate
 * field, default that does not match its type, ...). Thread-safe.
 */
cstl_avro_schema *cstl_avro_schema_parse(const char *text, size_t len, cstl_error *err);

/* Frees schema and everything borrowed from it. NULL is a no-op. */
void cstl_avro_schema_free(cstl_avro_schema *schema);

/* The root type. Borrowed: valid until the schema is freed. */
const cstl_avro_node *cstl_avro_schema_root(const cstl_avro_schema *schema);

/* The Parsing Canonical Form, NUL-terminated. Borrowed: valid until the schema is freed. */
const char *cstl_avro_schema_canonical(const cstl_avro_schema *schema);

/* The CRC-64-AVRO fingerprint of the canonical form. */
uint64_t cstl_avro_schema_fingerprint(const cstl_avro_schema *schema);

/* CRC-64-AVRO of len bytes (the Rabin fingerprint of the Avro specification). */
uint64_t cstl_avro_crc64(const void *data, size_t len);

/* The name of a type as the specification spells it ("int", "record", ...). Static. */
const char *cstl_avro_type_name(cstl_avro_type type);

/* A short description of node for messages: its full name when named, else its type name. */
const char *cstl_avro_node_describe(const cstl_avro_node *node);

#endif
