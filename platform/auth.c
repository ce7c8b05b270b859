/*
 * auth.c - roles and permissions, the authenticator's life cycle, and the Authorization header
 * (see auth.h). JWTs are verified in auth_jwt.c, API keys and the key store live in auth_keys.c.
 *
 * Invariant: the keys and options of a cstl_auth never change after cstl_auth_new, so they are
 * read without locking; only the key store and the suspended tenants change (under a.lock).
 */
#include "platform/auth_internal.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const role_names[CSTL_ROLE_COUNT] = {
    [CSTL_ROLE_ADMIN] = "admin",   [CSTL_ROLE_MEMBER] = "member", [CSTL_ROLE_VIEWER] = "viewer",
    [CSTL_ROLE_WORKER] = "worker", [CSTL_ROLE_AGENT] = "agent",
};

static const char *const perm_names[CSTL_PERM_COUNT] = {
    [CSTL_PERM_READ] = "read",
    [CSTL_PERM_SUBMIT_JOB] = "submit_job",
    [CSTL_PERM_CANCEL_JOB] = "cancel_job",
    [CSTL_PERM_MANAGE_FLEET] = "manage_fleet",
    [CSTL_PERM_WORKER_REPORT] = "worker_report",
    [CSTL_PERM_ADMIN] = "admin",
};

#define CSTL_STR_(x) #x
#define CSTL_STR(x)  CSTL_STR_(x)

#define P(perm) (1u << (perm))

/* The permission table: which role holds which permission (docs/auth.md shows it). */
static const unsigned role_perms[CSTL_ROLE_COUNT] = {
    [CSTL_ROLE_ADMIN] = P(CSTL_PERM_READ) | P(CSTL_PERM_SUBMIT_JOB) | P(CSTL_PERM_CANCEL_JOB) |
                        P(CSTL_PERM_MANAGE_FLEET) | P(CSTL_PERM_ADMIN),
    [CSTL_ROLE_MEMBER] = P(CSTL_PERM_READ) | P(CSTL_PERM_SUBMIT_JOB) | P(CSTL_PERM_CANCEL_JOB),
    [CSTL_ROLE_VIEWER] = P(CSTL_PERM_READ),
    [CSTL_ROLE_WORKER] = P(CSTL_PERM_WORKER_REPORT),
    [CSTL_ROLE_AGENT] = P(CSTL_PERM_READ) | P(CSTL_PERM_SUBMIT_JOB) | P(CSTL_PERM_CANCEL_JOB),
};

#undef P

static bool role_valid(cstl_role role)
{
    return (int)role >= 0 && (int)role < CSTL_ROLE_COUNT;
}

int cstl_role_parse(const char *s, cstl_role *out)
{
    if (s == NULL)
        return CSTL_EINVAL;
    for (int i = 0; i < CSTL_ROLE_COUNT; i++) {
        if (strcmp(s, role_names[i]) == 0) {
            if (out != NULL)
                *out = (cstl_role)i;
            return 0;
        }
    }
    return CSTL_EINVAL;
}

const char *cstl_role_name(cstl_role role)
{
    return role_valid(role) ? role_names[role] : "unknown";
}

bool cstl_role_allows(cstl_role have, cstl_role need)
{
    if (!role_valid(have) || !role_valid(need))
        return false;
    if (have == need)
        return true;
    /* the human hierarchy: admin > member > viewer; the enum lists them in that order */
    return need <= CSTL_ROLE_VIEWER && have <= CSTL_ROLE_VIEWER && have < need;
}

const char *cstl_perm_name(cstl_perm perm)
{
    return (int)perm >= 0 && (int)perm < CSTL_PERM_COUNT ? perm_names[perm] : "unknown";
}

bool cstl_role_has_perm(cstl_role role, cstl_perm perm)
{
    if (!role_valid(role) || (int)perm < 0 || (int)perm >= CSTL_PERM_COUNT)
        return false;
    return (role_perms[role] & (1u << perm)) != 0;
}

bool cstl_principal_can(const cstl_principal *p, cstl_perm perm)
{
    return p != NULL && cstl_role_has_perm(p->role, perm);
}

static EVP_PKEY *load_rsa_public_key(const char *pem, cstl_error *err)
{
    size_t len = strnlen(pem, CSTL_AUTH_MAX_PEM + 1);
    if (len > CSTL_AUTH_MAX_PEM) {
        cstl_error_set(err, CSTL_EINVAL, "the RS256 public key PEM is over %d bytes",
                       CSTL_AUTH_MAX_PEM);
        return NULL;
    }
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *key = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    if (key == NULL) {
        cstl_error_set(err, CSTL_EINVAL,
                       "the RS256 public key is not a PEM public key (\"BEGIN PUBLIC KEY\")");
        cstl_error_detail(err, "%s", e ? ERR_reason_error_string(e) : "no key found");
        return NULL;
    }
    if (!EVP_PKEY_is_a(key, "RSA")) {
        cstl_error_set(err, CSTL_EINVAL, "the RS256 public key is a %s key, not RSA",
                       EVP_PKEY_get0_type_name(key));
        EVP_PKEY_free(key);
        return NULL;
    }
    if (EVP_PKEY_get_bits(key) < CSTL_AUTH_MIN_RSA_BITS) {
        cstl_error_set(err, CSTL_EINVAL, "the RS256 public key has %d bits, the minimum is %d",
                       EVP_PKEY_get_bits(key), CSTL_AUTH_MIN_RSA_BITS);
        EVP_PKEY_free(key);
        return NULL;
    }
    return key;
}

cstl_auth *cstl_auth_new(const cstl_auth_options *opts, cstl_error *err)
{
    static const cstl_auth_options none = {0};
    if (opts == NULL)
        opts = &none;
    int leeway = opts->leeway_s == 0                     ? CSTL_AUTH_DEFAULT_LEEWAY
                 : opts->leeway_s == CSTL_AUTH_NO_LEEWAY ? 0
                                                         : opts->leeway_s;
    if (leeway < 0 || leeway > CSTL_AUTH_MAX_LEEWAY) {
        cstl_error_set(err, CSTL_EINVAL, "leeway must be from 0 to %d seconds, got %d",
                       CSTL_AUTH_MAX_LEEWAY, opts->leeway_s);
        return NULL;
    }
    if (opts->hs256_secret != NULL) {
        size_t n = strnlen(opts->hs256_secret, CSTL_AUTH_MAX_HS256_SECRET + 1);
        if (n < CSTL_AUTH_MIN_HS256_SECRET || n > CSTL_AUTH_MAX_HS256_SECRET) {
            cstl_error_set(err, CSTL_EINVAL, "the HS256 secret must be %d to %d bytes long",
                           CSTL_AUTH_MIN_HS256_SECRET, CSTL_AUTH_MAX_HS256_SECRET);
            return NULL;
        }
        /* a PEM as the HMAC secret is the recipe of algorithm confusion attacks */
        if (strstr(opts->hs256_secret, "-----BEGIN") != NULL) {
            cstl_error_set(err, CSTL_EINVAL, "the HS256 secret looks like a PEM key");
            return NULL;
        }
    }
    for (int i = 0; i < 2; i++) {
        const char *s = i == 0 ? opts->issuer : opts->audience;
        if (s != NULL && (s[0] == '\0' || strlen(s) > 1024)) {
            cstl_error_set(err, CSTL_EINVAL, "the expected %s must be 1 to 1024 bytes long",
                           i == 0 ? "issuer" : "audience");
            return NULL;
        }
    }

    cstl_auth *a = cstl_xcalloc(1, sizeof(*a));
    a->leeway_s = leeway;
    if (pthread_rwlock_init(&a->lock, NULL) != 0)
        cstl_panic("pthread_rwlock_init failed");
    if (opts->rs256_public_key_pem != NULL) {
        a->rs256_key = load_rsa_public_key(opts->rs256_public_key_pem, err);
        if (a->rs256_key == NULL) {
            cstl_auth_free(a);
            return NULL;
        }
    }
    if (opts->hs256_secret != NULL) {
        a->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (a->hmac == NULL) {
            ERR_clear_error();
            cstl_error_set(err, CSTL_EINTERNAL, "OpenSSL has no HMAC implementation for HS256");
            cstl_auth_free(a);
            return NULL;
        }
        a->hs256_secret_len = strlen(opts->hs256_secret);
        a->hs256_secret = cstl_xmalloc(a->hs256_secret_len);
        memcpy(a->hs256_secret, opts->hs256_secret, a->hs256_secret_len);
    }
    a->issuer = opts->issuer ? cstl_xstrdup(opts->issuer) : NULL;
    a->audience = opts->audience ? cstl_xstrdup(opts->audience) : NULL;
    return a;
}

/* Reads a whole small file into a new NUL-terminated buffer. Returns NULL and fills err. */
static char *read_pem_file(const char *path, cstl_error *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        cstl_error_set(err, CSTL_ECONFIG,
                       "CONSTELLATION_JWT_RS256_PUBLIC_KEY_FILE names \"%s\", which cannot be "
                       "read: %s",
                       path, strerror(errno));
        return NULL;
    }
    char *buf = cstl_xmalloc(CSTL_AUTH_MAX_PEM + 2);
    size_t n = fread(buf, 1, CSTL_AUTH_MAX_PEM + 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || n > CSTL_AUTH_MAX_PEM) {
        cstl_error_set(err, CSTL_ECONFIG, "CONSTELLATION_JWT_RS256_PUBLIC_KEY_FILE \"%s\" %s", path,
                       failed ? "cannot be read" : "is over 64 KiB");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

cstl_auth *cstl_auth_new_from_config(const cstl_config *cfg, cstl_error *err)
{
    cstl_auth_options opts = {
        .hs256_secret = cfg->jwt_hs256_secret[0] ? cfg->jwt_hs256_secret : NULL,
        .issuer = cfg->jwt_issuer[0] ? cfg->jwt_issuer : NULL,
        .audience = cfg->jwt_audience[0] ? cfg->jwt_audience : NULL,
    };
    char *pem = NULL;
    if (cfg->jwt_rs256_public_key_file[0]) {
        pem = read_pem_file(cfg->jwt_rs256_public_key_file, err);
        if (pem == NULL)
            return NULL;
        opts.rs256_public_key_pem = pem;
    }
    cstl_auth *a = cstl_auth_new(&opts, err);
    free(pem);
    if (a == NULL && err != NULL) {
        /* name the variable at fault */
        char msg[CSTL_ERROR_MESSAGE_MAX - 64];
        snprintf(msg, sizeof(msg), "%.400s", err->message);
        const char *var = strstr(msg, "HS256")    ? "CONSTELLATION_JWT_HS256_SECRET"
                          : strstr(msg, "RS256")  ? "CONSTELLATION_JWT_RS256_PUBLIC_KEY_FILE"
                          : strstr(msg, "issuer") ? "CONSTELLATION_JWT_ISSUER"
                                                  : "CONSTELLATION_JWT_AUDIENCE";
        snprintf(err->message, sizeof(err->message), "%s: %s", var, msg);
        err->code = CSTL_ECONFIG;
    }
    return a;
}

void cstl_auth_free(cstl_auth *a)
{
    if (a == NULL)
        return;
    cstl_auth_store_clear(a);
    pthread_rwlock_destroy(&a->lock);
    if (a->hs256_secret != NULL)
        OPENSSL_clear_free(a->hs256_secret, a->hs256_secret_len);
    EVP_MAC_free(a->hmac);
    EVP_PKEY_free(a->rs256_key);
    free(a->issuer);
    free(a->audience);
    free(a);
}

/* Fills err with a message for the caller and a detail for logs. Returns CSTL_EAUTH. */
static int header_fail(cstl_error *err, const char *message, const char *detail)
{
    cstl_error_set(err, CSTL_EAUTH, "%s", message);
    cstl_error_detail(err, "%s", detail);
    return CSTL_EAUTH;
}

int cstl_auth_authenticate(
    cstl_auth *a, const char *authorization, int64_t now_s, cstl_principal *out, cstl_error *err)
{
    static const char bad_scheme[] = "authorization must be \"Bearer <token>\"";
    if (a == NULL || out == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "no authenticator or principal given");
    if (authorization == NULL || authorization[0] == '\0')
        return header_fail(err, "missing bearer credentials", "no authorization header");
    if (strncasecmp(authorization, "Bearer ", 7) != 0)
        return header_fail(err, bad_scheme, "authorization scheme is not bearer");
    const char *cred = authorization + 7;
    while (*cred == ' ')
        cred++;
    size_t len = strnlen(cred, CSTL_AUTH_MAX_TOKEN + 1);
    if (len == 0)
        return header_fail(err, bad_scheme, "empty bearer credentials");
    if (len > CSTL_AUTH_MAX_TOKEN)
        return header_fail(err, "bearer credentials are too long",
                           "bearer credentials over " CSTL_STR(CSTL_AUTH_MAX_TOKEN) " bytes");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)cred[i];
        if (c <= ' ' || c >= 0x7f)
            return header_fail(err, bad_scheme,
                               "bearer credentials contain a space, a control character or "
                               "non-ASCII");
    }
    int rc = strncmp(cred, "cstl_", 5) == 0 ? cstl_auth_key_verify(a, cred, now_s, out, err)
                                            : cstl_auth_jwt_verify(a, cred, len, now_s, out, err);
    if (rc != 0)
        memset(out, 0, sizeof(*out));
    return rc;
}
