/*
 * id.h - UUIDv7 identifiers (RFC 9562): 48-bit Unix milliseconds, then random bits.
 *
 * Within one process ids are strictly increasing: when the clock has not moved (or moved back)
 * since the last id, the 12-bit sub-millisecond counter (rand_a) is incremented, and on its
 * overflow the timestamp is advanced by one millisecond. Thread-safe.
 */
#ifndef CSTL_PLATFORM_ID_H
#define CSTL_PLATFORM_ID_H

#include <stdbool.h>
#include <stdint.h>

#define CSTL_UUID_STRLEN 36 /* without the NUL */

typedef struct cstl_uuid {
    uint8_t bytes[16];
} cstl_uuid;

/* A new UUIDv7. Random bits come from getrandom(2); panics if the kernel cannot provide them. */
cstl_uuid cstl_uuid_v7(void);

/* Writes the canonical lower-case form (36 chars + NUL) of id into out. Returns out. */
char *cstl_uuid_format(const cstl_uuid *id, char out[CSTL_UUID_STRLEN + 1]);

/* Writes a new UUIDv7's canonical form into out. Returns out. */
char *cstl_uuid_v7_string(char out[CSTL_UUID_STRLEN + 1]);

/* Parses the canonical 8-4-4-4-12 hex form (either case). Returns 0 or CSTL_EPARSE. */
int cstl_uuid_parse(const char *text, cstl_uuid *out);

/* True when text is a canonical UUID (any version). */
bool cstl_uuid_valid(const char *text);

/* The version nibble of id (7 for ids made here). */
int cstl_uuid_version(const cstl_uuid *id);

/* The Unix time in milliseconds stored in a UUIDv7. */
uint64_t cstl_uuid_v7_millis(const cstl_uuid *id);

#endif
