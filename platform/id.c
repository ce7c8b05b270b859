/*
 * id.c - UUIDv7 generation and parsing (see id.h).
 *
 * Monotonicity: the last (millis, counter) pair handed out is kept under a mutex; RFC 9562 §6.2
 * method 1 (fixed-length dedicated counter bits) with a 12-bit counter seeded randomly each
 * millisecond, its top bit cleared to leave room for increments.
 */
#include "platform/id.h"

#include "platform/error.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static pthread_mutex_t id_mutex = PTHREAD_MUTEX_INITIALIZER;
static uint64_t id_last_ms;
static uint16_t id_last_counter;

static void random_bytes(uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = getrandom(buf, len, 0);
        if (n < 0)
            cstl_panic("getrandom failed");
        buf += n;
        len -= (size_t)n;
    }
}

cstl_uuid cstl_uuid_v7(void)
{
    cstl_uuid id;
    random_bytes(id.bytes, sizeof(id.bytes));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    uint16_t counter = (uint16_t)(((id.bytes[6] << 8) | id.bytes[7]) & 0x07ff);

    pthread_mutex_lock(&id_mutex);
    if (ms <= id_last_ms) {
        ms = id_last_ms;
        counter = (uint16_t)(id_last_counter + 1);
        if (counter > 0x0fff) {
            ms++;
            counter = 0;
        }
    }
    id_last_ms = ms;
    id_last_counter = counter;
    pthread_mutex_unlock(&id_mutex);

    for (int i = 0; i < 6; i++)
        id.bytes[i] = (uint8_t)(ms >> (40 - 8 * i));
    id.bytes[6] = (uint8_t)(0x70 | (counter >> 8));
    id.bytes[7] = (uint8_t)(counter & 0xff);
    id.bytes[8] = (uint8_t)((id.bytes[8] & 0x3f) | 0x80); /* variant 10 */
    return id;
}

char *cstl_uuid_format(const cstl_uuid *id, char out[CSTL_UUID_STRLEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[id->bytes[i] >> 4];
        *p++ = hex[id->bytes[i] & 0x0f];
    }
    *p = '\0';
    return out;
}

char *cstl_uuid_v7_string(char out[CSTL_UUID_STRLEN + 1])
{
    cstl_uuid id = cstl_uuid_v7();
    return cstl_uuid_format(&id, out);
}

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

int cstl_uuid_parse(const char *text, cstl_uuid *out)
{
    if (text == NULL || strnlen(text, CSTL_UUID_STRLEN + 1) != CSTL_UUID_STRLEN)
        return CSTL_EPARSE;
    cstl_uuid id;
    int b = 0;
    for (int i = 0; i < CSTL_UUID_STRLEN;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i] != '-')
                return CSTL_EPARSE;
            i++;
            continue;
        }
        int hi = hex_value(text[i]), lo = hex_value(text[i + 1]);
        if (hi < 0 || lo < 0)
            return CSTL_EPARSE;
        id.bytes[b++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    if (out != NULL)
        *out = id;
    return 0;
}

bool cstl_uuid_valid(const char *text)
{
    return cstl_uuid_parse(text, NULL) == 0;
}

int cstl_uuid_version(const cstl_uuid *id)
{
    return id->bytes[6] >> 4;
}

uint64_t cstl_uuid_v7_millis(const cstl_uuid *id)
{
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = (ms << 8) | id->bytes[i];
    return ms;
}
