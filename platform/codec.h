/*
 * codec.h - Avro single-object encoding of commands and events, on avro-c.
 *
 * Wire format (Avro specification, "Single-object encoding"):
 *   C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, little
 *   endian | Avro binary encoding of the value.
 *
 * The catalog holds every schema compiled into the binary (the .avsc files under schemas/, see
 * platform/embed.h): the current version of each type and every frozen earlier version under
 * history/. Encoding always uses the current version. Decoding finds the writer schema by
 * fingerprint and resolves it to the reader schema by the Avro rules (promotions, defaults for
 * added fields, skipped removed fields, aliases, enum defaults, unions), so events written by older
 * versions stay readable.
 *
 * The decoder is Constellation's own and is bounded: it never allocates more than the input could
 * hold (a string or bytes length must fit in what is left of the input, an array or map block
 * count must too, every value counts against CSTL_CODEC_MAX_ITEMS), nesting is capped at
 * CSTL_CODEC_MAX_DEPTH, and every malformed input ends in CSTL_EDECODE with a message. Encoding
 * uses avro-c's binary writer.
 *
 * Values are avro-c generic values (avro_value_t) of a catalog entry's schema, made with
 * cstl_codec_value_new. Threads: the catalog is built once and is read-only; each avro_value_t
 * belongs to one thread at a time.
 */
#ifndef CSTL_PLATFORM_CODEC_H
#define CSTL_PLATFORM_CODEC_H

#include "platform/avro_schema.h"
#include "platform/error.h"

#include <avro.h>
#include <jansson.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CSTL_CODEC_MAGIC0      0xC3
#define CSTL_CODEC_MAGIC1      0x01
#define CSTL_CODEC_HEADER_LEN  10
#define CSTL_CODEC_MAX_MESSAGE (4u << 20) /* bytes of one encoded value */
#define CSTL_CODEC_MAX_DEPTH   32         /* records, arrays, maps and unions within each other */
#define CSTL_CODEC_MAX_ITEMS   (1u << 20) /* values in one message, all arrays and maps together */

/* One schema of the catalog. Everything is borrowed from the catalog, valid for the process. */
typedef struct cstl_schema_entry {
    const char *path;                            /* "schemas/jobs/JobSubmitted.avsc" */
    const char *fullname;                        /* "io.constellation.jobs.JobSubmitted" */
    const char *ce_type;                         /* "io.constellation.jobs.JobSubmitted.v1" */
    const char *canonical;                       /* Parsing Canonical Form */
    uint64_t fingerprint;                        /* CRC-64-AVRO of canonical */
    unsigned char header[CSTL_CODEC_HEADER_LEN]; /* C3 01 + fingerprint, little endian */
    bool current;                           /* false for a frozen earlier version under history/ */
    const struct cstl_schema_entry *latest; /* the current version of the same full name */
    const cstl_avro_schema *schema;
    avro_schema_t avro;        /* avro-c's view of the same schema */
    avro_value_iface_t *iface; /* avro-c generic class of the schema */
} cstl_schema_entry;

typedef struct cstl_schema_catalog cstl_schema_catalog;

/*
 * The catalog of compiled-in schemas, built on first use (thread-safe, pthread_once) and never
 * freed. Panics when a compiled-in schema does not parse or two share a fingerprint: the build's
 * tests make that impossible in a released binary.
 */
const cstl_schema_catalog *cstl_schema_catalog_get(void);

/* Number of entries and the i-th (sorted by path). Borrowed. */
size_t cstl_schema_catalog_count(const cstl_schema_catalog *cat);
const cstl_schema_entry *cstl_schema_catalog_at(const cstl_schema_catalog *cat, size_t i);

/* The current schema of a full name ("io.constellation.jobs.JobSubmitted"), of its ce_type
 * ("io.constellation.jobs.JobSubmitted.v1") or of its short name "jobs.JobSubmitted"; NULL if none.
 */
const cstl_schema_entry *cstl_schema_catalog_find(const cstl_schema_catalog *cat, const char *name);

/* The schema (current or historical) with this fingerprint, or NULL. */
const cstl_schema_entry *cstl_schema_catalog_find_fingerprint(const cstl_schema_catalog *cat,
                                                              uint64_t fingerprint);

/* Initializes *value as a new, empty generic value of entry's schema. Free with
 * avro_value_decref(value). Returns 0 or CSTL_ENOMEM. */
int cstl_codec_value_new(const cstl_schema_entry *entry, avro_value_t *value);

/* A growable output buffer; zero-initialize, reuse across calls, free with cstl_codec_buf_free. */
typedef struct cstl_codec_buf {
    unsigned char *data;
    size_t len;
    size_t cap;
} cstl_codec_buf;

void cstl_codec_buf_free(cstl_codec_buf *buf);

/*
 * Encodes value, a value of entry's schema (made by cstl_codec_value_new(entry)), as a single
 * object into out, replacing its contents (out->len is the encoded size). Returns 0, CSTL_EINVAL
 * when value is not of entry's schema, CSTL_ETOOBIG over CSTL_CODEC_MAX_MESSAGE. Does not take
 * ownership of value.
 */
int cstl_codec_encode(const cstl_schema_entry *entry,
                      avro_value_t *value,
                      cstl_codec_buf *out,
                      cstl_error *err);

/*
 * The writer schema of an encoded single object: checks the magic and looks the fingerprint up.
 * Returns 0 with *writer set, CSTL_EDECODE (short input, wrong magic) or CSTL_ESCHEMA (unknown
 * fingerprint, quoted in hex).
 */
int cstl_codec_writer(const void *data,
                      size_t len,
                      const cstl_schema_entry **writer,
                      cstl_error *err);

/*
 * Decodes the single object in data[0..len) into out, a value of reader's schema (made by
 * cstl_codec_value_new(reader); it is reset first). The writer schema is resolved to the reader
 * schema. writer_out (may be NULL) receives the writer entry. Returns 0, CSTL_EDECODE for
 * malformed or truncated input, CSTL_ESCHEMA for an unknown fingerprint or a writer schema the
 * reader cannot read. On failure out holds a partial value; reset or free it.
 */
int cstl_codec_decode(const void *data,
                      size_t len,
                      const cstl_schema_entry *reader,
                      avro_value_t *out,
                      const cstl_schema_entry **writer_out,
                      cstl_error *err);

/*
 * The same as cstl_codec_decode for Avro binary without a header, with explicit schemas: writer is
 * the schema the bytes were written with, reader_node/out the reader's. For tests and for callers
 * holding their own schemas.
 */
int cstl_codec_decode_raw(const void *data,
                          size_t len,
                          const cstl_avro_node *writer,
                          const cstl_avro_node *reader,
                          avro_value_t *out,
                          cstl_error *err);

/* ---- JSON bridge (platform/codec_json.c) --------------------------------------------------- */

/*
 * Sets value (of schema type node) from JSON: records are objects (unknown fields rejected, missing
 * ones take their default), enums strings, bytes and fixed strings (one byte per code point
 * 0-255), unions null or the value of the first branch that accepts it, or {"<branch>": value}.
 * Returns 0 or CSTL_EINVAL naming the path of the offending field. Does not take ownership.
 */
int cstl_codec_value_from_json(const cstl_avro_node *node,
                               json_t *json,
                               avro_value_t *value,
                               cstl_error *err);

/*
 * The JSON form of value (of schema type node), as cstl_codec_value_from_json reads it (unions as
 * the plain value). Returns a new reference or NULL with err set.
 */
json_t *cstl_codec_value_to_json(const cstl_avro_node *node, avro_value_t *value, cstl_error *err);

/* Encodes JSON as entry's current schema (json -> value -> single object). */
int cstl_codec_encode_json(const cstl_schema_entry *entry,
                           json_t *json,
                           cstl_codec_buf *out,
                           cstl_error *err);

/* Decodes a single object to JSON in the reader schema (the writer's current version when reader
 * is NULL). *out is a new reference on success. */
int cstl_codec_decode_json(
    const void *data, size_t len, const cstl_schema_entry *reader, json_t **out, cstl_error *err);

#endif
