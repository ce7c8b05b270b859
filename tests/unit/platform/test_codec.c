/*
 * test_codec.c - the schema catalog, round trips of every command and event, schema evolution
 * across versions, and hostile input (truncation, wrong magic, unknown fingerprint, lengths and
 * counts claiming gigabytes, deep nesting).
 */
#include "platform/codec.h"
#include "tests/support/avro_sample.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_catalog(void **state)
{
    (void)state;
    const cstl_schema_catalog *cat = cstl_schema_catalog_get();
    assert_true(cstl_schema_catalog_count(cat) >= 62);
    for (size_t i = 0; i < cstl_schema_catalog_count(cat); i++) {
        const cstl_schema_entry *e = cstl_schema_catalog_at(cat, i);
        assert_ptr_equal(cstl_schema_catalog_find_fingerprint(cat, e->fingerprint)->fingerprint,
                         e->fingerprint);
        for (size_t k = 0; k < i; k++)
            assert_true(cstl_schema_catalog_at(cat, k)->fingerprint != e->fingerprint);
        assert_non_null(e->latest);
    }
    const cstl_schema_entry *js =
        cstl_schema_catalog_find(cat, "io.constellation.jobs.JobSubmitted");
    assert_non_null(js);
    assert_string_equal(js->path, "schemas/jobs/JobSubmitted.avsc");
    assert_string_equal(js->ce_type, "io.constellation.jobs.JobSubmitted.v1");
    assert_ptr_equal(cstl_schema_catalog_find(cat, "jobs.JobSubmitted"), js);
    assert_ptr_equal(cstl_schema_catalog_find(cat, "io.constellation.jobs.JobSubmitted.v1"), js);
    assert_null(cstl_schema_catalog_find(cat, "jobs.NoSuchEvent"));
    assert_non_null(cstl_schema_catalog_find(cat, "common.CommandEnvelope"));
    assert_non_null(cstl_schema_catalog_find(cat, "fleet.RegisterWorker"));
}

static void test_round_trip_every_type(void **state)
{
    (void)state;
    const cstl_schema_catalog *cat = cstl_schema_catalog_get();
    cstl_codec_buf buf = {0};
    for (size_t i = 0; i < cstl_schema_catalog_count(cat); i++) {
        const cstl_schema_entry *e = cstl_schema_catalog_at(cat, i);
        json_t *sample = cstl_sample_json(cstl_avro_schema_root(e->schema));
        cstl_error err;
        if (cstl_codec_encode_json(e, sample, &buf, &err) != 0)
            fail_msg("%s: %s", e->path, err.message);
        assert_memory_equal(buf.data, e->header, CSTL_CODEC_HEADER_LEN);
        assert_int_equal(buf.data[0], 0xC3);
        assert_int_equal(buf.data[1], 0x01);
        json_t *back = NULL;
        if (cstl_codec_decode_json(buf.data, buf.len, e, &back, &err) != 0)
            fail_msg("%s: %s", e->path, err.message);
        if (!json_equal(sample, back)) {
            char *a = json_dumps(sample, JSON_SORT_KEYS), *b = json_dumps(back, JSON_SORT_KEYS);
            fail_msg("%s: round trip differs:\n%s\n%s", e->path, a, b);
        }
        json_decref(back);
        /* a frozen version reads as the current one: its fields kept, added ones defaulted */
        back = NULL;
        if (cstl_codec_decode_json(buf.data, buf.len, NULL, &back, &err) != 0)
            fail_msg("%s: as %s: %s", e->path, e->latest->path, err.message);
        const char *key;
        json_t *value;
        json_object_foreach(sample, key, value)
        {
            if (!json_equal(value, json_object_get(back, key)))
                fail_msg("%s: field \"%s\" differs when read as %s", e->path, key, e->latest->path);
        }
        json_decref(back);
        json_decref(sample);
    }
    cstl_codec_buf_free(&buf);
}

static void test_job_submitted_values(void **state)
{
    (void)state;
    const cstl_schema_entry *e =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), "jobs.JobSubmitted");
    json_error_t jerr;
    json_t *in = json_loads(
        "{\"job_id\":\"0190f5a2-7c1e-7b3a-8e4f-1a2b3c4d5e6f\",\"tenant_id\":\"0190f5a2-7c1e-7b3a-"
        "8e4f-000000000001\","
        "\"gpu_count\":2,\"min_gpu_memory_mib\":40960,\"gpu_model\":null,\"priority\":5,"
        "\"runtime_limit_seconds\":3600,\"retry_limit\":2,\"labels\":{\"team\":\"vision\"},"
        "\"parameters\":{\"command\":[\"python\",\"train.py\"],\"environment\":{\"EPOCHS\":\"10\"}}"
        ","
        "\"submitted_by\":\"0190f5a2-7c1e-7b3a-8e4f-000000000002\",\"at\":1732000000123456}",
        0, &jerr);
    assert_non_null(in);
    cstl_codec_buf buf = {0};
    cstl_error err;
    assert_int_equal(cstl_codec_encode_json(e, in, &buf, &err), 0);
    avro_value_t v;
    assert_int_equal(cstl_codec_value_new(e, &v), 0);
    const cstl_schema_entry *w = NULL;
    assert_int_equal(cstl_codec_decode(buf.data, buf.len, e, &v, &w, &err), 0);
    assert_ptr_equal(w, e);
    avro_value_t f;
    int32_t n = 0;
    assert_int_equal(avro_value_get_by_name(&v, "gpu_count", &f, NULL), 0);
    avro_value_get_int(&f, &n);
    assert_int_equal(n, 2);
    /* "name" was omitted from the JSON: it took its default, null */
    json_t *back = cstl_codec_value_to_json(cstl_avro_schema_root(e->schema), &v, &err);
    assert_true(json_is_null(json_object_get(back, "name")));
    json_object_del(back, "name");
    assert_true(json_equal(in, back));
    /* encoding a value of another schema is refused */
    const cstl_schema_entry *other =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), "jobs.JobAdmitted");
    assert_int_equal(cstl_codec_encode(other, &v, &buf, &err), CSTL_EINVAL);
    /* unknown and missing fields in JSON are refused with the path */
    json_object_set_new(in, "surprise", json_true());
    assert_int_equal(cstl_codec_encode_json(e, in, &buf, &err), CSTL_EINVAL);
    assert_non_null(strstr(err.message, "surprise"));
    json_object_del(in, "surprise");
    json_object_del(json_object_get(in, "parameters"), "command");
    assert_int_equal(cstl_codec_encode_json(e, in, &buf, &err), CSTL_EINVAL);
    assert_non_null(strstr(err.message, "parameters.command"));
    json_decref(back);
    json_decref(in);
    avro_value_decref(&v);
    cstl_codec_buf_free(&buf);
}

/* ---- evolution ------------------------------------------------------------------------------ */

typedef struct side {
    cstl_avro_schema *schema;
    avro_schema_t avro;
    avro_value_iface_t *iface;
    avro_value_t value;
} side;

static void side_open(side *s, const char *text)
{
    cstl_error err;
    s->schema = cstl_avro_schema_parse(text, strlen(text), &err);
    if (!s->schema)
        fail_msg("%s: %s", text, err.message);
    const char *canon = cstl_avro_schema_canonical(s->schema);
    assert_int_equal(avro_schema_from_json_length(canon, strlen(canon), &s->avro), 0);
    s->iface = avro_generic_class_from_schema(s->avro);
    assert_int_equal(avro_generic_value_new(s->iface, &s->value), 0);
}

static void side_close(side *s)
{
    avro_value_decref(&s->value);
    avro_value_iface_decref(s->iface);
    avro_schema_decref(s->avro);
    cstl_avro_schema_free(s->schema);
}

/* Writes json with writer_text, reads it with reader_text; returns the decode code and, on
 * success, checks the result equals expected_json. */
static int evolve(const char *writer_text,
                  const char *json_text,
                  const char *reader_text,
                  const char *expected_json,
                  cstl_error *err)
{
    side w, r;
    side_open(&w, writer_text);
    side_open(&r, reader_text);
    json_t *in = json_loads(json_text, 0, NULL);
    assert_non_null(in);
    assert_int_equal(cstl_codec_value_from_json(cstl_avro_schema_root(w.schema), in, &w.value, err),
                     0);
    char bytes[1024];
    avro_writer_t aw = avro_writer_memory(bytes, sizeof bytes);
    assert_int_equal(avro_value_write(aw, &w.value), 0);
    size_t len = (size_t)avro_writer_tell(aw);
    avro_writer_free(aw);
    int rc = cstl_codec_decode_raw(bytes, len, cstl_avro_schema_root(w.schema),
                                   cstl_avro_schema_root(r.schema), &r.value, err);
    if (rc == 0) {
        json_t *out = cstl_codec_value_to_json(cstl_avro_schema_root(r.schema), &r.value, err);
        json_t *want = json_loads(expected_json, 0, NULL);
        if (!json_equal(out, want)) {
            char *a = json_dumps(out, JSON_SORT_KEYS);
            fail_msg("got %s want %s", a, expected_json);
        }
        json_decref(out);
        json_decref(want);
    }
    json_decref(in);
    side_close(&w);
    side_close(&r);
    return rc;
}

#define REC(fields)                                                                                \
    "{\"type\":\"record\",\"name\":\"io.constellation.jobs.E\",\"fields\":[" fields "]}"

static void test_evolution(void **state)
{
    (void)state;
    cstl_error err;
    /* a field added with a default */
    assert_int_equal(
        evolve(REC("{\"name\":\"a\",\"type\":\"int\"}"), "{\"a\":7}",
               REC("{\"name\":\"a\",\"type\":\"int\"},"
                   "{\"name\":\"b\",\"type\":\"string\",\"default\":\"x\"},"
                   "{\"name\":\"c\",\"type\":[\"null\",\"long\"],\"default\":null},"
                   "{\"name\":\"d\",\"type\":{\"type\":\"map\",\"values\":\"int\"},\"default\":{"
                   "\"k\":1}},"
                   "{\"name\":\"g\",\"type\":{\"type\":\"record\",\"name\":\"G\",\"fields\":["
                   "{\"name\":\"x\",\"type\":\"int\"}]},\"default\":{\"x\":3}}"),
               "{\"a\":7,\"b\":\"x\",\"c\":null,\"d\":{\"k\":1},\"g\":{\"x\":3}}", &err),
        0);
    /* a field removed (skipped, including nested and variable-length values) */
    assert_int_equal(evolve(REC("{\"name\":\"gone\",\"type\":{\"type\":\"array\",\"items\":{"
                                "\"type\":\"map\",\"values\":\"string\"}}},"
                                "{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"u\",\"type\":["
                                "\"null\",\"string\"]}"),
                            "{\"gone\":[{\"k\":\"v\"},{}],\"a\":7,\"u\":\"s\"}",
                            REC("{\"name\":\"a\",\"type\":\"int\"}"), "{\"a\":7}", &err),
                     0);
    /* a field renamed with an alias, and the record renamed with an alias */
    assert_int_equal(
        evolve(
            REC("{\"name\":\"old_name\",\"type\":\"string\"}"), "{\"old_name\":\"v\"}",
            "{\"type\":\"record\",\"name\":\"io.constellation.jobs.E2\",\"aliases\":[\"E\"],"
            "\"fields\":[{\"name\":\"new_name\",\"aliases\":[\"old_name\"],\"type\":\"string\"}]}",
            "{\"new_name\":\"v\"}", &err),
        0);
    /* an enum symbol the reader does not know falls back to the reader's default */
    const char *enum_w = REC("{\"name\":\"r\",\"type\":{\"type\":\"enum\",\"name\":\"R\","
                             "\"symbols\":[\"A\",\"B\",\"NEW\"],\"default\":\"A\"}}");
    const char *enum_r = REC("{\"name\":\"r\",\"type\":{\"type\":\"enum\",\"name\":\"R\","
                             "\"symbols\":[\"OTHER\",\"A\",\"B\"],\"default\":\"OTHER\"}}");
    assert_int_equal(evolve(enum_w, "{\"r\":\"NEW\"}", enum_r, "{\"r\":\"OTHER\"}", &err), 0);
    assert_int_equal(evolve(enum_w, "{\"r\":\"B\"}", enum_r, "{\"r\":\"B\"}", &err), 0);
    /* an enum symbol added to the reader: old data still reads */
    assert_int_equal(evolve(enum_r, "{\"r\":\"A\"}", enum_w, "{\"r\":\"A\"}", &err), 0);
    /* without a reader default, an unknown symbol is an error */
    assert_int_equal(evolve(enum_w, "{\"r\":\"NEW\"}",
                            REC("{\"name\":\"r\",\"type\":{\"type\":\"enum\",\"name\":\"R\","
                                "\"symbols\":[\"A\",\"B\"]}}"),
                            "{}", &err),
                     CSTL_ESCHEMA);
    assert_non_null(strstr(err.message, "\"NEW\""));
    /* promotions and a plain type becoming a union */
    assert_int_equal(
        evolve(REC("{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"b\",\"type\":\"long\"},"
                   "{\"name\":\"c\",\"type\":\"float\"},{\"name\":\"s\",\"type\":\"string\"},"
                   "{\"name\":\"o\",\"type\":\"string\"}"),
               "{\"a\":-3,\"b\":40,\"c\":0.5,\"s\":\"hi\",\"o\":\"x\"}",
               REC("{\"name\":\"a\",\"type\":\"long\"},{\"name\":\"b\",\"type\":\"double\"},"
                   "{\"name\":\"c\",\"type\":\"double\"},{\"name\":\"s\",\"type\":\"bytes\"},"
                   "{\"name\":\"o\",\"type\":[\"null\",\"string\"]}"),
               "{\"a\":-3,\"b\":40.0,\"c\":0.5,\"s\":\"hi\",\"o\":\"x\"}", &err),
        0);
    /* a union narrowed to a plain type reads the matching branch */
    assert_int_equal(evolve(REC("{\"name\":\"o\",\"type\":[\"null\",\"int\"]}"), "{\"o\":5}",
                            REC("{\"name\":\"o\",\"type\":\"long\"}"), "{\"o\":5}", &err),
                     0);
    /* a field added without a default cannot be read from old data */
    assert_int_equal(
        evolve(REC("{\"name\":\"a\",\"type\":\"int\"}"), "{\"a\":1}",
               REC("{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"gpu_count\",\"type\":\"int\"}"),
               "{}", &err),
        CSTL_ESCHEMA);
    assert_non_null(strstr(err.message, "\"gpu_count\""));
    /* a type change that is not a promotion */
    assert_int_equal(evolve(REC("{\"name\":\"a\",\"type\":\"string\"}"), "{\"a\":\"1\"}",
                            REC("{\"name\":\"a\",\"type\":\"int\"}"), "{}", &err),
                     CSTL_ESCHEMA);
}

/* ---- hostile input --------------------------------------------------------------------------- */

static void expect_decode_error(const unsigned char *data, size_t len, int code)
{
    const cstl_schema_entry *e =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), "jobs.JobSubmitted");
    avro_value_t v;
    assert_int_equal(cstl_codec_value_new(e, &v), 0);
    cstl_error err;
    int rc = cstl_codec_decode(data, len, e, &v, NULL, &err);
    assert_int_equal(rc, code);
    assert_true(strlen(err.message) > 0);
    avro_value_decref(&v);
}

static void test_bad_input(void **state)
{
    (void)state;
    const cstl_schema_entry *e =
        cstl_schema_catalog_find(cstl_schema_catalog_get(), "jobs.JobSubmitted");
    json_t *sample = cstl_sample_json(cstl_avro_schema_root(e->schema));
    cstl_codec_buf buf = {0};
    assert_int_equal(cstl_codec_encode_json(e, sample, &buf, NULL), 0);
    json_decref(sample);
    /* every truncation fails cleanly */
    for (size_t n = 0; n < buf.len; n++)
        expect_decode_error(buf.data, n, CSTL_EDECODE);
    /* trailing garbage */
    unsigned char *longer = malloc(buf.len + 1);
    memcpy(longer, buf.data, buf.len);
    longer[buf.len] = 0;
    expect_decode_error(longer, buf.len + 1, CSTL_EDECODE);
    free(longer);
    /* wrong magic */
    unsigned char bad[64];
    memcpy(bad, buf.data, 64);
    bad[0] = 0xC2;
    expect_decode_error(bad, 64, CSTL_EDECODE);
    /* unknown fingerprint */
    memcpy(bad, buf.data, 64);
    bad[5] ^= 0xff;
    expect_decode_error(bad, 64, CSTL_ESCHEMA);
    /* the first field (job_id, a string) claims 2^40 bytes */
    memcpy(bad, e->header, CSTL_CODEC_HEADER_LEN);
    unsigned char huge[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 'a', 'b'};
    memcpy(bad + CSTL_CODEC_HEADER_LEN, huge, sizeof huge);
    expect_decode_error(bad, CSTL_CODEC_HEADER_LEN + sizeof huge, CSTL_EDECODE);
    /* a negative length, and an overlong varint */
    unsigned char neg[] = {0x01, 'a'};
    memcpy(bad + CSTL_CODEC_HEADER_LEN, neg, sizeof neg);
    expect_decode_error(bad, CSTL_CODEC_HEADER_LEN + sizeof neg, CSTL_EDECODE);
    memset(bad + CSTL_CODEC_HEADER_LEN, 0xff, 20);
    expect_decode_error(bad, CSTL_CODEC_HEADER_LEN + 20, CSTL_EDECODE);
    cstl_codec_buf_free(&buf);
}

static void test_hostile_counts_and_depth(void **state)
{
    (void)state;
    side s;
    cstl_error err;
    /* an array of nulls claiming 2^40 items: every item is 0 bytes, the item cap stops it */
    side_open(&s, "{\"type\":\"array\",\"items\":\"null\"}");
    unsigned char many[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 0x00};
    assert_int_equal(cstl_codec_decode_raw(many, sizeof many, cstl_avro_schema_root(s.schema),
                                           cstl_avro_schema_root(s.schema), &s.value, &err),
                     CSTL_EDECODE);
    side_close(&s);
    /* an array of longs claiming more items than bytes left */
    side_open(&s, "{\"type\":\"array\",\"items\":\"long\"}");
    unsigned char longs[] = {0x80, 0x80, 0x80, 0x08, 0x02, 0x02};
    assert_int_equal(cstl_codec_decode_raw(longs, sizeof longs, cstl_avro_schema_root(s.schema),
                                           cstl_avro_schema_root(s.schema), &s.value, &err),
                     CSTL_EDECODE);
    side_close(&s);
    /* a map claiming a huge negative-count block */
    side_open(&s, "{\"type\":\"map\",\"values\":\"string\"}");
    unsigned char blk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x02, 0x00};
    assert_int_equal(cstl_codec_decode_raw(blk, sizeof blk, cstl_avro_schema_root(s.schema),
                                           cstl_avro_schema_root(s.schema), &s.value, &err),
                     CSTL_EDECODE);
    side_close(&s);
    /* a recursive list nested 10000 deep */
    side_open(&s, "{\"type\":\"record\",\"name\":\"L\",\"fields\":[{\"name\":\"next\",\"type\":["
                  "\"null\",\"L\"]}]}");
    static unsigned char deep[10001];
    memset(deep, 0x02, 10000);
    deep[10000] = 0x00;
    assert_int_equal(cstl_codec_decode_raw(deep, sizeof deep, cstl_avro_schema_root(s.schema),
                                           cstl_avro_schema_root(s.schema), &s.value, &err),
                     CSTL_EDECODE);
    assert_non_null(strstr(err.message, "deep"));
    /* ...while a shallow one decodes */
    assert_int_equal(cstl_codec_decode_raw(deep + 9990, 11, cstl_avro_schema_root(s.schema),
                                           cstl_avro_schema_root(s.schema), &s.value, &err),
                     0);
    side_close(&s);
    /* a bad boolean and a union index out of range */
    side_open(
        &s, "{\"type\":\"record\",\"name\":\"B\",\"fields\":[{\"name\":\"b\",\"type\":\"boolean\"},"
            "{\"name\":\"u\",\"type\":[\"null\",\"int\"]}]}");
    unsigned char b1[] = {0x02, 0x00};
    assert_int_equal(cstl_codec_decode_raw(b1, 2, cstl_avro_schema_root(s.schema),
                                           cstl_avro_schema_root(s.schema), &s.value, &err),
                     CSTL_EDECODE);
    unsigned char b2[] = {0x01, 0x04};
    assert_int_equal(cstl_codec_decode_raw(b2, 2, cstl_avro_schema_root(s.schema),
                                           cstl_avro_schema_root(s.schema), &s.value, &err),
                     CSTL_EDECODE);
    side_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_catalog),
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_job_submitted_values),
        cmocka_unit_test(test_evolution),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_hostile_counts_and_depth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
