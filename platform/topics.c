/*
 * topics.c - parsing, validating and creating the topic catalog (see topics.h).
 *
 * Invariants: a catalog returned by cstl_topics_parse has passed every check; overrides keep it
 * valid (names stay legal, retention values are checked). Reentrant; reads the environment only
 * in cstl_topics_apply_overrides.
 */
#include "platform/topics.h"

#include "platform/embed.h"

#include <jansson.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC_NAME_MAX 249

static const char *const context_kinds[] = {"commands", "events", "snapshots"};

static bool legal_topic_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > TOPIC_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    for (const char *c = name; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-'))
            return false;
    }
    return true;
}

static bool legal_env_name(const char *name)
{
    if (*name == '\0' || (*name >= '0' && *name <= '9'))
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_'))
            return false;
    return true;
}

static bool legal_context(const char *name)
{
    if (*name == '\0')
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || *c == '_'))
            return false;
    return true;
}

static bool legal_config_key(const char *key)
{
    if (*key == '\0')
        return false;
    for (const char *c = key; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '.'))
            return false;
    return true;
}

void cstl_topics_free(cstl_topic_catalog *cat)
{
    if (cat == NULL)
        return;
    for (size_t i = 0; i < cat->len; i++) {
        cstl_topic *t = &cat->topics[i];
        free(t->name);
        free(t->context);
        for (size_t k = 0; t->config != NULL && t->config[k] != NULL; k++)
            free(t->config[k]);
        free(t->config);
        free(t->retention_env);
    }
    free(cat->topics);
    free(cat);
}

/* Formats a JSON value for an error message: strings quoted as they are, others encoded. */
static void describe(const json_t *v, char *buf, size_t size)
{
    if (json_is_string(v)) {
        snprintf(buf, size, "%s", json_string_value(v));
        return;
    }
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf(buf, size, "%s", s ? s : "?");
    free(s);
}

static int topic_error(cstl_error *err, size_t index, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int topic_error(cstl_error *err, size_t index, const char *name, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (name != NULL)
        return cstl_error_set(err, CSTL_ECONFIG, "topic catalog: topic \"%s\": %s", name, what);
    return cstl_error_set(err, CSTL_ECONFIG, "topic catalog: topic #%zu: %s", index + 1, what);
}

static int parse_topic(const json_t *jt, size_t index, int16_t rf, cstl_topic *t, cstl_error *err)
{
    char buf[128];
    if (!json_is_object(jt))
        return topic_error(err, index, NULL, "must be an object");
    const json_t *jname = json_object_get(jt, "name");
    if (!json_is_string(jname))
        return topic_error(err, index, NULL, "\"name\" must be a string");
    const char *name = json_string_value(jname);
    if (!legal_topic_name(name))
        return topic_error(err, index, NULL,
                           "invalid name \"%s\": 1 to 249 of [a-zA-Z0-9._-], not \".\" or \"..\"",
                           name);
    t->name = cstl_xstrdup(name);
    t->replication_factor = rf;

    const char *key;
    json_t *value;
    json_object_foreach((json_t *)jt, key, value)
    {
        if (strcmp(key, "name") == 0 || strcmp(key, "key") == 0 || strcmp(key, "content") == 0) {
            if (!json_is_string(value))
                return topic_error(err, index, name, "\"%s\" must be a string", key);
        } else if (strcmp(key, "partitions") == 0) {
            describe(value, buf, sizeof(buf));
            if (!json_is_integer(value) || json_integer_value(value) < 1 ||
                json_integer_value(value) > CSTL_TOPICS_MAX_PARTITIONS)
                return topic_error(err, index, name,
                                   "\"partitions\" must be an integer from 1 to %d, got \"%s\"",
                                   CSTL_TOPICS_MAX_PARTITIONS, buf);
            t->partitions = (int32_t)json_integer_value(value);
        } else if (strcmp(key, "context") == 0) {
            if (!json_is_string(value) || !legal_context(json_string_value(value))) {
                describe(value, buf, sizeof(buf));
                return topic_error(err, index, name,
                                   "\"context\" must be a lower-case word, got \"%s\"", buf);
            }
            t->context = cstl_xstrdup(json_string_value(value));
        } else if (strcmp(key, "retention_env") == 0) {
            if (!json_is_string(value) || !legal_env_name(json_string_value(value))) {
                describe(value, buf, sizeof(buf));
                return topic_error(err, index, name,
                                   "\"retention_env\" must be a variable name, got \"%s\"", buf);
            }
            t->retention_env = cstl_xstrdup(json_string_value(value));
        } else if (strcmp(key, "config") == 0) {
            if (!json_is_object(value))
                return topic_error(err, index, name, "\"config\" must be an object");
            size_t n = json_object_size(value);
            t->config = cstl_xcalloc(2 * n + 1, sizeof(char *));
            const char *ck;
            json_t *cv;
            size_t k = 0;
            json_object_foreach(value, ck, cv)
            {
                if (!legal_config_key(ck))
                    return topic_error(err, index, name, "invalid config key \"%s\"", ck);
                if (!json_is_string(cv)) {
                    describe(cv, buf, sizeof(buf));
                    return topic_error(err, index, name, "config \"%s\" must be a string, got %s",
                                       ck, buf);
                }
                t->config[k++] = cstl_xstrdup(ck);
                t->config[k++] = cstl_xstrdup(json_string_value(cv));
                t->config_len++;
            }
        } else {
            return topic_error(err, index, name, "unknown field \"%s\"", key);
        }
    }
    if (t->partitions == 0)
        return topic_error(err, index, name, "\"partitions\" is missing");
    if (t->config == NULL)
        t->config = cstl_xcalloc(1, sizeof(char *));
    if (t->retention_env != NULL) {
        bool has = false;
        for (size_t k = 0; k < t->config_len; k++)
            has = has || strcmp(t->config[2 * k], "retention.ms") == 0;
        if (!has)
            return topic_error(err, index, name,
                               "\"retention_env\" needs a default \"retention.ms\" in \"config\"");
    }
    return 0;
}

/* Each context has one commands, events and snapshots topic, with equal partition counts. */
static int check_contexts(const cstl_topic_catalog *cat, cstl_error *err)
{
    for (size_t i = 0; i < cat->len; i++) {
        const cstl_topic *t = &cat->topics[i];
        if (t->context == NULL)
            continue;
        char want[TOPIC_NAME_MAX + 64];
        bool kind_ok = false;
        for (size_t k = 0; k < CSTL_ARRAY_LEN(context_kinds); k++) {
            snprintf(want, sizeof(want), "constellation.%s.%s", t->context, context_kinds[k]);
            kind_ok = kind_ok || strcmp(want, t->name) == 0;
        }
        if (!kind_ok)
            return topic_error(err, i, t->name,
                               "a topic of context \"%s\" must be named "
                               "constellation.%s.commands, .events or .snapshots",
                               t->context, t->context);
        for (size_t k = 0; k < CSTL_ARRAY_LEN(context_kinds); k++) {
            snprintf(want, sizeof(want), "constellation.%s.%s", t->context, context_kinds[k]);
            const cstl_topic *other = cstl_topics_find(cat, want);
            if (other == NULL)
                return topic_error(err, i, t->name, "context \"%s\" has no topic \"%s\"",
                                   t->context, want);
            if (other->context == NULL || strcmp(other->context, t->context) != 0)
                return topic_error(err, i, want, "must have context \"%s\"", t->context);
            if (other->partitions != t->partitions)
                return topic_error(err, i, t->name,
                                   "has %d partitions but \"%s\" has %d: a context's commands, "
                                   "events and snapshots topics must have equal partition counts",
                                   (int)t->partitions, want, (int)other->partitions);
        }
    }
    return 0;
}

cstl_topic_catalog *cstl_topics_parse(const char *json, size_t len, cstl_error *err)
{
    if (json == NULL) {
        cstl_error_set(err, CSTL_EINVAL, "topic catalog is missing");
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        cstl_error_set(err, CSTL_EPARSE, "topic catalog is not valid json: %s (line %d)", jerr.text,
                       jerr.line);
        return NULL;
    }
    cstl_topic_catalog *cat = cstl_xcalloc(1, sizeof(*cat));
    char buf[128];
    int rc = 0;
    const char *key;
    json_t *value;
    if (!json_is_object(root)) {
        rc = cstl_error_set(err, CSTL_ECONFIG, "topic catalog must be a json object");
        goto out;
    }
    json_object_foreach(root, key, value)
    {
        if (key[0] != '_' && strcmp(key, "replication_factor") != 0 && strcmp(key, "topics") != 0) {
            rc = cstl_error_set(err, CSTL_ECONFIG, "topic catalog: unknown field \"%s\"", key);
            goto out;
        }
    }
    const json_t *jrf = json_object_get(root, "replication_factor");
    if (!json_is_integer(jrf) || json_integer_value(jrf) < 1 || json_integer_value(jrf) > 32767) {
        describe(jrf ? jrf : json_null(), buf, sizeof(buf));
        rc = cstl_error_set(err, CSTL_ECONFIG,
                            "topic catalog: \"replication_factor\" must be an integer from 1 to "
                            "32767, got \"%s\"",
                            buf);
        goto out;
    }
    cat->replication_factor = (int16_t)json_integer_value(jrf);
    const json_t *jtopics = json_object_get(root, "topics");
    if (!json_is_array(jtopics) || json_array_size(jtopics) == 0) {
        rc = cstl_error_set(err, CSTL_ECONFIG,
                            "topic catalog: \"topics\" must be a non-empty array");
        goto out;
    }
    cat->topics = cstl_xcalloc(json_array_size(jtopics), sizeof(cstl_topic));
    for (size_t i = 0; i < json_array_size(jtopics); i++) {
        cat->len = i + 1; /* so that a partly parsed topic is freed */
        rc = parse_topic(json_array_get(jtopics, i), i, cat->replication_factor, &cat->topics[i],
                         err);
        if (rc != 0)
            goto out;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cat->topics[j].name, cat->topics[i].name) == 0) {
                rc = topic_error(err, i, cat->topics[i].name, "is listed twice");
                goto out;
            }
        }
    }
    rc = check_contexts(cat, err);
out:
    json_decref(root);
    if (rc != 0) {
        cstl_topics_free(cat);
        return NULL;
    }
    return cat;
}

cstl_topic_catalog *cstl_topics_load(cstl_error *err)
{
    const cstl_embedded_file *f = cstl_embed_find("schemas/topics.json");
    if (f == NULL) {
        cstl_error_set(err, CSTL_EINTERNAL,
                       "topic catalog \"schemas/topics.json\" is not embedded");
        return NULL;
    }
    return cstl_topics_parse(f->data, f->size, err);
}

const cstl_topic *cstl_topics_find(const cstl_topic_catalog *cat, const char *name)
{
    for (size_t i = 0; cat != NULL && name != NULL && i < cat->len; i++)
        if (strcmp(cat->topics[i].name, name) == 0)
            return &cat->topics[i];
    return NULL;
}

/* Parses an integer >= -1 (Kafka's "forever" is -1). */
static bool parse_retention(const char *s, long long *out)
{
    if (*s == '\0')
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < -1 || s[0] == ' ' || s[0] == '+')
        return false;
    *out = v;
    return true;
}

static void set_config(cstl_topic *t, const char *key, const char *value)
{
    for (size_t k = 0; k < t->config_len; k++) {
        if (strcmp(t->config[2 * k], key) == 0) {
            free(t->config[2 * k + 1]);
            t->config[2 * k + 1] = cstl_xstrdup(value);
            return;
        }
    }
    t->config = cstl_xrealloc(t->config, (2 * (t->config_len + 1) + 1) * sizeof(char *));
    t->config[2 * t->config_len] = cstl_xstrdup(key);
    t->config[2 * t->config_len + 1] = cstl_xstrdup(value);
    t->config_len++;
    t->config[2 * t->config_len] = NULL;
}

int cstl_topics_apply_overrides(cstl_topic_catalog *cat,
                                const char *prefix,
                                int replication_factor,
                                cstl_error *err)
{
    if (cat == NULL)
        return cstl_error_set(err, CSTL_EINVAL, "topic catalog is missing");
    if (replication_factor > 32767)
        return cstl_error_set(err, CSTL_ECONFIG,
                              "replication factor must be from 1 to 32767, got \"%d\"",
                              replication_factor);
    /* Validate everything first, so that a failure leaves cat unchanged. */
    for (size_t i = 0; i < cat->len; i++) {
        const cstl_topic *t = &cat->topics[i];
        if (prefix != NULL && *prefix != '\0') {
            char name[2 * TOPIC_NAME_MAX + 2];
            snprintf(name, sizeof(name), "%s%s", prefix, t->name);
            if (strlen(prefix) > TOPIC_NAME_MAX || !legal_topic_name(name))
                return cstl_error_set(err, CSTL_ECONFIG,
                                      "topic prefix \"%s\" makes an invalid topic name", prefix);
        }
        const char *env = t->retention_env ? getenv(t->retention_env) : NULL;
        long long v;
        if (env != NULL && *env != '\0' && !parse_retention(env, &v)) {
            cstl_error_set(err, CSTL_ECONFIG,
                           "%s must be an integer >= -1 (milliseconds), got \"%s\"",
                           t->retention_env, env);
            cstl_error_detail(err, "retention of topic \"%s\"", t->name);
            return CSTL_ECONFIG;
        }
    }
    for (size_t i = 0; i < cat->len; i++) {
        cstl_topic *t = &cat->topics[i];
        if (prefix != NULL && *prefix != '\0') {
            size_t n = strlen(prefix) + strlen(t->name) + 1;
            char *name = cstl_xmalloc(n);
            snprintf(name, n, "%s%s", prefix, t->name);
            free(t->name);
            t->name = name;
        }
        if (replication_factor > 0)
            t->replication_factor = (int16_t)replication_factor;
        const char *env = t->retention_env ? getenv(t->retention_env) : NULL;
        if (env != NULL && *env != '\0')
            set_config(t, "retention.ms", env);
    }
    if (replication_factor > 0)
        cat->replication_factor = (int16_t)replication_factor;
    return 0;
}

int cstl_topics_create(const cstl_kafka_conf *conf,
                       const cstl_topic_catalog *cat,
                       int timeout_ms,
                       cstl_topics_report *report,
                       cstl_error *err)
{
    if (report != NULL)
        *report = (cstl_topics_report){0};
    if (conf == NULL || cat == NULL)
        return cstl_error_set(err, CSTL_EINVAL,
                              "topic creation needs a configuration and a catalog");
    cstl_error local;
    if (err == NULL)
        err = &local;
    cstl_kafka_admin *admin = cstl_kafka_admin_new(conf, err);
    if (admin == NULL)
        return err->code;
    cstl_kafka_topic_spec *specs = cstl_xcalloc(cat->len ? cat->len : 1, sizeof(*specs));
    for (size_t i = 0; i < cat->len; i++) {
        specs[i].name = cat->topics[i].name;
        specs[i].partitions = cat->topics[i].partitions;
        specs[i].replication_factor = cat->topics[i].replication_factor;
        specs[i].config = (const char *const *)cat->topics[i].config;
    }
    size_t created = 0, existing = 0;
    int rc = cstl_kafka_admin_create_topics(admin, specs, cat->len, timeout_ms, &created, &existing,
                                            err);
    if (report != NULL) {
        report->created = created;
        report->existing = existing;
    }
    free(specs);
    cstl_kafka_admin_free(admin);
    return rc;
}

int cstl_topics_create_all(const char *brokers,
                           const char *prefix,
                           int replication_factor,
                           int timeout_ms,
                           cstl_topics_report *report,
                           cstl_error *err)
{
    if (report != NULL)
        *report = (cstl_topics_report){0};
    cstl_error local;
    if (err == NULL)
        err = &local;
    cstl_topic_catalog *cat = cstl_topics_load(err);
    if (cat == NULL)
        return err->code;
    int rc = cstl_topics_apply_overrides(cat, prefix, replication_factor, err);
    cstl_kafka_conf *conf = NULL;
    if (rc == 0) {
        conf = cstl_kafka_conf_new(brokers, "constellation-topics", err);
        rc = conf == NULL ? err->code : 0;
    }
    if (rc == 0)
        rc = cstl_topics_create(conf, cat, timeout_ms, report, err);
    cstl_kafka_conf_free(conf);
    cstl_topics_free(cat);
    return rc;
}
