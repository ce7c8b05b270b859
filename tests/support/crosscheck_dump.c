/*
 * crosscheck_dump.c - writes, for every schema in the compiled-in catalog, one JSON line:
 *   {"path", "fullname", "canonical", "fingerprint" (hex, header byte order), "value" (the sample
 *    value as JSON), "encoded" (hex of the single-object encoding)}
 * for tests/python/crosscheck_fastavro.py to check against an independent implementation.
 */
#include "platform/codec.h"
#include "tests/support/avro_sample.h"

#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    const cstl_schema_catalog *cat = cstl_schema_catalog_get();
    cstl_codec_buf buf = {0};
    for (size_t i = 0; i < cstl_schema_catalog_count(cat); i++) {
        const cstl_schema_entry *e = cstl_schema_catalog_at(cat, i);
        json_t *value = cstl_sample_json(cstl_avro_schema_root(e->schema));
        cstl_error err;
        if (cstl_codec_encode_json(e, value, &buf, &err) != 0) {
            fprintf(stderr, "%s: %s\n", e->path, err.message);
            return 1;
        }
        char fp[17], *hex = malloc(2 * buf.len + 1);
        for (int k = 0; k < 8; k++)
            snprintf(fp + 2 * k, 3, "%02x", e->header[2 + k]);
        for (size_t k = 0; k < buf.len; k++)
            snprintf(hex + 2 * k, 3, "%02x", buf.data[k]);
        json_t *line =
            json_pack("{s:s, s:s, s:s, s:s, s:O, s:s}", "path", e->path, "fullname", e->fullname,
                      "canonical", e->canonical, "fingerprint", fp, "value", value, "encoded", hex);
        char *text = json_dumps(line, JSON_COMPACT);
        puts(text);
        free(text);
        free(hex);
        json_decref(line);
        json_decref(value);
    }
    cstl_codec_buf_free(&buf);
    return 0;
}
