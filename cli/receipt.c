/*
 * fledger receipt verify: checks the receipts `fledger write --receipt`
 * kept (CONTRACT §3) offline. Each receipt is the answer to one write:
 * {"results": [{"seq", "leaf_hash", "duplicate", "proof": {"leaf_index",
 * "tree_size", "hashes"}}], "tree_size", "checkpoint": {...}}. A result is
 * proven when its proof folds its leaf hash up to the checkpoint's root
 * (RFC 9162 §2.1.3.2) and the checkpoint's signature verifies under a
 * --key key.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bundle.h"
#include "cli.h"
#include "eventlog/eventlog.h"
#include "eventlog/format.h"
#include "eventlog/merkle.h"
#include "eventlog/trust.h"
#include "fledger/util.h"

static const struct fl_config_option receipt_verify_options[] = {
    {"key", "FLEDGER_RECEIPT_KEY", NULL,
     "PEM public key of command-svc that may sign the checkpoints (repeatable; the variable "
     "is a list split at , or :)",
     false},
};

/*
 * A member of a receipt as JSON text (caller frees), for the parsers of
 * eventlog/format.h; NULL when it is absent or out of memory.
 */
static char *member_text(const json_t *obj, const char *name, size_t *ret_len)
{
	const json_t *member = json_object_get(obj, name);
	char *text = member ? json_dumps(member, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	if (text)
		*ret_len = strlen(text);
	return text;
}

/* Checks one result of a receipt against its verified checkpoint. */
static bool check_result(const json_t *result, const struct fl_checkpoint *checkpoint, char *error,
			 size_t error_size)
{
	uint8_t leaf[FL_HASH_LEN];
	struct fl_inclusion_proof proof;
	char reason[160];
	size_t proof_len = 0;
	json_int_t seq = json_integer_value(json_object_get(result, "seq"));
	const char *leaf_hex = json_string_value(json_object_get(result, "leaf_hash"));

	if (seq < 1 || !leaf_hex || strlen(leaf_hex) != 2 * FL_HASH_LEN ||
	    fl_hex_decode(leaf_hex, leaf, FL_HASH_LEN) != FL_OK) {
		snprintf(error, error_size, "a result without a seq >= 1 and a leaf_hash");
		return false;
	}
	if (!json_is_object(json_object_get(result, "proof"))) {
		snprintf(error, error_size,
			 "seq %" PRIu64 ": no proof (write with --receipt, which asks for them)",
			 (uint64_t)seq);
		return false;
	}
	char *proof_text = member_text(result, "proof", &proof_len);
	enum fl_status st = proof_text ? fl_inclusion_proof_parse(proof_text, proof_len, reason,
								  sizeof(reason), &proof)
				       : FL_ERR_NOMEM;
	free(proof_text);
	if (st != FL_OK) {
		snprintf(error, error_size, "seq %" PRIu64 ": proof: %s", (uint64_t)seq,
			 st == FL_ERR_NOMEM ? "out of memory" : reason);
		return false;
	}
	if (proof.leaf_index != (uint64_t)seq - 1 || proof.tree_size != checkpoint->tree_size) {
		snprintf(error, error_size,
			 "seq %" PRIu64 ": the proof is for leaf index %" PRIu64
			 " in tree size %" PRIu64 ", not %" PRIu64 " in the checkpoint's %" PRIu64,
			 (uint64_t)seq, proof.leaf_index, proof.tree_size, (uint64_t)seq - 1,
			 checkpoint->tree_size);
		return false;
	}
	if (!fl_merkle_verify_inclusion(leaf, proof.leaf_index, proof.tree_size,
					(const uint8_t(*)[FL_HASH_LEN])proof.hashes, proof.count,
					checkpoint->root_hash)) {
		snprintf(error, error_size,
			 "seq %" PRIu64 ": the proof does not lead from its leaf_hash to the "
			 "checkpoint's root_hash",
			 (uint64_t)seq);
		return false;
	}
	return true;
}

/* Checks one receipt (one line of the file). */
static bool check_receipt(const char *text, size_t len, const struct fl_trust *keys,
			  uint64_t *ret_results, char *error, size_t error_size)
{
	struct fl_checkpoint checkpoint;
	json_error_t jerr;
	char reason[240];
	bool ok = false;
	json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	const json_t *results = json_object_get(doc, "results");

	if (!json_is_object(doc) || !json_is_array(results) || json_array_size(results) == 0) {
		snprintf(error, error_size, "not a write answer with results");
		goto out;
	}
	size_t cp_len = 0;
	char *cp_text = member_text(doc, "checkpoint", &cp_len);
	snprintf(reason, sizeof(reason), "%s", cp_text ? "" : "missing");
	enum fl_status st =
	    cp_text ? fl_checkpoint_parse(cp_text, cp_len, reason, sizeof(reason), &checkpoint)
		    : FL_ERR_INVALID;
	free(cp_text);
	if (st != FL_OK) {
		snprintf(error, error_size, "checkpoint: %s", reason);
		goto out;
	}
	const uint8_t *pub = fl_trust_find(keys, checkpoint.key_id);
	if (!pub) {
		snprintf(error, error_size,
			 "the checkpoint of tree size %" PRIu64 " is signed by key %s, which no "
			 "--key is",
			 checkpoint.tree_size, checkpoint.key_id);
		goto out;
	}
	if (!fl_checkpoint_verify(FL_CHECKPOINT_PREFIX, &checkpoint, pub)) {
		snprintf(error, error_size,
			 "the signature of the checkpoint of tree size %" PRIu64
			 " does not verify under key %s",
			 checkpoint.tree_size, checkpoint.key_id);
		goto out;
	}
	size_t i;
	json_t *result;
	json_array_foreach(results, i, result)
	{
		if (!check_result(result, &checkpoint, error, error_size))
			goto out;
	}
	*ret_results += json_array_size(results);
	ok = true;
out:
	json_decref(doc);
	return ok;
}

static int receipt_verify(struct fl_cli *cli)
{
	const char *path = cli->args[0];
	struct fl_trust *keys = NULL;
	char **files = NULL, *text = NULL, error[320];
	size_t n_files = 0, len;
	uint64_t receipts = 0, results = 0;
	int rc = FL_CLI_FAIL;

	enum fl_status st = fl_trust_create(&keys);
	if (st == FL_OK)
		st = fl_config_get_list(cli->config, "key", ",:", &files, &n_files);
	if (st == FL_OK && n_files == 0) {
		fl__cli_error("--key is required: the public key of command-svc that signs the "
			      "checkpoints");
		rc = FL_CLI_USAGE;
		goto out;
	}
	for (size_t i = 0; st == FL_OK && i < n_files; i++) {
		st = fl_trust_load_file(keys, files[i]);
		if (st != FL_OK) {
			fl__cli_error("--key %s: %s", files[i],
				      st == FL_ERR_INVALID ? "not a file of PEM Ed25519 public keys"
				      : st == FL_ERR_NOT_FOUND ? "no such file"
							       : fl_status_str(st));
			goto out;
		}
	}
	if (st != FL_OK) {
		fl__cli_error("%s", fl_status_str(st));
		goto out;
	}
	st = fl__cli_read_input(path, &text, &len);
	if (st != FL_OK) {
		fl__cli_error("cannot read %s: %s", path, fl_status_str(st));
		goto out;
	}
	size_t line_no = 0;
	for (char *line = text, *end = text + len; line < end;) {
		char *nl = memchr(line, '\n', (size_t)(end - line));
		size_t line_len = (size_t)((nl ? nl : end) - line);
		line_no++;
		if (line_len > 0) {
			if (!check_receipt(line, line_len, keys, &results, error, sizeof(error))) {
				fl__cli_error("FAILED: %s:%zu: %s", path, line_no, error);
				goto out;
			}
			receipts++;
		}
		line = nl ? nl + 1 : end;
	}
	if (receipts == 0) {
		fl__cli_error("FAILED: %s holds no receipt", path);
		goto out;
	}
	printf("OK: %" PRIu64 " events in %" PRIu64
	       " receipts are in the trees of their signed checkpoints\n",
	       results, receipts);
	rc = FL_CLI_OK;
out:
	fl_config_list_free(files);
	fl_trust_destroy(keys);
	free(text);
	return rc;
}

const struct fl_cli_command fl__cli_receipt_verify_command = {
    .group = "receipt",
    .sub = "verify",
    .args_usage = "FILE",
    .summary = "check write receipts offline (fledger write --receipt)",
    .description =
	"Checks, without any service, the receipts that `fledger write --receipt FILE`\n"
	"kept: one write answer a line, each with the signed checkpoint of its commit and\n"
	"an inclusion proof per event. For each event, the proof must lead from its\n"
	"leaf_hash (SHA-256 of 0x00 and the stored event body) to the checkpoint's\n"
	"root_hash (RFC 9162), and the checkpoint's signature must verify under a --key\n"
	"key. Names the first bad item and exits 1. To tie a receipt to a body, fetch\n"
	"the line (GET /v1/log?from_seq=SEQ&limit=1) and compare its leaf_hash.\n",
    .options = receipt_verify_options,
    .n_options = sizeof(receipt_verify_options) / sizeof(receipt_verify_options[0]),
    .min_args = 1,
    .max_args = 1,
    .run = receipt_verify,
    .offline = true,
};
