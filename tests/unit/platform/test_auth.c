/*
 * Unit tests for platform/auth*.c with real cryptography: tokens are signed here by an independent
 * signer (HMAC() for HS256, EVP_DigestSign over a freshly generated RSA key for RS256), and HS256
 * is cross-checked against RFC 7515 appendix A.1 and a vector made with Python's hmac module.
 */
#include "platform/auth.h"
#include "platform/id.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* cmocka needs the standard headers above; keep it last. */
// clang-format off
#include <cmocka.h>
// clang-format on

#define SECRET  "0123456789abcdef0123456789abcdef-test-secret"
#define TENANT  "0190a5b2-7c4e-7d3f-8a1b-2c3d4e5f6a7b"
#define TENANT2 "0190a5b2-7c4e-7d3f-8a1b-000000000002"
#define NOW     1700000000LL

static EVP_PKEY *rsa_key;    /* private, for signing */
static char *rsa_public_pem; /* its public half */

/* ---- the test's own signer ---- */

static char *b64url(const unsigned char *in, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(len * 4 / 3 + 4);
    size_t n = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[n++] = alphabet[(v >> 18) & 63];
        out[n++] = alphabet[(v >> 12) & 63];
        if (i + 1 < len)
            out[n++] = alphabet[(v >> 6) & 63];
        if (i + 2 < len)
            out[n++] = alphabet[v & 63];
    }
    out[n] = '\0';
    return out;
}

static char *b64url_str(const char *s)
{
    return b64url((const unsigned char *)s, strlen(s));
}

/* "<b64(header)>.<b64(payload)>", new. */
static char *signing_input(const char *header, const char *payload)
{
    char *h = b64url_str(header), *p = b64url_str(payload);
    char *out = malloc(strlen(h) + strlen(p) + 2);
    sprintf(out, "%s.%s", h, p);
    free(h);
    free(p);
    return out;
}

static char *join_sig(char *input, const unsigned char *sig, size_t sig_len)
{
    char *s = b64url(sig, sig_len);
    char *out = malloc(strlen(input) + strlen(s) + 2);
    sprintf(out, "%s.%s", input, s);
    free(s);
    free(input);
    return out;
}

static char *
sign_hs256_key(const void *key, size_t key_len, const char *header, const char *payload)
{
    char *input = signing_input(header, payload);
    unsigned char mac[32];
    unsigned int mac_len = 0;
    assert_non_null(HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)input,
                         strlen(input), mac, &mac_len));
    assert_int_equal(mac_len, 32);
    return join_sig(input, mac, mac_len);
}

static char *sign_hs256(const char *header, const char *payload)
{
    return sign_hs256_key(SECRET, strlen(SECRET), header, payload);
}

static char *sign_rs256(EVP_PKEY *key, const char *header, const char *payload)
{
    char *input = signing_input(header, payload);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
    size_t sig_len = 0;
    assert_int_equal(
        EVP_DigestSign(md, NULL, &sig_len, (const unsigned char *)input, strlen(input)), 1);
    unsigned char *sig = malloc(sig_len);
    assert_int_equal(EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)input, strlen(input)),
                     1);
    EVP_MD_CTX_free(md);
    char *out = join_sig(input, sig, sig_len);
    free(sig);
    return out;
}

static char *public_pem(EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(bio, key), 1);
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *out = strndup(data, (size_t)n);
    BIO_free(bio);
    return out;
}

static char *payload_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *payload_fmt(const char *fmt, ...)
{
    char *out = NULL;
    va_list ap;
    va_start(ap, fmt);
    assert_true(vasprintf(&out, fmt, ap) >= 0);
    va_end(ap);
    return out;
}

/* The standard claims, valid at NOW. */
static char *good_claims(void)
{
    return payload_fmt("{\"sub\":\"alice\",\"tenant\":\"%s\",\"role\":\"member\",\"iat\":%lld,"
                       "\"exp\":%lld}",
                       TENANT, NOW - 10, NOW + 3600);
}

static const char hs_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
static const char rs_header[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";

static cstl_auth *new_auth(const char *secret, const char *pem, const char *iss, const char *aud)
{
    cstl_auth_options o = {
        .hs256_secret = secret, .rs256_public_key_pem = pem, .issuer = iss, .audience = aud};
    cstl_error err;
    cstl_auth *a = cstl_auth_new(&o, &err);
    if (a == NULL)
        fail_msg("cstl_auth_new: %s (%s)", err.message, err.detail);
    return a;
}

static int
authenticate(cstl_auth *a, const char *token, int64_t now, cstl_principal *p, cstl_error *err)
{
    char *header = payload_fmt("Bearer %s", token);
    int rc = cstl_auth_authenticate(a, header, now, p, err);
    free(header);
    return rc;
}

/* The token is refused with CSTL_EAUTH, the detail mentions want, and nothing echoes it. */
static void expect_refused(cstl_auth *a, const char *token, int64_t now, const char *want)
{
    cstl_principal p;
    cstl_error err;
    int rc = authenticate(a, token, now, &p, &err);
    if (rc != CSTL_EAUTH)
        fail_msg("token accepted or wrong code %d, expected refusal mentioning \"%s\"", rc, want);
    if (want != NULL && strstr(err.detail, want) == NULL)
        fail_msg("detail \"%s\" (message \"%s\") does not mention \"%s\"", err.detail, err.message,
                 want);
    assert_true(err.message[0] != '\0');
    const char *last = strrchr(token, '.');
    const char *tail = last ? last + 1 : token;
    if (strlen(tail) >= 8) {
        assert_null(strstr(err.message, tail));
        assert_null(strstr(err.detail, tail));
    }
    assert_string_equal(p.tenant_id, "");
}

static void expect_ok(cstl_auth *a, const char *token, int64_t now, cstl_principal *p)
{
    cstl_error err;
    int rc = authenticate(a, token, now, p, &err);
    if (rc != 0)
        fail_msg("refused (%d): %s (%s)", rc, err.message, err.detail);
}

static int setup(void **state)
{
    (void)state;
    rsa_key = EVP_RSA_gen(2048);
    assert_non_null(rsa_key);
    rsa_public_pem = public_pem(rsa_key);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(rsa_key);
    free(rsa_public_pem);
    return 0;
}

/* ---- roles and permissions ---- */

static void test_roles(void **state)
{
    (void)state;
    static const char *const names[] = {"admin", "member", "viewer", "worker", "agent"};
    for (int i = 0; i < CSTL_ROLE_COUNT; i++) {
        cstl_role r;
        assert_int_equal(cstl_role_parse(names[i], &r), 0);
        assert_int_equal(r, i);
        assert_string_equal(cstl_role_name(r), names[i]);
    }
    cstl_role r;
    assert_int_equal(cstl_role_parse("Admin", &r), CSTL_EINVAL);
    assert_int_equal(cstl_role_parse("root", &r), CSTL_EINVAL);
    assert_int_equal(cstl_role_parse("", &r), CSTL_EINVAL);
    assert_int_equal(cstl_role_parse(NULL, &r), CSTL_EINVAL);
    assert_string_equal(cstl_role_name((cstl_role)42), "unknown");

    assert_true(cstl_role_allows(CSTL_ROLE_ADMIN, CSTL_ROLE_MEMBER));
    assert_true(cstl_role_allows(CSTL_ROLE_ADMIN, CSTL_ROLE_VIEWER));
    assert_true(cstl_role_allows(CSTL_ROLE_MEMBER, CSTL_ROLE_VIEWER));
    assert_true(cstl_role_allows(CSTL_ROLE_MEMBER, CSTL_ROLE_MEMBER));
    assert_false(cstl_role_allows(CSTL_ROLE_MEMBER, CSTL_ROLE_ADMIN));
    assert_false(cstl_role_allows(CSTL_ROLE_VIEWER, CSTL_ROLE_MEMBER));
    assert_false(cstl_role_allows(CSTL_ROLE_ADMIN, CSTL_ROLE_WORKER));
    assert_false(cstl_role_allows(CSTL_ROLE_ADMIN, CSTL_ROLE_AGENT));
    assert_false(cstl_role_allows(CSTL_ROLE_WORKER, CSTL_ROLE_VIEWER));
    assert_false(cstl_role_allows(CSTL_ROLE_AGENT, CSTL_ROLE_VIEWER));
    assert_false(cstl_role_allows(CSTL_ROLE_AGENT, CSTL_ROLE_WORKER));
    assert_true(cstl_role_allows(CSTL_ROLE_WORKER, CSTL_ROLE_WORKER));
    assert_true(cstl_role_allows(CSTL_ROLE_AGENT, CSTL_ROLE_AGENT));
    assert_false(cstl_role_allows((cstl_role)-1, CSTL_ROLE_VIEWER));
}

static void test_permission_table(void **state)
{
    (void)state;
    /* rows: admin, member, viewer, worker, agent; columns: cstl_perm order */
    static const bool want[CSTL_ROLE_COUNT][CSTL_PERM_COUNT] = {
        /*            read   submit cancel fleet  report admin */
        [CSTL_ROLE_ADMIN] = {true, true, true, true, false, true},
        [CSTL_ROLE_MEMBER] = {true, true, true, false, false, false},
        [CSTL_ROLE_VIEWER] = {true, false, false, false, false, false},
        [CSTL_ROLE_WORKER] = {false, false, false, false, true, false},
        [CSTL_ROLE_AGENT] = {true, true, true, false, false, false},
    };
    for (int r = 0; r < CSTL_ROLE_COUNT; r++) {
        cstl_principal p = {.role = (cstl_role)r};
        for (int q = 0; q < CSTL_PERM_COUNT; q++) {
            if (cstl_principal_can(&p, (cstl_perm)q) != want[r][q])
                fail_msg("%s %s %s", cstl_role_name((cstl_role)r), want[r][q] ? "lacks" : "has",
                         cstl_perm_name((cstl_perm)q));
            assert_int_equal(cstl_role_has_perm((cstl_role)r, (cstl_perm)q), want[r][q]);
        }
        assert_false(cstl_principal_can(&p, (cstl_perm)CSTL_PERM_COUNT));
    }
    assert_false(cstl_principal_can(NULL, CSTL_PERM_READ));
    assert_string_equal(cstl_perm_name(CSTL_PERM_SUBMIT_JOB), "submit_job");
    assert_string_equal(cstl_perm_name(CSTL_PERM_WORKER_REPORT), "worker_report");
}

/* ---- options ---- */

static void test_options_validated(void **state)
{
    (void)state;
    cstl_error err;
    cstl_auth_options o = {.hs256_secret = "too short"};
    assert_null(cstl_auth_new(&o, &err));
    assert_int_equal(err.code, CSTL_EINVAL);
    assert_non_null(strstr(err.message, "32"));

    o.hs256_secret = rsa_public_pem; /* long enough, but a PEM */
    assert_null(cstl_auth_new(&o, &err));
    assert_non_null(strstr(err.message, "looks like a PEM"));

    cstl_auth_options bad_pem = {.rs256_public_key_pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n"};
    assert_null(cstl_auth_new(&bad_pem, &err));
    assert_non_null(strstr(err.message, "not a PEM public key"));

    EVP_PKEY *ec = EVP_EC_gen("P-256");
    char *ec_pem = public_pem(ec);
    cstl_auth_options ec_opts = {.rs256_public_key_pem = ec_pem};
    assert_null(cstl_auth_new(&ec_opts, &err));
    assert_non_null(strstr(err.message, "not RSA"));
    free(ec_pem);
    EVP_PKEY_free(ec);

    EVP_PKEY *small = EVP_RSA_gen(1024);
    char *small_pem = public_pem(small);
    cstl_auth_options small_opts = {.rs256_public_key_pem = small_pem};
    assert_null(cstl_auth_new(&small_opts, &err));
    assert_non_null(strstr(err.message, "1024 bits, the minimum is 2048"));
    free(small_pem);
    EVP_PKEY_free(small);

    cstl_auth_options leeway = {.leeway_s = 601};
    assert_null(cstl_auth_new(&leeway, &err));
    leeway.leeway_s = -5;
    assert_null(cstl_auth_new(&leeway, &err));
    cstl_auth_options empty_iss = {.issuer = ""};
    assert_null(cstl_auth_new(&empty_iss, &err));

    /* nothing configured: valid, JWTs refused, API keys work */
    cstl_auth *a = cstl_auth_new(NULL, &err);
    assert_non_null(a);
    char *claims = good_claims();
    char *tok = sign_hs256(hs_header, claims);
    expect_refused(a, tok, NOW, "no HS256 secret configured");
    free(tok);
    free(claims);
    cstl_auth_free(a);
    cstl_auth_free(NULL);
}

/* ---- JWT ---- */

static void test_hs256_valid(void **state)
{
    (void)state;
    cstl_auth *a = new_auth(SECRET, NULL, NULL, NULL);
    char *claims = good_claims();
    char *tok = sign_hs256(hs_header, claims);
    cstl_principal p;
    expect_ok(a, tok, NOW, &p);
    assert_string_equal(p.tenant_id, TENANT);
    assert_string_equal(p.subject, "alice");
    assert_int_equal(p.role, CSTL_ROLE_MEMBER);
    assert_string_equal(p.key_id, "");

    /* scheme case-insensitive, extra spaces before the token tolerated */
    char *h = payload_fmt("bEaReR   %s", tok);
    cstl_error err;
    assert_int_equal(cstl_auth_authenticate(a, h, NOW, &p, &err), 0);
    free(h);
    free(tok);
    free(claims);

    /* an upper-case tenant is normalised; typ is optional */
    claims = payload_fmt("{\"sub\":\"bob\",\"tenant\":\"0190A5B2-7C4E-7D3F-8A1B-2C3D4E5F6A7B\","
                         "\"role\":\"admin\",\"exp\":%lld}",
                         NOW + 60);
    tok = sign_hs256("{\"alg\":\"HS256\"}", claims);
    expect_ok(a, tok, NOW, &p);
    assert_string_equal(p.tenant_id, TENANT);
    assert_int_equal(p.role, CSTL_ROLE_ADMIN);
    free(tok);
    free(claims);
    cstl_auth_free(a);
}

static void test_rs256_valid(void **state)
{
    (void)state;
    cstl_auth *a = new_auth(NULL, rsa_public_pem, "https://id.example.com", "constellation");
    char *claims = payload_fmt("{\"sub\":\"worker-7\",\"tenant\":\"%s\",\"role\":\"worker\","
                               "\"iss\":\"https://id.example.com\","
                               "\"aud\":[\"other\",\"constellation\"],\"nbf\":%lld,\"exp\":%lld}",
                               TENANT, NOW - 5, NOW + 300);
    char *tok = sign_rs256(rsa_key, rs_header, claims);
    cstl_principal p;
    expect_ok(a, tok, NOW, &p);
    assert_string_equal(p.subject, "worker-7");
    assert_int_equal(p.role, CSTL_ROLE_WORKER);
    assert_true(cstl_principal_can(&p, CSTL_PERM_WORKER_REPORT));
    assert_false(cstl_principal_can(&p, CSTL_PERM_SUBMIT_JOB));
    free(tok);

    /* signed by another RSA key */
    EVP_PKEY *other = EVP_RSA_gen(2048);
    tok = sign_rs256(other, rs_header, claims);
    expect_refused(a, tok, NOW, "RS256 signature does not verify");
    EVP_PKEY_free(other);
    free(tok);
    free(claims);
    cstl_auth_free(a);
}

/* RFC 7515 appendix A.1: HS256 with a given 64-byte key. The token has no tenant/role, so it is
 * refused, but only after its signature verified: the detail names the missing claim. */
static void test_rfc7515_a1_vector(void **state)
{
    (void)state;
    static const unsigned char key[] = {
        3,   35,  53,  75,  43, 15,  165, 188, 131, 126, 6,   101, 119, 123, 166, 143, 90,
        179, 40,  230, 240, 84, 201, 40,  169, 15,  132, 178, 210, 80,  46,  191, 211, 251,
        90,  146, 210, 6,   71, 239, 150, 138, 180, 195, 119, 98,  61,  34,  61,  46,  33,
        114, 5,   46,  79,  8,  192, 205, 154, 245, 103, 208, 128, 163, 0};
    static const char token[] =
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0"
        "cnVlfQ"
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    cstl_auth *a = new_auth((const char *)key, NULL, "joe", NULL);
    expect_refused(a, token, 1300819000, "jwt sub is missing");
    expect_refused(a, token, 1300819380 + 31, "jwt expired");

    char tampered[sizeof(token)];
    memcpy(tampered, token, sizeof(token));
    tampered[sizeof(token) - 10] = tampered[sizeof(token) - 10] == 'X' ? 'Y' : 'X';
    expect_refused(a, tampered, 1300819000, "signature does not verify");
    cstl_auth_free(a);
}

/* Made with Python: hmac.new(b"constellation-test-vector-secret-0123456789", input, sha256). */
static void test_python_hs256_vector(void **state)
{
    (void)state;
    static const char token[] =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
        ".eyJzdWIiOiJhbGljZUBleGFtcGxlLmNvbSIsInRlbmFudCI6IjAxOTBhNWIyLTdjNGUtN2QzZi04YTFiLTJjM2Q0"
        "ZTVmNmE3YiIsInJvbGUiOiJtZW1iZXIiLCJpc3MiOiJodHRwczovL2lkLmV4YW1wbGUuY29tIiwiYXVkIjoiY29uc3"
        "RlbGxhdGlvbiIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAzNjAwfQ"
        ".zdWCECdl_YdRgY4iMfHyp7wkb5gD2KDNMHnrdW2flQE";
    cstl_auth *a = new_auth("constellation-test-vector-secret-0123456789", NULL,
                            "https://id.example.com", "constellation");
    cstl_principal p;
    expect_ok(a, token, 1700000100, &p);
    assert_string_equal(p.subject, "alice@example.com");
    assert_string_equal(p.tenant_id, TENANT);
    assert_int_equal(p.role, CSTL_ROLE_MEMBER);
    expect_refused(a, token, 1700003600 + 30, "jwt expired");
    cstl_auth_free(a);

    a = new_auth("constellation-test-vector-secret-012345678X", NULL, NULL, NULL);
    expect_refused(a, token, 1700000100, "signature does not verify");
    cstl_auth_free(a);
}

static void test_time_claims(void **state)
{
    (void)state;
    cstl_auth *a = new_auth(SECRET, NULL, NULL, NULL);
    struct {
        const char *before;
        long long v;
        const char *after;
        const char *want; /* NULL: accepted */
    } cases[] = {
        {"\"exp\":", NOW - 100, "", "jwt expired"},
        {"\"exp\":", NOW - 29, "", NULL}, /* within the 30 s leeway */
        {"\"exp\":", NOW - 30, "", "jwt expired"},
        {"\"exp\":", NOW + 10, ".5", NULL}, /* a real number is a number */
        {"\"exp\":\"", NOW + 100, "\"", "exp is not a number"},
        {"\"nope\":", NOW, "", "no exp claim"},
        {"\"exp\":9999999999,\"nbf\":", NOW + 100, "", "not valid before"},
        {"\"exp\":9999999999,\"nbf\":", NOW + 20, "", NULL},
        {"\"exp\":9999999999,\"nbf\":\"", NOW, "\"", "nbf is not a number"},
        {"\"exp\":9999999999,\"iat\":", NOW + 100, "", "issued in the future"},
        {"\"exp\":9999999999,\"iat\":", NOW - 100000, "", NULL},
        {"\"exp\":1e400,\"x\":", 0, "", "payload is not valid JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *time_part = payload_fmt("%s%lld%s", cases[i].before, cases[i].v, cases[i].after);
        char *claims = payload_fmt("{\"sub\":\"s\",\"tenant\":\"%s\",\"role\":\"viewer\",%s}",
                                   TENANT, time_part);
        char *tok = sign_hs256(hs_header, claims);
        cstl_principal p;
        if (cases[i].want == NULL)
            expect_ok(a, tok, NOW, &p);
        else
            expect_refused(a, tok, NOW, cases[i].want);
        free(tok);
        free(claims);
        free(time_part);
    }
    /* messages the caller sees for time failures */
    char *claims =
        payload_fmt("{\"sub\":\"s\",\"tenant\":\"%s\",\"role\":\"viewer\",\"exp\":1}", TENANT);
    char *tok = sign_hs256(hs_header, claims);
    cstl_principal p;
    cstl_error err;
    assert_int_equal(authenticate(a, tok, NOW, &p, &err), CSTL_EAUTH);
    assert_string_equal(err.message, "bearer token has expired");
    free(tok);
    free(claims);
    cstl_auth_free(a);

    /* no leeway at all */
    cstl_auth_options o = {.hs256_secret = SECRET, .leeway_s = CSTL_AUTH_NO_LEEWAY};
    a = cstl_auth_new(&o, &err);
    claims = payload_fmt("{\"sub\":\"s\",\"tenant\":\"%s\",\"role\":\"viewer\",\"exp\":%lld}",
                         TENANT, NOW);
    tok = sign_hs256(hs_header, claims);
    expect_refused(a, tok, NOW, "jwt expired");
    expect_ok(a, tok, NOW - 1, &p);
    free(tok);
    free(claims);
    cstl_auth_free(a);
}

static void test_signature_and_algorithms(void **state)
{
    (void)state;
    cstl_auth *hs = new_auth(SECRET, NULL, NULL, NULL);
    cstl_auth *rs = new_auth(NULL, rsa_public_pem, NULL, NULL);
    cstl_auth *both = new_auth(SECRET, rsa_public_pem, NULL, NULL);
    char *claims = good_claims();

    /* wrong secret */
    char *tok = sign_hs256_key("another-secret-another-secret-another", 37, hs_header, claims);
    expect_refused(hs, tok, NOW, "HS256 signature does not verify");
    free(tok);

    /* tampered payload: the signature of one payload on another */
    tok = sign_hs256(hs_header, claims);
    char *admin = payload_fmt("{\"sub\":\"alice\",\"tenant\":\"%s\",\"role\":\"admin\","
                              "\"exp\":%lld}",
                              TENANT, NOW + 3600);
    char *forged_input = signing_input(hs_header, admin);
    char *forged = payload_fmt("%s%s", forged_input, strrchr(tok, '.'));
    expect_refused(hs, forged, NOW, "signature does not verify");
    free(forged);
    free(forged_input);
    free(admin);
    free(tok);

    /* alg none, without and with a signature, and in other spellings */
    static const char *const none_headers[] = {"{\"alg\":\"none\"}", "{\"alg\":\"None\"}",
                                               "{\"alg\":\"NONE\",\"typ\":\"JWT\"}"};
    for (size_t i = 0; i < 3; i++) {
        char *input = signing_input(none_headers[i], claims);
        char *unsigned_tok = payload_fmt("%s.", input);
        expect_refused(hs, unsigned_tok, NOW, "empty part");
        expect_refused(both, unsigned_tok, NOW, "empty part");
        char *with_sig = sign_hs256(none_headers[i], claims);
        expect_refused(hs, with_sig, NOW, "alg none refused");
        expect_refused(both, with_sig, NOW, "alg none refused");
        free(with_sig);
        free(unsigned_tok);
        free(input);
    }

    /* algorithm confusion: HS256 keyed with the RSA public key PEM, only RS256 configured */
    tok = sign_hs256_key(rsa_public_pem, strlen(rsa_public_pem), hs_header, claims);
    expect_refused(rs, tok, NOW, "alg HS256 refused");
    expect_refused(both, tok, NOW, "HS256 signature does not verify");
    free(tok);
    /* and the other way round: an RS256 token where only HS256 is configured */
    tok = sign_rs256(rsa_key, rs_header, claims);
    expect_refused(hs, tok, NOW, "alg RS256 refused");
    cstl_principal p;
    expect_ok(both, tok, NOW, &p);
    free(tok);

    /* unknown, missing or mistyped alg; typ and crit */
    static const struct {
        const char *header;
        const char *want;
    } headers[] = {
        {"{\"alg\":\"HS512\"}", "alg not supported"},
        {"{\"alg\":\"ES256\"}", "alg not supported"},
        {"{\"alg\":\"hs256\"}", "alg not supported"},
        {"{\"alg\":\"PS256\"}", "alg not supported"},
        {"{\"typ\":\"JWT\"}", "no alg"},
        {"{\"alg\":256}", "no alg"},
        {"{\"alg\":\"HS256\",\"typ\":\"JWE\"}", "typ"},
        {"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "crit"},
        {"{\"alg\":\"HS256\",\"alg\":\"HS256\"}", "header is not valid JSON"},
        {"[\"HS256\"]", "not a JSON object"},
        {"{\"alg\":\"HS256\"} x", "header is not valid JSON"},
        {"{\"alg\":\"HS256\"", "header is not valid JSON"},
    };
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        tok = sign_hs256(headers[i].header, claims);
        expect_refused(both, tok, NOW, headers[i].want);
        free(tok);
    }
    free(claims);
    cstl_auth_free(hs);
    cstl_auth_free(rs);
    cstl_auth_free(both);
}

static void test_malformed_tokens(void **state)
{
    (void)state;
    cstl_auth *a = new_auth(SECRET, NULL, NULL, NULL);
    char *claims = good_claims();
    char *tok = sign_hs256(hs_header, claims);
    size_t len = strlen(tok);
    char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');

    /* part counts */
    char *two = strndup(tok, (size_t)(d2 - tok));
    expect_refused(a, two, NOW, "three dot-separated parts");
    char *four = payload_fmt("%s.AAAA", tok);
    expect_refused(a, four, NOW, "three dot-separated parts");
    expect_refused(a, "abc", NOW, "three dot-separated parts");
    expect_refused(a, "..", NOW, "empty part");
    free(two);
    free(four);

    /* a base64 (not url) character, padding, whitespace, impossible length, non-zero spare bits */
    char *bad = strdup(tok);
    bad[1] = '+';
    expect_refused(a, bad, NOW, "header is not valid base64url");
    free(bad);
    char *padded = payload_fmt("%.*s=%s", (int)(d1 - tok), tok, d1);
    expect_refused(a, padded, NOW, "header is not valid base64url");
    free(padded);
    /* in the payload it breaks the signature, checked before the payload is decoded */
    padded = payload_fmt("%.*s=%s", (int)(d2 - tok), tok, d2);
    expect_refused(a, padded, NOW, "signature does not verify");
    free(padded);
    char *sig_padded = payload_fmt("%s=", tok);
    expect_refused(a, sig_padded, NOW, "signature is not valid base64url");
    free(sig_padded);
    char *len1 = payload_fmt("%.*sA%s", (int)(d1 - tok), tok, d1); /* header len % 4 may be 1 */
    cstl_principal p;
    cstl_error err;
    assert_int_equal(authenticate(a, len1, NOW, &p, &err), CSTL_EAUTH);
    free(len1);
    /* the signature is 43 characters: its last one carries 2 spare bits, which must be zero */
    char *spare = strdup(tok);
    char *last = &spare[len - 1];
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(alphabet, *last) - alphabet);
    *last = alphabet[v | 1];
    if (*last == tok[len - 1])
        *last = alphabet[v & ~1];
    expect_refused(a, spare, NOW, "not valid base64url");
    free(spare);

    /* oversize token, oversize header, oversize payload */
    char *huge = malloc(CSTL_AUTH_MAX_TOKEN + 2);
    memset(huge, 'A', CSTL_AUTH_MAX_TOKEN + 1);
    huge[CSTL_AUTH_MAX_TOKEN + 1] = '\0';
    huge[10] = '.';
    huge[20] = '.';
    expect_refused(a, huge, NOW, "over 8192 bytes");
    free(huge);
    char big_header[1200];
    snprintf(big_header, sizeof(big_header), "{\"alg\":\"HS256\",\"kid\":\"%01100d\"}", 0);
    char *big = sign_hs256(big_header, claims);
    expect_refused(a, big, NOW, "header is too large");
    free(big);
    char *big_claims = payload_fmt("{\"sub\":\"s\",\"tenant\":\"%s\",\"role\":\"viewer\","
                                   "\"exp\":%lld,\"pad\":\"%04500d\"}",
                                   TENANT, NOW + 60, 0);
    big = sign_hs256(hs_header, big_claims);
    expect_refused(a, big, NOW, "payload is too large");
    free(big);
    free(big_claims);

    /* payload problems found after the signature: duplicates, trailing garbage, not an object */
    static const char *const payloads[] = {
        "{\"sub\":\"a\",\"sub\":\"b\",\"tenant\":\"" TENANT "\",\"role\":\"admin\",\"exp\":2e9}",
        "{\"sub\":\"a\",\"tenant\":\"" TENANT "\",\"role\":\"admin\",\"exp\":2e9}garbage",
        "[1,2]",
        "\"just a string\"",
    };
    for (size_t i = 0; i < 4; i++) {
        char *t = sign_hs256(hs_header, payloads[i]);
        expect_refused(a, t, NOW, "payload is not");
        free(t);
    }

    free(tok);
    free(claims);
    cstl_auth_free(a);
}

static void test_required_claims(void **state)
{
    (void)state;
    cstl_auth *a = new_auth(SECRET, NULL, "https://id.example.com", "constellation");
    const char *ok_iss = "\"iss\":\"https://id.example.com\",\"aud\":\"constellation\"";
    struct {
        const char *sub, *tenant, *role, *extra, *want;
    } cases[] = {
        {"\"sub\":\"a\",", "", "\"role\":\"admin\",", ok_iss, "tenant is missing"},
        {"\"sub\":\"a\",", "\"tenant\":\"not-a-uuid\",", "\"role\":\"admin\",", ok_iss,
         "tenant is missing or not a UUID"},
        {"\"sub\":\"a\",", "\"tenant\":42,", "\"role\":\"admin\",", ok_iss, "tenant"},
        {"\"sub\":\"a\",", "\"tenant\":\"" TENANT "\",", "", ok_iss, "role is missing"},
        {"\"sub\":\"a\",", "\"tenant\":\"" TENANT "\",", "\"role\":\"root\",", ok_iss,
         "role is missing or not one of"},
        {"\"sub\":\"a\",", "\"tenant\":\"" TENANT "\",", "\"role\":[\"admin\"],", ok_iss, "role"},
        {"", "\"tenant\":\"" TENANT "\",", "\"role\":\"admin\",", ok_iss, "sub is missing"},
        {"\"sub\":\"\",", "\"tenant\":\"" TENANT "\",", "\"role\":\"admin\",", ok_iss, "sub"},
        {"\"sub\":\"a\\nb\",", "\"tenant\":\"" TENANT "\",", "\"role\":\"admin\",", ok_iss,
         "not printable"},
        {"\"sub\":\"a\",", "\"tenant\":\"" TENANT "\",", "\"role\":\"admin\",",
         "\"iss\":\"https://evil.example.com\",\"aud\":\"constellation\"", "iss"},
        {"\"sub\":\"a\",", "\"tenant\":\"" TENANT "\",", "\"role\":\"admin\",",
         "\"aud\":\"constellation\"", "iss"},
        {"\"sub\":\"a\",", "\"tenant\":\"" TENANT "\",", "\"role\":\"admin\",",
         "\"iss\":\"https://id.example.com\",\"aud\":\"someone-else\"", "aud"},
        {"\"sub\":\"a\",", "\"tenant\":\"" TENANT "\",", "\"role\":\"admin\",",
         "\"iss\":\"https://id.example.com\",\"aud\":[\"x\",\"y\"]", "aud"},
        {"\"sub\":\"a\",", "\"tenant\":\"" TENANT "\",", "\"role\":\"admin\",",
         "\"iss\":\"https://id.example.com\"", "aud"},
        {"\"sub\":\"a\",", "\"tenant\":\"" TENANT "\",", "\"role\":\"agent\",", ok_iss, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *claims = payload_fmt("{%s%s%s\"exp\":%lld,%s}", cases[i].sub, cases[i].tenant,
                                   cases[i].role, NOW + 60, cases[i].extra);
        char *tok = sign_hs256(hs_header, claims);
        cstl_principal p;
        if (cases[i].want == NULL) {
            expect_ok(a, tok, NOW, &p);
            assert_int_equal(p.role, CSTL_ROLE_AGENT);
        } else {
            expect_refused(a, tok, NOW, cases[i].want);
        }
        free(tok);
        free(claims);
    }
    cstl_auth_free(a);
}

static void test_authorization_header(void **state)
{
    (void)state;
    cstl_auth *a = new_auth(SECRET, NULL, NULL, NULL);
    cstl_principal p;
    cstl_error err;
    static const char *const bad[] = {
        "",           "Basic dXNlcjpwYXNz", "Bearer",           "Bearer ", "Bearertoken",
        "Bearer a b", "Bearer a\tb",        "Bearer a\xc3\xa9",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(cstl_auth_authenticate(a, bad[i], NOW, &p, &err), CSTL_EAUTH);
    assert_int_equal(cstl_auth_authenticate(a, NULL, NOW, &p, &err), CSTL_EAUTH);
    assert_string_equal(err.message, "missing bearer credentials");
    assert_int_equal(cstl_auth_authenticate(a, "Basic x", NOW, &p, NULL), CSTL_EAUTH);
    assert_int_equal(cstl_auth_authenticate(a, "Bearer x.y.z", NOW, &p, NULL), CSTL_EAUTH);
    assert_int_equal(cstl_auth_authenticate(a, "Bearer cstl_x", NOW, &p, NULL), CSTL_EAUTH);
    cstl_auth_free(a);
}

static void test_suspended_tenant_jwt(void **state)
{
    (void)state;
    cstl_auth *a = new_auth(SECRET, NULL, NULL, NULL);
    char *claims = good_claims();
    char *tok = sign_hs256(hs_header, claims);
    cstl_principal p;
    assert_int_equal(cstl_auth_tenant_set_suspended(a, TENANT, true), 0);
    assert_int_equal(cstl_auth_tenant_set_suspended(a, TENANT, true), 0); /* idempotent */
    expect_refused(a, tok, NOW, "suspended");
    assert_int_equal(cstl_auth_tenant_set_suspended(a, TENANT, false), 0);
    expect_ok(a, tok, NOW, &p);
    assert_int_equal(cstl_auth_tenant_set_suspended(a, TENANT, false), 0);
    assert_int_equal(cstl_auth_tenant_set_suspended(a, "nope", true), CSTL_EINVAL);
    free(tok);
    free(claims);
    cstl_auth_free(a);
}

/* ---- API keys ---- */

static void test_api_key_format(void **state)
{
    (void)state;
    char key[CSTL_API_KEY_LEN + 1], id[37], hash[65];
    assert_int_equal(cstl_api_key_generate(key, sizeof(key), id, hash), 0);
    assert_int_equal(strlen(key), 102);
    assert_memory_equal(key, "cstl_", 5);
    assert_true(cstl_uuid_valid(id));
    cstl_uuid u;
    cstl_uuid_parse(id, &u);
    assert_int_equal(cstl_uuid_version(&u), 7);

    char parsed[37];
    const char *secret;
    assert_int_equal(cstl_api_key_parse(key, parsed, &secret), 0);
    assert_string_equal(parsed, id);
    assert_int_equal(strlen(secret), 64);
    char check[65];
    assert_int_equal(cstl_api_key_hash(secret, check), 0);
    assert_string_equal(check, hash);
    /* the hash is SHA-256 of the secret text: a known value */
    assert_int_equal(cstl_api_key_hash("abc", check), 0);
    assert_string_equal(check, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

    /* two keys differ */
    char key2[CSTL_API_KEY_LEN + 1], id2[37], hash2[65];
    assert_int_equal(cstl_api_key_generate(key2, sizeof(key2), id2, hash2), 0);
    assert_string_not_equal(key, key2);
    assert_string_not_equal(id, id2);
    assert_int_equal(cstl_api_key_generate(key2, CSTL_API_KEY_LEN, id2, hash2), CSTL_EINVAL);

    char bad[CSTL_API_KEY_LEN + 2];
    memcpy(bad, key, sizeof(key));
    bad[10] = 'A'; /* upper-case hex */
    assert_int_equal(cstl_api_key_parse(bad, parsed, &secret), CSTL_EPARSE);
    memcpy(bad, key, sizeof(key));
    bad[37] = '-';
    assert_int_equal(cstl_api_key_parse(bad, parsed, &secret), CSTL_EPARSE);
    memcpy(bad, key, sizeof(key));
    bad[0] = 'C';
    assert_int_equal(cstl_api_key_parse(bad, parsed, &secret), CSTL_EPARSE);
    memcpy(bad, key, sizeof(key));
    bad[101] = 'g';
    assert_int_equal(cstl_api_key_parse(bad, parsed, &secret), CSTL_EPARSE);
    memcpy(bad, key, sizeof(key));
    bad[102] = 'a';
    bad[103] = '\0';
    assert_int_equal(cstl_api_key_parse(bad, parsed, &secret), CSTL_EPARSE);
    memcpy(bad, key, sizeof(key));
    bad[101] = '\0';
    assert_int_equal(cstl_api_key_parse(bad, parsed, &secret), CSTL_EPARSE);
    assert_int_equal(cstl_api_key_parse("cstl_", parsed, &secret), CSTL_EPARSE);
    assert_int_equal(cstl_api_key_parse(NULL, parsed, &secret), CSTL_EPARSE);
}

/* The key is refused with the generic message and a detail mentioning want. */
static void expect_key_refused(cstl_auth *a, const char *key, int64_t now, const char *want)
{
    cstl_principal p;
    cstl_error err;
    assert_int_equal(authenticate(a, key, now, &p, &err), CSTL_EAUTH);
    assert_string_equal(err.message, "invalid or revoked api key");
    if (strstr(err.detail, want) == NULL)
        fail_msg("detail \"%s\" does not mention \"%s\"", err.detail, want);
    if (strlen(key) > 40)
        assert_null(strstr(err.detail, key + 38)); /* never the secret */
}

static void test_api_key_store(void **state)
{
    (void)state;
    cstl_auth *a = new_auth(NULL, NULL, NULL, NULL);
    char key[CSTL_API_KEY_LEN + 1], id[37], hash[65];
    assert_int_equal(cstl_api_key_generate(key, sizeof(key), id, hash), 0);
    expect_key_refused(a, key, NOW, "unknown key id");

    assert_int_equal(cstl_auth_key_put(a, id, TENANT, hash, CSTL_ROLE_AGENT, 0), 0);
    assert_int_equal(cstl_auth_key_count(a), 1);
    cstl_principal p;
    expect_ok(a, key, NOW, &p);
    assert_string_equal(p.tenant_id, TENANT);
    assert_string_equal(p.key_id, id);
    assert_int_equal(p.role, CSTL_ROLE_AGENT);
    char subject[64];
    snprintf(subject, sizeof(subject), "apikey:%s", id);
    assert_string_equal(p.subject, subject);

    /* wrong secret: the last digit changed */
    char wrong[sizeof(key)];
    memcpy(wrong, key, sizeof(key));
    wrong[101] = wrong[101] == '0' ? '1' : '0';
    expect_key_refused(a, wrong, NOW, "wrong secret");

    /* malformed */
    expect_key_refused(a, "cstl_1234", NOW, "malformed api key");
    memcpy(wrong, key, sizeof(key));
    wrong[20] = 'Z';
    expect_key_refused(a, wrong, NOW, "malformed api key");

    /* expiry (replacing the record), an upper-case hash accepted */
    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(hash[i] >= 'a' && hash[i] <= 'f' ? hash[i] - 32 : hash[i]);
    assert_int_equal(cstl_auth_key_put(a, id, TENANT, upper, CSTL_ROLE_VIEWER, NOW + 10), 0);
    assert_int_equal(cstl_auth_key_count(a), 1);
    expect_ok(a, key, NOW + 9, &p);
    assert_int_equal(p.role, CSTL_ROLE_VIEWER);
    expect_key_refused(a, key, NOW + 10, "expired");

    /* suspended tenant */
    assert_int_equal(cstl_auth_key_put(a, id, TENANT, hash, CSTL_ROLE_MEMBER, 0), 0);
    assert_int_equal(cstl_auth_tenant_set_suspended(a, TENANT, true), 0);
    expect_key_refused(a, key, NOW, "tenant suspended");
    assert_int_equal(cstl_auth_tenant_set_suspended(a, TENANT, false), 0);
    expect_ok(a, key, NOW, &p);

    /* revoked for good: a later put does not revive it */
    assert_int_equal(cstl_auth_key_revoke(a, id), 0);
    expect_key_refused(a, key, NOW, "revoked");
    assert_int_equal(cstl_auth_key_put(a, id, TENANT, hash, CSTL_ROLE_MEMBER, 0), 0);
    expect_key_refused(a, key, NOW, "revoked");

    /* a revocation seen before the key itself */
    char key2[CSTL_API_KEY_LEN + 1], id2[37], hash2[65];
    assert_int_equal(cstl_api_key_generate(key2, sizeof(key2), id2, hash2), 0);
    assert_int_equal(cstl_auth_key_revoke(a, id2), 0);
    assert_int_equal(cstl_auth_key_put(a, id2, TENANT2, hash2, CSTL_ROLE_MEMBER, 0), 0);
    expect_key_refused(a, key2, NOW, "revoked");

    /* invalid arguments */
    assert_int_equal(cstl_auth_key_put(a, "x", TENANT, hash, CSTL_ROLE_MEMBER, 0), CSTL_EINVAL);
    assert_int_equal(cstl_auth_key_put(a, id, "x", hash, CSTL_ROLE_MEMBER, 0), CSTL_EINVAL);
    assert_int_equal(cstl_auth_key_put(a, id, TENANT, "abc", CSTL_ROLE_MEMBER, 0), CSTL_EINVAL);
    assert_int_equal(cstl_auth_key_put(a, id, TENANT, hash, (cstl_role)9, 0), CSTL_EINVAL);
    assert_int_equal(cstl_auth_key_put(a, id, TENANT, hash, CSTL_ROLE_MEMBER, -1), CSTL_EINVAL);
    assert_int_equal(cstl_auth_key_put(a, id, TENANT, NULL, CSTL_ROLE_MEMBER, 0), CSTL_EINVAL);
    assert_int_equal(cstl_auth_key_revoke(a, "not-a-uuid"), CSTL_EINVAL);
    cstl_auth_free(a);
}

static void test_api_key_store_grows(void **state)
{
    (void)state;
    cstl_auth *a = new_auth(NULL, NULL, NULL, NULL);
    enum { N = 3000 };
    static char keys[N][CSTL_API_KEY_LEN + 1];
    for (int i = 0; i < N; i++) {
        char id[37], hash[65];
        assert_int_equal(cstl_api_key_generate(keys[i], sizeof(keys[i]), id, hash), 0);
        assert_int_equal(cstl_auth_key_put(a, id, TENANT, hash, CSTL_ROLE_MEMBER, 0), 0);
    }
    assert_int_equal(cstl_auth_key_count(a), N);
    for (int i = 0; i < N; i += 7) {
        cstl_principal p;
        expect_ok(a, keys[i], NOW, &p);
    }
    cstl_auth_free(a);
}

/* Readers authenticate while a writer adds keys and flips a suspension (run under ASan). */
typedef struct race {
    cstl_auth *a;
    const char *key;
    const char *jwt;
    int failures;
} race;

static void *race_reader(void *ud)
{
    race *r = ud;
    for (int i = 0; i < 2000; i++) {
        cstl_principal p;
        char header[CSTL_AUTH_MAX_TOKEN];
        snprintf(header, sizeof(header), "Bearer %s", (i & 1) ? r->key : r->jwt);
        int rc = cstl_auth_authenticate(r->a, header, NOW, &p, NULL);
        if (rc != 0 && rc != CSTL_EAUTH)
            __atomic_add_fetch(&r->failures, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void test_concurrent_readers_and_writer(void **state)
{
    (void)state;
    cstl_auth *a = new_auth(SECRET, NULL, NULL, NULL);
    char key[CSTL_API_KEY_LEN + 1], id[37], hash[65];
    assert_int_equal(cstl_api_key_generate(key, sizeof(key), id, hash), 0);
    assert_int_equal(cstl_auth_key_put(a, id, TENANT2, hash, CSTL_ROLE_MEMBER, 0), 0);
    char *claims = good_claims();
    char *jwt = sign_hs256(hs_header, claims);
    race r = {a, key, jwt, 0};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race_reader, &r), 0);
    for (int i = 0; i < 500; i++) {
        char k[CSTL_API_KEY_LEN + 1], kid[37], kh[65];
        cstl_api_key_generate(k, sizeof(k), kid, kh);
        cstl_auth_key_put(a, kid, TENANT, kh, CSTL_ROLE_VIEWER, 0);
        cstl_auth_tenant_set_suspended(a, TENANT, i % 2 == 0);
        cstl_auth_tenant_set_suspended(a, TENANT2, i % 3 == 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(r.failures, 0);
    assert_int_equal(cstl_auth_key_count(a), 501);
    free(jwt);
    free(claims);
    cstl_auth_free(a);
}

/* ---- from the configuration ---- */

static void test_new_from_config(void **state)
{
    (void)state;
    char path[] = "/tmp/cstl-auth-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, rsa_public_pem, strlen(rsa_public_pem)),
                     (ssize_t)strlen(rsa_public_pem));
    close(fd);

    cstl_config cfg;
    cstl_config_defaults(&cfg);
    snprintf(cfg.jwt_rs256_public_key_file, sizeof(cfg.jwt_rs256_public_key_file), "%s", path);
    snprintf(cfg.jwt_hs256_secret, sizeof(cfg.jwt_hs256_secret), "%s", SECRET);
    snprintf(cfg.jwt_issuer, sizeof(cfg.jwt_issuer), "issuer-1");
    cstl_error err;
    cstl_auth *a = cstl_auth_new_from_config(&cfg, &err);
    if (a == NULL)
        fail_msg("%s", err.message);
    char *claims = payload_fmt("{\"sub\":\"s\",\"tenant\":\"%s\",\"role\":\"viewer\","
                               "\"iss\":\"issuer-1\",\"exp\":%lld}",
                               TENANT, NOW + 60);
    char *tok = sign_rs256(rsa_key, rs_header, claims);
    cstl_principal p;
    expect_ok(a, tok, NOW, &p);
    free(tok);
    tok = sign_hs256(hs_header, claims);
    expect_ok(a, tok, NOW, &p);
    free(tok);
    free(claims);
    cstl_auth_free(a);

    /* a file that is not a public key: the variable is named */
    FILE *f = fopen(path, "w");
    fputs("not a key\n", f);
    fclose(f);
    assert_null(cstl_auth_new_from_config(&cfg, &err));
    assert_int_equal(err.code, CSTL_ECONFIG);
    assert_non_null(strstr(err.message, "CONSTELLATION_JWT_RS256_PUBLIC_KEY_FILE"));
    unlink(path);
    assert_null(cstl_auth_new_from_config(&cfg, &err));
    assert_non_null(strstr(err.message, "cannot be read"));

    /* nothing configured */
    cstl_config_defaults(&cfg);
    a = cstl_auth_new_from_config(&cfg, &err);
    assert_non_null(a);
    cstl_auth_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_permission_table),
        cmocka_unit_test(test_options_validated),
        cmocka_unit_test(test_hs256_valid),
        cmocka_unit_test(test_rs256_valid),
        cmocka_unit_test(test_rfc7515_a1_vector),
        cmocka_unit_test(test_python_hs256_vector),
        cmocka_unit_test(test_time_claims),
        cmocka_unit_test(test_signature_and_algorithms),
        cmocka_unit_test(test_malformed_tokens),
        cmocka_unit_test(test_required_claims),
        cmocka_unit_test(test_authorization_header),
        cmocka_unit_test(test_suspended_tenant_jwt),
        cmocka_unit_test(test_api_key_format),
        cmocka_unit_test(test_api_key_store),
        cmocka_unit_test(test_api_key_store_grows),
        cmocka_unit_test(test_concurrent_readers_and_writer),
        cmocka_unit_test(test_new_from_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
