/*
 * migrate.h - the SQL migration runner.
 *
 * Migrations are files named NNNN_name.sql (a 4-digit version from 0001, a snake_case name),
 * compiled into the binary from projections/migrations/. Each is applied once, in version order,
 * in its own transaction together with its row in schema_migrations(version, name, checksum,
 * applied_at). The checksum is the SHA-256 (lower-case hex) of the file's bytes; an applied
 * migration whose file has changed since is refused, because history must not be rewritten. A
 * session advisory lock (CSTL_MIGRATE_LOCK_KEY) serialises concurrent migrators, so each
 * migration is applied exactly once however many processes start together.
 *
 * A migration file must not contain transaction control (BEGIN/COMMIT) or statements that cannot
 * run inside a transaction (CREATE INDEX CONCURRENTLY, ALTER TYPE ... ADD VALUE before 12, ...).
 */
#ifndef CSTL_PLATFORM_MIGRATE_H
#define CSTL_PLATFORM_MIGRATE_H

#include "platform/error.h"
#include "platform/pg.h"

#include <stddef.h>

/* Where the build embeds migration files from (see platform/embed.h). */
#define CSTL_MIGRATIONS_DIR "projections/migrations/"

/* Key of the session advisory lock held while migrating ("cstlmigr" in ASCII). */
#define CSTL_MIGRATE_LOCK_KEY 0x6373746c6d696772LL

#define CSTL_MIGRATION_NAME_MAX 64 /* longest name part, including the NUL */
#define CSTL_SHA256_HEX_LEN     64

/* One migration. Both strings are borrowed from the caller (or the embed table). */
typedef struct cstl_migration {
    const char *file; /* "projections/migrations/0001_projection_offsets.sql"; only the last
                         path component is parsed */
    const char *sql;  /* the file's text, NUL-terminated */
} cstl_migration;

/* What a run did. Filled also when the run fails (with what was done before the failure). */
typedef struct cstl_migrate_report {
    size_t applied;   /* applied by this run */
    size_t present;   /* applied earlier, checksum verified */
    size_t unknown;   /* rows in schema_migrations with no migration in the list (a newer
                         binary applied them); not an error */
    int last_version; /* highest version applied by this run, 0 if none */
} cstl_migrate_report;

/*
 * Parses the last path component of file as NNNN_name.sql. Stores the version in *version and the
 * name in name (size name_size) when those are not NULL. Returns 0, or CSTL_EINVAL with err naming
 * the file and what is wrong with it.
 */
int cstl_migration_parse_name(
    const char *file, int *version, char *name, size_t name_size, cstl_error *err);

/*
 * Checks every name in list and sorts list by version in place. Returns 0, or CSTL_EINVAL naming
 * the first bad file, or CSTL_EEXISTS naming both files of a duplicated version (list is then
 * sorted but invalid).
 */
int cstl_migrations_sort(cstl_migration *list, size_t n, cstl_error *err);

/* Writes the lower-case hex SHA-256 of size bytes at data, and a NUL, to out. */
void cstl_migration_checksum(const void *data, size_t size, char out[CSTL_SHA256_HEX_LEN + 1]);

/*
 * The embedded migrations (files under CSTL_MIGRATIONS_DIR ending in .sql), checked and sorted.
 * On success stores a new array in *out (free it with free(); its strings are borrowed from the
 * embed table and live as long as the process) and its length in *n. Returns 0, CSTL_EINVAL or
 * CSTL_EEXISTS (see cstl_migrations_sort; a file holding a NUL byte is CSTL_EINVAL).
 */
int cstl_migrations_embedded(cstl_migration **out, size_t *n, cstl_error *err);

/*
 * Brings the database of conn up to date with list (any order; it is not modified): takes the
 * advisory lock (waiting for another migrator to finish), creates schema_migrations if missing,
 * verifies every applied migration's checksum and name, then applies each pending one in version
 * order in its own transaction with its schema_migrations row, and releases the lock. report may
 * be NULL. Returns 0 or:
 *   CSTL_EINVAL / CSTL_EEXISTS  a bad list (see cstl_migrations_sort);
 *   CSTL_EMIGRATION             an applied migration differs from list, or a migration's SQL failed
 *                               (the message names the version and the file; origin_sqlstate is
 *                               the server's);
 *   CSTL_EPG_CONN and others    talking to the server failed (retry the whole run on a new
 *                               connection: what was committed stays applied).
 * Never reconnects: a new connection would not hold the lock. conn must not be in a transaction.
 * Thread: conn's thread.
 */
int cstl_migrate_run(cstl_pg_conn *conn,
                     const cstl_migration *list,
                     size_t n,
                     cstl_migrate_report *report,
                     cstl_error *err);

#endif
