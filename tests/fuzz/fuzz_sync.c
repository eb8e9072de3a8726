/*
 * query-svc's replica reader (query-svc/sync.c, included here for its
 * static functions): line_parse, which reads the NDJSON lines of GET
 * /v1/log and NATS messages with fl_log_line_parse and takes the body's
 * ingest_ts, line_consistent and line_same. The input is one line. (The
 * line and checkpoint parsers themselves are fuzzed by fuzz_format.)
 */
#include "../../query-svc/sync.c"

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
		FUZZ_CHECK(line->parsed.seq >= 1 &&
			   strlen(line->parsed.key_id) ==
			       (line->parsed.has_sig ? 2 * FL_KEY_ID_LEN : 0));
		FUZZ_CHECK(line_consistent(line) == fl_log_line_holds(&line->parsed, NULL, 0));
		FUZZ_CHECK(line_same(line, line));
		FUZZ_CHECK(line->time_us == 0 || line->parsed.body_len > 0);
	}
	line_free(line);
	free(text);
	return 0;
}
