/* Unit tests for commands/envelope.c: CommandEnvelope and CommandReply round trips and the
 * validation of decoded envelopes. */
#include "commands/envelope.h"
#include "platform/codec.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* cmocka needs the standard headers above; keep it last. */
// clang-format off
#include <cmocka.h>
// clang-format on

static void fill(cstl_cmd_envelope *env, unsigned char *payload, size_t n)
{
    memset(env, 0, sizeof(*env));
    snprintf(env->command_id, sizeof(env->command_id), "0190b5d2-7a3c-7def-8123-456789abcdef");
    snprintf(env->tenant_id, sizeof(env->tenant_id), "0190b5d2-7a3c-7def-8123-000000000001");
    snprintf(env->command_type, sizeof(env->command_type), "io.constellation.jobs.SubmitJob.v1");
    snprintf(env->aggregate_id, sizeof(env->aggregate_id), "0190b5d2-7a3c-7def-8123-000000000002");
    env->expected_version = 3;
    env->issued_at_us = 1700000000123456;
    snprintf(env->issued_by, sizeof(env->issued_by), "key-1");
    snprintf(env->correlation_id, sizeof(env->correlation_id),
             "0190b5d2-7a3c-7def-8123-000000000003");
    snprintf(env->reply_to, sizeof(env->reply_to), "api-7");
    snprintf(env->traceparent, sizeof(env->traceparent),
             "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    env->payload = payload;
    env->payload_len = n;
}

static void test_envelope_round_trip(void **state)
{
    (void)state;
    unsigned char payload[] = {0xC3, 0x01, 0x00, 0xff, 0x10, 0x00};
    cstl_cmd_envelope env, back;
    fill(&env, payload, sizeof(payload));
    cstl_codec_buf buf = {0};
    cstl_error err;
    assert_int_equal(cstl_cmd_envelope_encode(&env, &buf, &err), 0);
    assert_int_equal(buf.data[0], 0xC3);
    assert_int_equal(cstl_cmd_envelope_decode(buf.data, buf.len, &back, &err), 0);
    assert_string_equal(back.command_id, env.command_id);
    assert_string_equal(back.tenant_id, env.tenant_id);
    assert_string_equal(back.command_type, env.command_type);
    assert_string_equal(back.aggregate_id, env.aggregate_id);
    assert_int_equal(back.expected_version, 3);
    assert_int_equal(back.issued_at_us, 1700000000123456);
    assert_string_equal(back.issued_by, "key-1");
    assert_string_equal(back.correlation_id, env.correlation_id);
    assert_string_equal(back.reply_to, "api-7");
    assert_string_equal(back.traceparent, env.traceparent);
    assert_int_equal(back.payload_len, sizeof(payload));
    assert_memory_equal(back.payload, payload, sizeof(payload));
    cstl_cmd_envelope_clear(&back);

    /* Nulls: no expected version, no reply_to, no traceparent, empty payload. */
    fill(&env, NULL, 0);
    env.expected_version = -1;
    env.reply_to[0] = '\0';
    env.traceparent[0] = '\0';
    assert_int_equal(cstl_cmd_envelope_encode(&env, &buf, &err), 0);
    assert_int_equal(cstl_cmd_envelope_decode(buf.data, buf.len, &back, &err), 0);
    assert_int_equal(back.expected_version, -1);
    assert_string_equal(back.reply_to, "");
    assert_string_equal(back.traceparent, "");
    assert_int_equal(back.payload_len, 0);
    cstl_cmd_envelope_clear(&back);
    cstl_codec_buf_free(&buf);
}

static void test_envelope_rejects_bad_ids(void **state)
{
    (void)state;
    cstl_cmd_envelope env, back;
    cstl_codec_buf buf = {0};
    cstl_error err;
    fill(&env, NULL, 0);
    snprintf(env.command_id, sizeof(env.command_id), "not-a-uuid");
    assert_int_equal(cstl_cmd_envelope_encode(&env, &buf, &err), 0);
    assert_int_equal(cstl_cmd_envelope_decode(buf.data, buf.len, &back, &err), CSTL_EDECODE);
    assert_non_null(strstr(err.message, "command_id"));
    assert_non_null(strstr(err.message, "\"not-a-uuid\""));

    fill(&env, NULL, 0);
    snprintf(env.traceparent, sizeof(env.traceparent), "garbage");
    assert_int_equal(cstl_cmd_envelope_encode(&env, &buf, &err), 0);
    assert_int_equal(cstl_cmd_envelope_decode(buf.data, buf.len, &back, &err), CSTL_EDECODE);
    assert_non_null(strstr(err.message, "traceparent"));
    cstl_codec_buf_free(&buf);
}

static void test_envelope_rejects_garbage(void **state)
{
    (void)state;
    cstl_cmd_envelope back;
    cstl_error err;
    const char junk[] = "hello, world";
    assert_int_not_equal(cstl_cmd_envelope_decode(junk, sizeof(junk), &back, &err), 0);
    assert_null(back.payload);
    /* A valid single object of another schema is not an envelope either. */
    cstl_cmd_reply_record rec = {.reply = {.outcome = CSTL_CMD_ACCEPTED, .version = 1},
                                 .tenant_id = "t"};
    cstl_codec_buf buf = {0};
    assert_int_equal(cstl_cmd_reply_encode(&rec, &buf, &err), 0);
    assert_int_not_equal(cstl_cmd_envelope_decode(buf.data, buf.len, &back, &err), 0);
    cstl_codec_buf_free(&buf);
}

static void test_reply_round_trip(void **state)
{
    (void)state;
    const char *ids[] = {"0190b5d2-7a3c-7def-8123-00000000000a",
                         "0190b5d2-7a3c-7def-8123-00000000000b"};
    cstl_cmd_reply_record rec = {0};
    snprintf(rec.reply.command_id, sizeof(rec.reply.command_id),
             "0190b5d2-7a3c-7def-8123-456789abcdef");
    snprintf(rec.reply.aggregate_id, sizeof(rec.reply.aggregate_id), "job-1");
    rec.reply.outcome = CSTL_CMD_REJECTED;
    rec.reply.version = -1;
    snprintf(rec.reply.error_code, sizeof(rec.reply.error_code), "job_already_finished");
    snprintf(rec.reply.error_message, sizeof(rec.reply.error_message), "job \"job-1\" is done");
    rec.reply.handled_at_us = 42;
    rec.tenant_id = "0190b5d2-7a3c-7def-8123-000000000001";
    rec.event_ids = ids;
    rec.n_event_ids = 2;
    cstl_codec_buf buf = {0};
    cstl_error err;
    assert_int_equal(cstl_cmd_reply_encode(&rec, &buf, &err), 0);
    cstl_cmd_reply back;
    assert_int_equal(cstl_cmd_reply_decode(buf.data, buf.len, &back, &err), 0);
    assert_int_equal(back.outcome, CSTL_CMD_REJECTED);
    assert_string_equal(back.command_id, rec.reply.command_id);
    assert_string_equal(back.aggregate_id, "job-1");
    assert_int_equal(back.version, -1);
    assert_string_equal(back.error_code, "job_already_finished");
    assert_string_equal(back.error_message, "job \"job-1\" is done");
    assert_int_equal(back.handled_at_us, 42);

    for (int o = CSTL_CMD_ACCEPTED; o <= CSTL_CMD_FAILED; o++) {
        memset(&rec, 0, sizeof(rec));
        rec.reply.outcome = (cstl_cmd_outcome)o;
        rec.reply.version = 7;
        snprintf(rec.reply.command_id, sizeof(rec.reply.command_id), "c");
        assert_int_equal(cstl_cmd_reply_encode(&rec, &buf, &err), 0);
        assert_int_equal(cstl_cmd_reply_decode(buf.data, buf.len, &back, &err), 0);
        assert_int_equal(back.outcome, o);
        assert_int_equal(back.version, 7);
        assert_string_equal(back.error_code, "");
    }
    cstl_codec_buf_free(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_envelope_round_trip),
        cmocka_unit_test(test_envelope_rejects_bad_ids),
        cmocka_unit_test(test_envelope_rejects_garbage),
        cmocka_unit_test(test_reply_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
