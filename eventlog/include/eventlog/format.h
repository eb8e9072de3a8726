#ifndef EVENTLOG_FORMAT_H
#define EVENTLOG_FORMAT_H

/*
 * The wire formats of the log (CONTRACT §4, docs/log-format.md): the log
 * line (format v2, and the first format with key_id and sig), the signed
 * checkpoint (the text its signature covers and its JSON form), and the
 * inclusion and consistency proofs as JSON. Each format has one writer and
 * one parser, here; every reader (query-svc's sync, the audit bundle, the
 * CLI, the tests) calls them, so that what one accepts the others accept.
 *
 * The parsers read what the writers print: compact JSON, though whitespace
 * between tokens is allowed. They are strict about everything else: exactly
 * the members of the format, each once; integers in plain decimal without
 * a sign or leading zeros; hex in lower case; canonical padded base64;
 * strings without escapes (no value of these formats needs one); nothing
 * but whitespace after the closing brace. They read in one pass over the
 * members with core's scanner (fledger/jsonw.h), without building a tree:
 * query-svc reads a million lines in a catch-up, and eventlog depends on
 * core only.
 *
 * Parsers return FL_OK, FL_ERR_INVALID with a sentence for a person in
 * error (error_size bytes, as fl_set_error writes it; error may be NULL),
 * or FL_ERR_NOMEM. Output parameters are written only on FL_OK.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eventlog/merkle.h"
#include "eventlog/signer.h"
#include "fledger/status.h"
#include "fledger/text.h"

#define FL_CHECKPOINT_PREFIX "fledger-checkpoint-v1"
#define FL_READ_CHECKPOINT_PREFIX "fledger-read-checkpoint-v1"

/* ---- The log line ------------------------------------------------------ */

/* One stored event. Pointers are into LMDB memory: valid until the reader ends. */
struct fl_log_entry {
	uint64_t seq;
	const uint8_t *body;
	size_t body_len;
	const uint8_t *leaf_hash;	/* FL_HASH_LEN */
	const uint8_t *sig;		/* FL_SIG_LEN; NULL for a line of format v2 */
	char key_id[FL_KEY_ID_HEX_LEN]; /* "" when sig is NULL */
	int64_t time_us;
};

/*
 * The log line of CONTRACT §4, NUL-terminated, without a newline:
 * {"seq":N,"body":"<b64>","leaf_hash":"<hex>"}, and for a line of the first
 * format (entry->sig not NULL) ,"key_id":"<hex>","sig":"<b64>" before the brace.
 * FL_ERR_NOMEM. The caller frees *ret_line; ret_len may be NULL.
 */
enum fl_status fl_log_entry_line(const struct fl_log_entry *entry, char **ret_line,
				 size_t *ret_len);

/* A log line, read back. */
struct fl_log_line {
	uint64_t seq;
	uint8_t *body; /* malloc'd: fl_log_line_finish frees it */
	size_t body_len;
	uint8_t leaf_hash[FL_HASH_LEN];
	bool has_sig;			/* a line of the first format: key_id and sig */
	char key_id[FL_KEY_ID_HEX_LEN]; /* "" when !has_sig */
	uint8_t sig[FL_SIG_LEN];	/* zero bytes when !has_sig */
};

/*
 * Parses one line (text[0..len), no newline): an object of exactly seq
 * (1 or more), body (base64), leaf_hash (64 hex digits), and, in a line of
 * the first format, key_id (16 hex digits) and sig (base64 of 64 bytes),
 * both or neither. It does not look into the body: see fl_log_line_holds.
 * On FL_OK the caller calls fl_log_line_finish(ret_line).
 */
enum fl_status fl_log_line_parse(const char *text, size_t len, char *error, size_t error_size,
				 struct fl_log_line *ret_line);

/* Frees the line's body and leaves it empty. Accepts NULL. */
void fl_log_line_finish(struct fl_log_line *line);

/*
 * True when a stored body is what fl_log_append writes for seq: it starts
 * with {"seq":<seq>, and ends with the closing brace of that object.
 */
bool fl_log_body_has_seq(const uint8_t *body, size_t len, uint64_t seq);

/*
 * True when a line holds together by itself: leaf_hash = SHA-256(0x00 ||
 * body) and fl_log_body_has_seq(body, seq). Otherwise false with the reason
 * in error. (A signature, on a line of the first format, needs a key: see
 * fl_log_line_sig_verify and eventlog/trust.h.)
 */
bool fl_log_line_holds(const struct fl_log_line *line, char *error, size_t error_size);

/* True when the line has a signature and it verifies under pub over its leaf hash. */
bool fl_log_line_sig_verify(const struct fl_log_line *line, const uint8_t pub[FL_PUBKEY_LEN]);

/* The line as a log entry (pointing into line; time_us 0), e.g. for fl_trust_line. */
void fl_log_line_entry(const struct fl_log_line *line, struct fl_log_entry *ret_entry);

/* ---- The checkpoint ----------------------------------------------------- */

/* Every checkpoint timestamp has this form: "2026-11-26T21:00:00.201000Z". */
#define FL_CHECKPOINT_TIMESTAMP_LEN 27

struct fl_checkpoint {
	uint64_t tree_size;
	uint8_t root_hash[FL_HASH_LEN];
	char timestamp[FL_CHECKPOINT_TIMESTAMP_LEN + 1];
	char key_id[FL_KEY_ID_HEX_LEN];
	uint8_t sig[FL_SIG_LEN];
};

/*
 * The text a checkpoint signature covers: prefix\nsize\nroot\ntimestamp\n,
 * written to buf (buf_len bytes, NUL-terminated). Returns its length, which
 * is buf_len or more when it did not fit.
 */
size_t fl_checkpoint_text(const char *prefix, const struct fl_checkpoint *checkpoint, char *buf,
			  size_t buf_len);

/*
 * The checkpoint as compact JSON, NUL-terminated: {"tree_size":N,
 * "root_hash":"<hex>","timestamp":"...","key_id":"<hex>","sig":"<b64>"}.
 * FL_ERR_NOMEM. The caller frees *ret_json.
 */
enum fl_status fl_checkpoint_json(const struct fl_checkpoint *checkpoint, char **ret_json);

/* True when the checkpoint's signature verifies under pub with prefix. */
bool fl_checkpoint_verify(const char *prefix, const struct fl_checkpoint *checkpoint,
			  const uint8_t pub[FL_PUBKEY_LEN]);

/*
 * Parses a checkpoint: an object of exactly tree_size (1 or more: the log
 * signs a checkpoint per commit, never one of the empty tree), root_hash
 * (64 hex digits), timestamp (exactly as fl_time_format prints it, which
 * is what the log signs and stores: UTC with microseconds), key_id and sig
 * (base64 of 64 bytes). The signature is not checked (fl_checkpoint_verify).
 */
enum fl_status fl_checkpoint_parse(const char *text, size_t len, char *error, size_t error_size,
				   struct fl_checkpoint *ret_checkpoint);

/*
 * fl_checkpoint_parse for an object that carries one more member, named
 * extra, which must be there (e.g. "consistency" in an audit bundle's
 * checkpoint files): its raw JSON text, pointing into text, in
 * *ret_extra and *ret_extra_len.
 */
enum fl_status fl_checkpoint_parse_with(const char *text, size_t len, const char *extra,
					char *error, size_t error_size,
					struct fl_checkpoint *ret_checkpoint,
					const char **ret_extra, size_t *ret_extra_len);

/* ---- Proofs ------------------------------------------------------------- */

/* The inclusion proof of leaf leaf_index in the tree of tree_size (RFC 9162 §2.1.3). */
struct fl_inclusion_proof {
	uint64_t leaf_index, tree_size;
	size_t count;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
};

/* The consistency proof between the trees of first and second leaves (§2.1.4). */
struct fl_consistency_proof {
	uint64_t first, second;
	size_t count;
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
};

/*
 * {"leaf_index":I,"tree_size":M,"hashes":["<hex>",...]} and
 * {"first":M,"second":N,"hashes":[...]}, NUL-terminated (the caller frees
 * *ret_json). FL_ERR_INVALID for more than FL_MERKLE_MAX_PROOF hashes,
 * FL_ERR_NOMEM.
 */
enum fl_status fl_inclusion_proof_json(uint64_t leaf_index, uint64_t tree_size,
				       const uint8_t hashes[][FL_HASH_LEN], size_t count,
				       char **ret_json);
enum fl_status fl_consistency_proof_json(uint64_t first, uint64_t second,
					 const uint8_t hashes[][FL_HASH_LEN], size_t count,
					 char **ret_json);

/*
 * Parse those objects, exactly those three members: leaf_index < tree_size
 * for an inclusion proof, 1 <= first <= second for a consistency proof, at
 * most FL_MERKLE_MAX_PROOF hashes. Whether the hashes prove anything is
 * fl_merkle_verify_inclusion's and fl_merkle_verify_consistency's to say.
 */
enum fl_status fl_inclusion_proof_parse(const char *text, size_t len, char *error,
					size_t error_size, struct fl_inclusion_proof *ret_proof);
enum fl_status fl_consistency_proof_parse(const char *text, size_t len, char *error,
					  size_t error_size,
					  struct fl_consistency_proof *ret_proof);

/* Appends the hashes as a JSON array of hex strings to text (see fledger/text.h). */
void fl_proof_hashes_write(struct fl_text *text, const uint8_t hashes[][FL_HASH_LEN], size_t count);

/*
 * Parses such an array (at most FL_MERKLE_MAX_PROOF hashes of 64 hex
 * digits), the "hashes" of a proof or a proof that another format embeds.
 */
enum fl_status fl_proof_hashes_parse(const char *text, size_t len, char *error, size_t error_size,
				     uint8_t ret_hashes[][FL_HASH_LEN], size_t *ret_count);

#endif
