/*
 * api_body.h - the pure part of the command API: request bodies to command payloads, and the
 * request headers that shape a command (If-Match, Idempotency-Key).
 *
 * A body is mapped by a field table: every field has a JSON type, a default (or is required) and
 * hard size caps (DESIGN §9: every input has a size limit). Unknown fields are refused, wrong types
 * are refused (an integer is a JSON integer, never a real or a boolean), missing optional fields
 * take their default, so the payload handed to the command rules and the codec is always complete.
 * Business ranges (priority 0..100, gpu_count >= 1) are the command rules' (commands/rules.h);
 * ranges here are for inputs that are not commands (heartbeat telemetry) and for sizes.
 *
 * No I/O, no logging; every function is reentrant.
 */
#ifndef CSTL_COMMANDS_API_BODY_H
#define CSTL_COMMANDS_API_BODY_H

#include "platform/error.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdint.h>

#define CSTL_API_STRING_MAX      4096 /* bytes of a string field unless the field says less */
#define CSTL_API_ITEMS_MAX       256  /* items of an array or entries of a map unless less */
#define CSTL_API_IDEMPOTENCY_MAX 255  /* bytes of an Idempotency-Key */

/* One invalid field, as the `errors` extension of a 422 problem lists it. */
typedef struct cstl_api_field_error {
    char field[128];   /* JSON path: "gpu_count", "parameters.command[2]", "" for the body */
    char code[64];     /* "unknown_field", "invalid_type", "missing_field", "invalid_length",
                          "out_of_range", "invalid_format" */
    char message[256]; /* lower case, names the field and quotes the value */
} cstl_api_field_error;

typedef enum cstl_api_type {
    CSTL_API_STRING,       /* JSON string */
    CSTL_API_STRING_NULL,  /* JSON string or null */
    CSTL_API_INT,          /* JSON integer within int32 (and min..max when has_range) */
    CSTL_API_LONG,         /* JSON integer (and min..max when has_range) */
    CSTL_API_STRING_MAP,   /* JSON object of string values */
    CSTL_API_STRING_ARRAY, /* JSON array of strings */
    CSTL_API_OBJECT,       /* JSON object mapped by fields */
    CSTL_API_OBJECT_ARRAY, /* JSON array of objects mapped by fields */
    CSTL_API_TIME_NULL,    /* RFC 3339 UTC time ("2027-01-31T12:00:00Z") or null; mapped to
                              microseconds since the Unix epoch */
} cstl_api_type;

/* One field of a body. Tables end with an entry whose name is NULL. */
typedef struct cstl_api_field {
    const char *name;
    cstl_api_type type;
    bool required;
    const char *def; /* JSON text of the default of an optional field; NULL: left out */
    size_t max;      /* string bytes, array items or map entries; 0: the CSTL_API_*_MAX cap */
    bool has_range;
    int64_t min, max_value;              /* for CSTL_API_INT / CSTL_API_LONG with has_range */
    const struct cstl_api_field *fields; /* for CSTL_API_OBJECT and CSTL_API_OBJECT_ARRAY */
} cstl_api_field;

/* The bodies of the command API (see docs/command-api.md). */
extern const cstl_api_field cstl_api_submit_job_fields[];
extern const cstl_api_field cstl_api_cancel_job_fields[];
extern const cstl_api_field cstl_api_change_priority_fields[];
extern const cstl_api_field cstl_api_register_worker_fields[];
extern const cstl_api_field cstl_api_heartbeat_fields[];
extern const cstl_api_field cstl_api_start_run_fields[];
extern const cstl_api_field cstl_api_finish_run_fields[];
extern const cstl_api_field cstl_api_drain_gpu_fields[];
extern const cstl_api_field cstl_api_resume_gpu_fields[];
extern const cstl_api_field cstl_api_create_tenant_fields[];
extern const cstl_api_field cstl_api_issue_key_fields[];

/*
 * Parses a request body (len bytes, borrowed). An empty body is an empty object. Returns 0 with
 * *out a new reference to the JSON value (any type), or CSTL_EPARSE (malformed JSON, duplicate
 * keys) with err naming line and column.
 */
int cstl_api_body_parse(const char *body, size_t len, json_t **out, cstl_error *err);

/*
 * Maps body (borrowed) by the field table into out (an object the caller owns; fields are added
 * to it): every known field, checked, with defaults for the missing optional ones. Returns 0 or
 * CSTL_EINVAL with *fe describing the first invalid field (a body that is not an object is
 * reported with field ""). On failure out may hold some fields.
 */
int cstl_api_body_map(const cstl_api_field *fields,
                      const json_t *body,
                      json_t *out,
                      cstl_api_field_error *fe);

/*
 * Parses an If-Match header into an expected aggregate version: `"<version>"` (a strong entity
 * tag holding a decimal version, as the API's ETag sends) gives the version; `*` or an absent
 * header (NULL) gives -1 (no check). Returns 0, or CSTL_EPARSE for anything else (weak tags, lists,
 * non-decimal tags) with err quoting the value.
 */
int cstl_api_if_match_parse(const char *header, int64_t *expected_version, cstl_error *err);

/* Checks an Idempotency-Key: 1..255 bytes of printable ASCII (0x20-0x7e). Returns 0 or
 * CSTL_EPARSE with err saying why (the value is quoted, truncated). */
int cstl_api_idempotency_key_check(const char *key, cstl_error *err);

/* Parses an RFC 3339 UTC time ("2027-01-31T12:00:00Z", optional fraction up to microseconds, "Z"
 * or "+00:00") into microseconds since the Unix epoch. Returns 0 or CSTL_EPARSE. */
int cstl_api_time_parse(const char *text, int64_t *micros);

#endif
