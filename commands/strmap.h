/*
 * strmap.h - a hash map from strings to pointers that remembers insertion order, for the bounded
 * in-memory indexes of the write side (aggregate states of a partition, handled command ids,
 * reply waiters, recent replies).
 *
 * Keys are copied. Values are owned by the map when a free_value function is given (called on
 * replace, remove and free). Iteration and cstl_strmap_oldest follow insertion order (a replaced
 * value keeps its key's place), so a map can be trimmed from its oldest end in O(1).
 *
 * The hash is seeded per map from getrandom(2), so keys chosen by clients cannot be crafted to
 * collide. Not thread-safe: each map belongs to one thread or is guarded by its owner's lock.
 */
#ifndef CSTL_COMMANDS_STRMAP_H
#define CSTL_COMMANDS_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct cstl_strmap cstl_strmap;

/* A new empty map; free_value (may be NULL) releases values. Never NULL. */
cstl_strmap *cstl_strmap_new(void (*free_value)(void *value));

/* Frees the map, its keys and (with free_value) its values. NULL is a no-op. */
void cstl_strmap_free(cstl_strmap *m);

/* The value of key, or NULL. Borrowed. */
void *cstl_strmap_get(const cstl_strmap *m, const char *key);

/* True when key is present. */
bool cstl_strmap_has(const cstl_strmap *m, const char *key);

/* Sets key to value (taking ownership of value with free_value); a previous value is freed. */
void cstl_strmap_put(cstl_strmap *m, const char *key, void *value);

/* Removes key (freeing its value). Returns true when it was present. */
bool cstl_strmap_remove(cstl_strmap *m, const char *key);

/* Removes key without freeing its value, which is returned (NULL when absent). */
void *cstl_strmap_take(cstl_strmap *m, const char *key);

/* Number of keys. */
size_t cstl_strmap_len(const cstl_strmap *m);

/* The oldest key (borrowed, valid until it is removed) and its value in *value (may be NULL),
 * or NULL when the map is empty. */
const char *cstl_strmap_oldest(const cstl_strmap *m, void **value);

/* Calls fn(ud, key, value) for each entry in insertion order. fn must not change the map. */
void cstl_strmap_each(const cstl_strmap *m,
                      void (*fn)(void *ud, const char *key, void *value),
                      void *ud);

#endif
