/*
 * The audit bundle's own readers (cli/bundle.c), as `fledger audit verify`
 * and `fledger log verify` use them on files and answers from outside: the
 * time of a log line's body (fl_bundle_line_time, on a line that
 * fl_log_line_parse accepts), and, when the input is JSON, a keys document
 * (fl_bundle_keys_parse, fl_bundle_keys_merge; PEM keys go through
 * fl_pubkey_from_pem), which written back must read again the same. Lines,
 * checkpoints and proofs are eventlog/format.h's: fuzz_format.
 */
#include "fuzz.h"

#include "bundle.h"
#include "eventlog/format.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
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
	struct fl_log_line line;
	char why[256];
	enum fl_status st = fl_log_line_parse((const char *)data, size, why, sizeof(why), &line);
	if (st == FL_OK) {
		int64_t us;
		for (int log = FL_BUNDLE_LOG_EVENTS; log <= FL_BUNDLE_LOG_READS; log++) {
			if (fl_bundle_line_time(&line, (enum fl_bundle_log)log, why, sizeof(why),
						&us)) {
				char again[FL_TIME_TEXT_LEN];
				fl_time_format(us, again); /* the fixed form: it reads back */
				FUZZ_CHECK(fl_time_parse(again, &us) == FL_OK);
			}
		}
		fl_log_line_finish(&line);
	}

	json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (!doc)
		return 0;
	check_keys(doc);
	json_decref(doc);
	return 0;
}
