/*
 * auth_jwt.c - verification of JWTs in compact JWS form, HS256 and RS256 (see auth.h).
 *
 * Order of checks: shape and sizes, the header (alg must name a configured key), the signature,
 * and only then the payload is decoded and its claims checked; nothing in an unsigned payload is
 * ever parsed. Base64url is strict: the URL-safe alphabet only, no padding, no whitespace, zero
 * unused bits. Called from any thread; shares only read-only state (the keys) and the suspended
 * tenants set (under the read lock).
 */
#include "platform/auth_internal.h"

#include <jansson.h>

#include <ctype.h>
#include <math.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define JWT_INVALID     "invalid bearer token"
#define JWT_EXPIRED     "bearer token has expired"
#define JWT_NOT_YET     "bearer token is not yet valid"
#define JWT_MAX_SIG     512 /* RSA 4096 */
#define JWT_MAX_SUBJECT 128

typedef enum jwt_alg { JWT_UNSET, JWT_HS256, JWT_RS256 } jwt_alg;

/* Fills err with message (for the caller) and a formatted detail (for logs). Returns CSTL_EAUTH. */
static int jwt_fail(cstl_error *err, const char *message, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int jwt_fail(cstl_error *err, const char *message, const char *fmt, ...)
{
    cstl_error_set(err, CSTL_EAUTH, "%s", message);
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
        va_end(ap);
    }
    return CSTL_EAUTH;
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/*
 * Strict unpadded base64url (RFC 7515 §2): decodes len characters into out (capacity cap).
 * Returns 0 and sets *out_len, or CSTL_EPARSE (bad character, impossible length, non-zero unused
 * bits) or CSTL_ETOOBIG (decoded size over cap).
 */
static int
b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *out_len)
{
    if (len % 4 == 1)
        return CSTL_EPARSE;
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > cap)
        return CSTL_ETOOBIG;
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return CSTL_EPARSE;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* the leftover bits must be zero: one encoding per value */
        return CSTL_EPARSE;
    *out_len = n;
    return 0;
}

/* Decodes a part and parses it as a JSON object. Returns the object (new reference) or NULL with
 * why set. */
static json_t *decode_json_part(const char *in, size_t len, size_t cap, const char **why)
{
    unsigned char buf[CSTL_AUTH_MAX_JWT_PAYLOAD > CSTL_AUTH_MAX_JWT_HEADER
                          ? CSTL_AUTH_MAX_JWT_PAYLOAD
                          : CSTL_AUTH_MAX_JWT_HEADER];
    size_t n;
    int rc = b64url_decode(in, len, buf, cap < sizeof(buf) ? cap : sizeof(buf), &n);
    if (rc == CSTL_ETOOBIG) {
        *why = "is too large";
        return NULL;
    }
    if (rc != 0) {
        *why = "is not valid base64url";
        return NULL;
    }
    json_error_t jerr;
    /* json_loadb refuses trailing data after the value (no JSON_DISABLE_EOF_CHECK) and NUL in
     * strings (no JSON_ALLOW_NUL) */
    json_t *v = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL) {
        *why = "is not valid JSON (or has a duplicate member)";
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        *why = "is not a JSON object";
        return NULL;
    }
    return v;
}

static int check_header(cstl_auth *a, const json_t *header, jwt_alg *alg, cstl_error *err)
{
    const json_t *v = json_object_get(header, "alg");
    if (!json_is_string(v))
        return jwt_fail(err, JWT_INVALID, "jwt header has no alg string");
    const char *name = json_string_value(v);
    if (strcmp(name, "HS256") == 0) {
        if (a->hs256_secret == NULL)
            return jwt_fail(err, JWT_INVALID, "jwt alg HS256 refused: no HS256 secret configured");
        *alg = JWT_HS256;
    } else if (strcmp(name, "RS256") == 0) {
        if (a->rs256_key == NULL)
            return jwt_fail(err, JWT_INVALID, "jwt alg RS256 refused: no RS256 key configured");
        *alg = JWT_RS256;
    } else if (strcasecmp(name, "none") == 0) {
        return jwt_fail(err, JWT_INVALID, "jwt alg none refused");
    } else {
        return jwt_fail(err, JWT_INVALID, "jwt alg not supported (HS256 and RS256 are)");
    }
    v = json_object_get(header, "typ");
    if (v != NULL && (!json_is_string(v) || strcasecmp(json_string_value(v), "JWT") != 0))
        return jwt_fail(err, JWT_INVALID, "jwt header typ is not \"JWT\"");
    /* extensions that must be understood: we understand none */
    if (json_object_get(header, "crit") != NULL)
        return jwt_fail(err, JWT_INVALID, "jwt header has crit, which is not supported");
    return 0;
}

static bool verify_hs256(
    cstl_auth *a, const char *input, size_t input_len, const unsigned char *sig, size_t sig_len)
{
    if (sig_len != 32)
        return false;
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mac_len = 0;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(a->hmac);
    bool ok = ctx != NULL && EVP_MAC_init(ctx, a->hs256_secret, a->hs256_secret_len, params) == 1 &&
              EVP_MAC_update(ctx, (const unsigned char *)input, input_len) == 1 &&
              EVP_MAC_final(ctx, mac, &mac_len, sizeof(mac)) == 1 && mac_len == 32 &&
              CRYPTO_memcmp(mac, sig, 32) == 0;
    EVP_MAC_CTX_free(ctx);
    OPENSSL_cleanse(mac, sizeof(mac));
    ERR_clear_error();
    return ok;
}

static bool verify_rs256(
    cstl_auth *a, const char *input, size_t input_len, const unsigned char *sig, size_t sig_len)
{
    if ((int)sig_len != EVP_PKEY_get_size(a->rs256_key))
        return false;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    /* RSA keys default to PKCS #1 v1.5 padding, which RS256 is */
    bool ok = md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, a->rs256_key) == 1 &&
              EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)input, input_len) == 1;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return ok;
}

/* A numeric date claim: 0 when absent (*present false), CSTL_EAUTH when not a finite number. */
static int
date_claim(const json_t *payload, const char *name, double *out, bool *present, cstl_error *err)
{
    const json_t *v = json_object_get(payload, name);
    *present = v != NULL;
    if (v == NULL)
        return 0;
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return jwt_fail(err, JWT_INVALID, "jwt claim %s is not a number", name);
    *out = json_number_value(v);
    return 0;
}

static bool audience_matches(const json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return false;
    size_t i;
    const json_t *e;
    json_array_foreach(aud, i, e)
    {
        if (json_is_string(e) && strcmp(json_string_value(e), want) == 0)
            return true;
    }
    return false;
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if (iscntrl((unsigned char)*s))
            return false;
    return true;
}

static int check_claims(
    cstl_auth *a, const json_t *payload, int64_t now_s, cstl_principal *out, cstl_error *err)
{
    double exp = 0, nbf = 0, iat = 0;
    bool has_exp, has_nbf, has_iat;
    if (date_claim(payload, "exp", &exp, &has_exp, err) != 0 ||
        date_claim(payload, "nbf", &nbf, &has_nbf, err) != 0 ||
        date_claim(payload, "iat", &iat, &has_iat, err) != 0)
        return CSTL_EAUTH;
    if (!has_exp)
        return jwt_fail(err, JWT_INVALID, "jwt has no exp claim");
    double now = (double)now_s, leeway = (double)a->leeway_s;
    if (now >= exp + leeway)
        return jwt_fail(err, JWT_EXPIRED, "jwt expired at %.0f, now %lld (leeway %d s)", exp,
                        (long long)now_s, a->leeway_s);
    if (has_nbf && now + leeway < nbf)
        return jwt_fail(err, JWT_NOT_YET, "jwt not valid before %.0f, now %lld (leeway %d s)", nbf,
                        (long long)now_s, a->leeway_s);
    if (has_iat && now + leeway < iat)
        return jwt_fail(err, JWT_NOT_YET, "jwt issued in the future at %.0f, now %lld", iat,
                        (long long)now_s);

    if (a->issuer != NULL) {
        const json_t *iss = json_object_get(payload, "iss");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), a->issuer) != 0)
            return jwt_fail(err, JWT_INVALID, "jwt iss is missing or not \"%s\"", a->issuer);
    }
    if (a->audience != NULL && !audience_matches(json_object_get(payload, "aud"), a->audience))
        return jwt_fail(err, JWT_INVALID, "jwt aud is missing or does not include \"%s\"",
                        a->audience);

    const json_t *sub = json_object_get(payload, "sub");
    if (!json_is_string(sub) || json_string_length(sub) == 0 ||
        json_string_length(sub) > JWT_MAX_SUBJECT || !printable(json_string_value(sub)))
        return jwt_fail(err, JWT_INVALID,
                        "jwt sub is missing, empty, longer than %d bytes or not printable",
                        JWT_MAX_SUBJECT);
    const json_t *tenant = json_object_get(payload, "tenant");
    cstl_uuid tenant_id;
    if (!json_is_string(tenant) || cstl_uuid_parse(json_string_value(tenant), &tenant_id) != 0)
        return jwt_fail(err, JWT_INVALID, "jwt tenant is missing or not a UUID");
    const json_t *role = json_object_get(payload, "role");
    cstl_role r;
    if (!json_is_string(role) || cstl_role_parse(json_string_value(role), &r) != 0)
        return jwt_fail(err, JWT_INVALID,
                        "jwt role is missing or not one of admin, member, viewer, worker, agent");

    memset(out, 0, sizeof(*out));
    cstl_uuid_format(&tenant_id, out->tenant_id);
    if (cstl_auth_tenant_is_suspended(a, &tenant_id))
        return jwt_fail(err, JWT_INVALID, "jwt tenant %s is suspended", out->tenant_id);
    memcpy(out->subject, json_string_value(sub), json_string_length(sub) + 1);
    out->role = r;
    return 0;
}

int cstl_auth_jwt_verify(cstl_auth *a,
                         const char *token,
                         size_t len,
                         int64_t now_s,
                         cstl_principal *out,
                         cstl_error *err)
{
    if (len > CSTL_AUTH_MAX_TOKEN)
        return jwt_fail(err, JWT_INVALID, "jwt is %zu bytes long, the limit is %d", len,
                        CSTL_AUTH_MAX_TOKEN);
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return jwt_fail(err, JWT_INVALID, "jwt must have exactly three dot-separated parts");
    size_t header_len = (size_t)(dot1 - token);
    size_t payload_len = (size_t)(dot2 - dot1 - 1);
    size_t sig_len = len - (size_t)(dot2 + 1 - token);
    if (header_len == 0 || payload_len == 0 || sig_len == 0)
        return jwt_fail(err, JWT_INVALID, "jwt has an empty part (unsigned tokens are refused)");

    const char *why = NULL;
    json_t *header = decode_json_part(token, header_len, CSTL_AUTH_MAX_JWT_HEADER, &why);
    if (header == NULL)
        return jwt_fail(err, JWT_INVALID, "jwt header %s", why);
    jwt_alg alg = JWT_UNSET;
    int rc = check_header(a, header, &alg, err);
    json_decref(header);
    if (rc != 0)
        return rc;

    unsigned char sig[JWT_MAX_SIG];
    size_t sig_n;
    rc = b64url_decode(dot2 + 1, sig_len, sig, sizeof(sig), &sig_n);
    if (rc != 0)
        return jwt_fail(err, JWT_INVALID, "jwt signature %s",
                        rc == CSTL_ETOOBIG ? "is too large" : "is not valid base64url");
    size_t input_len = (size_t)(dot2 - token);
    bool ok = alg == JWT_HS256   ? verify_hs256(a, token, input_len, sig, sig_n)
              : alg == JWT_RS256 ? verify_rs256(a, token, input_len, sig, sig_n)
                                 : false;
    if (!ok)
        return jwt_fail(err, JWT_INVALID, "jwt %s signature does not verify",
                        alg == JWT_HS256 ? "HS256" : "RS256");

    json_t *payload = decode_json_part(dot1 + 1, payload_len, CSTL_AUTH_MAX_JWT_PAYLOAD, &why);
    if (payload == NULL)
        return jwt_fail(err, JWT_INVALID, "jwt payload %s", why);
    rc = check_claims(a, payload, now_s, out, err);
    json_decref(payload);
    return rc;
}
