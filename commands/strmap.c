/*
 * strmap.c - string-keyed hash map with insertion order (see strmap.h).
 *
 * Separate chaining in a power-of-two bucket array that doubles past a load factor of 1; every
 * entry is also on a doubly linked list in insertion order. Hash: 64-bit FNV-1a over the key,
 * mixed with a per-map random seed and finished with a murmur3-style avalanche.
 */
#include "commands/strmap.h"

#include "platform/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

typedef struct entry {
    struct entry *next;          /* bucket chain */
    struct entry *older, *newer; /* insertion order */
    uint64_t hash;
    void *value;
    char key[];
} entry;

struct cstl_strmap {
    entry **buckets;
    size_t nbuckets; /* power of two */
    size_t len;
    entry *oldest, *newest;
    uint64_t seed;
    void (*free_value)(void *);
};

static uint64_t hash_key(uint64_t seed, const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

cstl_strmap *cstl_strmap_new(void (*free_value)(void *value))
{
    cstl_strmap *m = cstl_xcalloc(1, sizeof(*m));
    m->nbuckets = 16;
    m->buckets = cstl_xcalloc(m->nbuckets, sizeof(entry *));
    m->free_value = free_value;
    if (getrandom(&m->seed, sizeof(m->seed), 0) != (ssize_t)sizeof(m->seed))
        m->seed = (uint64_t)(uintptr_t)m * 0x9e3779b97f4a7c15ull;
    return m;
}

void cstl_strmap_free(cstl_strmap *m)
{
    if (m == NULL)
        return;
    entry *e = m->oldest;
    while (e != NULL) {
        entry *n = e->newer;
        if (m->free_value != NULL)
            m->free_value(e->value);
        free(e);
        e = n;
    }
    free(m->buckets);
    free(m);
}

static entry *find(const cstl_strmap *m, const char *key, uint64_t h)
{
    for (entry *e = m->buckets[h & (m->nbuckets - 1)]; e != NULL; e = e->next)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

void *cstl_strmap_get(const cstl_strmap *m, const char *key)
{
    entry *e = find(m, key, hash_key(m->seed, key));
    return e == NULL ? NULL : e->value;
}

bool cstl_strmap_has(const cstl_strmap *m, const char *key)
{
    return find(m, key, hash_key(m->seed, key)) != NULL;
}

static void grow(cstl_strmap *m)
{
    size_t n = m->nbuckets * 2;
    entry **b = cstl_xcalloc(n, sizeof(entry *));
    for (entry *e = m->oldest; e != NULL; e = e->newer) {
        e->next = b[e->hash & (n - 1)];
        b[e->hash & (n - 1)] = e;
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

void cstl_strmap_put(cstl_strmap *m, const char *key, void *value)
{
    uint64_t h = hash_key(m->seed, key);
    entry *e = find(m, key, h);
    if (e != NULL) {
        if (m->free_value != NULL && e->value != value)
            m->free_value(e->value);
        e->value = value;
        return;
    }
    if (m->len >= m->nbuckets)
        grow(m);
    size_t klen = strlen(key);
    e = cstl_xmalloc(sizeof(*e) + klen + 1);
    memcpy(e->key, key, klen + 1);
    e->hash = h;
    e->value = value;
    e->next = m->buckets[h & (m->nbuckets - 1)];
    m->buckets[h & (m->nbuckets - 1)] = e;
    e->newer = NULL;
    e->older = m->newest;
    if (m->newest != NULL)
        m->newest->newer = e;
    else
        m->oldest = e;
    m->newest = e;
    m->len++;
}

static entry *unlink_key(cstl_strmap *m, const char *key)
{
    uint64_t h = hash_key(m->seed, key);
    entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    while (*pp != NULL && !((*pp)->hash == h && strcmp((*pp)->key, key) == 0))
        pp = &(*pp)->next;
    entry *e = *pp;
    if (e == NULL)
        return NULL;
    *pp = e->next;
    if (e->older != NULL)
        e->older->newer = e->newer;
    else
        m->oldest = e->newer;
    if (e->newer != NULL)
        e->newer->older = e->older;
    else
        m->newest = e->older;
    m->len--;
    return e;
}

void *cstl_strmap_take(cstl_strmap *m, const char *key)
{
    entry *e = unlink_key(m, key);
    if (e == NULL)
        return NULL;
    void *v = e->value;
    free(e);
    return v;
}

bool cstl_strmap_remove(cstl_strmap *m, const char *key)
{
    entry *e = unlink_key(m, key);
    if (e == NULL)
        return false;
    if (m->free_value != NULL)
        m->free_value(e->value);
    free(e);
    return true;
}

size_t cstl_strmap_len(const cstl_strmap *m)
{
    return m->len;
}

const char *cstl_strmap_oldest(const cstl_strmap *m, void **value)
{
    if (m->oldest == NULL)
        return NULL;
    if (value != NULL)
        *value = m->oldest->value;
    return m->oldest->key;
}

void cstl_strmap_each(const cstl_strmap *m,
                      void (*fn)(void *ud, const char *key, void *value),
                      void *ud)
{
    for (entry *e = m->oldest; e != NULL; e = e->newer)
        fn(ud, e->key, e->value);
}
