/*
 * fuzz_codec_decode.c - libFuzzer target for the single-object decoder: any bytes, decoded into
 * the current version of whatever schema the header names (and into JobSubmitted whatever it
 * says, to reach resolution errors), must give 0 or an error, never a crash, leak or big
 * allocation. With CSTL_FUZZ_SEEDS=DIR set, writes a valid encoding of every schema into DIR
 * first, as a seed corpus.
 */
#include "platform/codec.h"
#include "tests/support/avro_sample.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const cstl_schema_catalog *cat = cstl_schema_catalog_get();
    const char *dir = getenv("CSTL_FUZZ_SEEDS");
    if (!dir)
        return 0;
    cstl_codec_buf buf = {0};
    for (size_t i = 0; i < cstl_schema_catalog_count(cat); i++) {
        const cstl_schema_entry *e = cstl_schema_catalog_at(cat, i);
        json_t *v = cstl_sample_json(cstl_avro_schema_root(e->schema));
        if (cstl_codec_encode_json(e, v, &buf, NULL) == 0) {
            char path[1024];
            snprintf(path, sizeof path, "%s/seed-%zu", dir, i);
            FILE *f = fopen(path, "wb");
            if (f) {
                fwrite(buf.data, 1, buf.len, f);
                fclose(f);
            }
        }
        json_decref(v);
    }
    cstl_codec_buf_free(&buf);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const cstl_schema_catalog *cat = cstl_schema_catalog_get();
    const cstl_schema_entry *writer = NULL;
    cstl_error err;
    if (cstl_codec_writer(data, size, &writer, &err) == 0) {
        const cstl_schema_entry *reader = writer->latest ? writer->latest : writer;
        avro_value_t v;
        if (cstl_codec_value_new(reader, &v) == 0) {
            if (cstl_codec_decode(data, size, reader, &v, NULL, &err) == 0) {
                json_t *j =
                    cstl_codec_value_to_json(cstl_avro_schema_root(reader->schema), &v, &err);
                json_decref(j);
            }
            avro_value_decref(&v);
        }
    }
    /* the bytes after the header as JobSubmitted, whatever the header says */
    const cstl_schema_entry *js = cstl_schema_catalog_find(cat, "jobs.JobSubmitted");
    avro_value_t v;
    if (size >= CSTL_CODEC_HEADER_LEN && cstl_codec_value_new(js, &v) == 0) {
        const cstl_avro_node *root = cstl_avro_schema_root(js->schema);
        cstl_codec_decode_raw(data + CSTL_CODEC_HEADER_LEN, size - CSTL_CODEC_HEADER_LEN, root,
                              root, &v, &err);
        avro_value_decref(&v);
    }
    return 0;
}
