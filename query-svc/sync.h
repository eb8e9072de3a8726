#ifndef QUERY_SVC_SYNC_H
#define QUERY_SVC_SYNC_H

/*
 * Keeping query-svc up to date with the event log (CONTRACT §5, §6).
 *
 * One thread consumes the JetStream stream FLEDGER_EVENTS with the durable
 * consumer named by --consumer and collects the log lines it receives. It
 * checks what it applies: it fetches command-svc's signed checkpoint
 * (GET /v1/log/checkpoint), verifies its signature with command-svc's keys
 * (GET /v1/keys), fills every missing seq up to the checkpoint's tree size
 * from GET /v1/log, and appends the run to the local replica log with
 * fl_log_replicate, which refuses anything that does not hash to the
 * checkpoint's root. Only then are the events applied to the projection,
 * by a second thread, so that applying overlaps with fetching and checking
 * the next events.
 * A mismatch halts applying (reads keep serving the verified state;
 * /readyz says why). NATS is a transport: with NATS down, the thread polls
 * the checkpoint and fills from the log.
 */

#include <stdbool.h>
#include <stdint.h>

#include "eventlog/eventlog.h"
#include "eventlog/trust.h"
#include "fledger/httpc.h"
#include "fledger/metrics.h"
#include "fledger/natsconn.h"
#include "fledger/status.h"
#include "projection.h"

struct fl_sync;

struct fl_sync_config {
	/* NATS servers, credentials, TLS (strings must outlive the sync);
	 * urls NULL or "": no NATS, poll command-svc only. */
	struct fl_nats_settings nats;
	const char *consumer;	   /* durable consumer name */
	const char *command_url;   /* "http://127.0.0.1:8080" */
	const char *command_token; /* bearer token with role replicator (may be NULL) */
	/* TLS towards command-svc: its CA, query-svc's client certificate. */
	struct fl_httpc_options command_http;
	struct fl_log *replica;		  /* borrowed: the verified copy of the log */
	struct fl_projection *projection; /* borrowed */
	int poll_ms;			  /* how often to poll without news (default 1000) */
	/* Called on the sync thread after each applied run. May be NULL. */
	void (*on_applied)(void *ctx, uint64_t applied_seq);
	void *on_applied_ctx;
	/* fledger_projection_lag_seconds: ingest_ts -> applied. May be NULL. */
	struct fl_histogram *lag;
	/* The keys of command-svc trusted at start (borrowed, used by the sync
	 * thread only until fl_sync_destroy; empty: trust on first use). Keys
	 * learnt later are added to it and written to trust_pin_path. */
	struct fl_trust *trust;
	const char *trust_pin_path;
};

struct fl_sync_status {
	uint64_t applied_seq;	  /* projection */
	uint64_t replica_size;	  /* verified events held */
	uint64_t checkpoint_size; /* newest command-svc checkpoint seen */
	bool nats_connected;	  /* consuming: connected, subscribed, consumer alive */
	bool command_reachable;	  /* the last call to command-svc succeeded */
	bool halted;		  /* verification failed: applying stopped */
	char reason[200];	  /* why halted, for /readyz and logs */
};

enum fl_status fl_sync_create(const struct fl_sync_config *config, struct fl_sync **ret_sync);

/* Wakes the thread now: a reader waits for seq (its min_seq). */
void fl_sync_poke(struct fl_sync *sync, uint64_t seq);

void fl_sync_status(struct fl_sync *sync, struct fl_sync_status *ret_status);

/* Stops the thread. Accepts NULL. */
void fl_sync_destroy(struct fl_sync *sync);

#endif
