/* Unit tests for platform/config.c: defaults, validation of every kind, file + environment. */
#include "platform/config.h"

#include <cmocka.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A fake environment: NULL-terminated "NAME=value" strings. */
typedef struct fake_env {
    const char *const *entries;
} fake_env;

static const char *fake_getenv(const char *name, void *ud)
{
    fake_env *env = ud;
    size_t len = strlen(name);
    for (const char *const *e = env->entries; *e; e++)
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
            return *e + len + 1;
    return NULL;
}

static void fake_each(void (*fn)(const char *entry, void *fn_ud), void *fn_ud, void *ud)
{
    fake_env *env = ud;
    for (const char *const *e = env->entries; *e; e++)
        fn(*e, fn_ud);
}

static int load(const char *const *entries, cstl_config *cfg, cstl_config_problems *p)
{
    fake_env env = {entries};
    return cstl_config_load_from(cfg, p, fake_getenv, fake_each, &env);
}

static int any_problem_contains(const cstl_config_problems *p, const char *needle)
{
    for (int i = 0; i < p->count; i++)
        if (strstr(p->text[i], needle) != NULL)
            return 1;
    return 0;
}

static void test_defaults_are_valid(void **state)
{
    (void)state;
    static const char *const none[] = {"PATH=/usr/bin", NULL};
    cstl_config cfg;
    cstl_config_problems p;
    assert_int_equal(load(none, &cfg, &p), 0);
    assert_int_equal(p.count, 0);
    assert_string_equal(cfg.kafka_brokers, "127.0.0.1:9092");
    assert_string_equal(cfg.commands_addr.host, "127.0.0.1");
    assert_int_equal(cfg.commands_addr.port, 8080);
    assert_int_equal(cfg.queries_addr.port, 8081);
    assert_int_equal(cfg.log_level, CSTL_LOG_INFO);
    assert_int_equal(cfg.http_max_body_bytes, 1048576);
    assert_true(strlen(cfg.instance_id) > 0);
}

static void test_values_from_environment(void **state)
{
    (void)state;
    static const char *const env[] = {
        "CONSTELLATION_KAFKA_BROKERS=10.0.0.1:9092,kafka-2:19092",
        "CONSTELLATION_LOG_LEVEL=debug",
        "CONSTELLATION_COMMANDS_ADDR=[::1]:9000",
        "CONSTELLATION_HTTP_THREADS=16",
        "CONSTELLATION_INSTANCE_ID=cmd-1",
        NULL,
    };
    cstl_config cfg;
    cstl_config_problems p;
    assert_int_equal(load(env, &cfg, &p), 0);
    assert_string_equal(cfg.kafka_brokers, "10.0.0.1:9092,kafka-2:19092");
    assert_int_equal(cfg.log_level, CSTL_LOG_DEBUG);
    assert_string_equal(cfg.commands_addr.host, "::1");
    assert_int_equal(cfg.commands_addr.port, 9000);
    assert_int_equal(cfg.http_threads, 16);
    assert_string_equal(cfg.instance_id, "cmd-1");
    char buf[64];
    assert_string_equal(cstl_config_addr_format(&cfg.commands_addr, buf, sizeof(buf)),
                        "[::1]:9000");
}

static void test_every_problem_reported_at_once(void **state)
{
    (void)state;
    static const char *const env[] = {
        "CONSTELLATION_KAFKA_BROKERS=",
        "CONSTELLATION_HTTP_THREADS=0",
        "CONSTELLATION_HTTP_MAX_BODY_BYTES=12abc",
        "CONSTELLATION_LOG_LEVEL=loud",
        "CONSTELLATION_QUERIES_ADDR=localhost",
        "CONSTELLATION_PG_DSN=host=x port",
        "CONSTELLATION_KAFAK_BROKERS=typo:9092",
        NULL,
    };
    cstl_config cfg;
    cstl_config_problems p;
    assert_int_equal(load(env, &cfg, &p), CSTL_ECONFIG);
    assert_int_equal(p.count, 7);
    assert_true(any_problem_contains(&p, "CONSTELLATION_KAFKA_BROKERS is set but empty"));
    assert_true(any_problem_contains(&p, "CONSTELLATION_HTTP_THREADS must be an integer from 1 "
                                         "to 256, got \"0\""));
    assert_true(any_problem_contains(&p, "CONSTELLATION_HTTP_MAX_BODY_BYTES"));
    assert_true(any_problem_contains(&p, "CONSTELLATION_LOG_LEVEL is invalid, got \"loud\""));
    assert_true(any_problem_contains(&p, "CONSTELLATION_QUERIES_ADDR"));
    assert_true(any_problem_contains(&p, "CONSTELLATION_PG_DSN is not a valid connection string"));
    assert_true(any_problem_contains(&p, "unknown variable CONSTELLATION_KAFAK_BROKERS"));
}

static void test_brokers_validation(void **state)
{
    (void)state;
    static const char *const bad_lists[] = {"localhost", "h:0", "h:99999", ",", "h:1,,x"};
    for (size_t i = 0; i < CSTL_ARRAY_LEN(bad_lists); i++) {
        char entry[128];
        snprintf(entry, sizeof(entry), "CONSTELLATION_KAFKA_BROKERS=%s", bad_lists[i]);
        const char *const env[] = {entry, NULL};
        cstl_config cfg;
        cstl_config_problems p;
        assert_int_equal(load(env, &cfg, &p), CSTL_ECONFIG);
        assert_true(any_problem_contains(&p, "CONSTELLATION_KAFKA_BROKERS"));
    }
}

static void test_file_then_environment(void **state)
{
    (void)state;
    char path[] = "/tmp/cstl-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("# local settings\n"
          "CONSTELLATION_HTTP_THREADS=8\n"
          "\n"
          "CONSTELLATION_LOG_LEVEL=warn\n",
          f);
    fclose(f);
    char file_entry[64];
    snprintf(file_entry, sizeof(file_entry), "CONSTELLATION_CONFIG_FILE=%s", path);
    const char *const env[] = {file_entry, "CONSTELLATION_LOG_LEVEL=error", NULL};
    cstl_config cfg;
    cstl_config_problems p;
    assert_int_equal(load(env, &cfg, &p), 0);
    assert_int_equal(cfg.http_threads, 8);
    assert_int_equal(cfg.log_level, CSTL_LOG_ERROR); /* the environment wins */
    unlink(path);
}

static void test_file_problems_name_line(void **state)
{
    (void)state;
    char path[] = "/tmp/cstl-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("CONSTELLATION_HTTP_THREADS=8\nnot a setting\nCONSTELLATION_NOPE=1\n"
          "CONSTELLATION_HTTP_THREADS=900\n",
          f);
    fclose(f);
    char file_entry[64];
    snprintf(file_entry, sizeof(file_entry), "CONSTELLATION_CONFIG_FILE=%s", path);
    const char *const env[] = {file_entry, NULL};
    cstl_config cfg;
    cstl_config_problems p;
    assert_int_equal(load(env, &cfg, &p), CSTL_ECONFIG);
    assert_int_equal(p.count, 3);
    char where[80];
    snprintf(where, sizeof(where), "%s:2: expected NAME=value", path);
    assert_true(any_problem_contains(&p, where));
    snprintf(where, sizeof(where), "%s:3: unknown variable \"CONSTELLATION_NOPE\"", path);
    assert_true(any_problem_contains(&p, where));
    snprintf(where, sizeof(where), "(in %s:4) must be an integer", path);
    assert_true(any_problem_contains(&p, where));
    unlink(path);

    const char *const missing[] = {"CONSTELLATION_CONFIG_FILE=/nonexistent/cstl.env", NULL};
    assert_int_equal(load(missing, &cfg, &p), CSTL_ECONFIG);
    assert_true(any_problem_contains(&p, "\"/nonexistent/cstl.env\", which cannot be read"));
}

static void test_dump_redacts_password(void **state)
{
    (void)state;
    static const char *const env[] = {
        "CONSTELLATION_PG_DSN=host=db user=app password=hunter2 dbname=c", NULL};
    cstl_config cfg;
    assert_int_equal(load(env, &cfg, NULL), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    cstl_config_dump(&cfg, out);
    fclose(out);
    assert_null(strstr(buf, "hunter2"));
    assert_non_null(strstr(buf, "password=***"));
    assert_non_null(strstr(buf, "CONSTELLATION_KAFKA_BROKERS=127.0.0.1:9092\n"));
    free(buf);
}

static void test_reference_lists_every_variable(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    cstl_config_write_reference(out);
    fclose(out);
    cstl_config cfg;
    cstl_config_defaults(&cfg);
    char *dump = NULL;
    size_t dump_len = 0;
    out = open_memstream(&dump, &dump_len);
    cstl_config_dump(&cfg, out);
    fclose(out);
    /* every variable the dump knows appears in the reference */
    char *save = NULL;
    for (char *line = strtok_r(dump, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# ", 2) == 0) { /* "# NAME is unset" */
            line += 2;
            *strchr(line, ' ') = '\0';
        } else {
            *strchr(line, '=') = '\0';
        }
        char needle[128];
        snprintf(needle, sizeof(needle), "| `%s` |", line);
        assert_non_null(strstr(buf, needle));
    }
    free(dump);
    free(buf);
}

static char *dump_of(const cstl_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    cstl_config_dump(cfg, out);
    fclose(out);
    return buf;
}

static void test_jwt_settings(void **state)
{
    (void)state;
    /* unset by default: empty fields, shown as unset */
    static const char *const none[] = {NULL};
    cstl_config cfg;
    cstl_config_problems p;
    assert_int_equal(load(none, &cfg, &p), 0);
    assert_string_equal(cfg.jwt_hs256_secret, "");
    assert_string_equal(cfg.jwt_rs256_public_key_file, "");
    assert_string_equal(cfg.jwt_issuer, "");
    assert_string_equal(cfg.jwt_audience, "");
    char *dump = dump_of(&cfg);
    assert_non_null(strstr(dump, "# CONSTELLATION_JWT_HS256_SECRET is unset\n"));
    assert_non_null(strstr(dump, "# CONSTELLATION_JWT_AUDIENCE is unset\n"));
    free(dump);

    /* set: the secret is never printed */
    char path[] = "/tmp/cstl-config-pem-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char file_entry[80];
    snprintf(file_entry, sizeof(file_entry), "CONSTELLATION_JWT_RS256_PUBLIC_KEY_FILE=%s", path);
    const char *const set[] = {
        "CONSTELLATION_JWT_HS256_SECRET=correct-horse-battery-staple-0123456789",
        file_entry,
        "CONSTELLATION_JWT_ISSUER=https://id.example.com",
        "CONSTELLATION_JWT_AUDIENCE=constellation",
        NULL,
    };
    assert_int_equal(load(set, &cfg, &p), 0);
    assert_string_equal(cfg.jwt_hs256_secret, "correct-horse-battery-staple-0123456789");
    assert_string_equal(cfg.jwt_rs256_public_key_file, path);
    assert_string_equal(cfg.jwt_issuer, "https://id.example.com");
    assert_string_equal(cfg.jwt_audience, "constellation");
    dump = dump_of(&cfg);
    assert_null(strstr(dump, "correct-horse"));
    assert_non_null(strstr(dump, "CONSTELLATION_JWT_HS256_SECRET=***\n"));
    assert_non_null(strstr(dump, "CONSTELLATION_JWT_ISSUER=https://id.example.com\n"));
    free(dump);
    unlink(path);

    /* a short secret names the variable and the limit, never the value; a missing key file, a
     * directory and set-but-empty optional settings are refused */
    const char *const bad[] = {
        "CONSTELLATION_JWT_HS256_SECRET=hunter2-is-short",
        "CONSTELLATION_JWT_RS256_PUBLIC_KEY_FILE=/nonexistent/key.pem",
        "CONSTELLATION_JWT_ISSUER=",
        "CONSTELLATION_JWT_AUDIENCE=",
        NULL,
    };
    assert_int_equal(load(bad, &cfg, &p), CSTL_ECONFIG);
    assert_int_equal(p.count, 4);
    assert_true(any_problem_contains(&p, "CONSTELLATION_JWT_HS256_SECRET is 16 bytes long, the "
                                         "minimum is 32"));
    assert_false(any_problem_contains(&p, "hunter2"));
    assert_true(any_problem_contains(&p, "CONSTELLATION_JWT_RS256_PUBLIC_KEY_FILE names "
                                         "\"/nonexistent/key.pem\", which cannot be read"));
    assert_true(any_problem_contains(&p, "CONSTELLATION_JWT_ISSUER is set but empty"));
    assert_true(any_problem_contains(&p, "CONSTELLATION_JWT_AUDIENCE is set but empty"));
    const char *const dir[] = {"CONSTELLATION_JWT_RS256_PUBLIC_KEY_FILE=/tmp", NULL};
    assert_int_equal(load(dir, &cfg, &p), CSTL_ECONFIG);
    assert_true(any_problem_contains(&p, "which cannot be read"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_valid),
        cmocka_unit_test(test_values_from_environment),
        cmocka_unit_test(test_every_problem_reported_at_once),
        cmocka_unit_test(test_brokers_validation),
        cmocka_unit_test(test_file_then_environment),
        cmocka_unit_test(test_file_problems_name_line),
        cmocka_unit_test(test_dump_redacts_password),
        cmocka_unit_test(test_reference_lists_every_variable),
        cmocka_unit_test(test_jwt_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
