/*
 * command-svc's publisher, the part that runs without NATS: the subject of
 * an event, and the step that stores the publish cursor, which must retry a
 * failed store on its next call rather than leave the cursor behind.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "publisher.h"

struct fake_store {
	int failures_left; /* the next calls that fail */
	int calls;
	uint64_t value; /* what was stored last */
};

static enum fl_status fake_store(void *ctx, uint64_t seq)
{
	struct fake_store *s = ctx;
	s->calls++;
	if (s->failures_left > 0) {
		s->failures_left--;
		return FL_ERR_IO;
	}
	s->value = seq;
	return FL_OK;
}

Test(publisher, a_failed_cursor_store_is_retried)
{
	struct fake_store s = {.failures_left = 2};
	uint64_t stored = 10;

	/* Published up to 20, the store fails: the cursor stays at 10. */
	cr_assert_eq(fl_publisher_store_cursor(20, &stored, fake_store, &s), FL_ERR_IO);
	cr_assert_eq(stored, 10);
	/* The next loop retries, before publishing more: fails once more... */
	cr_assert_eq(fl_publisher_store_cursor(20, &stored, fake_store, &s), FL_ERR_IO);
	cr_assert_eq(stored, 10);
	/* ... then it is stored. */
	cr_assert_eq(fl_publisher_store_cursor(20, &stored, fake_store, &s), FL_OK);
	cr_assert_eq(stored, 20);
	cr_assert_eq(s.value, 20);
	cr_assert_eq(s.calls, 3);
	/* Nothing new: no store at all. */
	cr_assert_eq(fl_publisher_store_cursor(20, &stored, fake_store, &s), FL_OK);
	cr_assert_eq(s.calls, 3);
	/* A failed store of 30 is retried with what was published since (45). */
	s.failures_left = 1;
	cr_assert_eq(fl_publisher_store_cursor(30, &stored, fake_store, &s), FL_ERR_IO);
	cr_assert_eq(stored, 20);
	cr_assert_eq(fl_publisher_store_cursor(45, &stored, fake_store, &s), FL_OK);
	cr_assert_eq(stored, 45);
	cr_assert_eq(s.value, 45);
}

Test(publisher, subjects)
{
	char subject[64];
	const char feature[] = "{\"seq\":1,\"kind\":\"feature\",\"view\":\"user_activity\"}";
	const char key[] = "{\"seq\":2,\"kind\":\"key\",\"key_id\":\"00\"}";
	cr_assert(fl_publisher_subject((const uint8_t *)feature, strlen(feature), subject,
				       sizeof(subject)));
	cr_assert_str_eq(subject, "fledger.events.user_activity");
	cr_assert(
	    fl_publisher_subject((const uint8_t *)key, strlen(key), subject, sizeof(subject)));
	cr_assert_str_eq(subject, "fledger.events._keys");
}
