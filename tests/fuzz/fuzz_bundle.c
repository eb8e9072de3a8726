/*
 * The audit bundle's readers (cli/bundle.c), as `fledger audit verify` and
 * `fledger log verify` use them on files and answers from outside: a log
 * line (fl_bundle_line_parse), and, when the input is JSON, a checkpoint
 * (fl_bundle_checkpoint_from_json), its "consistency" or "hashes" proof or
 * the input itself as a proof (fl_bundle_hashes_from_json), and a keys
 * document (fl_bundle_keys_parse, fl_bundle_keys_merge; PEM keys go through
 * fl_pubkey_from_pem). What they accept is written back by the bundle's
 * writers and must read again the same.
 */
#include "fuzz.h"

#include "bundle.h"
#include "eventlog/merkle.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static void check_proof(const json_t *array)
{
	uint8_t hashes[FL_MERKLE_MAX_PROOF][FL_HASH_LEN];
	size_t count = 0;
	char why[256];
	if (fl_bundle_hashes_from_json(array, why, sizeof(why), hashes, &count))
		FUZZ_CHECK(count == json_array_size(array) && count <= FL_MERKLE_MAX_PROOF);
}

static void check_checkpoint(const json_t *doc)
{
	struct fl_checkpoint cp, again;
	char why[256], *line;
	if (!fl_bundle_checkpoint_from_json(doc, why, sizeof(why), &cp))
		return;
	int64_t us;
	FUZZ_CHECK(cp.tree_size >= 1 && strlen(cp.timestamp) < sizeof(cp.timestamp));
	FUZZ_CHECK(fl_time_parse(cp.timestamp, &us) == FL_OK);
	FUZZ_CHECK(fl_bundle_checkpoint_line(&cp, NULL, 0, &line) == FL_OK);
	json_t *reread = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
	FUZZ_CHECK(reread != NULL);
	FUZZ_CHECK(fl_bundle_checkpoint_from_json(reread, why, sizeof(why), &again));
	FUZZ_CHECK(again.tree_size == cp.tree_size &&
		   memcmp(again.root_hash, cp.root_hash, FL_HASH_LEN) == 0 &&
		   strcmp(again.timestamp, cp.timestamp) == 0 &&
		   strcmp(again.key_id, cp.key_id) == 0 &&
		   memcmp(again.sig, cp.sig, FL_SIG_LEN) == 0);
	json_decref(reread);
	free(line);
}

static void check_keys(const json_t *doc)
{
	struct fl_bundle_keys *keys;
	char why[256], *text;
	size_t len;
	if (fl_bundle_keys_parse(doc, why, sizeof(why), &keys) != FL_OK)
		return;
	size_t count = fl_bundle_keys_count(keys);
	for (size_t i = 0; i < count; i++) {
		uint8_t pub[FL_PUBKEY_LEN];
		FUZZ_CHECK(fl_bundle_keys_find(keys, fl_bundle_keys_id(keys, i), pub));
	}
	/* keys.json as written reads back as the same keys; merging adds none. */
	FUZZ_CHECK(fl_bundle_keys_json(keys, &text, &len) == FL_OK);
	json_t *reread = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	FUZZ_CHECK(reread != NULL);
	FUZZ_CHECK(fl_bundle_keys_merge(keys, reread, why, sizeof(why)) == FL_OK);
	FUZZ_CHECK(fl_bundle_keys_count(keys) == count);
	json_decref(reread);
	free(text);
	fl_bundle_keys_destroy(keys);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fl_bundle_line line;
	char why[256];
	enum fl_status st = fl_bundle_line_parse((const char *)data, size, why, sizeof(why), &line);
	FUZZ_CHECK(st == FL_OK || st == FL_ERR_INVALID || st == FL_ERR_NOMEM);
	if (st == FL_OK) {
		/* a key id on a line of the first format, none on a format v2 line */
		size_t key_len = strlen(line.key_id);
		FUZZ_CHECK(line.seq >= 1 && (key_len == 0 || key_len == 2 * FL_KEY_ID_LEN));
		fl_bundle_line_finish(&line);
	}

	json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (!doc)
		return 0;
	check_checkpoint(doc);
	check_proof(doc);
	check_proof(json_object_get(doc, "consistency"));
	check_proof(json_object_get(doc, "hashes"));
	check_keys(doc);
	json_decref(doc);
	return 0;
}
