#ifndef COMMAND_SVC_PUBLISHER_H
#define COMMAND_SVC_PUBLISHER_H

/*
 * The NATS outbox: a thread that publishes every committed event of the log,
 * in seq order, to JetStream subject fledger.events.<view> (CONTRACT §5) with
 * header Nats-Msg-Id: <seq>, and keeps its position ("published_seq") in the
 * log's LMDB environment. While NATS is down, writes go on and the backlog
 * grows; when NATS returns the backlog goes out in order. After a crash the
 * position resumes from the last acknowledged chunk; events published twice
 * are deduplicated by their message id (and by seq at the consumers).
 */

#include <stdbool.h>
#include <stdint.h>

#include "eventlog/eventlog.h"
#include "fledger/natstls.h"
#include "fledger/status.h"

#define FL_STREAM_NAME "FLEDGER_EVENTS"
#define FL_SUBJECT_PREFIX "fledger.events."

struct fl_publisher;

/*
 * Starts publishing log (borrowed, must outlive the publisher) to the NATS
 * server at url, with TLS when tls (copied; may be NULL) or the URL ask for
 * it. Returns at once: connecting is the thread's work.
 */
enum fl_status fl_publisher_create(const char *url, const struct fl_nats_tls *tls,
				   struct fl_log *log, struct fl_publisher **ret_publisher);

/* Wakes the thread: new events were committed. */
void fl_publisher_notify(struct fl_publisher *publisher);

/* Events committed but not yet acknowledged by JetStream. */
uint64_t fl_publisher_backlog(struct fl_publisher *publisher);

/* Whether the thread has a live connection with the stream in place. */
bool fl_publisher_connected(struct fl_publisher *publisher);

/*
 * Stops the thread after trying for up to drain_ms to publish the backlog.
 * Accepts NULL.
 */
void fl_publisher_destroy(struct fl_publisher *publisher, int drain_ms);

/*
 * The subject of an event body: fledger.events.<view> for feature and view
 * events, fledger.events._keys for key events. Writes at most cap bytes.
 */
bool fl_publisher_subject(const uint8_t *body, size_t len, char *ret_subject, size_t cap);

#endif
