/*
 * What query-svc reads from a URL (query-svc/read_plan.c): the route's path
 * (fl_read_path_rest, then fl_read_plan_one and fl_read_plan_history for
 * /v1/features/<input> and /v1/history/<input>), comma-separated feature
 * and window lists (fl_read_plan_names), timestamps as they arrive in a
 * query string (fl_read_parse_time, where a zone's '+' came as a space) and
 * unsigned parameters (fl_svc_parse_u64). libmicrohttpd splits and
 * unescapes the query string itself; without parameters, the plan parsers
 * see only the path here.
 */
#include "fuzz_read_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	read_setup();
	return 0;
}

static void check_path(const char *prefix, const char *text, enum fl_read_kind kind,
		       const struct fl_principal *principal)
{
	size_t len = strlen(prefix) + strlen(text);
	char *path = malloc(len + 1);
	FUZZ_CHECK(path != NULL);
	snprintf(path, len + 1, "%s%s", prefix, text);
	const char *rest = fl_read_path_rest(path, prefix);
	if (rest) {
		struct fl_error err;
		struct fl_read_plan plan;
		read_plan(&plan, kind, principal);
		fl_error_clear(&err);
		if (kind == FL_READ_ONE ? fl_read_plan_one(&plan, rest, NULL, &err)
					: fl_read_plan_history(&plan, rest, NULL, &err))
			check_parsed(&plan);
		else
			fuzz_check_error(&err);
		fl_read_plan_finish(&plan);
	}
	free(path);
}

static void check_names(const char *text, bool windows, const struct fl_principal *principal)
{
	struct fl_error err;
	struct fl_read_plan plan;
	size_t index;
	read_plan(&plan, FL_READ_ONE, principal);
	fl_error_clear(&err);
	FUZZ_CHECK(fl_read_plan_add_view(&plan, "user_activity", NULL, &index, &err));
	if (fl_read_plan_names(&plan, index, text, windows, &err)) {
		FUZZ_CHECK(plan.parts[index].n_features <=
			   fl_view_feature_count(plan.parts[index].view));
		FUZZ_CHECK(plan.parts[index].n_windows <=
			   fl_view_window_count(plan.parts[index].view));
	} else {
		fuzz_check_error(&err);
	}
	fl_read_plan_finish(&plan);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_text(data, size);
	for (size_t p = 0; p < 2; p++) {
		check_path("/v1/features/", text, FL_READ_ONE, principals[p]);
		check_path("/v1/history/", text, FL_READ_HISTORY, principals[p]);
		check_names(text, false, principals[p]);
		check_names(text, true, principals[p]);
	}
	struct fl_error err;
	int64_t us, strict_us;
	fl_error_clear(&err);
	bool strict = fl_read_parse_time(text, "as_of", false, &strict_us, &err);
	if (fl_read_parse_time(text, "as_of", true, &us, &err))
		FUZZ_CHECK(!strict || us == strict_us);
	else
		FUZZ_CHECK(!strict);
	uint64_t v;
	if (fl_svc_parse_u64(text, 0, INT64_MAX, &v))
		FUZZ_CHECK(v <= INT64_MAX && text[0] >= '0' && text[0] <= '9');
	free(text);
	return 0;
}
