/*
 * Feast's POST /push: fl_event_feast_push_validate over the example views.
 * Every row it accepts must be a complete event of the view it names.
 */
#include "fuzz.h"

#include "fledger/event.h"

static struct fl_view_registry *registry;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	registry = fuzz_example_registry();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *push = fuzz_json_object(data, size);
	if (!push)
		return 0;
	struct fl_event *events = NULL;
	size_t count = 0;
	struct fl_error err;
	fl_error_clear(&err);
	enum fl_status st = fl_event_feast_push_validate(
	    push, registry, "clicks-pipeline", FUZZ_INGEST_US, FUZZ_SKEW_US, &events, &count, &err);
	if (st == FL_OK) {
		FUZZ_CHECK(count >= 1 && count <= FL_EVENT_BATCH_MAX);
		for (size_t i = 0; i < count; i++) {
			char *tail;
			size_t len;
			FUZZ_CHECK(events[i].view != NULL && events[i].entity_id[0] != '\0');
			FUZZ_CHECK(fl_event_body_tail(&events[i], &tail, &len) == FL_OK);
			free(tail);
		}
		fl_event_array_free(events, count);
	} else {
		FUZZ_CHECK(st == FL_ERR_INVALID || st == FL_ERR_NOT_FOUND);
		fuzz_check_error(&err);
	}
	/* The conversion alone, as the contract describes it. */
	json_t *converted = NULL;
	fl_error_clear(&err);
	if (fl_event_feast_push_convert(push, registry, &converted, &err) == FL_OK) {
		FUZZ_CHECK(json_is_array(converted));
		json_decref(converted);
	} else {
		fuzz_check_error(&err);
	}
	json_decref(push);
	return 0;
}
