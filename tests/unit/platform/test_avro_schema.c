/*
 * test_avro_schema.c - Parsing Canonical Form and CRC-64-AVRO fingerprints against vectors
 * computed by fastavro 1.9.7 (fastavro.schema.to_parsing_canonical_form and
 * fastavro.schema.fingerprint(..., "CRC-64-AVRO"), whose hex is the little-endian byte order of
 * the single-object header), and the parser's rejection of invalid schemas.
 */
#include "platform/avro_schema.h"

#include <cmocka.h>

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef struct vector {
    const char *schema;
    const char *canonical;
    const char *fingerprint_le_hex;
} vector;

static const vector vectors[] = {
    {"\"int\"", "\"int\"", "8f5c393f1ad57572"},
    {"\"null\"", "\"null\"", "8a8f25cce724dd63"},
    {"\"string\"", "\"string\"", "c70345637248018f"},
    {"{\"type\":\"int\",\"logicalType\":\"date\"}", "\"int\"", "8f5c393f1ad57572"},
    {"{\"type\":\"fixed\",\"name\":\"F\",\"size\":4}",
     "{\"name\":\"F\",\"type\":\"fixed\",\"size\":4}", "9de90494cfa1f5c9"},
    {"{\"type\":\"enum\",\"name\":\"a.E\",\"symbols\":[\"X\",\"Y\"]}",
     "{\"name\":\"a.E\",\"type\":\"enum\",\"symbols\":[\"X\",\"Y\"]}", "67e030996055a303"},
    {"{\"type\":\"record\",\"name\":\"R\",\"namespace\":\"n\",\"doc\":\"d\",\"fields\":[{\"name\":"
     "\"a\","
     "\"type\":{\"type\":\"array\",\"items\":\"long\"},\"default\":[]},{\"name\":\"m\",\"type\":["
     "\"null\","
     "{\"type\":\"map\",\"values\":\"bytes\"}]},{\"name\":\"f\",\"type\":{\"type\":\"fixed\","
     "\"name\":\"x.F\","
     "\"size\":16}},{\"name\":\"g\",\"type\":\"x.F\"}]}",
     "{\"name\":\"n.R\",\"type\":\"record\",\"fields\":[{\"name\":\"a\",\"type\":{\"type\":"
     "\"array\",\"items\":"
     "\"long\"}},{\"name\":\"m\",\"type\":[\"null\",{\"type\":\"map\",\"values\":\"bytes\"}]},{"
     "\"name\":\"f\","
     "\"type\":{\"name\":\"x.F\",\"type\":\"fixed\",\"size\":16}},{\"name\":\"g\",\"type\":\"x.F\"}"
     "]}",
     "7e5c97c320926bab"},
};

static void le_hex(uint64_t fp, char out[17])
{
    for (int i = 0; i < 8; i++)
        snprintf(out + 2 * i, 3, "%02x", (unsigned)((fp >> (8 * i)) & 0xff));
}

static void test_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < CSTL_ARRAY_LEN(vectors); i++) {
        cstl_error err;
        cstl_avro_schema *s =
            cstl_avro_schema_parse(vectors[i].schema, strlen(vectors[i].schema), &err);
        assert_non_null(s);
        assert_string_equal(cstl_avro_schema_canonical(s), vectors[i].canonical);
        char hex[17];
        le_hex(cstl_avro_schema_fingerprint(s), hex);
        assert_string_equal(hex, vectors[i].fingerprint_le_hex);
        cstl_avro_schema_free(s);
    }
}

static void test_crc64_empty(void **state)
{
    (void)state;
    assert_true(cstl_avro_crc64("", 0) == UINT64_C(0xc15d213aa4d7a795));
    /* the specification's example: fingerprint of "int" is 0x7275d51a3f395c8f */
    assert_true(cstl_avro_crc64("\"int\"", 5) == UINT64_C(0x7275d51a3f395c8f));
}

static void test_recursive_and_namespaces(void **state)
{
    (void)state;
    const char *text =
        "{\"type\":\"record\",\"name\":\"List\",\"namespace\":\"a.b\",\"fields\":["
        "{\"name\":\"next\",\"type\":[\"null\",\"List\"]},"
        "{\"name\":\"inner\",\"type\":{\"type\":\"record\",\"name\":\"c.Inner\",\"fields\":["
        "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\"]}}]}},"
        "{\"name\":\"e2\",\"type\":\"c.E\"}]}";
    cstl_error err;
    cstl_avro_schema *s = cstl_avro_schema_parse(text, strlen(text), &err);
    assert_non_null(s);
    assert_string_equal(
        cstl_avro_schema_canonical(s),
        "{\"name\":\"a.b.List\",\"type\":\"record\",\"fields\":[{\"name\":\"next\",\"type\":"
        "[\"null\",\"a.b.List\"]},{\"name\":\"inner\",\"type\":{\"name\":\"c.Inner\",\"type\":"
        "\"record\",\"fields\":[{\"name\":\"e\",\"type\":{\"name\":\"c.E\",\"type\":\"enum\","
        "\"symbols\":[\"A\"]}}]}},{\"name\":\"e2\",\"type\":\"c.E\"}]}");
    const cstl_avro_node *root = cstl_avro_schema_root(s);
    assert_ptr_equal(root->fields[0].type->branches[1], root);
    cstl_avro_schema_free(s);
}

static void test_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{",
        "\"nosuch\"",
        "{\"type\":\"record\",\"name\":\"R\"}",
        "{\"type\":\"record\",\"name\":\"1R\",\"fields\":[]}",
        "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},{"
        "\"name\":\"a\",\"type\":\"int\"}]}",
        "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\","
        "\"default\":\"x\"}]}",
        "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":[\"null\","
        "\"int\"],\"default\":1}]}",
        "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"A\"]}",
        "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\"],\"default\":\"B\"}",
        "[\"int\",\"int\"]",
        "[\"int\",[\"long\"]]",
        "{\"type\":\"fixed\",\"name\":\"F\",\"size\":-1}",
        "{\"type\":\"array\"}",
    };
    for (size_t i = 0; i < CSTL_ARRAY_LEN(bad); i++) {
        cstl_error err;
        cstl_avro_schema *s = cstl_avro_schema_parse(bad[i], strlen(bad[i]), &err);
        if (s)
            fail_msg("accepted invalid schema %s", bad[i]);
        assert_int_equal(err.code, CSTL_ESCHEMA);
        assert_true(strlen(err.message) > 0);
    }
    /* nesting deeper than the cap is refused, not a stack overflow */
    char deep[4096] = "";
    for (int i = 0; i < 100; i++)
        strcat(deep, "{\"type\":\"array\",\"items\":");
    strcat(deep, "\"int\"");
    for (int i = 0; i < 100; i++)
        strcat(deep, "}");
    cstl_error err;
    assert_null(cstl_avro_schema_parse(deep, strlen(deep), &err));
    assert_int_equal(err.code, CSTL_ESCHEMA);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_crc64_empty),
        cmocka_unit_test(test_recursive_and_namespaces),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
