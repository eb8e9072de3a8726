/*
 * RFC 3339 timestamps (fl_time_parse: event_ts, as_of, from/to) and
 * durations (fl_duration_parse: view windows, max_age, retention). A time
 * it accepts within years 0000..9999 must format and parse back to itself.
 */
#include "fuzz.h"

static int64_t time_min_us, time_max_us;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	FUZZ_CHECK(fl_time_parse("0000-01-01T00:00:00Z", &time_min_us) == FL_OK);
	FUZZ_CHECK(fl_time_parse("9999-12-31T23:59:59.999999Z", &time_max_us) == FL_OK);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_text(data, size), formatted[FL_TIME_TEXT_LEN];
	int64_t us, again;
	if (fl_time_parse(text, &us) == FL_OK) {
		fl_time_format(us, formatted);
		FUZZ_CHECK(strlen(formatted) == FL_TIME_TEXT_LEN - 1);
		FUZZ_CHECK(fl_time_parse(formatted, &again) == FL_OK);
		if (us >= time_min_us && us <= time_max_us)
			FUZZ_CHECK(again == us);
	}
	if (fl_duration_parse(text, &us) == FL_OK)
		FUZZ_CHECK(us > 0);
	/* Any 8 bytes as a time formats to text that parses. */
	if (size >= 8) {
		int64_t raw;
		memcpy(&raw, data, sizeof(raw));
		fl_time_format(raw, formatted);
		FUZZ_CHECK(fl_time_parse(formatted, &again) == FL_OK);
	}
	free(text);
	return 0;
}
