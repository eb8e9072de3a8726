/*
 * The log's wire formats (eventlog/format.h), which every reader of lines,
 * checkpoints and proofs calls on bytes from outside (NATS, command-svc's
 * answers, bundle files, receipts): fl_log_line_parse, fl_checkpoint_parse
 * and _parse_with, fl_inclusion_proof_parse, fl_consistency_proof_parse and
 * fl_proof_hashes_parse, each on the whole input. What a parser accepts,
 * its writer prints again, and that text reads back the same.
 */
#include "fuzz.h"

#include "eventlog/format.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static void check_line(const char *text, size_t size)
{
	struct fl_log_line line, again;
	struct fl_log_entry entry;
	char why[256], *written;
	size_t len;
	enum fl_status st = fl_log_line_parse(text, size, why, sizeof(why), &line);
	FUZZ_CHECK(st == FL_OK || st == FL_ERR_INVALID || st == FL_ERR_NOMEM);
	if (st != FL_OK)
		return;
	FUZZ_CHECK(line.seq >= 1);
	FUZZ_CHECK(strlen(line.key_id) == (line.has_sig ? 2 * FL_KEY_ID_LEN : 0));
	(void)fl_log_line_holds(&line, why, sizeof(why));
	fl_log_line_entry(&line, &entry);
	FUZZ_CHECK(fl_log_entry_line(&entry, &written, &len) == FL_OK);
	FUZZ_CHECK(fl_log_line_parse(written, len, why, sizeof(why), &again) == FL_OK);
	FUZZ_CHECK(again.seq == line.seq && again.body_len == line.body_len &&
		   (line.body_len == 0 || memcmp(again.body, line.body, line.body_len) == 0) &&
		   memcmp(again.leaf_hash, line.leaf_hash, FL_HASH_LEN) == 0 &&
		   again.has_sig == line.has_sig && strcmp(again.key_id, line.key_id) == 0 &&
		   memcmp(again.sig, line.sig, FL_SIG_LEN) == 0);
	fl_log_line_finish(&again);
	fl_log_line_finish(&line);
	free(written);
}

static void check_checkpoint(const struct fl_checkpoint *cp)
{
	struct fl_checkpoint again;
	char why[256], *json;
	int64_t us;
	FUZZ_CHECK(cp->tree_size >= 1 && strlen(cp->timestamp) == FL_CHECKPOINT_TIMESTAMP_LEN);
	FUZZ_CHECK(fl_time_parse(cp->timestamp, &us) == FL_OK);
	FUZZ_CHECK(fl_checkpoint_json(cp, &json) == FL_OK);
	FUZZ_CHECK(fl_checkpoint_parse(json, strlen(json), why, sizeof(why), &again) == FL_OK);
	FUZZ_CHECK(again.tree_size == cp->tree_size &&
		   memcmp(again.root_hash, cp->root_hash, FL_HASH_LEN) == 0 &&
		   strcmp(again.timestamp, cp->timestamp) == 0 &&
		   strcmp(again.key_id, cp->key_id) == 0 &&
		   memcmp(again.sig, cp->sig, FL_SIG_LEN) == 0);
	free(json);
}

static void check_hashes(const char *text, size_t size)
{
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN], again[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count, count_again;
	char why[256];
	if (fl_proof_hashes_parse(text, size, why, sizeof(why), hashes, &count) != FL_OK)
		return;
	FUZZ_CHECK(count <= FL_MERKLE_MAX_PROOF);
	struct fl_text written = FL_TEXT_INIT;
	fl_proof_hashes_write(&written, (const uint8_t(*)[FL_HASH_LEN])hashes, count);
	FUZZ_CHECK(!written.failed);
	FUZZ_CHECK(fl_proof_hashes_parse(written.data, written.len, why, sizeof(why), again,
					 &count_again) == FL_OK);
	FUZZ_CHECK(count_again == count && memcmp(again, hashes, count * FL_HASH_LEN) == 0);
	fl_text_free(&written);
}

static void check_proofs(const char *text, size_t size)
{
	struct fl_inclusion_proof inclusion, inclusion_again;
	struct fl_consistency_proof consistency, consistency_again;
	char why[256], *json;
	if (fl_inclusion_proof_parse(text, size, why, sizeof(why), &inclusion) == FL_OK) {
		FUZZ_CHECK(inclusion.leaf_index < inclusion.tree_size);
		FUZZ_CHECK(fl_inclusion_proof_json(inclusion.leaf_index, inclusion.tree_size,
						   (const uint8_t(*)[FL_HASH_LEN])inclusion.hashes,
						   inclusion.count, &json) == FL_OK);
		FUZZ_CHECK(fl_inclusion_proof_parse(json, strlen(json), why, sizeof(why),
						    &inclusion_again) == FL_OK);
		FUZZ_CHECK(inclusion_again.count == inclusion.count &&
			   memcmp(inclusion_again.hashes, inclusion.hashes,
				  inclusion.count * FL_HASH_LEN) == 0);
		free(json);
	}
	if (fl_consistency_proof_parse(text, size, why, sizeof(why), &consistency) == FL_OK) {
		FUZZ_CHECK(consistency.first >= 1 && consistency.first <= consistency.second);
		FUZZ_CHECK(
		    fl_consistency_proof_json(consistency.first, consistency.second,
					      (const uint8_t(*)[FL_HASH_LEN])consistency.hashes,
					      consistency.count, &json) == FL_OK);
		FUZZ_CHECK(fl_consistency_proof_parse(json, strlen(json), why, sizeof(why),
						      &consistency_again) == FL_OK);
		FUZZ_CHECK(consistency_again.count == consistency.count &&
			   memcmp(consistency_again.hashes, consistency.hashes,
				  consistency.count * FL_HASH_LEN) == 0);
		free(json);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Exactly size bytes, as an NDJSON split or an HTTP body gives them. */
	char *text = malloc(size ? size : 1);
	FUZZ_CHECK(text != NULL);
	memcpy(text, data, size);

	check_line(text, size);

	struct fl_checkpoint cp;
	char why[256];
	const char *extra;
	size_t extra_len;
	if (fl_checkpoint_parse(text, size, why, sizeof(why), &cp) == FL_OK)
		check_checkpoint(&cp);
	if (fl_checkpoint_parse_with(text, size, "consistency", why, sizeof(why), &cp, &extra,
				     &extra_len) == FL_OK) {
		FUZZ_CHECK(extra >= text && extra + extra_len <= text + size);
		check_checkpoint(&cp);
		check_hashes(extra, extra_len);
	}
	check_proofs(text, size);
	check_hashes(text, size);
	free(text);
	return 0;
}
