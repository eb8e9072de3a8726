/*
 * Stored bodies as the replica, the read models and the CLI read them back
 * (fl_stored_event_parse): a log line's body, after its hash checked out,
 * is still bytes from command-svc.
 */
#include "fuzz.h"

#include "fledger/event.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fl_stored_event event;
	enum fl_status st = fl_stored_event_parse(data, size, &event);
	if (st != FL_OK) {
		FUZZ_CHECK(st == FL_ERR_CORRUPT || st == FL_ERR_NOMEM);
		return 0;
	}
	FUZZ_CHECK(event.seq >= 1 && event.root != NULL);
	if (event.kind == FL_BODY_FEATURE) {
		FUZZ_CHECK(event.view_name && event.entity_id && event.producer);
		FUZZ_CHECK(json_is_object(event.features));
	} else if (event.kind == FL_BODY_VIEW) {
		FUZZ_CHECK(event.view != NULL && event.version >= 1);
		FUZZ_CHECK(fl_view_version(event.view) == 0 ||
			   fl_view_version(event.view) == event.version);
	}
	fl_stored_event_finish(&event);
	return 0;
}
