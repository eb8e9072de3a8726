/*
 * query-svc's replica reader (query-svc/sync.c, included here for its
 * static parsers): line_parse, which reads the NDJSON lines of GET /v1/log
 * and NATS messages with the member scanner, line_consistent, and
 * checkpoint_parse (GET /v1/log/checkpoint). The input is one line or one
 * checkpoint. A line the audit bundle's strict reader accepts (and that has
 * no JSON escapes and no NUL bytes, which the log never writes) must read
 * the same here.
 */
#include "../../query-svc/sync.c"

#include "bundle.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Exactly size bytes, as the NATS message or the ndjson split gives them. */
	char *text = malloc(size ? size : 1);
	FUZZ_CHECK(text != NULL);
	memcpy(text, data, size);

	struct line *line = NULL;
	enum fl_status st = line_parse(text, size, &line);
	FUZZ_CHECK(st == FL_OK || st == FL_ERR_INVALID || st == FL_ERR_NOMEM);
	if (st == FL_OK) {
		/* a line of the first format has a key id; a format v2 line none */
		FUZZ_CHECK(line->seq >= 1 &&
			   strlen(line->key_id) == (line->has_sig ? 2 * FL_KEY_ID_LEN : 0));
		(void)line_consistent(line);
		FUZZ_CHECK(line_same(line, line));
	}

	struct fl_bundle_line strict;
	char why[256];
	/* jansson skips a NUL byte between tokens ({"seq":1\0,...} reads), the
	 * scanner refuses it: only inputs without NULs are compared. */
	if (!memchr(text, '\\', size) && !memchr(text, '\0', size) &&
	    fl_bundle_line_parse(text, size, why, sizeof(why), &strict) == FL_OK) {
		FUZZ_CHECK(st == FL_OK);
		FUZZ_CHECK(line->seq == strict.seq && line->body_len == strict.body_len);
		FUZZ_CHECK(strict.body_len == 0 ||
			   memcmp(line->body, strict.body, strict.body_len) == 0);
		FUZZ_CHECK(memcmp(line->leaf_hash, strict.leaf_hash, FL_HASH_LEN) == 0);
		FUZZ_CHECK(memcmp(line->sig, strict.sig, FL_SIG_LEN) == 0);
		FUZZ_CHECK(strcmp(line->key_id, strict.key_id) == 0);
		fl_bundle_line_finish(&strict);
	}
	line_free(line);

	struct fl_checkpoint cp;
	if (checkpoint_parse(text, size, &cp)) {
		int64_t us;
		FUZZ_CHECK(strlen(cp.timestamp) == sizeof(cp.timestamp) - 1);
		FUZZ_CHECK(fl_time_parse(cp.timestamp, &us) == FL_OK);
		FUZZ_CHECK(strlen(cp.key_id) == 2 * FL_KEY_ID_LEN);
	}
	free(text);
	return 0;
}
