#ifndef EVENTLOG_EVENTLOG_H
#define EVENTLOG_EVENTLOG_H

/*
 * The signed, append-only log (CONTRACT §4) in an LMDB environment.
 *
 * Each event is stored as its exact body bytes B = '{"seq":N,' + tail + '}',
 * where the caller supplies tail (the JSON members after seq). The log
 * assigns seq 1, 2, 3 ... without gaps, stores leaf_hash = SHA-256(0x00 || B),
 * extends the RFC 6962 tree over the leaf hashes and, on every commit, signs
 * and keeps a checkpoint for the new tree size. Lines are not signed one by
 * one (format v2): a line is proven by its inclusion proof against a signed
 * checkpoint. Lines of the first format, which carry key_id and
 * sig = Ed25519(leaf_hash), are read, replicated and verified as they are.
 * Commits are synced to disk before fl_log_append returns.
 *
 * One writer at a time (fl_log_append serialises callers); any number of
 * readers in any thread, and in other processes opening the same directory.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eventlog/format.h"
#include "eventlog/merkle.h"
#include "eventlog/signer.h"
#include "fledger/status.h"

struct fl_log;
struct fl_log_reader;

struct fl_log_options {
	size_t initial_map_bytes;      /* 0: 16 MiB; the map doubles when full */
	size_t max_map_bytes;	       /* 0: no cap but the disk */
	const char *checkpoint_prefix; /* NULL: FL_CHECKPOINT_PREFIX */
	/*
	 * Writable without a signer: see fl_log_replicate. A replica commits
	 * with one device flush, not two (LMDB's MDB_NOMETASYNC: the next
	 * commit's flush makes the meta page durable, and so does
	 * fl_log_close): a machine crash while it is open may take back its
	 * last commit, never tear it, and the lines are fetched again.
	 */
	bool replica;
};

/* ---- Reading --------------------------------------------------------- */

struct fl_log_verify_report {
	uint64_t events_checked;
	uint64_t checkpoints_checked;
	uint64_t bad_seq;	 /* first bad event seq, 0 if none */
	uint64_t bad_checkpoint; /* tree size of the first bad checkpoint, 0 if none */
	char reason[160];
};

/*
 * An LMDB return code as a status (MDB_NOTFOUND -> FL_ERR_NOT_FOUND, a full
 * map or disk -> FL_ERR_FULL, a damaged file -> FL_ERR_CORRUPT, ...), for
 * the log and for modules that keep LMDB environments of their own.
 */
enum fl_status fl_status_of_mdb(int rc);

/*
 * Opens or creates the log in dir (created if missing). signer (borrowed; it
 * must outlive the log) signs appends and checkpoints; an empty log records
 * its key as the first key. NULL opens an existing log for reading only. A
 * signer other than the log's current key (the key of its latest checkpoint)
 * is FL_ERR_CONFLICT: a change of key goes through fl_log_rotate_key, which
 * records it in the log signed by the old key.
 */
enum fl_status fl_log_open(const char *dir, const struct fl_log_options *options,
			   const struct fl_signer *signer, struct fl_log **ret_log);

/* Closes the log. Accepts NULL. No reader may be open. */
void fl_log_close(struct fl_log *log);

/* One event to append. */
struct fl_log_input {
	const char *body_tail; /* JSON members after "seq":N (no braces) */
	size_t body_tail_len;
	int64_t time_us;	     /* indexed time (ingest_ts, or a read's ts) */
	const char *producer;	     /* idempotency scope, with idempotency_key */
	const char *idempotency_key; /* NULL: none */
	const uint8_t *digest;	     /* FL_HASH_LEN bytes naming the event's content */
};

struct fl_log_result {
	uint64_t seq;
	uint8_t leaf_hash[FL_HASH_LEN];
	bool duplicate; /* the key was seen before with the same digest */
};

/*
 * An atomic group of inputs: all are appended or none. status is FL_OK, or
 * FL_ERR_CONFLICT when input conflict_index reuses a key with another digest
 * (then nothing of the group is written).
 *
 * Idempotency keys (producer, key) are checked against the committed keys
 * and against the keys of the earlier batches of the same fl_log_append:
 * one event per key, whatever the interleaving of racing requests. A key
 * seen with the same digest makes the input a duplicate (result: the
 * original seq and leaf hash, duplicate true); within one batch, the second
 * input with a key is a duplicate of the first, or a conflict when the
 * digests differ. A conflicting batch claims none of its keys.
 */
struct fl_log_batch {
	const struct fl_log_input *inputs;
	size_t count;
	struct fl_log_result *results; /* count entries, filled when status is FL_OK */
	enum fl_status status;
	size_t conflict_index;
};

/*
 * Appends batches in one synced transaction (group commit) and signs one
 * checkpoint for the resulting tree. Returns FL_OK when the transaction
 * committed (then see each batch's status), or FL_ERR_FULL (map cap or disk
 * full), FL_ERR_IO, FL_ERR_NOMEM, FL_ERR_CRYPTO, FL_ERR_INVALID (read-only
 * log) when nothing was written. ret_tree_size (may be NULL) is the tree size
 * after the commit.
 */
enum fl_status fl_log_append(struct fl_log *log, struct fl_log_batch *batches, size_t n_batches,
			     uint64_t *ret_tree_size);

/*
 * Changes the signing key: appends a "key" event carrying new_signer's public
 * key in a commit of its own, whose checkpoint the current key signs (so
 * that a verifier trusting the old key learns the new one), then signs every
 * later checkpoint with new_signer (borrowed, must outlive the log). time_us
 * is the event's ingest time. A no-op returning FL_OK when the key is
 * already the current one.
 */
enum fl_status fl_log_rotate_key(struct fl_log *log, const struct fl_signer *new_signer,
				 int64_t time_us, struct fl_log_result *ret_result);

/*
 * Replica logs (query-svc's copy of command-svc's log). Appends entries that
 * were written elsewhere (with their line signature when they have one):
 * each must carry the next seq, its leaf hash must be SHA-256(0x00 || body)
 * and its body must start with {"seq":N,. After the last entry the tree's
 * root must equal checkpoint->root_hash with checkpoint->tree_size the new
 * size; the checkpoint (whose signature the caller has checked) is stored as
 * it is. All or nothing, in one transaction (see replica above): FL_ERR_CORRUPT when
 * anything does not match (nothing is written, the report names the seq),
 * FL_ERR_INVALID on a log that is not a replica. n may be 0 to store a
 * checkpoint of the current size.
 */
enum fl_status fl_log_replicate(struct fl_log *log, const struct fl_log_entry *entries, size_t n,
				const struct fl_checkpoint *checkpoint,
				struct fl_log_verify_report *ret_report);

/* Records a public key of the origin log in a replica (no-op if known). */
enum fl_status fl_log_replica_add_key(struct fl_log *log, const uint8_t pub[FL_PUBKEY_LEN]);

/* The current tree size (committed). */
uint64_t fl_log_size(struct fl_log *log);

/* A small persistent counter (e.g. the NATS publish cursor); 0 if unset. */
enum fl_status fl_log_counter_get(struct fl_log *log, const char *name, uint64_t *ret_value);
enum fl_status fl_log_counter_set(struct fl_log *log, const char *name, uint64_t value);

/* A consistent snapshot of the log (an LMDB read transaction). */
enum fl_status fl_log_reader_begin(struct fl_log *log, struct fl_log_reader **ret_reader);
void fl_log_reader_end(struct fl_log_reader *reader); /* accepts NULL */

/* Tree size of the snapshot. */
uint64_t fl_log_reader_size(const struct fl_log_reader *reader);

/* The event with this seq; FL_ERR_NOT_FOUND outside 1..size. */
enum fl_status fl_log_reader_get(struct fl_log_reader *reader, uint64_t seq,
				 struct fl_log_entry *ret_entry);

/* The checkpoint of exactly tree_size (0: the latest). */
enum fl_status fl_log_reader_checkpoint(struct fl_log_reader *reader, uint64_t tree_size,
					struct fl_checkpoint *ret_checkpoint);

/* The oldest checkpoint whose tree includes seq. */
enum fl_status fl_log_reader_checkpoint_covering(struct fl_log_reader *reader, uint64_t seq,
						 struct fl_checkpoint *ret_checkpoint);

/* Merkle root and proofs over the snapshot (sizes must be <= its size). */
enum fl_status fl_log_reader_root(struct fl_log_reader *reader, uint64_t tree_size,
				  uint8_t ret_root[FL_HASH_LEN]);
/*
 * Compares the snapshot's root at tree_size with root (a fork check).
 * FL_OK when the root could be read, with *ret_same telling whether they are
 * equal. Any other status means the root could not be read: the caller cannot
 * tell whether the log forked, and *ret_same is false (never "same").
 */
enum fl_status fl_log_reader_root_equals(struct fl_log_reader *reader, uint64_t tree_size,
					 const uint8_t root[FL_HASH_LEN], bool *ret_same);
enum fl_status fl_log_reader_inclusion_proof(struct fl_log_reader *reader, uint64_t seq,
					     uint64_t tree_size, uint8_t ret_hashes[][FL_HASH_LEN],
					     size_t *ret_count);
enum fl_status fl_log_reader_consistency_proof(struct fl_log_reader *reader, uint64_t first,
					       uint64_t second, uint8_t ret_hashes[][FL_HASH_LEN],
					       size_t *ret_count);

/*
 * Calls fn for each event whose indexed time lies in [from_us, to_us], in
 * time order (then seq). Stops early, returning its status, when fn does not
 * return FL_OK.
 */
typedef enum fl_status (*fl_log_entry_fn)(void *ctx, const struct fl_log_entry *entry);
enum fl_status fl_log_reader_time_range(struct fl_log_reader *reader, int64_t from_us,
					int64_t to_us, fl_log_entry_fn fn, void *ctx);

/* Public key of a key id ever used by this log. */
enum fl_status fl_log_reader_key(struct fl_log_reader *reader, const char *key_id,
				 uint8_t ret_pub[FL_PUBKEY_LEN]);

/* Calls fn for every key ever used, oldest first. */
typedef enum fl_status (*fl_log_key_fn)(void *ctx, const char *key_id,
					const uint8_t pub[FL_PUBKEY_LEN]);
enum fl_status fl_log_reader_keys(struct fl_log_reader *reader, fl_log_key_fn fn, void *ctx);

/* ---- Key events (the line, checkpoint and proof formats: eventlog/format.h) */

/*
 * Reads a "key" event body as fl_log_rotate_key writes it (docs/log-format.md):
 * {"seq":N,"kind":"key","ingest_ts":...,"key_id":"<new>","alg":"ed25519",
 * "public_key_pem":"...","previous_key_id":"<old>"}. FL_OK with the new raw
 * public key (whose id must be key_id) and the previous key id;
 * FL_ERR_NOT_FOUND when the body is not a key event; FL_ERR_INVALID when it
 * is one but malformed.
 */
enum fl_status fl_log_key_event_parse(const uint8_t *body, size_t len,
				      uint8_t ret_pub[FL_PUBKEY_LEN],
				      char ret_previous_key_id[FL_KEY_ID_HEX_LEN]);

/* ---- Verification ---------------------------------------------------- */

/*
 * Walks events from_seq..to_seq (to_seq 0: the end): recomputes each leaf hash
 * from the body, checks the body's seq, the signature of each line of the
 * first format with the key of its key id, and every stored checkpoint
 * (root recomputed, signature checked). FL_OK when all hold; FL_ERR_CORRUPT
 * with the first bad item in the report.
 */
enum fl_status fl_log_verify(struct fl_log *log, uint64_t from_seq, uint64_t to_seq,
			     struct fl_log_verify_report *ret_report);

#endif
