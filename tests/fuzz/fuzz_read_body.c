/*
 * query-svc's read bodies: POST /get-online-features (Feast;
 * fl_read_plan_feast) and POST /v1/features:batch (fl_read_plan_batch),
 * from query-svc/read_plan.c, over
 * the example views, for a restricted reader and for admin. Answering the
 * read needs the projection's data and the HTTP connection; parsing is
 * everything a client's bytes reach before that.
 */
#include "fuzz_read_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	read_setup();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *body = fuzz_json_object(data, size);
	if (!body)
		return 0;
	for (size_t p = 0; p < 2; p++) {
		struct fl_error err;
		struct fl_read_plan plan;
		read_plan(&plan, FL_READ_FEAST, principals[p]);
		fl_error_clear(&err);
		if (fl_read_plan_feast(&plan, body, &err)) {
			check_parsed(&plan);
			FUZZ_CHECK(plan.n_columns >= 1 && json_is_array(plan.entity_values));
			for (size_t c = 0; c < plan.n_columns; c++)
				FUZZ_CHECK(plan.columns[c].part < plan.n_parts);
		} else {
			fuzz_check_error(&err);
		}
		fl_read_plan_finish(&plan);

		read_plan(&plan, FL_READ_BATCH, principals[p]);
		fl_error_clear(&err);
		if (fl_read_plan_batch(&plan, body, &err)) {
			check_parsed(&plan);
			FUZZ_CHECK(plan.n_parts == 1 && plan.n_entities <= FL_READ_BATCH_MAX);
		} else {
			fuzz_check_error(&err);
		}
		fl_read_plan_finish(&plan);
	}
	json_decref(body);
	return 0;
}
