/*
 * cursor.c - the opaque list cursor (base64url of a small versioned JSON document) and the
 * parameter syntax checks of the query API. Pure functions; any thread.
 */
#include "queries/query.h"

#include <jansson.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CURSOR_VERSION 1
#define CURSOR_MAX     512

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void cstl_query_b64url_encode(const void *data, size_t len, char *out)
{
    const unsigned char *p = data;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        if (i + 1 < len)
            out[o++] = b64[(v >> 6) & 63];
        if (i + 2 < len)
            out[o++] = b64[v & 63];
    }
    out[o] = '\0';
}

long cstl_query_b64url_decode(const char *text, unsigned char *out, size_t cap)
{
    size_t n = strlen(text), o = 0;
    if (n % 4 == 1)
        return -1;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *c = text[i] != '\0' ? strchr(b64, text[i]) : NULL;
        if (c == NULL)
            return -1;
        acc = (acc << 6) | (unsigned)(c - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (unsigned char)((acc >> bits) & 0xff);
        }
    }
    /* the unused low bits of the last character must be zero (one encoding per value) */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)o;
}

void cstl_query_cursor_encode(const cstl_query_cursor *c, char *out, size_t size)
{
    char f[17];
    snprintf(f, sizeof(f), "%016llx", c->filters);
    json_t *doc =
        json_pack("{s:i,s:s,s:I,s:s,s:s}", "v", CURSOR_VERSION, "o", c->ascending ? "asc" : "desc",
                  "t", (json_int_t)c->at_us, "id", c->job_id, "f", f);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (text == NULL)
        cstl_panic("cannot serialize a cursor");
    size_t len = strlen(text);
    if ((len + 2) / 3 * 4 + 1 > size)
        cstl_panic("cursor buffer too small");
    cstl_query_b64url_encode(text, len, out);
    free(text);
}

int cstl_query_cursor_decode(const char *text, cstl_query_cursor *c)
{
    unsigned char raw[CURSOR_MAX + 1];
    if (strlen(text) > CURSOR_MAX * 4 / 3)
        return CSTL_EINVAL;
    long n = cstl_query_b64url_decode(text, raw, CURSOR_MAX);
    if (n <= 0)
        return CSTL_EINVAL;
    json_t *doc = json_loadb((const char *)raw, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    int v = 0;
    const char *o = NULL, *id = NULL, *f = NULL;
    json_int_t t = 0;
    int rc = CSTL_EINVAL;
    if (doc != NULL &&
        json_unpack(doc, "{s:i,s:s,s:I,s:s,s:s!}", "v", &v, "o", &o, "t", &t, "id", &id, "f", &f) ==
            0 &&
        v == CURSOR_VERSION && (strcmp(o, "asc") == 0 || strcmp(o, "desc") == 0) && t >= 0 &&
        strlen(id) > 0 && strlen(id) < sizeof(c->job_id) && strlen(f) == 16 &&
        strspn(f, "0123456789abcdef") == 16) {
        c->ascending = strcmp(o, "asc") == 0;
        c->at_us = (long long)t;
        snprintf(c->job_id, sizeof(c->job_id), "%s", id);
        c->filters = strtoull(f, NULL, 16);
        rc = 0;
    }
    json_decref(doc);
    return rc;
}

/* The value of n decimal digits at s (checked by digits() first). */
static int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

static int digits(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

int cstl_query_rfc3339_valid(const char *t)
{
    /* YYYY-MM-DDTHH:MM:SS */
    if (strlen(t) < 20 || !digits(t, 4) || t[4] != '-' || !digits(t + 5, 2) || t[7] != '-' ||
        !digits(t + 8, 2) || (t[10] != 'T' && t[10] != 't') || !digits(t + 11, 2) || t[13] != ':' ||
        !digits(t + 14, 2) || t[16] != ':' || !digits(t + 17, 2))
        return 0;
    int mon = num(t + 5, 2), day = num(t + 8, 2), hh = num(t + 11, 2), mm = num(t + 14, 2),
        ss = num(t + 17, 2);
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year = num(t, 4);
    if (year < 1 || mon < 1 || mon > 12 || day < 1 || day > mdays[mon - 1] || hh > 23 || mm > 59 ||
        ss > 59)
        return 0;
    const char *p = t + 19;
    if (*p == '.') {
        int n = 0;
        for (p++; isdigit((unsigned char)*p); p++)
            n++;
        if (n < 1 || n > 9)
            return 0;
    }
    if (*p == 'Z' || *p == 'z')
        return p[1] == '\0';
    if ((*p == '+' || *p == '-') && digits(p + 1, 2) && p[3] == ':' && digits(p + 4, 2))
        return p[6] == '\0' && num(p + 1, 2) <= 23 && num(p + 4, 2) <= 59;
    return 0;
}
