/*
 * topics.h - the topic catalog (schemas/topics.json, compiled into the binary; DESIGN.md §3) and
 * its creation on a cluster.
 *
 * The catalog is parsed and validated as a whole: topic names legal for Kafka and unique,
 * partitions >= 1, config values strings, and for each bounded context exactly one commands,
 * events and snapshots topic (constellation.<context>.<kind>) with equal partition counts, since
 * partition p of each belongs to the same owner. Overrides come from arguments (name prefix,
 * replication factor) and the environment (a topic's "retention_env" variable overrides its
 * retention.ms).
 *
 * Threads: a catalog is plain data, safe to read from several threads once built; functions that
 * read the environment must not race with setenv.
 */
#ifndef CSTL_PLATFORM_TOPICS_H
#define CSTL_PLATFORM_TOPICS_H

#include "platform/error.h"
#include "platform/kafka.h"

#include <stddef.h>
#include <stdint.h>

#define CSTL_TOPICS_MAX_PARTITIONS 10000

typedef struct cstl_topic {
    char *name;    /* with the prefix, if any */
    char *context; /* the bounded context, or NULL */
    int32_t partitions;
    int16_t replication_factor;
    char **config;       /* key, value, key, value, ..., NULL: cstl_kafka_topic_spec form */
    size_t config_len;   /* number of key/value pairs */
    char *retention_env; /* variable overriding retention.ms, or NULL */
} cstl_topic;

typedef struct cstl_topic_catalog {
    int16_t replication_factor; /* the catalog's default */
    cstl_topic *topics;
    size_t len;
} cstl_topic_catalog;

/* What cstl_topics_create did. */
typedef struct cstl_topics_report {
    size_t created;  /* topics that did not exist */
    size_t existing; /* topics already present with the catalog's partition count */
} cstl_topics_report;

/*
 * Parses and validates a catalog from len bytes of JSON (borrowed). Returns a new catalog, owned
 * by the caller (cstl_topics_free), or NULL with err filled: CSTL_EPARSE for malformed JSON,
 * CSTL_ECONFIG naming the topic and the field for an invalid catalog.
 */
cstl_topic_catalog *cstl_topics_parse(const char *json, size_t len, cstl_error *err);

/* Parses the embedded schemas/topics.json, as cstl_topics_parse. */
cstl_topic_catalog *cstl_topics_load(cstl_error *err);

/*
 * Applies overrides to cat in place: prefix (may be NULL or "") is prepended to every name (tests
 * use "test.<pid>.<random>." to keep a shared broker clean); replication_factor > 0 replaces each
 * topic's; each topic's retention_env variable, when set and not empty, replaces retention.ms and
 * must be an integer >= -1 (CSTL_ECONFIG naming the variable and quoting its value otherwise).
 * Call at most once per catalog. Reads the environment.
 */
int cstl_topics_apply_overrides(cstl_topic_catalog *cat,
                                const char *prefix,
                                int replication_factor,
                                cstl_error *err);

/* The topic named name, or NULL. Borrowed from cat. */
const cstl_topic *cstl_topics_find(const cstl_topic_catalog *cat, const char *name);

/* Frees cat; NULL is a no-op. */
void cstl_topics_free(cstl_topic_catalog *cat);

/*
 * Creates every topic of cat on the cluster of conf, idempotently (see
 * cstl_kafka_admin_create_topics: an existing topic with another partition count is a
 * CSTL_ECONFLICT error), within timeout_ms. Fills *report (may be NULL).
 */
int cstl_topics_create(const cstl_kafka_conf *conf,
                       const cstl_topic_catalog *cat,
                       int timeout_ms,
                       cstl_topics_report *report,
                       cstl_error *err);

/*
 * Loads the embedded catalog, applies the overrides (prefix NULL in production, replication_factor
 * <= 0 keeps the catalog's) and creates every topic on brokers. Fills *report (may be NULL).
 */
int cstl_topics_create_all(const char *brokers,
                           const char *prefix,
                           int replication_factor,
                           int timeout_ms,
                           cstl_topics_report *report,
                           cstl_error *err);

#endif
