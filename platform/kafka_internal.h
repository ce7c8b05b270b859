/*
 * kafka_internal.h - what platform/kafka.c shares with kafka_consumer.c and kafka_admin.c. Not
 * part of the public API: include platform/kafka.h instead.
 */
#ifndef CSTL_PLATFORM_KAFKA_INTERNAL_H
#define CSTL_PLATFORM_KAFKA_INTERNAL_H

#include "platform/kafka.h"

/*
 * A librdkafka configuration for a new client: conf's base settings, then defaults (key, value
 * pairs ended by NULL, may be NULL), then conf's own settings, which override the defaults.
 * Returns a new rd_kafka_conf_t (owned by the caller, usually passed to rd_kafka_new) or NULL
 * with err filled (CSTL_ECONFIG naming the key and value).
 */
rd_kafka_conf_t *
cstl_kafka_conf_build(const cstl_kafka_conf *conf, const char *const *defaults, cstl_error *err);

/* Sets err from a librdkafka resp_err, replacing RD_KAFKA_RESP_ERR__FATAL with the handle's
 * underlying fatal error when rk has one. Returns the CSTL_E* code. */
int cstl_kafka_error_from_handle(cstl_error *err,
                                 rd_kafka_t *rk,
                                 rd_kafka_resp_err_t code,
                                 const char *context);

/* Takes kerr (destroyed here; NULL means success) and returns 0 or its classified code. */
int cstl_kafka_error_take(cstl_error *err, rd_kafka_error_t *kerr, const char *context);

#endif
