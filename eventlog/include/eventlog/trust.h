#ifndef EVENTLOG_TRUST_H
#define EVENTLOG_TRUST_H

/*
 * Key trust (CONTRACT §4): which signing keys of the event log a verifier
 * accepts. A verifier starts from keys it already trusts (given to it, or
 * the first key it sees, pinned) and learns a new key only from a "key"
 * event that a trusted key vouches for:
 *
 *   - the event's own line signature (lines of the first format carry one)
 *     verifies under a trusted key, or
 *   - a checkpoint signed by a trusted key covers the event (its tree
 *     holds the event's seq).
 *
 * A line signature or a checkpoint under any other key is refused, whatever
 * else lists that key (command-svc's GET /v1/keys included).
 *
 * The caller walks a log in seq order: fl_trust_line for each line, then
 * fl_trust_checkpoint for the checkpoint that covers them and, once it has
 * matched that checkpoint's root against the lines, fl_trust_promote. Keys announced by key events
 * that no trusted signature has vouched for yet are held as "announced"; a line signed by an
 * announced key is accepted provisionally, since the checkpoint that must follow (and must be
 * signed by a trusted key) covers it. fl_trust_drop_announced forgets them when the caller gives up
 * on a run of lines.
 *
 * Not thread-safe: one owner at a time.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eventlog/eventlog.h"
#include "eventlog/signer.h"
#include "fledger/status.h"

struct fl_trust;

/* An empty set. FL_ERR_NOMEM. The caller frees it with fl_trust_destroy. */
enum fl_status fl_trust_create(struct fl_trust **ret_trust);
void fl_trust_destroy(struct fl_trust *trust); /* accepts NULL */

/* Trusts pub (a no-op when it is trusted already). FL_ERR_NOMEM. */
enum fl_status fl_trust_add(struct fl_trust *trust, const uint8_t pub[FL_PUBKEY_LEN]);

/*
 * Trusts every PEM public key ("BEGIN PUBLIC KEY") in the file at path, in
 * order. FL_ERR_NOT_FOUND when there is no such file; FL_ERR_INVALID when
 * it holds no Ed25519 public key or a block that is not one; FL_ERR_IO,
 * FL_ERR_NOMEM. On an error nothing is added.
 */
enum fl_status fl_trust_load_file(struct fl_trust *trust, const char *path);

/*
 * Writes every trusted key as a PEM public key, oldest first, to path
 * (mode 0644; a new file renamed over the old one and synced, so a crash
 * leaves the old file or the new one). FL_ERR_IO, FL_ERR_NOMEM.
 */
enum fl_status fl_trust_save_file(const struct fl_trust *trust, const char *path);

/* How many keys are trusted, and the key id of each, oldest first. */
size_t fl_trust_count(const struct fl_trust *trust);
const char *fl_trust_key_id(const struct fl_trust *trust, size_t index);

/* The trusted key of key_id (owned by trust, valid until it changes), or NULL. */
const uint8_t *fl_trust_find(const struct fl_trust *trust, const char *key_id);

/*
 * Checks one line (entry->seq in order; the caller has checked its leaf
 * hash against its body). When entry->sig is not NULL it must verify under
 * a trusted or announced key of entry->key_id. When the body is a key
 * event, its key is announced, and trusted at once when the line's
 * signature is by a trusted key that the event names as the previous one.
 * Errors, with a sentence naming the seq and the key in error (error_size
 * bytes): FL_ERR_DENIED for a signature by a key that is not trusted;
 * FL_ERR_CORRUPT for a signature that does not verify or a malformed key
 * event; FL_ERR_NOMEM. ret_new_key (may be NULL) is set true when a key
 * became trusted.
 */
enum fl_status fl_trust_line(struct fl_trust *trust, const struct fl_log_entry *entry, char *error,
			     size_t error_size, bool *ret_new_key);

/*
 * Checks a checkpoint of the log (prefix FL_CHECKPOINT_PREFIX): it must be
 * signed by a trusted key (an announced key is not enough). FL_ERR_DENIED
 * when the key is not trusted, FL_ERR_CORRUPT when the signature does not
 * verify, each with a sentence naming the key in error.
 */
enum fl_status fl_trust_checkpoint(const struct fl_trust *trust,
				   const struct fl_checkpoint *checkpoint, char *error,
				   size_t error_size);

/*
 * Trusts every announced key whose event lies in a tree of tree_size,
 * once the caller has checked a checkpoint of that size with
 * fl_trust_checkpoint and matched its root against the lines.
 * FL_ERR_NOMEM. ret_new_key (may be NULL) is set true when a key became
 * trusted.
 */
enum fl_status fl_trust_promote(struct fl_trust *trust, uint64_t tree_size, bool *ret_new_key);

/* Forgets the announced keys that no trusted signature vouched for. */
void fl_trust_drop_announced(struct fl_trust *trust);

#endif
