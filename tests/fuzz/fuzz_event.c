/*
 * POST /v1/events: fl_event_validate_request over the example views. Every
 * event it accepts must become a stored body that fl_stored_event_parse
 * reads back with the same view, entity, times, producer and key.
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

/* The stored body of a validated event reads back as that event. */
static void check_round_trip(const struct fl_event *event)
{
	char *tail, *body;
	size_t tail_len;
	struct fl_stored_event stored;
	FUZZ_CHECK(fl_event_body_tail(event, &tail, &tail_len) == FL_OK);
	FUZZ_CHECK(strlen(tail) == tail_len);
	size_t body_len = tail_len + sizeof("{\"seq\":7,}") - 1;
	body = malloc(body_len + 1);
	FUZZ_CHECK(body != NULL);
	snprintf(body, body_len + 1, "{\"seq\":7,%s}", tail);
	FUZZ_CHECK(fl_stored_event_parse(body, body_len, &stored) == FL_OK);
	FUZZ_CHECK(stored.kind == FL_BODY_FEATURE && stored.seq == 7);
	FUZZ_CHECK(strcmp(stored.view_name, fl_view_name(event->view)) == 0);
	FUZZ_CHECK(strcmp(stored.entity_id, event->entity_id) == 0);
	FUZZ_CHECK(stored.event_ts_us == event->event_ts_us);
	FUZZ_CHECK(stored.ingest_ts_us == event->ingest_ts_us);
	FUZZ_CHECK(strcmp(stored.producer, event->producer) == 0);
	FUZZ_CHECK(event->has_idempotency_key
		       ? stored.idempotency_key &&
			     strcmp(stored.idempotency_key, event->idempotency_key) == 0
		       : stored.idempotency_key == NULL);
	FUZZ_CHECK(json_object_size(stored.features) == json_object_size(event->features));
	fl_stored_event_finish(&stored);
	free(body);
	free(tail);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *body = fuzz_json_object(data, size);
	if (!body)
		return 0;
	struct fl_event *events = NULL;
	size_t count = 0;
	struct fl_error err;
	fl_error_clear(&err);
	enum fl_status st = fl_event_validate_request(
	    body, registry, "clicks-pipeline", FUZZ_INGEST_US, FUZZ_SKEW_US, &events, &count, &err);
	if (st == FL_OK) {
		FUZZ_CHECK(count >= 1 && count <= FL_EVENT_BATCH_MAX);
		for (size_t i = 0; i < count; i++)
			check_round_trip(&events[i]);
		fl_event_array_free(events, count);
	} else {
		FUZZ_CHECK(st == FL_ERR_INVALID || st == FL_ERR_NOT_FOUND);
		fuzz_check_error(&err);
	}
	json_decref(body);
	return 0;
}
