/*
 * tenants.c - the tenants projection: tenants and api_keys, from constellation.tenants.events.
 *
 * Invariants: API key events belong to their tenant's aggregate, so every event bumps the tenant
 * row's version and applies only when newer than it (replays change nothing). Only key hashes are
 * stored, as the events carry them. Called from the projector's thread in its batch transaction.
 */
#include "projections/projection.h"

#include <string.h>

/* $1 tenant_id, $2 version, $3 time (us); specific from $4 */
#define GUARD                                                                                      \
    "WITH u AS (UPDATE tenants SET version = $2, updated_at = cstl_ts($3) WHERE tenant_id = $1 "   \
    "AND version < $2 RETURNING tenant_id)"

static const char created_sql[] =
    "WITH u AS (INSERT INTO tenants (tenant_id, name, contact_email, state, created_at, "
    "updated_at, version) VALUES ($1, $4, $5, 'active', cstl_ts($3), cstl_ts($3), $2) "
    "ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id) SELECT count(*) FROM u";
static const char suspended_sql[] =
    "WITH u AS (UPDATE tenants SET version = $2, updated_at = cstl_ts($3), state = 'suspended', "
    "suspended_reason = $4 WHERE tenant_id = $1 AND version < $2 RETURNING tenant_id) "
    "SELECT count(*) FROM u";
static const char issued_sql[] =
    GUARD ", k AS (INSERT INTO api_keys (key_id, tenant_id, key_hash, role, expires_at, "
          "issued_at) SELECT $4, $1, $5, $6, cstl_ts($7::bigint), cstl_ts($3) FROM u "
          "ON CONFLICT (key_id) DO NOTHING) SELECT count(*) FROM u";
static const char revoked_sql[] =
    GUARD ", k AS (UPDATE api_keys SET revoked_at = cstl_ts($3) WHERE key_id = $4 AND "
          "tenant_id = $1 AND revoked_at IS NULL AND EXISTS (SELECT FROM u)) "
          "SELECT count(*) FROM u";
static const char exists_sql[] = "SELECT 1 FROM tenants WHERE tenant_id = $1";

int cstl_projection_tenants_apply(cstl_pg_conn *conn,
                                  const cstl_event_headers *h,
                                  const char *type,
                                  const json_t *data,
                                  cstl_error *err)
{
    const char *name, *sql;
    cstl_proj_params p = {0};
    cstl_proj_str(&p, data, "tenant_id", false);
    cstl_proj_i64(&p, h->version);
    cstl_proj_int(&p, data, "at", false);
    if (strcmp(type, "TenantCreated") == 0) {
        name = "tenants_created", sql = created_sql;
        cstl_proj_str(&p, data, "name", false);
        cstl_proj_str(&p, data, "contact_email", false);
    } else if (strcmp(type, "TenantSuspended") == 0) {
        name = "tenants_suspended", sql = suspended_sql;
        cstl_proj_str(&p, data, "reason", false);
    } else if (strcmp(type, "ApiKeyIssued") == 0) {
        name = "tenants_key_issued", sql = issued_sql;
        cstl_proj_str(&p, data, "key_id", false);
        cstl_proj_str(&p, data, "key_hash", false);
        cstl_proj_str(&p, data, "role", false);
        cstl_proj_int(&p, data, "expires_at", true);
    } else if (strcmp(type, "ApiKeyRevoked") == 0) {
        name = "tenants_key_revoked", sql = revoked_sql;
        cstl_proj_str(&p, data, "key_id", false);
    } else {
        cstl_proj_params_free(&p);
        return 0;
    }
    int rc = cstl_proj_params_check(&p, type, err);
    if (rc == 0)
        rc = cstl_proj_guarded(conn, name, sql, &p, "tenants_exists",
                               sql == created_sql ? NULL : exists_sql, "tenant", err);
    cstl_proj_params_free(&p);
    return rc;
}
