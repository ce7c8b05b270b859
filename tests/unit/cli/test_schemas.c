/*
 * test_schemas.c - `constellation schemas check` on a throw-away git repository: history kept,
 * incompatible changes and missing frozen versions fail, usage errors exit 2.
 */
#include "cli/schemas.h"
#include "platform/error.h"

#include <cmocka.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char repo[64];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[2300];
    snprintf(full, sizeof full, "cd '%s' && (%s) >/dev/null 2>&1", repo, cmd);
    assert_int_equal(system(full), 0);
}

static void write_file(const char *path, const char *text)
{
    char full[512];
    snprintf(full, sizeof full, "%s/%s", repo, path);
    FILE *f = fopen(full, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int run(const char *against)
{
    char *argv[6] = {"schemas", "check", "--root", repo, NULL, NULL};
    int argc = 4;
    if (against) {
        argv[4] = "--against";
        argv[5] = (char *)against;
        argc = 6;
    }
    return cli_schemas(argc, argv);
}

#define REC(fields)                                                                                \
    "{\"type\":\"record\",\"name\":\"E\",\"namespace\":\"io.constellation.jobs\",\"fields\":"      \
    "[" fields "]}\n"

static void test_history(void **state)
{
    (void)state;
    snprintf(repo, sizeof repo, "/tmp/cstl-schemas-XXXXXX");
    assert_non_null(mkdtemp(repo));
    sh("git init -q . && git config user.email t@example.com && git config user.name t && "
       "mkdir -p schemas/jobs/history/E");
    const char *v1 = REC("{\"name\":\"a\",\"type\":\"int\"}");
    write_file("schemas/jobs/E.avsc", v1);
    assert_int_equal(run(NULL), 0);
    sh("git add -A && git commit -qm v1");
    assert_int_equal(run(NULL), 0);
    /* a field added without a default: incompatible, and v1 is not frozen */
    write_file("schemas/jobs/E.avsc",
               REC("{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"b\",\"type\":\"int\"}"));
    assert_int_equal(run(NULL), 1);
    /* with a default it is compatible, but v1 must still be kept */
    write_file(
        "schemas/jobs/E.avsc",
        REC("{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"b\",\"type\":\"int\",\"default\":0}"));
    assert_int_equal(run(NULL), 1);
    write_file("schemas/jobs/history/E/v1.avsc", v1);
    assert_int_equal(run(NULL), 0);
    sh("git add -A && git commit -qm v2");
    assert_int_equal(run(NULL), 0);
    assert_int_equal(run("HEAD"), 0);
    assert_int_equal(run("HEAD~1"), 0);
    /* changing a frozen version breaks the history rule */
    write_file("schemas/jobs/history/E/v1.avsc", REC("{\"name\":\"a\",\"type\":\"long\"}"));
    assert_int_equal(run(NULL), 1);
    write_file("schemas/jobs/history/E/v1.avsc", v1);
    /* an int field turned string is incompatible with every earlier version */
    write_file("schemas/jobs/E.avsc", REC("{\"name\":\"a\",\"type\":\"string\"},{\"name\":\"b\","
                                          "\"type\":\"int\",\"default\":0}"));
    assert_int_equal(run(NULL), 1);
    write_file(
        "schemas/jobs/E.avsc",
        REC("{\"name\":\"a\",\"type\":\"int\"},{\"name\":\"b\",\"type\":\"int\",\"default\":0}"));
    /* a schema that does not parse */
    write_file("schemas/jobs/Bad.avsc", "{\"type\":\"record\"}");
    assert_int_equal(run(NULL), 1);
    sh("rm schemas/jobs/Bad.avsc");
    assert_int_equal(run(NULL), 0);
    /* usage */
    char *bad_rev[] = {"schemas", "check", "--root", repo, "--against", "--evil", NULL};
    assert_int_equal(cli_schemas(6, bad_rev), 2);
    char *unknown[] = {"schemas", "frobnicate", NULL};
    assert_int_equal(cli_schemas(2, unknown), 2);
    char *help[] = {"schemas", "--help", NULL};
    assert_int_equal(cli_schemas(2, help), 0);
    assert_int_equal(run("no-such-rev"), 2);
    sh("rm -rf '%s'", repo);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_history),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
