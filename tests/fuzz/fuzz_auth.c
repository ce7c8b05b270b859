/*
 * fuzz_auth.c - libFuzzer target for the Authorization header parser: any bytes, as a header value
 * ("Bearer " prepended half of the time), must authenticate or give CSTL_EAUTH, never crash, leak
 * or read out of bounds. HS256 is configured, and one API key is in the store. With
 * CSTL_FUZZ_SEEDS=DIR set, writes a valid HS256 JWT and a valid API key into DIR first.
 */
#include "platform/auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET "fuzz-secret-fuzz-secret-fuzz-secret-0123"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cstl_auth *auth;

static void write_seed(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void b64url(const unsigned char *in, size_t len, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < len ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        out[n++] = a[v >> 18 & 63];
        out[n++] = a[v >> 12 & 63];
        if (i + 1 < len)
            out[n++] = a[v >> 6 & 63];
        if (i + 2 < len)
            out[n++] = a[v & 63];
    }
    out[n] = '\0';
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cstl_auth_options o = {.hs256_secret = SECRET};
    auth = cstl_auth_new(&o, NULL);
    char key[CSTL_API_KEY_LEN + 1], id[37], hash[65];
    cstl_api_key_generate(key, sizeof key, id, hash);
    cstl_auth_key_put(auth, id, "0190a5b2-7c4e-7d3f-8a1b-2c3d4e5f6a7b", hash, CSTL_ROLE_MEMBER, 0);
    const char *dir = getenv("CSTL_FUZZ_SEEDS");
    if (!dir)
        return 0;
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    static const char payload[] = "{\"sub\":\"s\",\"tenant\":\"0190a5b2-7c4e-7d3f-8a1b-"
                                  "2c3d4e5f6a7b\",\"role\":\"admin\",\"exp\":4102444800}";
    char jwt[1024], part[512];
    b64url((const unsigned char *)header, strlen(header), part);
    snprintf(jwt, sizeof jwt, "Bearer %s.", part);
    b64url((const unsigned char *)payload, strlen(payload), part);
    strcat(jwt, part);
    unsigned char mac[32];
    unsigned int mac_len = 0;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)jwt + 7, strlen(jwt) - 7,
         mac, &mac_len);
    b64url(mac, mac_len, part);
    strcat(jwt, ".");
    strcat(jwt, part);
    write_seed(dir, "seed-jwt", jwt);
    char bearer[CSTL_API_KEY_LEN + 8];
    snprintf(bearer, sizeof bearer, "Bearer %s", key);
    write_seed(dir, "seed-key", bearer);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 3 * CSTL_AUTH_MAX_TOKEN)
        return 0;
    char *s = malloc(size + 8);
    size_t off = 0;
    if (size > 0 && (data[0] & 1)) {
        memcpy(s, "Bearer ", 7);
        off = 7;
    }
    memcpy(s + off, data, size);
    s[off + size] = '\0';
    cstl_principal p;
    cstl_error err;
    int rc = cstl_auth_authenticate(auth, s, 1700000000, &p, &err);
    if (rc != 0 && rc != CSTL_EAUTH)
        abort();
    free(s);
    return 0;
}
