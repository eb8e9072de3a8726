#ifndef FLEDGER_EVENT_H
#define FLEDGER_EVENT_H

/*
 * Feature events: validating a write (CONTRACT §3) against the registered
 * views, the stored body it becomes (CONTRACT §4), the digest that makes an
 * idempotent retry recognisable, the body of a "view" event, reading stored
 * bodies back, and the Feast push request.
 *
 * A stored body is B = '{"seq":N,' + tail + '}'; the functions here build the
 * tail (eventlog.h prepends the seq). For a feature event the tail is
 *
 *   "kind":"feature","view":"...","entity_id":"...","event_ts":"...",
 *   "ingest_ts":"...","producer":"...","idempotency_key":"...",
 *   "features":{...}
 *
 * compact, in that order, idempotency_key left out when absent, timestamps
 * as "YYYY-MM-DDTHH:MM:SS.ffffffZ", features in the view's name order.
 * Values: int64 as a JSON integer; double as the shortest of %.15g/%.16g/
 * %.17g that reads back to the same double, with ".0" added when that text
 * would read as an integer ("1200.0"), so a reader can tell a double from an
 * int64; vector elements as float32, the shortest of %.6g..%.9g that reads
 * back to the same float, with the same ".0" rule; strings JSON-escaped
 * (UTF-8 kept as is; '"', '\\' and C0 controls escaped). Number formatting
 * assumes the "C" numeric locale (never call setlocale with LC_NUMERIC).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "fledger/error.h"
#include "fledger/status.h"
#include "fledger/view.h"

#define FL_EVENT_BATCH_MAX 1000	       /* events per request, rows per push */
#define FL_ENTITY_ID_MAX_LEN 256       /* bytes */
#define FL_IDEMPOTENCY_KEY_MAX_LEN 128 /* bytes */
#define FL_EVENT_DIGEST_LEN 32	       /* SHA-256 */
/* How far event_ts may be ahead of the ingest time unless configured. */
#define FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US (INT64_C(5) * 60 * 1000000)

/*
 * What makes a text no entity id (CONTRACT §3). One check for both sides:
 * a write refuses such an id, and a read of one is a 400, since no event
 * could have it. The one exception is a C1 control: writes refuse it, but
 * events written before they did hold such ids and still replay, so reads
 * (fl_entity_id_check_read) accept it and that data stays readable.
 */
enum fl_entity_id_fault {
	FL_ENTITY_ID_OK,
	FL_ENTITY_ID_EMPTY,
	FL_ENTITY_ID_TOO_LONG,	 /* more than FL_ENTITY_ID_MAX_LEN bytes */
	FL_ENTITY_ID_CONTROL,	 /* a C0 control (NUL included) or DEL */
	FL_ENTITY_ID_NOT_UTF8,	 /* overlongs and surrogates included */
	FL_ENTITY_ID_C1_CONTROL, /* U+0080..U+009F (stored bodies from before may hold one) */
};

/* The first fault of text[0..len), in the order above; FL_ENTITY_ID_OK for an id. */
enum fl_entity_id_fault fl_entity_id_check(const char *text, size_t len);
/* As fl_entity_id_check for an id a read names: a C1 control passes (see above). */
enum fl_entity_id_fault fl_entity_id_check_read(const char *text, size_t len);
/* "the entity id is empty", ...: the fault as a sentence for an error message. */
const char *fl_entity_id_fault_text(enum fl_entity_id_fault fault);

/* A validated feature event, ready to be appended. */
struct fl_event {
	struct fl_view *view;			  /* a reference (the version validated against) */
	char entity_id[FL_ENTITY_ID_MAX_LEN + 1]; /* integers as decimal text */
	int64_t event_ts_us;			  /* UTC µs; the ingest time when not given */
	bool event_ts_given;
	int64_t ingest_ts_us;
	char *producer; /* malloc'd copy */
	bool has_idempotency_key;
	char idempotency_key[FL_IDEMPOTENCY_KEY_MAX_LEN + 1];
	json_t *features;		     /* a reference to the client's object:
					      * do not change the request until done */
	uint8_t digest[FL_EVENT_DIGEST_LEN]; /* see fl_event_validate */
};

/*
 * Validates one event object (CONTRACT §3) and fills *ret_event. path is the
 * JSON path of the object in the request ("events[3]", or "" for a body that
 * is a single event); every error's field starts with it
 * ("events[3].features.dwell_ms", "events[3].features.embedding[5]").
 * producer is the authenticated principal and ingest_us the ingest time.
 * An event_ts more than max_future_skew_us (>= 0) ahead of ingest_us is 400
 * event_ts_in_future: a producer's broken clock must not pin a feature's
 * latest value for years (CONTRACT §3).
 *
 * Checks, in this order: the object; "view" (a string naming a registered
 * view, else 404 view_not_found); no unknown member; entity_id; event_ts;
 * idempotency_key; features (non-empty, every key a feature of the view,
 * every value of its type: int64 a JSON integer, double a finite number,
 * string at most 64 KiB, bool, vector[N] exactly N finite numbers that
 * round to a finite float32: |x| < FLT_MAX + 2^103, about 3.4028235e38). An
 * idempotency_key given as null counts as absent; an event_ts of null is 400
 * invalid_type. An entity_id may hold no C0 or C1 control nor DEL. Write
 * permission (the view's ACL) is the caller's to check, with ret_event->view.
 *
 * digest is SHA-256 over a canonical form of the content as the client sent
 * it: view name, entity id, event_ts (only when given, as UTC µs) and the
 * features with their canonical values. It leaves out ingest_ts, producer and
 * the key, so a retry of the same event has the same digest.
 *
 * Returns FL_OK (release the event with fl_event_finish), FL_ERR_INVALID
 * (400), FL_ERR_NOT_FOUND (404) or FL_ERR_NOMEM, with err filled; on failure
 * *ret_event is untouched.
 */
enum fl_status fl_event_validate(const json_t *event, const char *path,
				 struct fl_view_registry *registry, const char *producer,
				 int64_t ingest_us, int64_t max_future_skew_us,
				 struct fl_event *ret_event, struct fl_error *err);

/* Releases what fl_event_validate put in event. Accepts NULL. */
void fl_event_finish(struct fl_event *event);

/*
 * Validates the whole body of POST /v1/events: one event object, or
 * {"events": [...]} with 1..FL_EVENT_BATCH_MAX events (paths "events[i]").
 * On FL_OK *ret_events is a new array of *ret_count events (free with
 * fl_event_array_free). Stops at the first invalid event.
 */
enum fl_status fl_event_validate_request(const json_t *body, struct fl_view_registry *registry,
					 const char *producer, int64_t ingest_us,
					 int64_t max_future_skew_us, struct fl_event **ret_events,
					 size_t *ret_count, struct fl_error *err);

/* Finishes count events and frees the array. Accepts NULL. */
void fl_event_array_free(struct fl_event *events, size_t count);

/*
 * The stored-body tail of a validated event (see the top of this file), as a
 * new NUL-terminated malloc'd buffer of *ret_len bytes (the caller frees).
 * FL_ERR_NOMEM only.
 */
enum fl_status fl_event_body_tail(const struct fl_event *event, char **ret_tail, size_t *ret_len);

/*
 * The tail of a "view" event:
 *   "kind":"view","ingest_ts":"...","producer":"...","version":N,
 *   "definition":{canonical definition}
 * as a new NUL-terminated buffer (the caller frees). version must be >= 1.
 */
enum fl_status fl_event_view_body_tail(const struct fl_view *view, uint64_t version,
				       const char *producer, int64_t ingest_us, char **ret_tail,
				       size_t *ret_len);

/* ---- Stored bodies --------------------------------------------------- */

enum fl_body_kind {
	FL_BODY_FEATURE,
	FL_BODY_VIEW,
	FL_BODY_KEY,   /* a signing-key change: its members are eventlog's */
	FL_BODY_OTHER, /* any other kind (e.g. "read" in the read log) */
};

/*
 * A stored body read back. Strings and features point into root and live
 * until fl_stored_event_finish.
 */
struct fl_stored_event {
	enum fl_body_kind kind;
	uint64_t seq;
	json_t *root; /* the whole parsed body (owned) */
	/* feature and view bodies */
	int64_t ingest_ts_us;
	const char *producer;
	/* feature bodies */
	const char *view_name;
	const char *entity_id;
	int64_t event_ts_us;
	const char *idempotency_key; /* NULL when absent */
	const json_t *features;	     /* name → value, in stored order */
	/* view bodies */
	struct fl_view *view; /* a reference; version 0 until registered */
	uint64_t version;
};

/*
 * Parses a stored body (the exact bytes of the log). Feature and view bodies
 * must have exactly the members fl_event_body_tail and
 * fl_event_view_body_tail write, with valid values (a view definition is
 * validated by fl_view_parse); other kinds need only a positive "seq" and a
 * string "kind". FL_ERR_CORRUPT for anything else, FL_ERR_NOMEM. On FL_OK
 * release with fl_stored_event_finish. Beware: jansson 2.14 reports some
 * allocation failures during parsing as syntax errors, so under memory
 * exhaustion a good body may come back FL_ERR_CORRUPT; a caller about to
 * declare the log corrupt should first check the body's leaf hash.
 */
enum fl_status fl_stored_event_parse(const void *body, size_t body_len,
				     struct fl_stored_event *ret_event);

/* Releases a parsed body. Accepts NULL. */
void fl_stored_event_finish(struct fl_stored_event *event);

/* ---- Feast push (POST /push) ----------------------------------------- */

/*
 * Converts a Feast push request
 *   {"push_source_name": "<view>", "df": {"<column>": [...], ...},
 *    "to": "online" | "online_and_offline"}
 * into a new json array of event objects (the caller decrefs) to validate
 * with fl_event_validate. "to" is optional (default "online"); Feast's
 * "allow_registry_cache" and "transform_on_write" booleans are accepted and
 * ignored. df must hold the entity column (named after the view's entity),
 * "event_timestamp" (RFC 3339, or pandas' "YYYY-MM-DD HH:MM:SS[.ffffff]
 * [+HH:MM]" where a missing zone means UTC) and feature columns, all of the
 * same length 1..FL_EVENT_BATCH_MAX; "created" and "created_timestamp"
 * columns are ignored; any other column is 400 unknown_feature. A null in a
 * feature column leaves that feature out of that row's event.
 * Errors name Feast paths ("df.event_timestamp[2]", "push_source_name").
 */
enum fl_status fl_event_feast_push_convert(const json_t *push, struct fl_view_registry *registry,
					   json_t **ret_events, struct fl_error *err);

/*
 * Converts and validates a push request: on FL_OK *ret_events holds one
 * validated event per row (free with fl_event_array_free). Errors name Feast
 * paths: "df.dwell_ms[3]", "df.embedding[3][5]", "df.user_id[0]"; a row
 * whose event_timestamp is too far ahead ("df.event_timestamp[3]") rejects
 * the whole request, like any bad row.
 */
enum fl_status fl_event_feast_push_validate(const json_t *push, struct fl_view_registry *registry,
					    const char *producer, int64_t ingest_us,
					    int64_t max_future_skew_us,
					    struct fl_event **ret_events, size_t *ret_count,
					    struct fl_error *err);

#endif
