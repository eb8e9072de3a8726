#ifndef QUERY_SVC_ROUTES_H
#define QUERY_SVC_ROUTES_H

/*
 * The HTTP face of query-svc (CONTRACT §6, §8-§10): one handler that
 * dispatches every route, the list of reads waiting for a min_seq, and
 * readiness.
 *
 * Reads that ask for a min_seq not yet applied are kept (FL_HTTP_DEFERRED)
 * and answered by a waiter thread as soon as the projection reaches it
 * (fl_query_on_applied wakes it) or with 504 when their wait_ms runs out.
 * Reads of many entity ids, or that turn out expensive, are kept the same
 * way and answered by read workers, off the HTTP threads.
 */

#include <stdint.h>

#include "eventlog/eventlog.h"
#include "fledger/auth.h"
#include "fledger/http.h"
#include "fledger/metrics.h"
#include "projection.h"
#include "sync.h"

struct fl_audit;

struct fl_query_state; /* private to routes.c */

/* Everything the routes use. main owns the members and fills them in. */
struct fl_query {
	struct fl_projection *projection;
	struct fl_log *replica;		/* the verified copy of command-svc's log */
	struct fl_sync *sync;		/* set once started; NULL before */
	const struct fl_auth *auth;	/* NULL: insecure development mode */
	const struct fl_signer *signer; /* query-svc's own key, for the read audit */
	struct fl_log *audit_log;	/* the read audit log (signed with signer) */
	struct fl_audit *audit;		/* records reads before they are answered */
	int64_t lag_bound_ms;		/* /readyz: the most the projection may lag */
	size_t max_waiting_reads;	/* reads parked for min_seq at most; more get 503 */
	uint64_t max_read_cost;		/* cost units one read may spend (0: no bound) */
	unsigned read_workers;		/* threads for expensive reads (0: all run inline) */
	const char *spool_dir;		/* training-data answers are spooled here (NULL: $TMPDIR) */
	struct fl_metrics *metrics;
	struct fl_counter *http_requests; /* {route, code} */
	struct fl_histogram *read_latency;
	struct fl_gauge *applied_seq;
	struct fl_gauge *waiting_reads;
	struct fl_gauge *nats_connected; /* 1 while consuming NATS (consumer alive) */
	struct fl_query_state *state;	 /* made by fl_query_init */
};

/*
 * Makes the private state and starts the waiter thread and the read workers. Call it once the
 * members above are set and before the sync and the HTTP server start.
 * FL_ERR_NOMEM or FL_ERR_IO (no thread).
 */
enum fl_status fl_query_init(struct fl_query *query);

/*
 * For shutdown, before the HTTP server is stopped: stops the waiter thread,
 * answers every waiting read (with its answer when its min_seq is applied,
 * else 503 shutting_down) and answers later waits with 503 at once; then
 * the read workers answer what they hold and stop (later reads run on the
 * HTTP thread).
 */
void fl_query_stop_waiting(struct fl_query *query);

/*
 * Frees the state (stopping the waiter first if need be). Call it after the
 * sync is destroyed: fl_query_on_applied uses the state. Accepts a query
 * never inited.
 */
void fl_query_finish(struct fl_query *query);

/* The sync's on_applied callback (ctx is the struct fl_query). */
void fl_query_on_applied(void *ctx, uint64_t applied_seq);

enum fl_http_disposition fl_query_handle(void *ctx, struct fl_http_request *req);
void fl_query_on_complete(void *ctx, struct fl_http_request *req, unsigned status,
			  int64_t duration_us);

#endif
