#ifndef COMMAND_SVC_PUBLISHER_H
#define COMMAND_SVC_PUBLISHER_H

/*
 * The NATS outbox: a thread that publishes every committed event of the log,
 * in seq order, to JetStream subject fledger.events.<view> (CONTRACT §5) with
 * header Nats-Msg-Id: <seq>, and keeps its position ("published_seq") in the
 * log's LMDB environment. While NATS is down, writes go on and the backlog
 * grows; when NATS returns the backlog goes out in order. The position is
 * stored at most once a second (and when the publisher stops), so after a
 * crash up to about a second of events goes out again; events published
 * twice are deduplicated by their message id (and by seq at the consumers).
 */

#include <stdbool.h>
#include <stdint.h>

#include "eventlog/eventlog.h"
#include "fledger/natsconn.h"
#include "fledger/status.h"
#include "fledger/view.h"

struct fl_publisher;

/* How command-svc sets up the stream (checked when it exists already). */
struct fl_publisher_config {
	struct fl_nats_settings nats; /* servers, credentials, TLS (strings outlive it) */
	struct fl_log *log;	      /* borrowed, must outlive the publisher */
	/* Views whose longest retention is the stream's default max age;
	 * borrowed, may be NULL. */
	struct fl_view_registry *registry;
	int64_t replicas;	     /* 1 (default) .. 5 */
	int64_t max_age_us;	     /* 0: the longest view retention (at least 30d) */
	int64_t duplicate_window_us; /* 0: 2 minutes */
};

/*
 * Starts publishing the log to the NATS servers of config. Returns at once:
 * connecting, creating or checking the stream is the thread's work.
 */
enum fl_status fl_publisher_create(const struct fl_publisher_config *config,
				   struct fl_publisher **ret_publisher);

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

/* Stores the publish cursor (the log's "published_seq" counter). */
typedef enum fl_status (*fl_publisher_store_fn)(void *ctx, uint64_t seq);

/*
 * The cursor step of the publisher loop: when published is ahead of
 * *stored, stores it through store and, on FL_OK, moves *stored. On a
 * failure *stored stays behind, the failure is logged, and the next call
 * (the loop makes one before it publishes more; otherwise it stores at most
 * once a second) tries again. Returns what
 * store returned, FL_OK when there was nothing to store.
 */
enum fl_status fl_publisher_store_cursor(uint64_t published, uint64_t *stored,
					 fl_publisher_store_fn store, void *ctx);

#endif
