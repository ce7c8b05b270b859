/*
 * auth_internal.h - what auth.c, auth_jwt.c and auth_keys.c share; not part of the public API.
 */
#ifndef CSTL_PLATFORM_AUTH_INTERNAL_H
#define CSTL_PLATFORM_AUTH_INTERNAL_H

#include "platform/auth.h"
#include "platform/id.h"

#include <openssl/evp.h>
#include <pthread.h>

/* A chained hash map of nodes keyed by UUID; a node embeds uuid_node as its first member. */
typedef struct uuid_node {
    struct uuid_node *next;
    cstl_uuid id;
} uuid_node;

typedef struct uuid_map {
    uuid_node **buckets;
    size_t nbuckets; /* a power of two, or 0 before the first insert */
    size_t count;
} uuid_map;

struct cstl_auth {
    unsigned char *hs256_secret; /* NULL: HS256 refused */
    size_t hs256_secret_len;
    EVP_PKEY *rs256_key; /* NULL: RS256 refused */
    EVP_MAC *hmac;       /* fetched once when HS256 is configured */
    char *issuer;        /* NULL: not checked */
    char *audience;      /* NULL: not checked */
    int leeway_s;

    pthread_rwlock_t lock; /* guards keys and suspended */
    uuid_map keys;         /* key_record by key id */
    uuid_map suspended;    /* uuid_node by tenant id */
};

/* Verifies a compact JWS (len bytes, not NUL-terminated inside) at now_s. Same contract as
 * cstl_auth_authenticate once the scheme has been stripped. */
int cstl_auth_jwt_verify(cstl_auth *a,
                         const char *token,
                         size_t len,
                         int64_t now_s,
                         cstl_principal *out,
                         cstl_error *err);

/* Verifies an API key (NUL-terminated) at now_s. Same contract as cstl_auth_authenticate. */
int cstl_auth_key_verify(
    cstl_auth *a, const char *key, int64_t now_s, cstl_principal *out, cstl_error *err);

/* True when tenant is suspended. Takes the read lock. */
bool cstl_auth_tenant_is_suspended(cstl_auth *a, const cstl_uuid *tenant);

/* Releases every record of the store (at free). */
void cstl_auth_store_clear(cstl_auth *a);

#endif
