/*
 * migrate.c - applies the embedded SQL migrations (see migrate.h).
 *
 * Invariants: a migration and its schema_migrations row commit together or not at all; the runner
 * holds the session advisory lock from before it reads schema_migrations until it has applied the
 * last pending migration, so two runners never apply the same migration; it never reconnects,
 * because a new session would not hold the lock. Called from the thread that owns the connection.
 */
#include "platform/migrate.h"

#include "platform/embed.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_KEY_TEXT_MAX 24

static const char create_table_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
    "    version    int PRIMARY KEY,\n"
    "    name       text NOT NULL,\n"
    "    checksum   text NOT NULL,\n"
    "    applied_at timestamptz NOT NULL DEFAULT now()\n"
    ");\n"
    "COMMENT ON TABLE schema_migrations IS 'SQL migrations applied to this database, one row per "
    "file projections/migrations/NNNN_name.sql; checksum is the SHA-256 of the file'";

static const char *base_name(const char *file)
{
    const char *slash = strrchr(file, '/');
    return slash ? slash + 1 : file;
}

int cstl_migration_parse_name(
    const char *file, int *version, char *name, size_t name_size, cstl_error *err)
{
    if (file == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "migration without a file name");
    const char *b = base_name(file);
    size_t len = strlen(b);
    const char *why = NULL;
    if (len < 4 || !isdigit((unsigned char)b[0]) || !isdigit((unsigned char)b[1]) ||
        !isdigit((unsigned char)b[2]) || !isdigit((unsigned char)b[3]))
        why = "it must start with a 4-digit version";
    else if (len < 5 || b[4] != '_')
        why = "the version must be followed by '_'";
    else if (len < 9 || strcmp(b + len - 4, ".sql") != 0)
        why = "it must end in .sql";
    if (why != NULL)
        return cstl_error_set(err, CSTL_EINVAL,
                              "invalid migration file name \"%s\": %s (expected NNNN_name.sql)",
                              file, why);
    int v = (b[0] - '0') * 1000 + (b[1] - '0') * 100 + (b[2] - '0') * 10 + (b[3] - '0');
    const char *n = b + 5;
    size_t nlen = len - 9;
    if (v == 0)
        why = "version 0000 is not allowed, versions start at 0001";
    else if (nlen == 0)
        why = "the name is empty";
    else if (nlen >= CSTL_MIGRATION_NAME_MAX)
        why = "the name is longer than 63 characters";
    else if (!islower((unsigned char)n[0]))
        why = "the name must start with a lower-case letter";
    else if (n[nlen - 1] == '_')
        why = "the name must not end with '_'";
    for (size_t i = 0; why == NULL && i < nlen; i++) {
        unsigned char c = (unsigned char)n[i];
        if (!(islower(c) || isdigit(c) || c == '_'))
            why = "the name must be snake_case (a-z, 0-9 and '_')";
        else if (c == '_' && n[i + 1] == '_')
            why = "the name must not contain '__'";
    }
    if (why != NULL)
        return cstl_error_set(err, CSTL_EINVAL, "invalid migration file name \"%s\": %s", file,
                              why);
    if (version != NULL)
        *version = v;
    if (name != NULL && name_size > 0)
        snprintf(name, name_size, "%.*s", (int)nlen, n);
    return 0;
}

static int version_of(const cstl_migration *m)
{
    int v = 0;
    cstl_migration_parse_name(m->file, &v, NULL, 0, NULL);
    return v;
}

static int cmp_version(const void *a, const void *b)
{
    int va = version_of(a), vb = version_of(b);
    return (va > vb) - (va < vb);
}

int cstl_migrations_sort(cstl_migration *list, size_t n, cstl_error *err)
{
    if (list == NULL && n > 0)
        return cstl_error_set(err, CSTL_EINVAL, "no migration list given");
    for (size_t i = 0; i < n; i++) {
        int rc = cstl_migration_parse_name(list[i].file, NULL, NULL, 0, err);
        if (rc != 0)
            return rc;
        if (list[i].sql == NULL)
            return cstl_error_set(err, CSTL_EINVAL, "migration \"%s\" has no sql", list[i].file);
    }
    if (n > 1)
        qsort(list, n, sizeof(*list), cmp_version);
    for (size_t i = 1; i < n; i++)
        if (version_of(&list[i - 1]) == version_of(&list[i]))
            return cstl_error_set(err, CSTL_EEXISTS,
                                  "duplicate migration version %04d: \"%s\" and \"%s\"",
                                  version_of(&list[i]), list[i - 1].file, list[i].file);
    return 0;
}

void cstl_migration_checksum(const void *data, size_t size, char out[CSTL_SHA256_HEX_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data, size, md, &len, EVP_sha256(), NULL) != 1 || len != 32)
        cstl_panic("sha-256 computation failed");
    static const char hex[] = "0123456789abcdef";
    for (unsigned int i = 0; i < len; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * len] = '\0';
}

int cstl_migrations_embedded(cstl_migration **out, size_t *n, cstl_error *err)
{
    if (out == NULL || n == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "invalid arguments");
    *out = NULL;
    *n = 0;
    size_t count = 0, dirlen = strlen(CSTL_MIGRATIONS_DIR);
    for (const cstl_embedded_file *f = cstl_embedded_files; f->path != NULL; f++)
        if (strncmp(f->path, CSTL_MIGRATIONS_DIR, dirlen) == 0)
            count++;
    cstl_migration *list = cstl_xcalloc(count, sizeof(*list));
    size_t k = 0;
    for (const cstl_embedded_file *f = cstl_embedded_files; f->path != NULL; f++) {
        if (strncmp(f->path, CSTL_MIGRATIONS_DIR, dirlen) != 0)
            continue;
        if (strlen(f->data) != f->size) {
            free(list);
            return cstl_error_set(err, CSTL_EINVAL, "migration \"%s\" contains a NUL byte",
                                  f->path);
        }
        list[k++] = (cstl_migration){f->path, f->data};
    }
    int rc = cstl_migrations_sort(list, k, err);
    if (rc != 0) {
        free(list);
        return rc;
    }
    *out = list;
    *n = k;
    return 0;
}

/* ---- the runner ---- */

typedef struct plan_item {
    const cstl_migration *m;
    int version;
    char name[CSTL_MIGRATION_NAME_MAX];
    char checksum[CSTL_SHA256_HEX_LEN + 1];
    bool applied;
} plan_item;

static int lock_call(cstl_pg_conn *conn, const char *fn_sql, cstl_error *err)
{
    char key[LOCK_KEY_TEXT_MAX];
    snprintf(key, sizeof(key), "%lld", (long long)CSTL_MIGRATE_LOCK_KEY);
    const char *params[] = {key};
    return cstl_pg_exec(conn, fn_sql, 1, params, NULL, err);
}

/* Applies one migration and its row in one transaction. */
static int apply_one(cstl_pg_conn *conn, const plan_item *it, cstl_error *err)
{
    int rc = cstl_pg_exec(conn, "BEGIN", 0, NULL, NULL, err);
    if (rc == 0)
        rc = cstl_pg_exec_script(conn, it->m->sql, err);
    if (rc == 0) {
        char version[16];
        snprintf(version, sizeof(version), "%d", it->version);
        const char *params[] = {version, it->name, it->checksum};
        rc = cstl_pg_exec(conn,
                          "INSERT INTO schema_migrations (version, name, checksum) "
                          "VALUES ($1, $2, $3)",
                          3, params, NULL, err);
    }
    if (rc == 0)
        rc = cstl_pg_exec(conn, "COMMIT", 0, NULL, NULL, err);
    if (rc != 0) {
        if (cstl_pg_ok(conn) && PQtransactionStatus(cstl_pg_raw(conn)) != PQTRANS_IDLE) {
            cstl_error ignored;
            cstl_pg_exec(conn, "ROLLBACK", 0, NULL, NULL, &ignored);
        }
        if (err != NULL) {
            char inner[CSTL_ERROR_MESSAGE_MAX];
            memcpy(inner, err->message, sizeof(inner));
            if (!cstl_error_is_retriable(rc))
                rc = CSTL_EMIGRATION;
            err->code = rc;
            snprintf(err->message, sizeof(err->message),
                     "migration %04d (\"%.200s\") failed: %.250s", it->version, it->m->file, inner);
        } else if (!cstl_error_is_retriable(rc)) {
            rc = CSTL_EMIGRATION;
        }
    }
    return rc;
}

/* Reads schema_migrations and checks it against plan; marks what is applied. */
static int verify_applied(
    cstl_pg_conn *conn, plan_item *plan, size_t n, cstl_migrate_report *report, cstl_error *err)
{
    PGresult *res = NULL;
    int rc = cstl_pg_exec(conn, "SELECT version, name, checksum FROM schema_migrations", 0, NULL,
                          &res, err);
    if (rc != 0)
        return rc;
    for (int r = 0; r < PQntuples(res) && rc == 0; r++) {
        int version = atoi(PQgetvalue(res, r, 0));
        const char *name = PQgetvalue(res, r, 1), *sum = PQgetvalue(res, r, 2);
        plan_item *it = NULL;
        for (size_t i = 0; i < n && it == NULL; i++)
            if (plan[i].version == version)
                it = &plan[i];
        if (it == NULL) {
            report->unknown++;
            continue;
        }
        if (strcmp(it->checksum, sum) != 0) {
            rc = cstl_error_set(err, CSTL_EMIGRATION,
                                "migration %04d (\"%s\") has changed since it was applied: "
                                "its checksum differs from the one in schema_migrations",
                                version, it->m->file);
            cstl_error_detail(err, "applied checksum \"%.70s\", file checksum \"%s\"", sum,
                              it->checksum);
        } else if (strcmp(it->name, name) != 0) {
            rc = cstl_error_set(err, CSTL_EMIGRATION,
                                "migration %04d (\"%s\") was applied under another name \"%.80s\"",
                                version, it->m->file, name);
        } else {
            it->applied = true;
            report->present++;
        }
    }
    PQclear(res);
    return rc;
}

int cstl_migrate_run(cstl_pg_conn *conn,
                     const cstl_migration *list,
                     size_t n,
                     cstl_migrate_report *report,
                     cstl_error *err)
{
    cstl_migrate_report local_report;
    if (report == NULL)
        report = &local_report;
    memset(report, 0, sizeof(*report));
    if (conn == NULL || (list == NULL && n > 0))
        return cstl_error_set(err, CSTL_EINVAL, "invalid migration arguments");

    cstl_migration *sorted = cstl_xcalloc(n, sizeof(*sorted));
    if (n > 0)
        memcpy(sorted, list, n * sizeof(*sorted));
    int rc = cstl_migrations_sort(sorted, n, err);
    plan_item *plan = cstl_xcalloc(n, sizeof(*plan));
    for (size_t i = 0; rc == 0 && i < n; i++) {
        plan[i].m = &sorted[i];
        cstl_migration_parse_name(sorted[i].file, &plan[i].version, plan[i].name,
                                  sizeof(plan[i].name), NULL);
        cstl_migration_checksum(sorted[i].sql, strlen(sorted[i].sql), plan[i].checksum);
    }
    if (rc == 0 && (!cstl_pg_ok(conn) || PQtransactionStatus(cstl_pg_raw(conn)) != PQTRANS_IDLE))
        rc = cstl_error_set(err, CSTL_EINVAL,
                            "migrations need an open connection outside a transaction");

    bool locked = false;
    if (rc == 0) {
        rc = lock_call(conn, "SELECT pg_advisory_lock($1::bigint)", err);
        locked = rc == 0;
    }
    if (rc == 0)
        rc = cstl_pg_exec_script(conn, create_table_sql, err);
    if (rc == 0)
        rc = verify_applied(conn, plan, n, report, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (plan[i].applied)
            continue;
        rc = apply_one(conn, &plan[i], err);
        if (rc == 0) {
            report->applied++;
            report->last_version = plan[i].version;
        }
    }
    if (locked && cstl_pg_ok(conn)) {
        cstl_error unlock_err;
        int urc = lock_call(conn, "SELECT pg_advisory_unlock($1::bigint)", &unlock_err);
        if (rc == 0 && urc != 0) {
            rc = urc;
            if (err != NULL)
                *err = unlock_err;
        }
    }
    free(plan);
    free(sorted);
    if (rc == 0)
        cstl_error_clear(err);
    return rc;
}
