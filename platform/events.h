/*
 * events.h - the headers of every event record: CloudEvents 1.0 Kafka protocol binding, binary
 * mode (ce_* headers, content-type), plus Constellation's cstl_* headers and W3C traceparent.
 * Built and parsed only here.
 *
 *   ce_specversion   "1.0"                                    required
 *   ce_id            UUIDv7 of the event                      required
 *   ce_source        producing service, e.g. "/constellation/commands/jobs"   required
 *   ce_type          "io.constellation.jobs.JobSubmitted.v1"  required
 *   ce_time          RFC 3339 UTC, microseconds: "2026-11-21T23:41:03.123456Z"  required
 *   ce_subject       aggregate id                             required
 *   content-type     "application/avro"                       required
 *   cstl_tenant      tenant id (UUID)                         required
 *   cstl_version     aggregate version after this event, decimal >= 1        required
 *   cstl_causation   id of the command that caused it (UUID)  optional
 *   cstl_correlation correlation id (UUID)                    optional
 *   traceparent      W3C trace context "00-<32 hex>-<16 hex>-<2 hex>"        optional
 *
 * Pure functions; thread-safe.
 */
#ifndef CSTL_PLATFORM_EVENTS_H
#define CSTL_PLATFORM_EVENTS_H

#include "platform/error.h"
#include "platform/id.h"

#include <librdkafka/rdkafka.h>

#include <stdint.h>

#define CSTL_EVENT_HEADER_MAX   255 /* bytes of any one header value */
#define CSTL_EVENT_TIME_STRLEN  27  /* "2026-11-21T23:41:03.123456Z" */
#define CSTL_EVENT_CONTENT_TYPE "application/avro"

typedef struct cstl_event_headers {
    char id[CSTL_UUID_STRLEN + 1];
    char source[CSTL_EVENT_HEADER_MAX + 1];
    char type[CSTL_EVENT_HEADER_MAX + 1];
    int64_t time_us; /* UTC microseconds since the Unix epoch; ce_time is formatted from it */
    char subject[CSTL_EVENT_HEADER_MAX + 1];
    char tenant[CSTL_UUID_STRLEN + 1];
    int64_t version;
    char causation[CSTL_UUID_STRLEN + 1];   /* "" when absent */
    char correlation[CSTL_UUID_STRLEN + 1]; /* "" when absent */
    char traceparent[56];                   /* "" when absent */
} cstl_event_headers;

/*
 * Adds the headers of h to hdrs (made by the caller with rd_kafka_headers_new; the caller keeps
 * ownership, also on failure, when some headers may have been added). Validates every field first
 * and returns CSTL_EINVAL naming the first bad one, with its value quoted.
 */
int cstl_event_headers_build(const cstl_event_headers *h,
                             rd_kafka_headers_t *hdrs,
                             cstl_error *err);

/*
 * Parses and validates the headers of a consumed record (borrowed) into *out. Returns 0,
 * CSTL_EDECODE naming a missing or invalid header (values quoted, truncated), or CSTL_ETOOBIG for
 * a value over CSTL_EVENT_HEADER_MAX bytes. When a header repeats, the last one counts.
 */
int cstl_event_headers_parse(const rd_kafka_headers_t *hdrs,
                             cstl_event_headers *out,
                             cstl_error *err);

/* Formats UTC microseconds as RFC 3339 with microseconds into out. Returns 0 or CSTL_EINVAL for a
 * time outside years 1970-9999. */
int cstl_event_time_format(int64_t micros, char out[CSTL_EVENT_TIME_STRLEN + 1]);

/* Parses exactly the form cstl_event_time_format writes. Returns 0 or CSTL_EPARSE. */
int cstl_event_time_parse(const char *text, int64_t *micros);

/* True when text is a W3C traceparent of version 00 with non-zero ids. */
bool cstl_event_traceparent_valid(const char *text);

#endif
