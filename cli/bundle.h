#ifndef FLEDGER_CLI_BUNDLE_H
#define FLEDGER_CLI_BUNDLE_H

/*
 * The audit bundle of CONTRACT §7, as `fledger audit export` writes it and
 * `fledger audit verify` checks it, offline:
 *
 *   events.ndjson            event-log lines (CONTRACT §4), ascending seq
 *   reads.ndjson             read-log lines, ascending seq
 *   event-checkpoints.ndjson checkpoints of the event log, each with
 *   read-checkpoints.ndjson  "consistency": [hex...] from the one before it
 *   key-checkpoints.ndjson   for each exported (or boundary) key event of
 *                            the event log, the checkpoint of its commit
 *                            (signed by the key it replaces), in ascending
 *                            tree size, each with "consistency": [hex...]
 *                            to the last line of event-checkpoints.ndjson;
 *                            optional (a bundle without it has none)
 *   range.json               {"from","to"}: the exported time range
 *   event-boundaries.ndjson  the event-log line just before the range and
 *   read-boundaries.ndjson   the one just after it, where they exist (the
 *                            same line format), ascending seq
 *   inclusion.ndjson         {"log","seq","tree_size","hashes"}: one per
 *                            exported and boundary line against the last
 *                            checkpoint of its log, events first, then
 *                            reads, each in ascending seq (line before,
 *                            the lines of the range, line after)
 *   keys.json                {"keys": [...]} of both services, one key a line
 *   README.md                how to check it by hand (not itself checked)
 *
 * Completeness: within each log the exported lines are contiguous in seq;
 * the line before the range has a time (ingest_ts, or ts for reads) before
 * "from" and the line after it a time after "to". Without a line before, the
 * run starts at seq 1; without a line after, it ends at the last
 * checkpoint's tree size. A line inside the run may lie outside the range
 * (two requests whose times and seqs crossed at its edge).
 *
 * The same line and checkpoint checks serve `fledger log verify`, which
 * walks the live log.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "eventlog/eventlog.h"
#include "eventlog/format.h"
#include "fledger/status.h"

#define FL_BUNDLE_EVENTS "events.ndjson"
#define FL_BUNDLE_READS "reads.ndjson"
#define FL_BUNDLE_EVENT_CHECKPOINTS "event-checkpoints.ndjson"
#define FL_BUNDLE_KEY_CHECKPOINTS "key-checkpoints.ndjson"
#define FL_BUNDLE_READ_CHECKPOINTS "read-checkpoints.ndjson"
#define FL_BUNDLE_INCLUSION "inclusion.ndjson"
#define FL_BUNDLE_RANGE "range.json"
#define FL_BUNDLE_EVENT_BOUNDARIES "event-boundaries.ndjson"
#define FL_BUNDLE_READ_BOUNDARIES "read-boundaries.ndjson"
#define FL_BUNDLE_KEYS "keys.json"
#define FL_BUNDLE_README "README.md"

/* Which of the two logs a line, checkpoint or proof belongs to. */
enum fl_bundle_log {
	FL_BUNDLE_LOG_EVENTS,
	FL_BUNDLE_LOG_READS,
};

/* "events" or "reads", as inclusion.ndjson names the logs. */
const char *fl_bundle_log_name(enum fl_bundle_log log);

/* The checkpoint text prefix of a log (FL_CHECKPOINT_PREFIX, FL_READ_...). */
const char *fl_bundle_log_prefix(enum fl_bundle_log log);

/* ---- public keys ------------------------------------------------------ */

struct fl_bundle_keys;

/*
 * Reads {"keys": [{"key_id", "alg": "ed25519", "public_key_pem"}, ...]}
 * (the answer of /v1/keys, or keys.json). Every key id must be 16 lowercase
 * hex digits equal to the id of its PEM key, and appear once. FL_ERR_INVALID
 * with a reason in error (error_size bytes) when it does not hold; FL_ERR_NOMEM.
 * On FL_OK *ret_keys is the caller's to fl_bundle_keys_destroy().
 */
enum fl_status fl_bundle_keys_parse(const json_t *doc, char *error, size_t error_size,
				    struct fl_bundle_keys **ret_keys);

/* Adds the keys of doc (same shape) not yet known; the union of two lists. */
enum fl_status fl_bundle_keys_merge(struct fl_bundle_keys *keys, const json_t *doc, char *error,
				    size_t error_size);

void fl_bundle_keys_destroy(struct fl_bundle_keys *keys); /* accepts NULL */

size_t fl_bundle_keys_count(const struct fl_bundle_keys *keys);

/* The key id of key index (0 <= index < count), in the order they came. */
const char *fl_bundle_keys_id(const struct fl_bundle_keys *keys, size_t index);

/* True, with the raw public key, when key_id is known. */
bool fl_bundle_keys_find(const struct fl_bundle_keys *keys, const char *key_id,
			 uint8_t ret_pub[FL_PUBKEY_LEN]);

/*
 * keys.json: {"keys":[ then one key object a line, then ]}, so that a
 * reviewer can grep a key id. A new malloc'd NUL-terminated text.
 */
enum fl_status fl_bundle_keys_json(const struct fl_bundle_keys *keys, char **ret_text,
				   size_t *ret_len);

/* ---- log lines ---------------------------------------------------------- */

/* Log lines are read with fl_log_line_parse (eventlog/format.h). */

/*
 * True when the line holds (fl_log_line_holds: its leaf hash, and a body
 * {"seq":<seq>,...}) and, on a line of the first format, sig is the
 * Ed25519 signature of the 32 leaf-hash bytes under the key of key_id.
 * Otherwise false with the reason in error.
 */
bool fl_bundle_line_check(const struct fl_log_line *line, const struct fl_bundle_keys *keys,
			  char *error, size_t error_size);

/*
 * The time of a line's body in µs: its "ingest_ts" in the event log, its
 * "ts" in the read log (CONTRACT §4, §7), a top-level member. false with the
 * reason in error when the body is not a JSON object with that member as a
 * time in the fixed form of fl_time_format (the services write no other).
 */
bool fl_bundle_line_time(const struct fl_log_line *line, enum fl_bundle_log log, char *error,
			 size_t error_size, int64_t *ret_us);

/*
 * range.json: {"from":"<RFC 3339>","to":"<RFC 3339>"} with both times in
 * the fixed form of fl_time_format (so that they compare as text with the
 * times of the bodies). A new malloc'd NUL-terminated text with a newline.
 */
enum fl_status fl_bundle_range_json(int64_t from_us, int64_t to_us, char **ret_text,
				    size_t *ret_len);

/*
 * Reads a range.json document: exactly "from" and "to", each a time in the
 * fixed form of fl_time_format, from <= to. false with the reason in error.
 */
bool fl_bundle_range_from_json(const json_t *doc, char *error, size_t error_size,
			       int64_t *ret_from_us, int64_t *ret_to_us);

/* ---- checkpoints -------------------------------------------------------- */

/* Checkpoints and proofs are read with eventlog/format.h's parsers. */

/*
 * True when the checkpoint's key is known and its signature over the
 * checkpoint text with the log's prefix verifies; else the reason in error.
 */
bool fl_bundle_checkpoint_check(enum fl_bundle_log log, const struct fl_checkpoint *checkpoint,
				const struct fl_bundle_keys *keys, char *error, size_t error_size);

/*
 * A line of a checkpoint file: the checkpoint JSON of CONTRACT §4 with
 * "consistency": [hex, ...] (the proof from the previous line's tree; no
 * hashes for the first line). A new malloc'd NUL-terminated line without
 * a newline.
 */
enum fl_status fl_bundle_checkpoint_line(const struct fl_checkpoint *checkpoint,
					 const uint8_t consistency[][FL_HASH_LEN], size_t count,
					 char **ret_line);

/*
 * A line of inclusion.ndjson:
 * {"log":"events"|"reads","seq":N,"tree_size":M,"hashes":[hex, ...]}.
 */
enum fl_status fl_bundle_inclusion_line(enum fl_bundle_log log, uint64_t seq, uint64_t tree_size,
					const uint8_t hashes[][FL_HASH_LEN], size_t count,
					char **ret_line);

/* ---- README ------------------------------------------------------------- */

/* What the README says about the export that made the bundle. */
struct fl_bundle_info {
	const char *from; /* RFC 3339, as exported */
	const char *to;
	const char *exported_at;
	const char *command_url; /* may be NULL */
	const char *query_url;	 /* may be NULL */
	uint64_t event_lines, read_lines;
	uint64_t event_tree_size, read_tree_size;   /* last checkpoints, 0: none */
	uint64_t event_boundaries, read_boundaries; /* 0, 1 or 2 each */
};

/* Writes dir/README.md: the bundle's files and how to check them by hand. */
enum fl_status fl_bundle_write_readme(const char *dir, const struct fl_bundle_info *info);

/* ---- writing files -------------------------------------------------------- */

/*
 * Writes len bytes to path through a temporary file in the same directory
 * and a rename, with mode (e.g. 0644, 0600). FL_ERR_IO on failure (errno
 * is kept), nothing left behind.
 */
enum fl_status fl_bundle_write_file(const char *path, const char *data, size_t len, unsigned mode);

/* ---- verification --------------------------------------------------------- */

struct fl_bundle_report {
	char from[32], to[32]; /* the range of range.json, as written there */
	uint64_t event_lines, read_lines;
	/* the seq of each log's line before and after the range, 0: none */
	uint64_t event_before, event_after, read_before, read_after;
	uint64_t event_checkpoints, read_checkpoints;
	uint64_t key_checkpoints; /* lines of key-checkpoints.ndjson */
	uint64_t inclusion_proofs;
	size_t keys;
	uint64_t event_tree_size, read_tree_size; /* last checkpoint of each log, 0: none */
	/* the key of each log ([FL_BUNDLE_LOG_EVENTS], [..._READS]) trusted on first
	 * use, when no key was given; "" when none was */
	char tofu_key[2][FL_KEY_ID_HEX_LEN];
	char item[192];	  /* the first bad item: "events.ndjson:17", "keys.json" */
	char reason[256]; /* error it is bad */
};

/* Called every 100000 lines checked: the file and its lines so far. */
typedef void (*fl_bundle_progress_fn)(void *ctx, const char *file, uint64_t lines);

/*
 * Checks the bundle in dir offline: keys.json; each checkpoint file (every
 * signature with its log's prefix, tree sizes non-decreasing, the first
 * line without consistency hashes and each later one's consistency proof
 * from the line before); each line of events.ndjson and reads.ndjson (see
 * fl_bundle_line_check; seqs ascending without duplicates and at most the
 * last checkpoint's size; event bodies of kind feature, view or key, read
 * bodies of kind read; the first line covered by the first checkpoint);
 * range.json and the boundary files (each boundary line checked as a line,
 * its time before "from" or after "to"); the completeness of each log (see
 * the head of this file: "seq 17 is missing between 16 and 18"); and
 * inclusion.ndjson (exactly one proof per exported and boundary line, in
 * ascending seq per log, each against the last checkpoint of its log).
 *
 * FL_OK when everything holds; FL_ERR_CORRUPT when something does not (a
 * missing or unreadable file too), with the first bad item and why in
 * ret_report; FL_ERR_NOMEM; FL_ERR_INVALID for bad arguments. The counts
 * of ret_report are filled as far as the check went. progress may be NULL.
 */
enum fl_status fl_bundle_verify(const char *dir, fl_bundle_progress_fn progress, void *ctx,
				struct fl_bundle_report *ret_report);

struct fl_trust;

/*
 * fl_bundle_verify under the key trust rules (CONTRACT §4 "Key trust"):
 * keys.json only maps key ids to keys; it is not trusted. trust holds the
 * keys the caller trusts (both services' keys: the read log has no key
 * events); when it is empty, each log trusts the key of its first
 * checkpoint on first use (named in ret_report->tofu_key). NULL skips the
 * trust pass and trusts keys.json: that is fl_bundle_verify, the check
 * `fledger audit export` makes of what it just fetched from the services. Walking
 * each log's checkpoints and its exported key events in seq order, a key
 * event whose line is signed by a trusted key it names as the previous one
 * makes its key trusted at once; any other key event's key becomes trusted
 * once a checkpoint covering it is signed by a trusted key (a line of
 * key-checkpoints.ndjson, the checkpoint of the key event's own commit, is
 * such a checkpoint: format v2 lines carry no signature). Every
 * checkpoint, and every exported line, must be signed by a trusted key,
 * else FL_ERR_CORRUPT naming the key. trust grows by the keys learned.
 * A bundle only holds the key events of its range: when the key changed
 * outside it, the caller must trust both keys.
 */
enum fl_status fl_bundle_verify_trusted(const char *dir, struct fl_trust *trust,
					fl_bundle_progress_fn progress, void *ctx,
					struct fl_bundle_report *ret_report);

#endif
