/*
 * tenants.c - the Tenant aggregate (id = tenant id): creation, suspension and its API keys.
 *
 * Invariants: a tenant is created once; a suspended tenant stays suspended (there is no
 * command to lift a suspension yet); an API key id is used once per tenant, and only the hash of
 * a key is ever recorded. Every command but CreateTenant addressed to a tenant that does not exist
 * or is not cmd->tenant_id is refused as tenant_not_found. Called by the partition's owner thread.
 */
#include "commands/aggregate.h"
#include "commands/aggregate_internal.h"
#include "commands/rules.h"

#include <stdlib.h>
#include <string.h>

typedef struct api_key {
    char key_id[37];
    char key_hash[65];
    char role[8];
    int has_expiry;
    int64_t expires_at;
    int64_t issued_at;
    int revoked;
    int64_t revoked_at;
} api_key;

typedef struct tenant_state {
    int exists;
    char tenant_id[37];
    char *name;
    char *contact_email;
    int64_t created_at;
    int suspended;
    char *suspend_reason;
    int64_t suspended_at;
    size_t n_keys, cap_keys;
    api_key *keys;
} tenant_state;

static void *tenant_create(void)
{
    return cstl_xcalloc(1, sizeof(tenant_state));
}

static void tenant_destroy(void *state)
{
    tenant_state *t = state;
    if (t == NULL)
        return;
    free(t->name);
    free(t->contact_email);
    free(t->suspend_reason);
    free(t->keys);
    free(t);
}

static api_key *find_key(const tenant_state *t, const char *key_id)
{
    for (size_t i = 0; i < t->n_keys; i++)
        if (strcmp(t->keys[i].key_id, key_id) == 0)
            return &t->keys[i];
    return NULL;
}

static api_key *add_key(tenant_state *t)
{
    if (t->n_keys == t->cap_keys) {
        t->cap_keys = t->cap_keys ? t->cap_keys * 2 : 4;
        t->keys = cstl_xrealloc(t->keys, t->cap_keys * sizeof(*t->keys));
    }
    api_key *k = &t->keys[t->n_keys++];
    memset(k, 0, sizeof(*k));
    return k;
}

/* ---- evolve ------------------------------------------------------------------------------ */

static int tenant_evolve(void *state, const cstl_event *ev, cstl_error *err)
{
    tenant_state *t = state;
    char tenant_id[37];
    int rc = cstl_agg_event_str(ev, "tenant_id", tenant_id, sizeof(tenant_id), err);
    if (rc != 0)
        return rc;
    int created = strcmp(ev->type, "TenantCreated") == 0;
    if (created == t->exists)
        return cstl_error_set(err, CSTL_EDECODE, "%s %s tenant \"%s\"", ev->type,
                              created ? "repeats for" : "precedes the creation of", tenant_id);
    if (!created && strcmp(tenant_id, t->tenant_id) != 0)
        return cstl_error_set(err, CSTL_EDECODE, "%s.tenant_id \"%s\" is not tenant \"%s\"",
                              ev->type, tenant_id, t->tenant_id);

    if (created) {
        char *name, *email;
        int64_t at;
        if ((rc = cstl_agg_event_int(ev, "at", &at, NULL, err)) != 0 ||
            (rc = cstl_agg_event_strdup(ev, "name", 0, &name, err)) != 0)
            return rc;
        if ((rc = cstl_agg_event_strdup(ev, "contact_email", 0, &email, err)) != 0) {
            free(name);
            return rc;
        }
        t->exists = 1;
        memcpy(t->tenant_id, tenant_id, sizeof(tenant_id));
        t->name = name;
        t->contact_email = email;
        t->created_at = at;
        return 0;
    }
    if (strcmp(ev->type, "TenantSuspended") == 0) {
        char *reason;
        int64_t at;
        if ((rc = cstl_agg_event_int(ev, "at", &at, NULL, err)) != 0 ||
            (rc = cstl_agg_event_strdup(ev, "reason", 0, &reason, err)) != 0)
            return rc;
        free(t->suspend_reason);
        t->suspend_reason = reason;
        t->suspended = 1;
        t->suspended_at = at;
        return 0;
    }
    if (strcmp(ev->type, "ApiKeyIssued") == 0) {
        api_key k = {0};
        if ((rc = cstl_agg_event_str(ev, "key_id", k.key_id, sizeof(k.key_id), err)) != 0 ||
            (rc = cstl_agg_event_str(ev, "key_hash", k.key_hash, sizeof(k.key_hash), err)) != 0 ||
            (rc = cstl_agg_event_str(ev, "role", k.role, sizeof(k.role), err)) != 0 ||
            (rc = cstl_agg_event_int(ev, "expires_at", &k.expires_at, &k.has_expiry, err)) != 0 ||
            (rc = cstl_agg_event_int(ev, "at", &k.issued_at, NULL, err)) != 0)
            return rc;
        if (find_key(t, k.key_id) != NULL)
            return cstl_error_set(err, CSTL_EDECODE, "ApiKeyIssued repeats key \"%s\"", k.key_id);
        *add_key(t) = k;
        return 0;
    }
    if (strcmp(ev->type, "ApiKeyRevoked") == 0) {
        char key_id[37];
        int64_t at;
        if ((rc = cstl_agg_event_str(ev, "key_id", key_id, sizeof(key_id), err)) != 0 ||
            (rc = cstl_agg_event_int(ev, "at", &at, NULL, err)) != 0)
            return rc;
        api_key *k = find_key(t, key_id);
        if (k == NULL)
            return cstl_error_set(err, CSTL_EDECODE, "ApiKeyRevoked names unknown key \"%s\"",
                                  key_id);
        k->revoked = 1;
        k->revoked_at = at;
        return 0;
    }
    return cstl_error_set(err, CSTL_EDECODE, "tenants has no event \"%s\"", ev->type);
}

/* ---- decide ------------------------------------------------------------------------------ */

static json_t *tenant_event(const cstl_command *cmd)
{
    return json_pack("{s:s}", "tenant_id", cstl_agg_str(cmd->payload, "tenant_id"));
}

static int decide_create(const tenant_state *t, const cstl_command *cmd, cstl_decision *d)
{
    const json_t *p = cmd->payload;
    const char *id = cstl_agg_str(p, "tenant_id");
    if (cmd->tenant_id == NULL || strcmp(id, cmd->tenant_id) != 0)
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "tenant_mismatch", "tenant_id",
                                    "tenant_id \"%s\" is not the tenant of the command", id);
    if (t->exists)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "tenant_already_exists", "",
                                    "tenant \"%s\" already exists", id);
    json_t *e = tenant_event(cmd);
    json_object_set_new(e, "name", cstl_agg_copy(p, "name"));
    json_object_set_new(e, "contact_email", cstl_agg_copy(p, "contact_email"));
    json_object_set_new(e, "at", json_integer(cmd->now_us));
    cstl_decision_emit(d, "TenantCreated", e);
    return 0;
}

static int decide_suspend(const tenant_state *t, const cstl_command *cmd, cstl_decision *d)
{
    if (t->suspended)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "tenant_suspended", "",
                                    "tenant \"%s\" is already suspended", t->tenant_id);
    json_t *e = tenant_event(cmd);
    json_object_set_new(e, "reason", cstl_agg_copy(cmd->payload, "reason"));
    json_object_set_new(e, "at", json_integer(cmd->now_us));
    cstl_decision_emit(d, "TenantSuspended", e);
    return 0;
}

static int decide_issue(const tenant_state *t, const cstl_command *cmd, cstl_decision *d)
{
    const json_t *p = cmd->payload;
    const char *key_id = cstl_agg_str(p, "key_id");
    if (t->suspended)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "tenant_suspended", "",
                                    "tenant \"%s\" is suspended: no new api keys", t->tenant_id);
    if (find_key(t, key_id) != NULL)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "api_key_exists", "",
                                    "api key \"%s\" was issued before", key_id);
    const json_t *exp = json_object_get(p, "expires_at");
    if (json_is_integer(exp) && json_integer_value(exp) <= cmd->now_us)
        return cstl_decision_reject(d, CSTL_REJECT_INVALID, "out_of_range", "expires_at",
                                    "expires_at must be in the future, got %lld",
                                    (long long)json_integer_value(exp));
    json_t *e = tenant_event(cmd);
    json_object_set_new(e, "key_id", json_string(key_id));
    json_object_set_new(e, "key_hash", cstl_agg_copy(p, "key_hash"));
    json_object_set_new(e, "role", cstl_agg_copy(p, "role"));
    json_object_set_new(e, "expires_at", cstl_agg_copy(p, "expires_at"));
    json_object_set_new(e, "at", json_integer(cmd->now_us));
    cstl_decision_emit(d, "ApiKeyIssued", e);
    return 0;
}

static int decide_revoke(const tenant_state *t, const cstl_command *cmd, cstl_decision *d)
{
    const char *key_id = cstl_agg_str(cmd->payload, "key_id");
    const api_key *k = find_key(t, key_id);
    if (k == NULL)
        return cstl_decision_reject(d, CSTL_REJECT_NOT_FOUND, "api_key_not_found", "",
                                    "api key \"%s\" does not exist", key_id);
    if (k->revoked)
        return cstl_decision_reject(d, CSTL_REJECT_CONFLICT, "api_key_already_revoked", "",
                                    "api key \"%s\" is already revoked", key_id);
    json_t *e = tenant_event(cmd);
    json_object_set_new(e, "key_id", json_string(key_id));
    json_object_set_new(e, "at", json_integer(cmd->now_us));
    cstl_decision_emit(d, "ApiKeyRevoked", e);
    return 0;
}

static int
tenant_decide(const void *state, int64_t version, const cstl_command *cmd, cstl_decision *d)
{
    const tenant_state *t = state;
    (void)version;
    if (!cstl_command_known("tenants", cmd->type))
        return CSTL_EINVAL;
    if (cstl_command_validate("tenants", cmd->type, cmd->payload, d) < 0 ||
        cstl_agg_check_target(cmd, "tenant_id", d) < 0)
        return 0;
    if (strcmp(cmd->type, "CreateTenant") == 0) {
        decide_create(t, cmd, d);
        return 0;
    }
    /* another tenant's aggregate is reported exactly like a missing one */
    const char *id = cstl_agg_str(cmd->payload, "tenant_id");
    if (!t->exists || cmd->tenant_id == NULL || strcmp(t->tenant_id, cmd->tenant_id) != 0) {
        cstl_decision_reject(d, CSTL_REJECT_NOT_FOUND, "tenant_not_found", "",
                             "tenant \"%s\" does not exist", id);
        return 0;
    }
    if (strcmp(cmd->type, "SuspendTenant") == 0)
        decide_suspend(t, cmd, d);
    else if (strcmp(cmd->type, "IssueApiKey") == 0)
        decide_issue(t, cmd, d);
    else
        decide_revoke(t, cmd, d);
    return 0;
}

/* ---- snapshot ---------------------------------------------------------------------------- */

static json_t *opt_int(int present, int64_t v)
{
    return present ? json_integer(v) : json_null();
}

static json_t *tenant_snapshot(const void *state)
{
    const tenant_state *t = state;
    json_t *keys = json_array();
    for (size_t i = 0; i < t->n_keys; i++) {
        const api_key *k = &t->keys[i];
        json_array_append_new(keys, json_pack("{s:s, s:s, s:s, s:o, s:I, s:o}", "key_id", k->key_id,
                                              "key_hash", k->key_hash, "role", k->role,
                                              "expires_at", opt_int(k->has_expiry, k->expires_at),
                                              "issued_at", (json_int_t)k->issued_at, "revoked_at",
                                              opt_int(k->revoked, k->revoked_at)));
    }
    return json_pack("{s:b, s:s, s:o, s:o, s:I, s:o, s:o, s:o}", "exists", t->exists, "tenant_id",
                     t->tenant_id, "name", cstl_agg_json_str_or_null(t->name), "contact_email",
                     cstl_agg_json_str_or_null(t->contact_email), "created_at",
                     (json_int_t)t->created_at, "suspend_reason",
                     cstl_agg_json_str_or_null(t->suspend_reason), "suspended_at",
                     opt_int(t->suspended, t->suspended_at), "api_keys", keys);
}

static int copy_fixed(char *out, size_t cap, const char *s, const char *what, cstl_error *err)
{
    if (strlen(s) >= cap)
        return cstl_error_set(err, CSTL_EDECODE, "tenant snapshot: %s is too long", what);
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

static void *tenant_restore(const json_t *snap, cstl_error *err)
{
    int exists;
    const char *id;
    json_t *name, *email, *reason, *suspended_at, *keys;
    json_int_t created_at;
    if (cstl_agg_unpack(snap, "tenant", err, "{s:b, s:s, s:o, s:o, s:I, s:o, s:o, s:o}", "exists",
                        &exists, "tenant_id", &id, "name", &name, "contact_email", &email,
                        "created_at", &created_at, "suspend_reason", &reason, "suspended_at",
                        &suspended_at, "api_keys", &keys) != 0)
        return NULL;
    tenant_state *t = tenant_create();
    if (copy_fixed(t->tenant_id, sizeof(t->tenant_id), id, "tenant_id", err) != 0)
        goto fail;
    t->exists = exists;
    t->name = cstl_agg_strdup_or_null(json_string_value(name));
    t->contact_email = cstl_agg_strdup_or_null(json_string_value(email));
    t->suspend_reason = cstl_agg_strdup_or_null(json_string_value(reason));
    t->created_at = created_at;
    t->suspended = json_is_integer(suspended_at);
    t->suspended_at = json_integer_value(suspended_at);
    if (!json_is_array(keys)) {
        cstl_error_set(err, CSTL_EDECODE, "tenant snapshot: api_keys is not an array");
        goto fail;
    }
    size_t i;
    json_t *kj;
    json_array_foreach(keys, i, kj)
    {
        const char *kid, *hash, *role;
        json_t *exp, *rev;
        json_int_t issued;
        if (cstl_agg_unpack(kj, "tenant", err, "{s:s, s:s, s:s, s:o, s:I, s:o}", "key_id", &kid,
                            "key_hash", &hash, "role", &role, "expires_at", &exp, "issued_at",
                            &issued, "revoked_at", &rev) != 0)
            goto fail;
        api_key *k = add_key(t);
        if (copy_fixed(k->key_id, sizeof(k->key_id), kid, "key_id", err) != 0 ||
            copy_fixed(k->key_hash, sizeof(k->key_hash), hash, "key_hash", err) != 0 ||
            copy_fixed(k->role, sizeof(k->role), role, "role", err) != 0)
            goto fail;
        k->has_expiry = json_is_integer(exp);
        k->expires_at = json_integer_value(exp);
        k->issued_at = issued;
        k->revoked = json_is_integer(rev);
        k->revoked_at = json_integer_value(rev);
    }
    return t;
fail:
    tenant_destroy(t);
    return NULL;
}

static const char *tenant_aggregate_id(const char *command_type, const json_t *payload)
{
    if (!cstl_command_known("tenants", command_type))
        return NULL;
    return cstl_agg_str(payload, "tenant_id");
}

const cstl_aggregate_type cstl_tenant_aggregate = {
    .context = "tenants",
    .name = "Tenant",
    .create = tenant_create,
    .destroy = tenant_destroy,
    .evolve = tenant_evolve,
    .decide = tenant_decide,
    .snapshot = tenant_snapshot,
    .restore = tenant_restore,
    .aggregate_id = tenant_aggregate_id,
};
