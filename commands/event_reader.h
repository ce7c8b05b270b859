/*
 * event_reader.h - reads every event of some contexts from the beginning of the log and on, for a
 * process manager or a view that keeps its state in memory.
 *
 * The reader assigns itself (no consumer group) every partition of constellation.<context>.events
 * for each context, read_committed, from the first offset. It remembers the end offsets it saw at
 * creation, and reports when it has read up to all of them ("caught up"): a process manager applies
 * the past first and acts only on what is still undecided after that.
 *
 * Thread: one thread polls a reader; cstl_event_reader_caught_up may be read from any thread.
 */
#ifndef CSTL_COMMANDS_EVENT_READER_H
#define CSTL_COMMANDS_EVENT_READER_H

#include "platform/error.h"
#include "platform/events.h"

#include <jansson.h>

#include <stdbool.h>

typedef struct cstl_event_reader cstl_event_reader;

/* The type of a tombstone of a whole topic (see cstl_event_reader_new). */
#define CSTL_EVENT_READER_TOMBSTONE "Tombstone"

/* Called for each event: context ("jobs"), short type ("JobSubmitted"), data and headers are
 * borrowed for the duration of the call. */
typedef void (*cstl_event_reader_fn)(void *ud,
                                     const char *context,
                                     const char *type,
                                     const json_t *data,
                                     const cstl_event_headers *headers);

/* A reader of the events topics of contexts (n names, borrowed; a name with a dot is a whole topic
 * name, "constellation.fleet.heartbeats", passed to fn as the context: its records need no event
 * headers, and one without a value, a tombstone, is passed as type CSTL_EVENT_READER_TOMBSTONE with
 * data {"key": <record key>}). NULL + err when a topic is missing or the broker cannot be reached
 * within timeout_ms. */
cstl_event_reader *cstl_event_reader_new(const char *brokers,
                                         const char *client_id,
                                         const char *const *contexts,
                                         size_t n,
                                         int timeout_ms,
                                         cstl_error *err);

/* Waits up to timeout_ms for records and calls fn for each event. A record that is not one of
 * our events is counted (cstl_event_reader_skipped) and passed over. Returns the number of events
 * handled, or a negative code on a broker error that is not transient. */
int cstl_event_reader_poll(cstl_event_reader *r, int timeout_ms, cstl_event_reader_fn fn, void *ud);

/* True once every partition has been read up to its end offset seen at creation. */
bool cstl_event_reader_caught_up(const cstl_event_reader *r);

/* Records passed over because they could not be decoded. */
long cstl_event_reader_skipped(const cstl_event_reader *r);

/* Closes the consumer and frees. NULL is a no-op. */
void cstl_event_reader_free(cstl_event_reader *r);

#endif
