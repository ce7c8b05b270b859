/*
 * auth_keys.c - API keys: their format, generation and hashing, the key store and its
 * verification, and the set of suspended tenants (see auth.h).
 *
 * Invariants: the store holds only SHA-256 digests of secrets, never a secret; a revoked record is
 * never revived. The store is read under the read lock of cstl_auth (any number of authenticating
 * threads) and changed under its write lock (the thread applying tenants events).
 */
#include "platform/auth_internal.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_PREFIX     "cstl_"
#define KEY_PREFIX_LEN 5
#define KEY_GENERIC    "invalid or revoked api key"

typedef struct key_record {
    uuid_node node; /* first: the map's view of the record */
    cstl_uuid tenant;
    unsigned char digest[32]; /* SHA-256 of the secret text */
    cstl_role role;
    int64_t expires_at_s; /* 0: never */
    bool revoked;
} key_record;

static const char hex_digits[] = "0123456789abcdef";

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static void hex_encode(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

/* Decodes exactly 2*n hex digits (either case) followed by NUL. Returns 0 or CSTL_EINVAL. */
static int hex_decode(const char *s, unsigned char *out, size_t n)
{
    if (s == NULL || strnlen(s, 2 * n + 1) != 2 * n)
        return CSTL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return CSTL_EINVAL;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static int sha256(const void *data, size_t len, unsigned char digest[32])
{
    unsigned int dlen = 0;
    if (EVP_Digest(data, len, digest, &dlen, EVP_sha256(), NULL) != 1 || dlen != 32)
        return CSTL_EINTERNAL;
    return 0;
}

int cstl_api_key_hash(const char *secret, char sha256_hex[65])
{
    unsigned char digest[32];
    if (secret == NULL || sha256(secret, strlen(secret), digest) != 0)
        return CSTL_EINTERNAL;
    hex_encode(digest, sizeof(digest), sha256_hex);
    return 0;
}

int cstl_api_key_generate(char *key_out, size_t key_size, char key_id[37], char sha256_hex[65])
{
    if (key_out == NULL || key_size < CSTL_API_KEY_LEN + 1 || key_id == NULL || sha256_hex == NULL)
        return CSTL_EINVAL;
    unsigned char raw[CSTL_API_KEY_SECRET_HEX / 2];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return CSTL_EINTERNAL;
    cstl_uuid id = cstl_uuid_v7();
    char *p = key_out;
    memcpy(p, KEY_PREFIX, KEY_PREFIX_LEN);
    p += KEY_PREFIX_LEN;
    hex_encode(id.bytes, sizeof(id.bytes), p);
    p += CSTL_API_KEY_ID_HEX;
    *p++ = '_';
    hex_encode(raw, sizeof(raw), p);
    OPENSSL_cleanse(raw, sizeof(raw));
    if (cstl_api_key_hash(p, sha256_hex) != 0) {
        OPENSSL_cleanse(key_out, key_size);
        return CSTL_EINTERNAL;
    }
    cstl_uuid_format(&id, key_id);
    return 0;
}

int cstl_api_key_parse(const char *key, char key_id[37], const char **secret)
{
    if (key == NULL || strnlen(key, CSTL_API_KEY_LEN + 1) != CSTL_API_KEY_LEN ||
        memcmp(key, KEY_PREFIX, KEY_PREFIX_LEN) != 0 ||
        !is_lower_hex(key + KEY_PREFIX_LEN, CSTL_API_KEY_ID_HEX) ||
        key[KEY_PREFIX_LEN + CSTL_API_KEY_ID_HEX] != '_' ||
        !is_lower_hex(key + KEY_PREFIX_LEN + CSTL_API_KEY_ID_HEX + 1, CSTL_API_KEY_SECRET_HEX))
        return CSTL_EPARSE;
    cstl_uuid id;
    for (int i = 0; i < 16; i++) {
        const char *h = key + KEY_PREFIX_LEN + 2 * i;
        id.bytes[i] = (uint8_t)(hex_value(h[0]) << 4 | hex_value(h[1]));
    }
    if (key_id != NULL)
        cstl_uuid_format(&id, key_id);
    if (secret != NULL)
        *secret = key + KEY_PREFIX_LEN + CSTL_API_KEY_ID_HEX + 1;
    return 0;
}

/* ---- the UUID-keyed map ---- */

static size_t uuid_hash(const cstl_uuid *id)
{
    uint64_t h = 0;
    for (int i = 0; i < 16; i++)
        h = (h ^ id->bytes[i]) * 0x100000001b3ull; /* FNV-1a */
    return (size_t)(h ^ (h >> 29));
}

static uuid_node *map_find(const uuid_map *m, const cstl_uuid *id)
{
    if (m->nbuckets == 0)
        return NULL;
    for (uuid_node *n = m->buckets[uuid_hash(id) & (m->nbuckets - 1)]; n; n = n->next)
        if (memcmp(n->id.bytes, id->bytes, 16) == 0)
            return n;
    return NULL;
}

/* Inserts n (not already present), growing the table to keep chains short. */
static void map_insert(uuid_map *m, uuid_node *n)
{
    if (m->count >= m->nbuckets) {
        size_t nb = m->nbuckets ? m->nbuckets * 2 : 64;
        uuid_node **b = cstl_xcalloc(nb, sizeof(*b));
        for (size_t i = 0; i < m->nbuckets; i++) {
            for (uuid_node *e = m->buckets[i], *next; e; e = next) {
                next = e->next;
                size_t j = uuid_hash(&e->id) & (nb - 1);
                e->next = b[j];
                b[j] = e;
            }
        }
        free(m->buckets);
        m->buckets = b;
        m->nbuckets = nb;
    }
    size_t j = uuid_hash(&n->id) & (m->nbuckets - 1);
    n->next = m->buckets[j];
    m->buckets[j] = n;
    m->count++;
}

/* Unlinks and returns the node with id, or NULL. */
static uuid_node *map_remove(uuid_map *m, const cstl_uuid *id)
{
    if (m->nbuckets == 0)
        return NULL;
    for (uuid_node **p = &m->buckets[uuid_hash(id) & (m->nbuckets - 1)]; *p; p = &(*p)->next) {
        if (memcmp((*p)->id.bytes, id->bytes, 16) == 0) {
            uuid_node *n = *p;
            *p = n->next;
            m->count--;
            return n;
        }
    }
    return NULL;
}

static void map_clear(uuid_map *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (uuid_node *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->buckets);
    memset(m, 0, sizeof(*m));
}

void cstl_auth_store_clear(cstl_auth *a)
{
    map_clear(&a->keys);
    map_clear(&a->suspended);
}

/* ---- the store ---- */

static bool role_valid(cstl_role role)
{
    return (int)role >= 0 && (int)role < CSTL_ROLE_COUNT;
}

int cstl_auth_key_put(cstl_auth *a,
                      const char *key_id,
                      const char *tenant_id,
                      const char *sha256_hex,
                      cstl_role role,
                      int64_t expires_at_s)
{
    cstl_uuid id, tenant;
    unsigned char digest[32];
    if (a == NULL || cstl_uuid_parse(key_id, &id) != 0 ||
        cstl_uuid_parse(tenant_id, &tenant) != 0 ||
        hex_decode(sha256_hex, digest, sizeof(digest)) != 0 || !role_valid(role) ||
        expires_at_s < 0)
        return CSTL_EINVAL;
    int rc = 0;
    pthread_rwlock_wrlock(&a->lock);
    key_record *r = (key_record *)map_find(&a->keys, &id);
    if (r == NULL) {
        if (a->keys.count >= CSTL_AUTH_MAX_KEYS) {
            rc = CSTL_ETOOBIG;
            goto out;
        }
        r = cstl_xcalloc(1, sizeof(*r));
        r->node.id = id;
        map_insert(&a->keys, &r->node);
    } else if (r->revoked) {
        goto out;
    }
    r->tenant = tenant;
    memcpy(r->digest, digest, sizeof(digest));
    r->role = role;
    r->expires_at_s = expires_at_s;
out:
    pthread_rwlock_unlock(&a->lock);
    return rc;
}

int cstl_auth_key_revoke(cstl_auth *a, const char *key_id)
{
    cstl_uuid id;
    if (a == NULL || cstl_uuid_parse(key_id, &id) != 0)
        return CSTL_EINVAL;
    int rc = 0;
    pthread_rwlock_wrlock(&a->lock);
    key_record *r = (key_record *)map_find(&a->keys, &id);
    if (r == NULL) {
        if (a->keys.count >= CSTL_AUTH_MAX_KEYS) {
            rc = CSTL_ETOOBIG;
            goto out;
        }
        r = cstl_xcalloc(1, sizeof(*r));
        r->node.id = id;
        map_insert(&a->keys, &r->node);
    }
    r->revoked = true;
    memset(r->digest, 0, sizeof(r->digest));
out:
    pthread_rwlock_unlock(&a->lock);
    return rc;
}

size_t cstl_auth_key_count(cstl_auth *a)
{
    pthread_rwlock_rdlock(&a->lock);
    size_t n = a->keys.count;
    pthread_rwlock_unlock(&a->lock);
    return n;
}

int cstl_auth_tenant_set_suspended(cstl_auth *a, const char *tenant_id, bool suspended)
{
    cstl_uuid tenant;
    if (a == NULL || cstl_uuid_parse(tenant_id, &tenant) != 0)
        return CSTL_EINVAL;
    int rc = 0;
    pthread_rwlock_wrlock(&a->lock);
    uuid_node *n = map_find(&a->suspended, &tenant);
    if (suspended && n == NULL) {
        if (a->suspended.count >= CSTL_AUTH_MAX_SUSPENDED) {
            rc = CSTL_ETOOBIG;
        } else {
            n = cstl_xcalloc(1, sizeof(*n));
            n->id = tenant;
            map_insert(&a->suspended, n);
        }
    } else if (!suspended && n != NULL) {
        free(map_remove(&a->suspended, &tenant));
    }
    pthread_rwlock_unlock(&a->lock);
    return rc;
}

bool cstl_auth_tenant_is_suspended(cstl_auth *a, const cstl_uuid *tenant)
{
    pthread_rwlock_rdlock(&a->lock);
    bool s = map_find(&a->suspended, tenant) != NULL;
    pthread_rwlock_unlock(&a->lock);
    return s;
}

/* Every failure: the same message for the caller, the reason in the detail. Returns CSTL_EAUTH. */
static int key_fail(cstl_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int key_fail(cstl_error *err, const char *fmt, ...)
{
    cstl_error_set(err, CSTL_EAUTH, KEY_GENERIC);
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
        va_end(ap);
    }
    return CSTL_EAUTH;
}

int cstl_auth_key_verify(
    cstl_auth *a, const char *key, int64_t now_s, cstl_principal *out, cstl_error *err)
{
    char key_id[37];
    const char *secret;
    if (cstl_api_key_parse(key, key_id, &secret) != 0)
        return key_fail(err, "malformed api key");
    /* hashed before the lookup, so that unknown and known ids cost the same */
    unsigned char digest[32];
    if (sha256(secret, CSTL_API_KEY_SECRET_HEX, digest) != 0)
        return key_fail(err, "api key %s: cannot hash the secret", key_id);
    cstl_uuid id;
    cstl_uuid_parse(key_id, &id);

    key_record r;
    bool found = false, suspended = false;
    pthread_rwlock_rdlock(&a->lock);
    const key_record *rec = (const key_record *)map_find(&a->keys, &id);
    if (rec != NULL) {
        r = *rec;
        found = true;
        suspended = map_find(&a->suspended, &r.tenant) != NULL;
    }
    pthread_rwlock_unlock(&a->lock);

    const char *why = NULL;
    if (!found)
        why = "unknown key id";
    else if (r.revoked)
        why = "revoked";
    else if (CRYPTO_memcmp(digest, r.digest, sizeof(digest)) != 0)
        why = "wrong secret";
    else if (r.expires_at_s != 0 && now_s >= r.expires_at_s)
        why = "expired";
    else if (suspended)
        why = "tenant suspended";
    OPENSSL_cleanse(digest, sizeof(digest));
    if (why != NULL)
        return key_fail(err, "api key %s: %s", key_id, why);
    memset(out, 0, sizeof(*out));
    cstl_uuid_format(&r.tenant, out->tenant_id);
    snprintf(out->subject, sizeof(out->subject), "apikey:%s", key_id);
    out->role = r.role;
    memcpy(out->key_id, key_id, sizeof(out->key_id));
    return 0;
}
