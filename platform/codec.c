/*
 * codec.c - the compiled-in schema catalog and single-object encoding (see codec.h).
 *
 * The catalog is built once from the embedded the .avsc files under schemas/ files under
 * pthread_once and is immutable afterwards, so lookups need no lock. avro-c is given each schema's
 * Parsing Canonical Form: it only needs the structure, since defaults and aliases are applied by
 * our own decoder.
 */
#include "platform/codec.h"

#include "platform/embed.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cstl_schema_catalog {
    cstl_schema_entry *entries;
    size_t n;
};

static cstl_schema_catalog catalog;
static pthread_once_t catalog_once = PTHREAD_ONCE_INIT;

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void catalog_build(void)
{
    size_t n = 0;
    for (const cstl_embedded_file *f = cstl_embedded_files; f->path; f++)
        if (strncmp(f->path, "schemas/", 8) == 0 && ends_with(f->path, ".avsc"))
            n++;
    catalog.entries = cstl_xcalloc(n ? n : 1, sizeof(cstl_schema_entry));
    for (const cstl_embedded_file *f = cstl_embedded_files; f->path; f++) {
        if (!(strncmp(f->path, "schemas/", 8) == 0 && ends_with(f->path, ".avsc")))
            continue;
        cstl_error err;
        cstl_avro_schema *s = cstl_avro_schema_parse(f->data, f->size, &err);
        if (!s)
            cstl_panic("compiled-in schema \"%s\" is invalid: %s", f->path, err.message);
        const cstl_avro_node *root = cstl_avro_schema_root(s);
        if (root->type != CSTL_AVRO_RECORD)
            cstl_panic("compiled-in schema \"%s\" is not a record", f->path);
        cstl_schema_entry *e = &catalog.entries[catalog.n++];
        e->path = f->path;
        e->schema = s;
        e->fullname = root->fullname;
        size_t tlen = strlen(root->fullname) + 4;
        char *ce_type = cstl_xmalloc(tlen);
        snprintf(ce_type, tlen, "%s.v1", root->fullname);
        e->ce_type = ce_type;
        e->canonical = cstl_avro_schema_canonical(s);
        e->fingerprint = cstl_avro_schema_fingerprint(s);
        e->header[0] = CSTL_CODEC_MAGIC0;
        e->header[1] = CSTL_CODEC_MAGIC1;
        for (int i = 0; i < 8; i++)
            e->header[2 + i] = (unsigned char)(e->fingerprint >> (8 * i));
        e->current = strstr(f->path, "/history/") == NULL;
        if (avro_schema_from_json_length(e->canonical, strlen(e->canonical), &e->avro) != 0)
            cstl_panic("avro-c rejects compiled-in schema \"%s\": %s", f->path, avro_strerror());
        e->iface = avro_generic_class_from_schema(e->avro);
        if (!e->iface)
            cstl_panic("avro-c cannot build a class for \"%s\": %s", f->path, avro_strerror());
    }
    for (size_t i = 0; i < catalog.n; i++) {
        cstl_schema_entry *e = &catalog.entries[i];
        for (size_t k = 0; k < catalog.n; k++)
            if (catalog.entries[k].current && strcmp(catalog.entries[k].fullname, e->fullname) == 0)
                e->latest = &catalog.entries[k];
        if (e->current && e->latest != e)
            cstl_panic("two current schemas are named \"%s\"", e->fullname);
    }
}

const cstl_schema_catalog *cstl_schema_catalog_get(void)
{
    pthread_once(&catalog_once, catalog_build);
    return &catalog;
}

size_t cstl_schema_catalog_count(const cstl_schema_catalog *cat)
{
    return cat->n;
}

const cstl_schema_entry *cstl_schema_catalog_at(const cstl_schema_catalog *cat, size_t i)
{
    return i < cat->n ? &cat->entries[i] : NULL;
}

const cstl_schema_entry *cstl_schema_catalog_find(const cstl_schema_catalog *cat, const char *name)
{
    if (!name)
        return NULL;
    static const char prefix[] = "io.constellation.";
    for (size_t i = 0; i < cat->n; i++) {
        const cstl_schema_entry *e = &cat->entries[i];
        if (!e->current)
            continue;
        if (strcmp(e->fullname, name) == 0 || strcmp(e->ce_type, name) == 0)
            return e;
        if (strncmp(e->fullname, prefix, sizeof prefix - 1) == 0 &&
            strcmp(e->fullname + sizeof prefix - 1, name) == 0)
            return e;
    }
    return NULL;
}

const cstl_schema_entry *cstl_schema_catalog_find_fingerprint(const cstl_schema_catalog *cat,
                                                              uint64_t fingerprint)
{
    const cstl_schema_entry *found = NULL;
    for (size_t i = 0; i < cat->n; i++)
        if (cat->entries[i].fingerprint == fingerprint) {
            /* a history file identical to the current one shares its fingerprint: prefer current */
            if (cat->entries[i].current)
                return &cat->entries[i];
            if (!found)
                found = &cat->entries[i];
        }
    return found;
}

int cstl_codec_value_new(const cstl_schema_entry *entry, avro_value_t *value)
{
    if (avro_generic_value_new(entry->iface, value) != 0)
        return CSTL_ENOMEM;
    return 0;
}

void cstl_codec_buf_free(cstl_codec_buf *buf)
{
    if (!buf)
        return;
    free(buf->data);
    buf->data = NULL;
    buf->len = buf->cap = 0;
}

static void buf_reserve(cstl_codec_buf *b, size_t need)
{
    if (b->cap >= need)
        return;
    size_t cap = b->cap ? b->cap : 512;
    while (cap < need)
        cap *= 2;
    b->data = cstl_xrealloc(b->data, cap);
    b->cap = cap;
}

int cstl_codec_encode(const cstl_schema_entry *entry,
                      avro_value_t *value,
                      cstl_codec_buf *out,
                      cstl_error *err)
{
    if (!entry || !value || !out)
        return cstl_error_set(err, CSTL_EINVAL, "no schema, value or output buffer");
    if (value->iface != entry->iface)
        return cstl_error_set(err, CSTL_EINVAL, "the value is not of schema \"%s\"",
                              entry->fullname);
    buf_reserve(out, 512);
    memcpy(out->data, entry->header, CSTL_CODEC_HEADER_LEN);
    avro_writer_t w = avro_writer_memory((const char *)out->data + CSTL_CODEC_HEADER_LEN,
                                         (int64_t)(out->cap - CSTL_CODEC_HEADER_LEN));
    if (!w)
        cstl_panic("out of memory");
    int rc = avro_value_write(w, value);
    if (rc != 0) {
        /* did not fit: size it exactly, then write again */
        size_t size = 0;
        if (avro_value_sizeof(value, &size) != 0) {
            avro_writer_free(w);
            return cstl_error_set(err, CSTL_EINVAL, "cannot encode \"%s\": %s", entry->fullname,
                                  avro_strerror());
        }
        if (size + CSTL_CODEC_HEADER_LEN > CSTL_CODEC_MAX_MESSAGE) {
            avro_writer_free(w);
            return cstl_error_set(err, CSTL_ETOOBIG,
                                  "encoded \"%s\" of %zu bytes exceeds the %u byte limit",
                                  entry->fullname, size, CSTL_CODEC_MAX_MESSAGE);
        }
        buf_reserve(out, size + CSTL_CODEC_HEADER_LEN);
        avro_writer_memory_set_dest(w, (const char *)out->data + CSTL_CODEC_HEADER_LEN,
                                    (int64_t)(out->cap - CSTL_CODEC_HEADER_LEN));
        rc = avro_value_write(w, value);
        if (rc != 0) {
            avro_writer_free(w);
            return cstl_error_set(err, CSTL_EINVAL, "cannot encode \"%s\": %s", entry->fullname,
                                  avro_strerror());
        }
    }
    out->len = CSTL_CODEC_HEADER_LEN + (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    if (out->len > CSTL_CODEC_MAX_MESSAGE)
        return cstl_error_set(err, CSTL_ETOOBIG,
                              "encoded \"%s\" of %zu bytes exceeds the %u byte limit",
                              entry->fullname, out->len, CSTL_CODEC_MAX_MESSAGE);
    return 0;
}

int cstl_codec_writer(const void *data,
                      size_t len,
                      const cstl_schema_entry **writer,
                      cstl_error *err)
{
    const unsigned char *p = data;
    if (!p || len < CSTL_CODEC_HEADER_LEN)
        return cstl_error_set(err, CSTL_EDECODE,
                              "input of %zu bytes is shorter than the %d byte header", len,
                              CSTL_CODEC_HEADER_LEN);
    if (p[0] != CSTL_CODEC_MAGIC0 || p[1] != CSTL_CODEC_MAGIC1)
        return cstl_error_set(err, CSTL_EDECODE,
                              "wrong magic \"%02x %02x\": not an avro single object", p[0], p[1]);
    if (len > CSTL_CODEC_MAX_MESSAGE)
        return cstl_error_set(err, CSTL_ETOOBIG, "input of %zu bytes exceeds the %u byte limit",
                              len, CSTL_CODEC_MAX_MESSAGE);
    uint64_t fp = 0;
    for (int i = 0; i < 8; i++)
        fp |= (uint64_t)p[2 + i] << (8 * i);
    const cstl_schema_entry *e =
        cstl_schema_catalog_find_fingerprint(cstl_schema_catalog_get(), fp);
    if (!e)
        return cstl_error_set(err, CSTL_ESCHEMA, "unknown schema fingerprint \"%016" PRIx64 "\"",
                              fp);
    *writer = e;
    return 0;
}

int cstl_codec_decode(const void *data,
                      size_t len,
                      const cstl_schema_entry *reader,
                      avro_value_t *out,
                      const cstl_schema_entry **writer_out,
                      cstl_error *err)
{
    const cstl_schema_entry *writer = NULL;
    int rc = cstl_codec_writer(data, len, &writer, err);
    if (rc != 0)
        return rc;
    if (!reader || !out)
        return cstl_error_set(err, CSTL_EINVAL, "no reader schema or output value");
    if (out->iface != reader->iface)
        return cstl_error_set(err, CSTL_EINVAL, "the output value is not of schema \"%s\"",
                              reader->fullname);
    if (writer_out)
        *writer_out = writer;
    return cstl_codec_decode_raw((const unsigned char *)data + CSTL_CODEC_HEADER_LEN,
                                 len - CSTL_CODEC_HEADER_LEN, cstl_avro_schema_root(writer->schema),
                                 cstl_avro_schema_root(reader->schema), out, err);
}

int cstl_codec_encode_json(const cstl_schema_entry *entry,
                           json_t *json,
                           cstl_codec_buf *out,
                           cstl_error *err)
{
    avro_value_t v;
    if (cstl_codec_value_new(entry, &v) != 0)
        return cstl_error_set(err, CSTL_ENOMEM, "out of memory");
    int rc = cstl_codec_value_from_json(cstl_avro_schema_root(entry->schema), json, &v, err);
    if (rc == 0)
        rc = cstl_codec_encode(entry, &v, out, err);
    avro_value_decref(&v);
    return rc;
}

int cstl_codec_decode_json(
    const void *data, size_t len, const cstl_schema_entry *reader, json_t **out, cstl_error *err)
{
    const cstl_schema_entry *writer = NULL;
    int rc = cstl_codec_writer(data, len, &writer, err);
    if (rc != 0)
        return rc;
    if (!reader)
        reader = writer->latest ? writer->latest : writer;
    avro_value_t v;
    if (cstl_codec_value_new(reader, &v) != 0)
        return cstl_error_set(err, CSTL_ENOMEM, "out of memory");
    rc = cstl_codec_decode(data, len, reader, &v, NULL, err);
    if (rc == 0) {
        *out = cstl_codec_value_to_json(cstl_avro_schema_root(reader->schema), &v, err);
        if (!*out)
            rc = err ? err->code : CSTL_EINVAL;
    }
    avro_value_decref(&v);
    return rc;
}
