/*
 * auth.h - who is calling: bearer tokens (JWT or API key) to a principal, roles and permissions.
 *
 * Callers send `Authorization: Bearer <credential>`. A credential starting with "cstl_" is an API
 * key, anything else is a JWT:
 *
 *   - JWT: compact JWS (RFC 7515) signed HS256 (shared secret) or RS256 (RSA public key from PEM).
 *     `alg` must name an algorithm whose key is configured; `none`, other algorithms and
 *     algorithm confusion are refused. `exp` is required; `nbf` and `iat` are honoured with the
 *     configured leeway; `iss` and `aud` are checked when configured. Claims: `sub`, `tenant`
 *     (a UUID) and `role` (see cstl_role) are required.
 *   - API key: `cstl_<id>_<secret>`, id the key's UUIDv7 as 32 lowercase hex digits, secret 64
 *     lowercase hex digits (32 random bytes). Only SHA-256 of the secret text is ever stored: the
 *     services fill a key store from the tenants events with cstl_auth_key_put/revoke.
 *
 * Failures return CSTL_EAUTH with a message safe to show the caller (never the credential); the
 * precise reason, for logs, is in err->detail. All cryptography is OpenSSL's (libcrypto).
 *
 * Threads: a cstl_auth is created and freed by one thread; in between, authenticate and the key
 * store functions may be called from any number of threads at once (the store is guarded by a
 * read-write lock: authentications read concurrently, updates take it exclusively).
 */
#ifndef CSTL_PLATFORM_AUTH_H
#define CSTL_PLATFORM_AUTH_H

#include "platform/config.h"
#include "platform/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Roles, from the `role` claim or the API key's record. */
typedef enum cstl_role {
    CSTL_ROLE_ADMIN,  /* everything a member can do, plus tenant, key and fleet management */
    CSTL_ROLE_MEMBER, /* submits and cancels jobs, reads */
    CSTL_ROLE_VIEWER, /* reads */
    CSTL_ROLE_WORKER, /* a worker agent: reports on the jobs it runs, nothing else */
    CSTL_ROLE_AGENT,  /* an automated caller (MCP): submits, cancels and reads, with guard rails */
} cstl_role;

#define CSTL_ROLE_COUNT 5

/* Parses a role name ("admin", "member", "viewer", "worker", "agent"; exact, lower case).
 * Returns 0 and sets *out, or CSTL_EINVAL. */
int cstl_role_parse(const char *s, cstl_role *out);

/* The name of a role ("admin"...); "unknown" for a value out of range. Static storage. */
const char *cstl_role_name(cstl_role role);

/* True when `have` includes `need`: admin > member > viewer; worker and agent are separate
 * capabilities that include only themselves. */
bool cstl_role_allows(cstl_role have, cstl_role need);

/* Permissions checked by handlers. Which role holds which is one table (auth.c, docs/auth.md). */
typedef enum cstl_perm {
    CSTL_PERM_READ,          /* read jobs, fleet and tenant data of the caller's tenant */
    CSTL_PERM_SUBMIT_JOB,    /* submit jobs */
    CSTL_PERM_CANCEL_JOB,    /* cancel jobs */
    CSTL_PERM_MANAGE_FLEET,  /* register, drain and remove workers and pools */
    CSTL_PERM_WORKER_REPORT, /* report job progress, logs and results as a worker */
    CSTL_PERM_ADMIN,         /* manage the tenant: members, API keys, quotas */
} cstl_perm;

#define CSTL_PERM_COUNT 6

/* The name of a permission ("submit_job"...); "unknown" for a value out of range. Static. */
const char *cstl_perm_name(cstl_perm perm);

/* True when role holds perm. */
bool cstl_role_has_perm(cstl_role role, cstl_perm perm);

/* An authenticated caller. Plain data: copy it freely. */
typedef struct cstl_principal {
    char tenant_id[37]; /* canonical lower-case UUID */
    char subject[129];  /* the JWT `sub`, or "apikey:<key id>" */
    cstl_role role;
    char key_id[37]; /* the API key's id (canonical UUID); "" for a JWT */
} cstl_principal;

/* True when the principal's role holds perm (false for NULL). */
bool cstl_principal_can(const cstl_principal *p, cstl_perm perm);

#define CSTL_AUTH_MAX_TOKEN        8192 /* bytes in the credential after "Bearer " */
#define CSTL_AUTH_MAX_JWT_HEADER   1024 /* decoded bytes of a JWT's header JSON */
#define CSTL_AUTH_MAX_JWT_PAYLOAD  4096 /* decoded bytes of a JWT's payload JSON */
#define CSTL_AUTH_MIN_HS256_SECRET 32   /* bytes */
#define CSTL_AUTH_MAX_HS256_SECRET 1024 /* bytes */
#define CSTL_AUTH_MIN_RSA_BITS     2048
#define CSTL_AUTH_MAX_PEM          (64 * 1024)
#define CSTL_AUTH_DEFAULT_LEEWAY   30
#define CSTL_AUTH_MAX_LEEWAY       600
#define CSTL_AUTH_NO_LEEWAY        (-1)    /* leeway_s value for no clock skew at all */
#define CSTL_AUTH_MAX_KEYS         1000000 /* API key records (revoked ones included) */
#define CSTL_AUTH_MAX_SUSPENDED    100000  /* suspended tenants */

typedef struct cstl_auth_options {
    const char *hs256_secret;         /* NULL: HS256 refused; else at least 32 bytes of text */
    const char *rs256_public_key_pem; /* NULL: RS256 refused; else a PEM "PUBLIC KEY" (RSA) */
    const char *issuer;               /* NULL: `iss` not checked; else it must equal this */
    const char *audience;             /* NULL: `aud` not checked; else it must contain this */
    int leeway_s; /* clock skew allowed on exp/nbf/iat: 0 = the default (30 s), CSTL_AUTH_NO_LEEWAY
                     for none, at most CSTL_AUTH_MAX_LEEWAY */
} cstl_auth_options;

typedef struct cstl_auth cstl_auth;

/*
 * A new authenticator with an empty key store. Copies everything it needs from opts (borrowed for
 * the call only). Returns NULL and fills err (CSTL_EINVAL / CSTL_ECONFIG) when an option is
 * invalid: a secret shorter than 32 bytes or that looks like a PEM key, a PEM that is not an RSA
 * public key of at least 2048 bits, a leeway out of range. With neither key configured every JWT
 * is refused; API keys still work. Free with cstl_auth_free.
 */
cstl_auth *cstl_auth_new(const cstl_auth_options *opts, cstl_error *err);

/*
 * Like cstl_auth_new with options from the configuration: the HS256 secret, the RS256 public key
 * read from CONSTELLATION_JWT_RS256_PUBLIC_KEY_FILE, the issuer and the audience. Errors name the
 * variable at fault. cfg is borrowed for the call only.
 */
cstl_auth *cstl_auth_new_from_config(const cstl_config *cfg, cstl_error *err);

/* Frees a; NULL is a no-op. No other call on a may be running. */
void cstl_auth_free(cstl_auth *a);

/*
 * Authenticates the value of an Authorization header ("Bearer <jwt or api key>"; the scheme is
 * case-insensitive) at Unix time now_s. Returns 0 and fills *out, or CSTL_EAUTH with err->message
 * safe to show the caller and err->detail the precise reason for the logs; neither ever contains
 * the credential. Every API key failure has the same message, "invalid or revoked api key".
 * authorization is borrowed for the call. Thread-safe.
 */
int cstl_auth_authenticate(
    cstl_auth *a, const char *authorization, int64_t now_s, cstl_principal *out, cstl_error *err);

/*
 * Adds or replaces the API key record key_id (canonical UUID) of tenant_id (canonical UUID), with
 * the SHA-256 hex (64 digits, either case) of its secret, its role and its expiry (Unix seconds;
 * 0: never). A revoked key stays revoked: putting it again changes nothing and returns 0.
 * Returns 0, CSTL_EINVAL for an invalid argument, or CSTL_ETOOBIG when the store holds
 * CSTL_AUTH_MAX_KEYS records. Arguments are copied. Thread-safe.
 */
int cstl_auth_key_put(cstl_auth *a,
                      const char *key_id,
                      const char *tenant_id,
                      const char *sha256_hex,
                      cstl_role role,
                      int64_t expires_at_s);

/*
 * Revokes key_id for good. Revoking an unknown id records the revocation, so that a put arriving
 * later cannot bring the key to life. Returns 0, CSTL_EINVAL (not a UUID) or CSTL_ETOOBIG (store
 * full). Thread-safe.
 */
int cstl_auth_key_revoke(cstl_auth *a, const char *key_id);

/*
 * Marks tenant_id (canonical UUID) suspended or active again. While suspended, neither its API keys
 * nor JWTs naming it authenticate. Returns 0, CSTL_EINVAL or CSTL_ETOOBIG. Thread-safe.
 */
int cstl_auth_tenant_set_suspended(cstl_auth *a, const char *tenant_id, bool suspended);

/* Number of API key records in the store (revoked included). Thread-safe. */
size_t cstl_auth_key_count(cstl_auth *a);

#define CSTL_API_KEY_ID_HEX     32
#define CSTL_API_KEY_SECRET_HEX 64
#define CSTL_API_KEY_LEN        (5 + CSTL_API_KEY_ID_HEX + 1 + CSTL_API_KEY_SECRET_HEX) /* 102 */

/*
 * A new API key: writes the key text (CSTL_API_KEY_LEN chars + NUL; show it to the caller once,
 * never store it) into key_out, its id (a new UUIDv7, canonical form) into key_id and the
 * lower-case SHA-256 hex of its secret part (what cstl_auth_key_put stores) into sha256_hex.
 * The secret comes from RAND_bytes. Returns 0, CSTL_EINVAL when key_size is too small, or
 * CSTL_EINTERNAL when no randomness is available. Thread-safe.
 */
int cstl_api_key_generate(char *key_out, size_t key_size, char key_id[37], char sha256_hex[65]);

/*
 * Checks the format of an API key and splits it: writes the canonical key id into key_id and
 * points *secret at the secret part inside key (borrowed from key). Returns 0 or CSTL_EPARSE.
 */
int cstl_api_key_parse(const char *key, char key_id[37], const char **secret);

/* Writes the lower-case SHA-256 hex of the secret text into sha256_hex. Returns 0 or
 * CSTL_EINTERNAL. */
int cstl_api_key_hash(const char *secret, char sha256_hex[65]);

#endif
