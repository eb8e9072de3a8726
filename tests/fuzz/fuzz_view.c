/*
 * View definitions (POST /v1/views and stored view events): fl_view_parse.
 * A definition it accepts must have a canonical form that parses again to
 * an identical view with the same bytes, and the view must compare as
 * identical to itself.
 */
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *definition = fuzz_json_object(data, size);
	if (!definition)
		return 0;
	struct fl_view *view, *again;
	struct fl_error err;
	fl_error_clear(&err);
	enum fl_status st = fl_view_parse(definition, &view, &err);
	json_decref(definition);
	if (st != FL_OK) {
		FUZZ_CHECK(st == FL_ERR_INVALID);
		fuzz_check_error(&err);
		return 0;
	}
	const char *canonical, *canonical_again;
	size_t len, len_again;
	fl_view_canonical(view, &canonical, &len);
	FUZZ_CHECK(strlen(canonical) == len);
	json_t *reread = json_loadb(canonical, len, JSON_REJECT_DUPLICATES, NULL);
	FUZZ_CHECK(reread != NULL);
	FUZZ_CHECK(fl_view_parse(reread, &again, &err) == FL_OK);
	json_decref(reread);
	fl_view_canonical(again, &canonical_again, &len_again);
	FUZZ_CHECK(len == len_again && memcmp(canonical, canonical_again, len) == 0);
	FUZZ_CHECK(fl_view_compare(view, again, NULL) == FL_VIEW_IDENTICAL);
	json_t *shown = fl_view_to_json(view, false);
	FUZZ_CHECK(shown != NULL);
	json_decref(shown);
	fl_view_unref(again);
	fl_view_unref(view);
	return 0;
}
