#ifndef COMMAND_SVC_COMMITTER_H
#define COMMAND_SVC_COMMITTER_H

/*
 * Group commit for the write path. HTTP handlers validate a request and hand
 * it over as a job; one committer thread takes every job waiting, appends
 * all their events in one synced LMDB transaction (each request stays its
 * own atomic batch), then answers each request. View registrations are jobs
 * too, so that they are ordered with the events around them and checked
 * against the registry by one thread only.
 */

#include <stdbool.h>
#include <stdint.h>

#include "eventlog/eventlog.h"
#include "fledger/http.h"
#include "fledger/metrics.h"
#include "fledger/status.h"
#include "fledger/view.h"

struct fl_committer;

/* Called after every commit that appended events (e.g. to wake the publisher). */
typedef void (*fl_committer_notify_fn)(void *ctx);

struct fl_committer_config {
	struct fl_log *log;		     /* borrowed */
	struct fl_view_registry *registry;   /* borrowed */
	struct fl_counter *ingest_events;    /* may be NULL */
	struct fl_histogram *append_latency; /* seconds; may be NULL */
	fl_committer_notify_fn notify;	     /* may be NULL */
	void *notify_ctx;
	/*
	 * How answers leave, from the committer thread: NULL for
	 * fl_http_respond (the writes' answers, written as text),
	 * fl_http_respond_json (views) and fl_http_respond_error. A test passes
	 * functions that record them, with requests of its own making.
	 */
	enum fl_status (*respond)(struct fl_http_request *req, unsigned status,
				  const char *content_type, const void *body, size_t len);
	enum fl_status (*respond_json)(struct fl_http_request *req, unsigned status, json_t *body);
	enum fl_status (*respond_error)(struct fl_http_request *req, unsigned status,
					const char *code, const char *message, const char *field);
};

enum fl_status fl_committer_create(const struct fl_committer_config *config,
				   struct fl_committer **ret_committer);

/* Answers what is queued, then stops the thread. Accepts NULL. */
void fl_committer_destroy(struct fl_committer *committer);

/*
 * Queues the validated events of one request as an atomic batch. Takes
 * ownership of tails (malloc'd body tails, freed by the committer) and of
 * inputs (their body_tail point into tails; digests/keys must stay valid:
 * pass them in keep, freed with free() after the answer). The committer
 * answers req: 201/200 with results and the receipt (the signed checkpoint
 * of the commit, and with receipt an inclusion proof per result against
 * it), 409 for a reused idempotency key, 507 when the log is full.
 */
struct fl_write_job;
enum fl_status fl_committer_submit_events(struct fl_committer *committer,
					  struct fl_http_request *req, struct fl_log_input *inputs,
					  char **tails, size_t count, void *keep, bool receipt);

/*
 * Queues a view registration (view: a reference the committer takes over).
 * producer is the admin's principal name. The committer answers req with
 * 200 (identical), 201 (new version), 409 (incompatible) or an error.
 */
enum fl_status fl_committer_submit_view(struct fl_committer *committer, struct fl_http_request *req,
					struct fl_view *view, const char *producer);

/* Rebuilds the registry from the view events of the log (start-up). */
enum fl_status fl_committer_load_views(struct fl_log *log, struct fl_view_registry *registry);

#endif
