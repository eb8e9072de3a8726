/*
 * What query-svc reads from a URL (query-svc/routes.c): the route's path
 * (view_entity_rest, then parse_one and parse_history for
 * /v1/features/<input> and /v1/history/<input>), comma-separated feature
 * and window lists (names_from_text), timestamps as they arrive in a query
 * string (parse_time, where a zone's '+' came as a space) and unsigned
 * parameters (fl_svc_parse_u64). libmicrohttpd splits and unescapes the
 * query string itself; a NULL request has no parameters, so parse_one and
 * parse_history see only the path here.
 */
#include "fuzz_read_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	read_setup();
	return 0;
}

static void check_path(const char *prefix, const char *text, enum read_kind kind,
		       const struct fl_principal *principal)
{
	size_t len = strlen(prefix) + strlen(text);
	char *path = malloc(len + 1);
	FUZZ_CHECK(path != NULL);
	snprintf(path, len + 1, "%s%s", prefix, text);
	const char *rest = view_entity_rest(path, prefix);
	if (rest) {
		struct fl_error err;
		struct read_job *job = read_job(prefix, kind, principal);
		fl_error_clear(&err);
		if (kind == READ_ONE ? parse_one(job, rest, &err) : parse_history(job, rest, &err))
			check_parsed(job);
		else
			fuzz_check_error(&err);
		job_destroy(job);
	}
	free(path);
}

static void check_names(const char *text, bool windows, const struct fl_principal *principal)
{
	struct fl_error err;
	size_t index;
	struct read_job *job = read_job("names", READ_ONE, principal);
	fl_error_clear(&err);
	FUZZ_CHECK(add_part(job, "user_activity", NULL, &index, &err));
	if (names_from_text(job, &job->parts[index], text, windows, &err)) {
		FUZZ_CHECK(job->parts[index].n_features <=
			   fl_view_feature_count(job->parts[index].view));
		FUZZ_CHECK(job->parts[index].n_windows <=
			   fl_view_window_count(job->parts[index].view));
	} else {
		fuzz_check_error(&err);
	}
	job_destroy(job);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_text(data, size);
	for (size_t p = 0; p < 2; p++) {
		check_path("/v1/features/", text, READ_ONE, principals[p]);
		check_path("/v1/history/", text, READ_HISTORY, principals[p]);
		check_names(text, false, principals[p]);
		check_names(text, true, principals[p]);
	}
	struct fl_error err;
	int64_t us, strict_us;
	fl_error_clear(&err);
	bool strict = parse_time(text, "as_of", false, &strict_us, &err);
	if (parse_time(text, "as_of", true, &us, &err))
		FUZZ_CHECK(!strict || us == strict_us);
	else
		FUZZ_CHECK(!strict);
	uint64_t v;
	if (fl_svc_parse_u64(text, 0, INT64_MAX, &v))
		FUZZ_CHECK(v <= INT64_MAX && text[0] >= '0' && text[0] <= '9');
	free(text);
	return 0;
}
