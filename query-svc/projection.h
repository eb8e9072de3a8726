#ifndef QUERY_SVC_PROJECTION_H
#define QUERY_SVC_PROJECTION_H

/*
 * The read models of query-svc, in their own LMDB environment, built from
 * the (verified) replica of the event log:
 *
 *   latest   view, entity -> for each feature: event_ts, seq, value (newest
 *            by event_ts then seq: a late event never overwrites a newer one)
 *   history  view, entity, event_ts, seq -> the event's features (for as_of
 *            reads and windows, bounded by the view's retention)
 *   tiles    view, entity, level, span start -> partials of every feature
 *            over the events in that span (for windows in O(log n))
 *   views    name -> version and canonical definition
 *   meta     applied_seq
 *
 * Events are applied in order, each run in one transaction together with
 * the new applied_seq, so a crash never applies an event twice or half.
 * Reads compute windows exactly over every event of the entity whose
 * event_ts lies in (as_of - size, as_of], whatever order it came in: from
 * tiles and the raw events at the window's two ends.
 */

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "eventlog/eventlog.h"
#include "fledger/error.h"
#include "fledger/status.h"
#include "fledger/view.h"

struct fl_projection;

/*
 * Opens or creates the read models in dir. The view registry (created here,
 * owned by the projection) is loaded from the stored views. Commits are not
 * synced: dir/boot records the boot in which the models were last open
 * ("<boot id> open" or "<boot id> closed"), and models that an earlier boot
 * left open (the machine went down under them) are deleted here, to be
 * rebuilt from the replica log.
 */
enum fl_status fl_projection_open(const char *dir, struct fl_projection **ret_projection);
void fl_projection_close(struct fl_projection *projection); /* accepts NULL */

/* Deletes every read model (for --rebuild); applied_seq becomes 0. */
enum fl_status fl_projection_reset(struct fl_projection *projection);

/* The seq of the last applied event. Cheap (an atomic read). */
uint64_t fl_projection_applied_seq(const struct fl_projection *projection);

/* The current views (borrowed; valid as long as the projection). */
struct fl_view_registry *fl_projection_views(struct fl_projection *projection);

/*
 * Applies entries (log events applied_seq+1, +2, ... in order; any kind: view
 * events update the registry, key events only advance applied_seq) in one
 * transaction. FL_ERR_INVALID when the first seq is not applied_seq + 1 or
 * the run has a gap; FL_ERR_CORRUPT when a body cannot be parsed.
 */
enum fl_status fl_projection_apply(struct fl_projection *projection,
				   const struct fl_log_entry *entries, size_t n);

/* ---- Reads ------------------------------------------------------------ */

/* What one read asks for. */
struct fl_read_request {
	struct fl_view *view; /* borrowed */
	const char *entity_id;
	int64_t as_of_us;
	const struct fl_feature **features; /* which features, in answer order */
	size_t n_features;
	const struct fl_window **windows; /* which windows, in answer order */
	size_t n_windows;
	bool with_window_seqs; /* add "seqs" to windows (<= 1000 events) */
	/* 0: every applied event counts. Else only events ingested at or
	 * before it (ingest_ts <= known_at_us), for values and windows alike:
	 * the read an online read at that moment could have served. */
	int64_t known_at_us;
};

/* What one read served. */
struct fl_read_answer {
	/* JSON text, compact, in the order asked for */
	char *features; /* {"name": {"value", "status", "event_ts", "seq"}, ...} */
	size_t features_len;
	char *windows; /* {"name": {"value", "from", "to", "events"[, "seqs"]}, ...} */
	size_t windows_len;
	uint64_t *served_seqs; /* the feature values' seqs, ascending, no repeats (not windows') */
	size_t n_served;
};

/*
 * Answers one entity's read as of req->as_of_us from one consistent snapshot
 * (all of a batch read should use one fl_projection_read). On FL_OK the
 * caller owns *ret_answer (free with fl_read_answer_finish). FL_ERR_INVALID
 * with err (400 "outside_retention") when as_of or a window reaches before
 * the view's retained history, or (422 "read_too_expensive") when the
 * read's cost limit is spent.
 */
struct fl_projection_read;
enum fl_status fl_projection_read_begin(struct fl_projection *projection,
					struct fl_projection_read **ret_read);

/*
 * The cost of the queries on one read, in units: one per entity queried and
 * one per stored history record visited (to compute windows, or a feature
 * as of a time before its latest value). Over limit (0: no limit, the
 * default), fl_projection_query stops and answers 422; the read may go on
 * only with a higher limit. A pre-aggregated record would count as one.
 */
void fl_projection_read_limit_cost(struct fl_projection_read *read, uint64_t limit);
uint64_t fl_projection_read_cost(const struct fl_projection_read *read);

uint64_t fl_projection_read_applied_seq(const struct fl_projection_read *read);
enum fl_status fl_projection_query(struct fl_projection_read *read,
				   const struct fl_read_request *req,
				   struct fl_read_answer *ret_answer, struct fl_error *err);
/*
 * As fl_projection_query, but the answer's texts and seqs belong to the
 * read: they stay valid until the read's next query or its end, and the
 * caller does not finish the answer. For a read serving many rows one after
 * the other (a training export), it spares an allocation per row; the
 * answer is the same, computed by the same code.
 */
enum fl_status fl_projection_query_borrowed(struct fl_projection_read *read,
					    const struct fl_read_request *req,
					    struct fl_read_answer *ret_answer,
					    struct fl_error *err);
void fl_projection_read_end(struct fl_projection_read *read); /* accepts NULL */
void fl_read_answer_finish(struct fl_read_answer *answer);

/*
 * Calls fn with the seq of every event of the entity with event_ts in
 * [from_us, to_us], oldest first, at most limit of them.
 */
enum fl_status fl_projection_history(struct fl_projection_read *read, const char *view,
				     const char *entity_id, int64_t from_us, int64_t to_us,
				     uint64_t limit, enum fl_status (*fn)(void *ctx, uint64_t seq),
				     void *ctx);

/*
 * SHA-256 over a canonical dump of every read model (latest, history, views,
 * applied_seq), as lowercase hex. Equal state gives equal digests.
 */
enum fl_status fl_projection_digest(struct fl_projection *projection, uint64_t *ret_applied_seq,
				    char ret_hex[2 * FL_HASH_LEN + 1]);

#endif
