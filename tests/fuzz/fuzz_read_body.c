/*
 * query-svc's read bodies: POST /get-online-features (Feast; parse_feast)
 * and POST /v1/features:batch (parse_batch), from query-svc/routes.c, over
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
		struct read_job *job = read_job("/get-online-features", READ_FEAST, principals[p]);
		fl_error_clear(&err);
		if (parse_feast(job, body, &err)) {
			check_parsed(job);
			FUZZ_CHECK(job->n_columns >= 1 && json_is_array(job->entity_values));
			for (size_t c = 0; c < job->n_columns; c++)
				FUZZ_CHECK(job->columns[c].part < job->n_parts);
		} else {
			fuzz_check_error(&err);
		}
		job_destroy(job);

		job = read_job("/v1/features:batch", READ_BATCH, principals[p]);
		fl_error_clear(&err);
		if (parse_batch(job, body, &err)) {
			check_parsed(job);
			FUZZ_CHECK(job->n_parts == 1 && job->n_entities <= READ_BATCH_MAX);
		} else {
			fuzz_check_error(&err);
		}
		job_destroy(job);
	}
	json_decref(body);
	return 0;
}
