/*
 * `fledger log verify`: fetches command-svc's whole event log and checks it
 * as a Certificate Transparency monitor would (CONTRACT §4): every line's
 * leaf hash (and signature, on a line of the first format), seqs gap-free
 * from 1, the recomputed Merkle root against the signed latest checkpoint, and, against the
 * checkpoint this tool verified last time (the state file), that the log only grew.
 *
 * Keys: it trusts the --trust-key keys, or else the key of the first
 * checkpoint (of the first line, in a log of the first format) (trust on
 * first use, said in its output), and then only keys that key
 * events introduce with a trusted signature (eventlog/trust.h); a line or
 * checkpoint signed by any other key fails, even if /v1/keys lists it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bundle.h"
#include "cli.h"
#include "eventlog/format.h"
#include "eventlog/merkle.h"
#include "eventlog/trust.h"
#include "fledger/jsonw.h"
#include "fledger/sha256.h"
#include "fledger/util.h"

#define PAGE 10000
#define PROGRESS_EVERY 100000

static const struct fl_config_option log_verify_options[] = {
    {"state", "FLEDGER_LOG_STATE", NULL,
     "the last verified checkpoint (default ~/.fledger/log-state-<hash of --command-url>.json)",
     false},
    {"trust-key", "FLEDGER_TRUST_KEY", NULL,
     "PEM public key of command-svc to trust (repeatable; the variable is a list split at , "
     "or :); without it, the key of the first line is trusted on first use",
     false},
};

/*
 * The state file's path: --state, $FLEDGER_LOG_STATE, or
 * ~/.fledger/log-state-<first 16 hex digits of SHA-256 of --command-url>.json:
 * one per command-svc URL, so that the logs of two deployments never meet
 * each other's state (one deployment started afresh at the same URL still
 * does: delete its state file, or give --state).
 */
static char *state_path(struct fl_cli *cli)
{
	const char *path = fl_config_get(cli->config, "state");
	const char *home = getenv("HOME");
	uint8_t digest[32];
	char hex[17];
	if (path)
		return strdup(path);
	if (!home || !home[0]) {
		fl__cli_error("no --state and no $HOME for ~/.fledger/log-state-*.json");
		return NULL;
	}
	const char *url = cli->command_url ? cli->command_url : "";
	if (!fl_sha256(url, strlen(url), digest))
		return NULL;
	fl_hex_encode(digest, 8, hex);
	size_t len = strlen(home) + 48;
	char *out = malloc(len);
	if (out)
		snprintf(out, len, "%s/.fledger/log-state-%s.json", home, hex);
	return out;
}

/*
 * Reads the state file into ret_checkpoint. FL_ERR_NOT_FOUND when there is
 * none (the first run); FL_ERR_INVALID (printed) when it is unusable.
 */
static enum fl_status load_state(const char *path, struct fl_checkpoint *ret_checkpoint)
{
	char error[200] = "it has no member \"checkpoint\"", *text;
	const char *cp_text;
	size_t len, cp_len;
	enum fl_status st = fl_file_read(path, &text, &len);
	if (st == FL_ERR_NOT_FOUND)
		return st;
	if (st != FL_OK) {
		fl__cli_error("the state file %s is unreadable: %s", path, fl_status_str(st));
		return FL_ERR_INVALID;
	}
	bool ok =
	    fl_json_member(text, len, "checkpoint", &cp_text, &cp_len) &&
	    fl_checkpoint_parse(cp_text, cp_len, error, sizeof(error), ret_checkpoint) == FL_OK;
	if (!ok)
		fl__cli_error("the state file %s holds no usable checkpoint: %s", path, error);
	free(text);
	return ok ? FL_OK : FL_ERR_INVALID;
}

static enum fl_status save_state(struct fl_cli *cli, const char *path,
				 const struct fl_checkpoint *checkpoint)
{
	char *cp_json, *text = NULL, *dir = strdup(path), *slash;
	char now[FL_TIME_TEXT_LEN];
	enum fl_status st = FL_ERR_NOMEM;

	if (!dir)
		return FL_ERR_NOMEM;
	if ((slash = strrchr(dir, '/')) && slash != dir) {
		*slash = '\0';
		if (fl_make_dirs(dir, 0700, NULL, 0) != FL_OK) {
			free(dir);
			return FL_ERR_IO;
		}
	}
	free(dir);
	if (fl_checkpoint_json(checkpoint, &cp_json) != FL_OK)
		return FL_ERR_NOMEM;
	fl_time_format(fl_time_now_us(), now);
	json_t *cp = json_loads(cp_json, 0, NULL);
	json_t *doc = cp ? json_pack("{s:s,s:s,s:o}", "command_url", cli->command_url,
				     "verified_at", now, "checkpoint", cp)
			 : NULL;
	if (doc)
		text = json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(doc);
	free(cp_json);
	if (text) {
		st = fl_bundle_write_file(path, text, strlen(text), 0600);
		free(text);
	}
	return st;
}

/* Fetches and parses the latest (or a given) checkpoint of the event log. */
static bool fetch_checkpoint(struct fl_cli *cli, const char *query,
			     struct fl_checkpoint *ret_checkpoint)
{
	char path[96], error[200], *body;
	size_t len;
	snprintf(path, sizeof(path), "/v1/log/checkpoint%s", query);
	if (fl__cli_get_text(cli, cli->command_url, path, true, NULL, &body, &len) != FL_OK)
		return false;
	bool ok = fl_checkpoint_parse(body, len, error, sizeof(error), ret_checkpoint) == FL_OK;
	if (!ok)
		fl__cli_error("GET %s: not a checkpoint: %s", path, error);
	free(body);
	return ok;
}

/* The consistency proof between two tree sizes, from command-svc. */
static bool fetch_consistency(struct fl_cli *cli, uint64_t first, uint64_t second,
			      uint8_t ret_hashes[][FL_HASH_LEN], size_t *ret_count)
{
	char path[96], error[200], *body;
	size_t len;
	struct fl_consistency_proof proof;
	snprintf(path, sizeof(path), "/v1/log/proof/consistency?first=%" PRIu64 "&second=%" PRIu64,
		 first, second);
	if (fl__cli_get_text(cli, cli->command_url, path, true, NULL, &body, &len) != FL_OK)
		return false;
	bool ok = fl_consistency_proof_parse(body, len, error, sizeof(error), &proof) == FL_OK;
	free(body);
	if (ok && (proof.first != first || proof.second != second)) {
		snprintf(error, sizeof(error),
			 "a proof from tree size %" PRIu64 " to %" PRIu64 ", not the one asked for",
			 proof.first, proof.second);
		ok = false;
	}
	if (!ok) {
		fl__cli_error("GET %s: %s", path, error);
		return false;
	}
	memcpy(ret_hashes, proof.hashes, proof.count * FL_HASH_LEN);
	*ret_count = proof.count;
	return true;
}

struct walk {
	struct fl_cli *cli;
	const struct fl_bundle_keys *keys; /* /v1/keys: only for trust on first use */
	struct fl_trust *trust;
	struct fl_merkle_frontier frontier;
	uint64_t old_size; /* the state's tree size, 0: none */
	uint8_t old_root[FL_HASH_LEN];
	bool have_old_root;
	/* A key event of format v2 is vouched for by the checkpoint of its
	 * commit (signed by the key it replaces): checked when the walk
	 * reaches that checkpoint's tree size. */
	struct fl_checkpoint vouching;
	uint64_t vouching_seq; /* the key event's seq */
	bool have_vouching;
	/* Every leaf hash walked, so that a root that does not match can be
	 * narrowed down to its first bad line (32 bytes a line). */
	uint8_t (*leaves)[FL_HASH_LEN];
	uint64_t n_leaves, cap_leaves;
};

/*
 * Trust on first use for a log of format v2: the key of the oldest
 * checkpoint that covers line 1, once its signature verifies under the key
 * /v1/keys lists for it.
 */
static bool trust_first_checkpoint_key(struct walk *w, char *error, size_t error_size)
{
	struct fl_checkpoint first;
	uint8_t pub[FL_PUBKEY_LEN];
	if (!fetch_checkpoint(w->cli, "?covering_seq=1", &first)) {
		snprintf(error, error_size, "no checkpoint covers line 1");
		return false;
	}
	if (!fl_bundle_keys_find(w->keys, first.key_id, pub) ||
	    !fl_checkpoint_verify(FL_CHECKPOINT_PREFIX, &first, pub)) {
		snprintf(error, error_size,
			 "the first checkpoint's key %s is not in /v1/keys or its signature does "
			 "not verify",
			 first.key_id);
		return false;
	}
	if (fl_trust_add(w->trust, pub) != FL_OK) {
		snprintf(error, error_size, "out of memory");
		return false;
	}
	printf("TOFU: no --trust-key given: trusting key %s, which signed the first checkpoint, "
	       "on first use; check it out of band\n",
	       first.key_id);
	return true;
}

/*
 * Checks one line: its leaf hash and {"seq":N, prefix, then its signature and
 * any key event against the trusted keys. Without trusted keys (no
 * --trust-key), the key of this first line is trusted on first use (from
 * /v1/keys), and the output says so. false with the reason in error.
 */
static bool check_line(struct walk *w, const struct fl_log_line *line, char *error,
		       size_t error_size)
{
	uint8_t pub[FL_PUBKEY_LEN];
	if (!fl_log_line_holds(line, error, error_size))
		return false;
	if (fl_trust_count(w->trust) == 0 && !line->has_sig) {
		if (!trust_first_checkpoint_key(w, error, error_size))
			return false;
	} else if (fl_trust_count(w->trust) == 0) {
		if (!fl_bundle_keys_find(w->keys, line->key_id, pub)) {
			snprintf(error, error_size, "key %s of the first line is not in /v1/keys",
				 line->key_id);
			return false;
		}
		if (fl_trust_add(w->trust, pub) != FL_OK) {
			snprintf(error, error_size, "out of memory");
			return false;
		}
		printf("TOFU: no --trust-key given: trusting key %s, which signed the first line, "
		       "on first use; check it out of band\n",
		       line->key_id);
	}
	struct fl_log_entry entry;
	fl_log_line_entry(line, &entry);
	bool new_key = false;
	if (fl_trust_line(w->trust, &entry, error, error_size, &new_key) != FL_OK)
		return false;
	if (new_key)
		printf("trusting key %s from the key event at seq %" PRIu64 "\n",
		       fl_trust_key_id(w->trust, fl_trust_count(w->trust) - 1), line->seq);
	uint8_t new_pub[FL_PUBKEY_LEN];
	char previous[FL_KEY_ID_HEX_LEN];
	if (!new_key &&
	    fl_log_key_event_parse(line->body, line->body_len, new_pub, previous) == FL_OK) {
		char new_id[FL_KEY_ID_HEX_LEN], query[64];
		fl_key_id_of(new_pub, new_id);
		if (fl_trust_find(w->trust, new_id))
			return true;
		/* Announced: the checkpoint of its commit must vouch for it. */
		snprintf(query, sizeof(query), "?covering_seq=%" PRIu64, line->seq);
		if (w->have_vouching || !fetch_checkpoint(w->cli, query, &w->vouching)) {
			snprintf(error, error_size,
				 "no checkpoint covers the key event at seq %" PRIu64, line->seq);
			return false;
		}
		if (fl_trust_checkpoint(w->trust, &w->vouching, error, error_size) != FL_OK)
			return false;
		w->have_vouching = true;
		w->vouching_seq = line->seq;
	}
	return true;
}

/*
 * After a line: when the walk reached the tree size of the checkpoint that
 * vouches for a key event, that checkpoint's root must be the lines' root;
 * then the key is trusted. false with the reason in error.
 */
static bool check_vouching(struct walk *w, char *error, size_t error_size)
{
	uint8_t root[FL_HASH_LEN];
	bool new_key = false;
	if (!w->have_vouching || w->frontier.size != w->vouching.tree_size)
		return true;
	fl_merkle_frontier_root(&w->frontier, root);
	if (memcmp(root, w->vouching.root_hash, FL_HASH_LEN) != 0) {
		snprintf(error, error_size,
			 "the root of the first %" PRIu64
			 " lines is not the root_hash of their signed checkpoint",
			 w->frontier.size);
		return false;
	}
	w->have_vouching = false;
	if (fl_trust_promote(w->trust, w->frontier.size, &new_key) != FL_OK) {
		snprintf(error, error_size, "out of memory");
		return false;
	}
	if (new_key)
		printf("trusting key %s from the key event at seq %" PRIu64
		       ", under the checkpoint of tree size %" PRIu64 "\n",
		       fl_trust_key_id(w->trust, fl_trust_count(w->trust) - 1), w->vouching_seq,
		       w->frontier.size);
	return true;
}

/*
 * Fetches lines 1..size page by page, checking each and growing the tree.
 * false after printing the first bad line or failure.
 */
static bool walk_log(struct walk *w, uint64_t size)
{
	for (uint64_t from = 1; from <= size;) {
		char path[96], *body;
		size_t len;
		unsigned status;
		uint64_t limit = size - from + 1 < PAGE ? size - from + 1 : PAGE;

		snprintf(path, sizeof(path), "/v1/log?from_seq=%" PRIu64 "&limit=%" PRIu64, from,
			 limit);
		if (fl__cli_http(w->cli, "GET", w->cli->command_url, path, true, NULL, NULL, 0,
				 &status, &body, &len) != FL_OK)
			return false;
		if (status != 200) {
			char what[160];
			snprintf(what, sizeof(what), "GET %s", path);
			fl__cli_print_http_error(what, status, body, len);
			free(body);
			return false;
		}
		uint64_t got = 0;
		for (char *line = body, *end = body + len; line < end;) {
			char *nl = memchr(line, '\n', (size_t)(end - line)), error[240];
			size_t line_len = (size_t)((nl ? nl : end) - line);
			struct fl_log_line parsed;
			uint64_t seq = from + got;
			if (line_len == 0) {
				line = nl ? nl + 1 : end;
				continue;
			}
			if (seq > size)
				break; /* more than asked for: only the checkpoint's tree counts */
			snprintf(error, sizeof(error), "out of memory");
			bool parsed_ok = fl_log_line_parse(line, line_len, error, sizeof(error),
							   &parsed) == FL_OK;
			bool ok = parsed_ok;
			if (ok && parsed.seq != seq) {
				snprintf(error, sizeof(error),
					 "seq %" PRIu64 " where seq %" PRIu64
					 " was expected: the log has a gap or is out of order",
					 parsed.seq, seq);
				ok = false;
			} else if (ok) {
				ok = check_line(w, &parsed, error, sizeof(error));
			}
			if (ok)
				fl_merkle_frontier_append(&w->frontier, parsed.leaf_hash, NULL,
							  NULL);
			if (ok && w->n_leaves == w->cap_leaves) {
				uint64_t cap = w->cap_leaves ? 2 * w->cap_leaves : 4096;
				void *grown = realloc(w->leaves, cap * FL_HASH_LEN);
				if (grown) {
					w->leaves = grown;
					w->cap_leaves = cap;
				}
			}
			if (ok && w->n_leaves < w->cap_leaves)
				memcpy(w->leaves[w->n_leaves++], parsed.leaf_hash, FL_HASH_LEN);
			if (ok)
				ok = check_vouching(w, error, sizeof(error));
			if (parsed_ok)
				fl_log_line_finish(&parsed);
			if (!ok) {
				fl__cli_error("FAILED: log line %" PRIu64 ": %s", seq, error);
				free(body);
				return false;
			}
			got++;
			if (w->frontier.size == w->old_size) {
				fl_merkle_frontier_root(&w->frontier, w->old_root);
				w->have_old_root = true;
			}
			if (w->frontier.size % PROGRESS_EVERY == 0)
				fl__cli_progress("%" PRIu64 " of %" PRIu64 " lines verified",
						 w->frontier.size, size);
			line = nl ? nl + 1 : end;
		}
		free(body);
		if (got == 0) {
			fl__cli_error("FAILED: the log ends at seq %" PRIu64
				      ", before the tree size %" PRIu64 " of its signed checkpoint",
				      from - 1, size);
			return false;
		}
		from += got;
	}
	return true;
}

/* The --trust-key keys (none: trust on first use). false after printing why. */
static bool load_trust(struct fl_cli *cli, struct fl_trust **ret_trust)
{
	char **files = NULL;
	size_t n_files = 0;
	enum fl_status st = fl_trust_create(ret_trust);
	if (st == FL_OK)
		st = fl_config_get_list(cli->config, "trust-key", ",:", &files, &n_files);
	if (st != FL_OK) {
		fl__cli_error("%s", fl_status_str(st));
		return false;
	}
	for (size_t i = 0; st == FL_OK && i < n_files; i++) {
		st = fl_trust_load_file(*ret_trust, files[i]);
		if (st != FL_OK)
			fl__cli_error("--trust-key %s: %s", files[i],
				      st == FL_ERR_INVALID ? "not a file of PEM Ed25519 public keys"
				      : st == FL_ERR_NOT_FOUND ? "no such file"
							       : fl_status_str(st));
	}
	fl_config_list_free(files);
	return st == FL_OK;
}

/*
 * The root of the lines does not match the signed checkpoint: which line is
 * the first that differs? A prefix of m lines is genuine when a consistency
 * proof from m to the checkpoint's size holds for their root: a binary
 * search over m finds the first line after the longest genuine prefix.
 * 0 when it cannot tell (no leaves kept, a proof not fetched).
 */
static uint64_t first_bad_line(struct walk *w, const struct fl_checkpoint *latest)
{
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN], root[FL_HASH_LEN];
	uint64_t good = 0, bad = latest->tree_size; /* prefix good: 0; bad: all */
	size_t count;
	if (w->n_leaves != latest->tree_size)
		return 0;
	while (bad - good > 1) {
		uint64_t mid = good + (bad - good) / 2;
		struct fl_merkle_frontier f;
		fl_merkle_frontier_init(&f);
		for (uint64_t i = 0; i < mid; i++)
			fl_merkle_frontier_append(&f, w->leaves[i], NULL, NULL);
		fl_merkle_frontier_root(&f, root);
		if (!fetch_consistency(w->cli, mid, latest->tree_size, hashes, &count))
			return 0;
		if (fl_merkle_verify_consistency(mid, latest->tree_size, root, latest->root_hash,
						 (const uint8_t(*)[FL_HASH_LEN])hashes, count))
			good = mid;
		else
			bad = mid;
	}
	return bad; /* line `bad` (seq = its 1-based place) is the first that differs */
}

static int log_verify(struct fl_cli *cli)
{
	struct fl_checkpoint latest, old;
	struct fl_bundle_keys *keys = NULL;
	struct walk w = {.cli = cli};
	char error[240], *path = state_path(cli);
	uint8_t root[FL_HASH_LEN], hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count;
	int rc = FL_CLI_FAIL;

	if (!path || !fl__cli_token(cli, true))
		goto out;
	enum fl_status st = load_state(path, &old);
	if (st == FL_ERR_INVALID)
		goto out;
	bool have_old = st == FL_OK;
	w.old_size = have_old ? old.tree_size : 0;

	json_t *keys_doc = fl__cli_get_json(cli, cli->command_url, "/v1/keys", false, NULL);
	if (!keys_doc)
		goto out;
	st = fl_bundle_keys_parse(keys_doc, error, sizeof(error), &keys);
	json_decref(keys_doc);
	if (st != FL_OK) {
		fl__cli_error("GET /v1/keys: %s", st == FL_ERR_INVALID ? error : fl_status_str(st));
		goto out;
	}
	w.keys = keys;
	if (!load_trust(cli, &w.trust))
		goto out;
	if (!fetch_checkpoint(cli, "", &latest))
		goto out;
	if (have_old) {
		if (latest.tree_size < old.tree_size) {
			fl__cli_error("FAILED: the log shrank: its latest checkpoint has tree size "
				      "%" PRIu64 ", but tree size %" PRIu64
				      " was verified before (%s, %s)",
				      latest.tree_size, old.tree_size, old.timestamp, path);
			goto out;
		}
		if (!fetch_consistency(cli, old.tree_size, latest.tree_size, hashes, &count))
			goto out;
		if (!fl_merkle_verify_consistency(old.tree_size, latest.tree_size, old.root_hash,
						  latest.root_hash,
						  (const uint8_t(*)[FL_HASH_LEN])hashes, count)) {
			fl__cli_error("FAILED: the consistency proof from tree size %" PRIu64
				      " (verified before) to %" PRIu64
				      " does not verify: the log was rewritten",
				      old.tree_size, latest.tree_size);
			goto out;
		}
	}
	fl__cli_progress("verifying %" PRIu64 " lines against the checkpoint of %s",
			 latest.tree_size, latest.timestamp);
	fl_merkle_frontier_init(&w.frontier);
	if (!walk_log(&w, latest.tree_size))
		goto out;
	/* The keys are known now: the checkpoints must be signed by trusted ones. */
	if (fl_trust_checkpoint(w.trust, &latest, error, sizeof(error)) != FL_OK) {
		fl__cli_error("FAILED: the latest checkpoint: %s", error);
		goto out;
	}
	fl_merkle_frontier_root(&w.frontier, root);
	if (memcmp(root, latest.root_hash, FL_HASH_LEN) != 0) {
		uint64_t bad = first_bad_line(&w, &latest);
		if (bad)
			fl__cli_error("FAILED: log line %" PRIu64 ": not the line the signed "
				      "checkpoint of tree size %" PRIu64
				      " holds (the lines before it are; found with consistency "
				      "proofs)",
				      bad, latest.tree_size);
		else
			fl__cli_error("FAILED: the root of the %" PRIu64
				      " lines is not the root_hash of the signed checkpoint",
				      latest.tree_size);
		goto out;
	}
	if (have_old && fl_trust_checkpoint(w.trust, &old, error, sizeof(error)) != FL_OK) {
		fl__cli_error("FAILED: the checkpoint verified before (%s): %s", path, error);
		goto out;
	}
	if (have_old && (!w.have_old_root || memcmp(w.old_root, old.root_hash, FL_HASH_LEN) != 0)) {
		fl__cli_error("FAILED: the first %" PRIu64 " lines do not have the root verified "
			      "before: the log was rewritten",
			      old.tree_size);
		goto out;
	}
	if ((st = save_state(cli, path, &latest)) != FL_OK) {
		fl__cli_error("verified, but cannot write the state file %s: %s", path,
			      fl_status_str(st));
		goto out;
	}
	char root_hex[2 * FL_HASH_LEN + 1];
	fl_hex_encode(latest.root_hash, FL_HASH_LEN, root_hex);
	printf("OK: %" PRIu64 " lines verified; root %s signed at %s by key %s\n", latest.tree_size,
	       root_hex, latest.timestamp, latest.key_id);
	if (have_old)
		printf("OK: consistent with tree size %" PRIu64 " verified before\n",
		       old.tree_size);
	else
		printf("first verification: state saved to %s\n", path);
	rc = FL_CLI_OK;
out:
	free(w.leaves);
	fl_trust_destroy(w.trust);
	fl_bundle_keys_destroy(keys);
	free(path);
	return rc;
}

const struct fl_cli_command fl__cli_log_verify_command = {
    .group = "log",
    .sub = "verify",
    .args_usage = "",
    .summary = "verify command-svc's whole event log and that it only grew",
    .description =
	"Fetches every line of the event log (GET /v1/log, role auditor or replicator),\n"
	"the keys and the latest signed checkpoint. Checks each line (leaf hash,\n"
	"{\"seq\":N, prefix, and for a line of the first format its signature with the\n"
	"key of its key_id), that seqs run from 1 without gaps, and that the recomputed\n"
	"root is the checkpoint's (which proves every line of format v2). With a saved\n"
	"checkpoint from an earlier run (--state), checks that the log did not shrink\n"
	"and that a consistency proof from the old tree to the new one verifies; the\n"
	"new checkpoint is saved only when everything holds.\n"
	"\n"
	"Keys: the --trust-key keys are trusted; without any, the key that signed the\n"
	"first checkpoint (the first line, in a log of the first format) is (trust on\n"
	"first use, said in the output). Another key is trusted only when a key event\n"
	"introduces it with the line signature of a trusted key or under a checkpoint a\n"
	"trusted key signed. A line or checkpoint signed by any\n"
	"other key fails, naming the key, even when /v1/keys lists it.\n",
    .options = log_verify_options,
    .n_options = sizeof(log_verify_options) / sizeof(log_verify_options[0]),
    .run = log_verify,
};
