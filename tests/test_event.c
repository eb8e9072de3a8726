/*
 * Event validation (CONTRACT §3), stored bodies (CONTRACT §4), idempotency
 * digests and the Feast push conversion.
 */
#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/event.h"
#include "fledger/util.h"

/* The view of CONTRACT §2 (single quotes stand for double quotes). */
static const char example_view[] =
    "{'name': 'user_activity', 'entity': 'user_id',"
    " 'features': {'dwell_ms': 'double', 'last_click': 'string', 'is_mobile': 'bool',"
    "   'cart_items': 'int64', 'embedding': 'vector[8]'},"
    " 'max_age': '24h',"
    " 'windows': ["
    "   {'name': 'clicks_5m', 'fn': 'count', 'of': 'last_click', 'size': '5m'},"
    "   {'name': 'dwell_avg_1h', 'fn': 'avg', 'of': 'dwell_ms', 'size': '1h'},"
    "   {'name': 'last_5_clicks', 'fn': 'last_n', 'of': 'last_click', 'size': '24h', 'n': 5}],"
    " 'acl': {'write': ['clicks-pipeline'], 'read': ['role:inference', 'role:fraud'],"
    "   'features': {'cart_items': {'read': ['role:fraud']}}},"
    " 'audit_reads': true}";

static struct fl_view_registry *registry;
#define SKEW FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US
static int64_t ingest_us;

static json_t *load(const char *text)
{
	char *copy = strdup(text);
	cr_assert_not_null(copy);
	for (char *p = copy; *p != '\0'; p++) {
		if (*p == '\'')
			*p = '"';
	}
	json_error_t error;
	json_t *root = json_loads(copy, 0, &error);
	cr_assert_not_null(root, "bad test JSON: %s in %s", error.text, copy);
	free(copy);
	return root;
}

static int64_t at(const char *stamp)
{
	int64_t us;
	cr_assert_eq(fl_time_parse(stamp, &us), FL_OK, "%s", stamp);
	return us;
}

static void setup(void)
{
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	json_t *definition = load(example_view);
	struct fl_view *view;
	struct fl_error err;
	cr_assert_eq(fl_view_parse(definition, &view, &err), FL_OK, "%s", err.message);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	fl_view_unref(view);
	json_decref(definition);
	ingest_us = at("2026-11-26T21:00:00.200518Z");
}

static void teardown(void)
{
	fl_view_registry_destroy(registry);
}

TestSuite(event, .init = setup, .fini = teardown);

static enum fl_status validate_at(const char *text, const char *path, int64_t ingest,
				  struct fl_event *ret_event, struct fl_error *err)
{
	json_t *event = load(text);
	enum fl_status status = fl_event_validate(event, path, registry, "clicks-pipeline", ingest,
						  SKEW, ret_event, err);
	json_decref(event);
	return status;
}

static void validate_ok(const char *text, struct fl_event *ret_event)
{
	struct fl_error err;
	fl_error_clear(&err);
	enum fl_status status = validate_at(text, "", ingest_us, ret_event, &err);
	cr_assert_eq(status, FL_OK, "%s: %s %s (%s)", text, err.code, err.field, err.message);
}

/* The stored body of a validated event at seq. Caller frees. */
static char *body_of(const struct fl_event *event, uint64_t seq)
{
	char *tail;
	size_t tail_len;
	cr_assert_eq(fl_event_body_tail(event, &tail, &tail_len), FL_OK);
	cr_assert_eq(strlen(tail), tail_len);
	size_t cap = tail_len + 40;
	char *body = malloc(cap);
	cr_assert_not_null(body);
	snprintf(body, cap, "{\"seq\":%llu,%s}", (unsigned long long)seq, tail);
	free(tail);
	return body;
}

/* The features part of the body of a one-event JSON text. Caller frees. */
static char *features_of(const char *text)
{
	struct fl_event event;
	validate_ok(text, &event);
	char *body = body_of(&event, 1);
	fl_event_finish(&event);
	const char *start = strstr(body, "\"features\":");
	cr_assert_not_null(start);
	char *features = strdup(start + strlen("\"features\":"));
	features[strlen(features) - 1] = '\0'; /* the body's closing brace */
	free(body);
	return features;
}

/* ---- Valid events ------------------------------------------------------ */

Test(event, contract_example_body_is_exact)
{
	struct fl_event event;
	validate_ok("{'view': 'user_activity', 'entity_id': 'u123',"
		    " 'event_ts': '2026-11-26T21:00:00.123Z',"
		    " 'features': {'last_click': 'p42', 'dwell_ms': 1200.5},"
		    " 'idempotency_key': 'clicks-0001'}",
		    &event);
	cr_assert_str_eq(fl_view_name(event.view), "user_activity");
	cr_assert_str_eq(event.entity_id, "u123");
	cr_assert(event.event_ts_given);
	cr_assert_eq(event.event_ts_us, at("2026-11-26T21:00:00.123Z"));
	cr_assert_eq(event.ingest_ts_us, ingest_us);
	cr_assert_str_eq(event.producer, "clicks-pipeline");
	cr_assert(event.has_idempotency_key);
	cr_assert_str_eq(event.idempotency_key, "clicks-0001");

	char *body = body_of(&event, 42);
	cr_assert_str_eq(body,
			 "{\"seq\":42,\"kind\":\"feature\",\"view\":\"user_activity\","
			 "\"entity_id\":\"u123\",\"event_ts\":\"2026-11-26T21:00:00.123000Z\","
			 "\"ingest_ts\":\"2026-11-26T21:00:00.200518Z\","
			 "\"producer\":\"clicks-pipeline\",\"idempotency_key\":\"clicks-0001\","
			 "\"features\":{\"dwell_ms\":1200.5,\"last_click\":\"p42\"}}");
	free(body);
	fl_event_finish(&event);
	fl_event_finish(NULL);
}

Test(event, every_type_in_view_order_with_exact_values)
{
	char *features = features_of(
	    "{'view':'user_activity','entity_id':'u1','features':{"
	    "'last_click':'a\\'b\\\\c\\nd\\u0001\\u001F\\u00e9\\u20ac/',"
	    "'is_mobile':false,'embedding':[1,0.1,-2.5,1e-3,3.4028234663852886e38,0,-0.0,16777217],"
	    "'dwell_ms':1200,'cart_items':-9223372036854775808}}");
	/* The test's quote swap turned \' into \", a quote in the string. */
	cr_assert_str_eq(features,
			 "{\"cart_items\":-9223372036854775808,\"dwell_ms\":1200.0,"
			 "\"embedding\":[1.0,0.1,-2.5,0.001,3.4028235e+38,0.0,-0.0,16777216.0],"
			 "\"is_mobile\":false,"
			 "\"last_click\":\"a\\\"b\\\\c\\nd\\u0001\\u001f\xc3\xa9\xe2\x82\xac/\"}");
	free(features);
}

Test(event, doubles_are_shortest_round_trip_and_marked_real)
{
	static const struct {
		const char *given;
		const char *stored;
	} cases[] = {
	    {"1200.5", "1200.5"},
	    {"1200", "1200.0"},
	    {"0.1", "0.1"},
	    {"0.30000000000000004", "0.30000000000000004"},
	    {"0.3333333333333333", "0.3333333333333333"},
	    {"1e300", "1e+300"},
	    {"-0.0", "-0.0"},
	    {"1.2345678901234568e20", "1.2345678901234568e+20"},
	    {"5e-324", "4.94065645841247e-324"},
	    {"1.7976931348623157e308", "1.7976931348623157e+308"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[256], expected[128];
		snprintf(text, sizeof(text),
			 "{'view':'user_activity','entity_id':'u1','features':{'dwell_ms':%s}}",
			 cases[i].given);
		snprintf(expected, sizeof(expected), "{\"dwell_ms\":%s}", cases[i].stored);
		char *features = features_of(text);
		cr_expect_str_eq(features, expected, "%s", cases[i].given);
		free(features);
	}
}

Test(event, stored_doubles_read_back_bit_exact)
{
	srand(12345);
	for (int i = 0; i < 2000; i++) {
		uint64_t bits = 0;
		for (int j = 0; j < 4; j++)
			bits = bits << 16 | (uint64_t)(rand() & 0xffff);
		double value;
		memcpy(&value, &bits, sizeof(value));
		if (!isfinite(value))
			continue;
		json_t *event = json_pack("{s:s, s:s, s:{s:f}}", "view", "user_activity",
					  "entity_id", "u1", "features", "dwell_ms", value);
		cr_assert_not_null(event);
		struct fl_event validated;
		struct fl_error err;
		cr_assert_eq(
		    fl_event_validate(event, "", registry, "p", ingest_us, SKEW, &validated, &err),
		    FL_OK);
		char *body = body_of(&validated, 7);
		struct fl_stored_event stored;
		cr_assert_eq(fl_stored_event_parse(body, strlen(body), &stored), FL_OK, "%s", body);
		const json_t *read = json_object_get(stored.features, "dwell_ms");
		cr_assert(json_is_real(read), "%s", body);
		double back = json_real_value(read);
		cr_assert_eq(memcmp(&back, &value, sizeof(value)), 0, "%s vs %.17g", body, value);
		fl_stored_event_finish(&stored);
		free(body);
		fl_event_finish(&validated);
		json_decref(event);
	}
}

/* Subnormal doubles are stored exactly as written, and read back bit-exact. */
Test(event, subnormal_doubles_stored_exactly)
{
	static const double values[] = {1e-320, -4.9406564584124654e-324, 2.2250738585072009e-308,
					1.5e-315};
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		json_t *event = json_pack("{s:s, s:s, s:{s:f}}", "view", "user_activity",
					  "entity_id", "u1", "features", "dwell_ms", values[i]);
		struct fl_event validated;
		struct fl_error err;
		cr_assert_eq(fl_event_validate(event, "", registry, "p", ingest_us,
					       FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &validated,
					       &err),
			     FL_OK, "%.17g: %s", values[i], err.message);
		char *body = body_of(&validated, 7);
		struct fl_stored_event stored;
		cr_assert_eq(fl_stored_event_parse(body, strlen(body), &stored), FL_OK, "%s", body);
		double back = json_real_value(json_object_get(stored.features, "dwell_ms"));
		cr_assert_eq(memcmp(&back, &values[i], sizeof(back)), 0, "%s", body);
		/* the stored text reads back to the same double with strtod */
		const char *text = strstr(body, "\"dwell_ms\":") + 11;
		cr_assert_eq(strtod(text, NULL), values[i], "%s", body);
		fl_stored_event_finish(&stored);
		free(body);
		fl_event_finish(&validated);
		json_decref(event);
	}
}

Test(event, vectors_are_float32)
{
	char *features =
	    features_of("{'view':'user_activity','entity_id':'u1','features':{"
			"'embedding':[0.1,0.2,0.3,1.00000001,1e-50,-1e-40,100,2.5e10]}}");
	cr_assert_str_eq(features, "{\"embedding\":[0.1,0.2,0.3,1.0,0.0,-9.99995e-41,100.0,"
				   "2.5e+10]}");
	/* Each printed element reads back to the float32 of the given value. */
	json_t *parsed = json_loads(features, 0, NULL);
	const json_t *vector = json_object_get(parsed, "embedding");
	static const double given[] = {0.1, 0.2, 0.3, 1.00000001, 1e-50, -1e-40, 100, 2.5e10};
	for (size_t i = 0; i < 8; i++)
		cr_assert_eq((float)json_real_value(json_array_get(vector, i)), (float)given[i]);
	json_decref(parsed);
	free(features);
}

Test(event, integer_entity_ids_and_defaults)
{
	struct fl_event event;
	validate_ok("{'view':'user_activity','entity_id':123,'features':{'is_mobile':true}}",
		    &event);
	cr_assert_str_eq(event.entity_id, "123");
	cr_assert_not(event.event_ts_given);
	cr_assert_eq(event.event_ts_us, ingest_us);
	cr_assert_not(event.has_idempotency_key);
	char *body = body_of(&event, 3);
	cr_assert_str_eq(body,
			 "{\"seq\":3,\"kind\":\"feature\",\"view\":\"user_activity\","
			 "\"entity_id\":\"123\",\"event_ts\":\"2026-11-26T21:00:00.200518Z\","
			 "\"ingest_ts\":\"2026-11-26T21:00:00.200518Z\","
			 "\"producer\":\"clicks-pipeline\",\"features\":{\"is_mobile\":true}}");
	free(body);
	fl_event_finish(&event);

	validate_ok("{'view':'user_activity','entity_id':-42,'features':{'is_mobile':true},"
		    "'idempotency_key':null}",
		    &event);
	cr_assert_str_eq(event.entity_id, "-42");
	cr_assert_not(event.event_ts_given);
	cr_assert_not(event.has_idempotency_key);
	fl_event_finish(&event);
}

/* Characters just outside the C1 range, and a leap second, are accepted. */
Test(event, c1_neighbours_and_leap_seconds_accepted)
{
	struct fl_event event;
	validate_ok("{'view':'user_activity','entity_id':'\\u007e\\u00a0\\u00ff',"
		    "'features':{'is_mobile':true}}",
		    &event);
	cr_assert_str_eq(event.entity_id, "~\xc2\xa0\xc3\xbf");
	fl_event_finish(&event);
	validate_ok("{'view':'user_activity','entity_id':'u','event_ts':'2016-12-31T23:59:60.5Z',"
		    "'features':{'is_mobile':true}}",
		    &event);
	char *body = body_of(&event, 1);
	cr_assert(strstr(body, "\"event_ts\":\"2016-12-31T23:59:59.999999Z\"") != NULL, "%s", body);
	free(body);
	fl_event_finish(&event);
}

/*
 * A stored body is read back whatever the write rules of its day were: an
 * entity id with a C1 control, written before they were refused, still parses.
 */
Test(event, stored_entity_ids_with_c1_controls_still_parse)
{
	const char *body =
	    "{\"seq\":1,\"kind\":\"feature\",\"view\":\"user_activity\","
	    "\"entity_id\":\"a\xc2\x85z\",\"event_ts\":\"2026-11-26T21:00:00.000000Z\","
	    "\"ingest_ts\":\"2026-11-26T21:00:00.000000Z\",\"producer\":\"p\","
	    "\"features\":{\"is_mobile\":true}}";
	struct fl_stored_event stored;
	cr_assert_eq(fl_stored_event_parse(body, strlen(body), &stored), FL_OK);
	cr_assert_str_eq(stored.entity_id, "a\xc2\x85z");
	fl_stored_event_finish(&stored);
}

Test(event, timestamps_are_stored_in_utc_microseconds)
{
	struct fl_event event;
	validate_ok("{'view':'user_activity','entity_id':'u','event_ts':'2026-11-26T22:30:00."
		    "1234567+02:00',"
		    "'features':{'is_mobile':true}}",
		    &event);
	char *body = body_of(&event, 1);
	cr_assert(strstr(body, "\"event_ts\":\"2026-11-26T20:30:00.123456Z\"") != NULL, "%s", body);
	free(body);
	fl_event_finish(&event);

	validate_ok("{'view':'user_activity','entity_id':'u','event_ts':'2024-02-29T00:00:00Z',"
		    "'features':{'is_mobile':true}}",
		    &event);
	cr_assert_eq(event.event_ts_us, at("2024-02-29T00:00:00Z"));
	fl_event_finish(&event);
}

Test(event, entity_id_of_256_bytes_and_utf8_accepted)
{
	char text[512];
	char id[257];
	memset(id, 'a', 256);
	id[256] = '\0';
	snprintf(text, sizeof(text),
		 "{'view':'user_activity','entity_id':'%s','features':{'is_mobile':true}}", id);
	struct fl_event event;
	validate_ok(text, &event);
	cr_assert_str_eq(event.entity_id, id);
	fl_event_finish(&event);

	validate_ok("{'view':'user_activity','entity_id':'caf\\u00e9 "
		    "\\u20ac','features':{'is_mobile':true}}",
		    &event);
	cr_assert_str_eq(event.entity_id, "caf\xc3\xa9 \xe2\x82\xac");
	fl_event_finish(&event);
}

Test(event, doubles_accept_any_finite_number)
{
	struct fl_event event;
	validate_ok("{'view':'user_activity','entity_id':'u','features':{'dwell_ms':1e39}}",
		    &event);
	fl_event_finish(&event);
	validate_ok("{'view':'user_activity','entity_id':'u','features':{'dwell_ms':-1."
		    "7976931348623157e308}}",
		    &event);
	fl_event_finish(&event);
	validate_ok("{'view':'user_activity','entity_id':'u','features':{'embedding':"
		    "[-3.4028234663852886e38,0,0,0,0,0,0,0]}}",
		    &event);
	fl_event_finish(&event);
	/* The shortest text of FLT_MAX is a little above it and must read back. */
	validate_ok("{'view':'user_activity','entity_id':'u','features':{'embedding':"
		    "[3.4028235e38,0,0,0,0,0,0,0]}}",
		    &event);
	fl_event_finish(&event);
	/* jansson refuses to hold a non-finite number, so none can reach us. */
	cr_assert_null(json_real(INFINITY));
	cr_assert_null(json_real(NAN));
	cr_assert_null(json_loads("{\"x\":1e400}", 0, NULL));
}

Test(event, string_of_64_kib_accepted)
{
	char *big = malloc(FL_STRING_MAX_BYTES + 1);
	memset(big, 'x', FL_STRING_MAX_BYTES);
	big[FL_STRING_MAX_BYTES] = '\0';
	json_t *event = json_pack("{s:s, s:s, s:{s:s}}", "view", "user_activity", "entity_id", "u",
				  "features", "last_click", big);
	struct fl_event validated;
	struct fl_error err;
	cr_assert_eq(fl_event_validate(event, "", registry, "p", ingest_us, SKEW, &validated, &err),
		     FL_OK);
	fl_event_finish(&validated);
	json_decref(event);
	free(big);
}

/* ---- Invalid events ---------------------------------------------------- */

struct bad_event {
	const char *event;
	int status;
	const char *code;
	const char *field; /* under events[3] */
};

#define EV(rest) "{'view':'user_activity','entity_id':'u1'," rest "}"
#define FEATURES(f) EV("'features':{" f "}")

static const struct bad_event bad_events[] = {
    {"[1]", 400, "invalid_type", "events[3]"},
    {"{'entity_id':'u1','features':{'is_mobile':true}}", 400, "missing_field", "events[3].view"},
    {"{'view':5,'entity_id':'u1','features':{'is_mobile':true}}", 400, "invalid_type",
     "events[3].view"},
    {"{'view':'nope','entity_id':'u1','features':{'is_mobile':true}}", 404, "view_not_found",
     "events[3].view"},
    {EV("'features':{'is_mobile':true},'colour':'red'"), 400, "unknown_field", "events[3].colour"},
    {EV("'features':{'is_mobile':true},'Event Ts':'x'"), 400, "unknown_field",
     "events[3][\"Event Ts\"]"},
    {"{'view':'user_activity','features':{'is_mobile':true}}", 400, "missing_field",
     "events[3].entity_id"},
    {"{'view':'user_activity','entity_id':'','features':{'is_mobile':true}}", 400,
     "invalid_entity_id", "events[3].entity_id"},
    {"{'view':'user_activity','entity_id':'a\\nb','features':{'is_mobile':true}}", 400,
     "invalid_entity_id", "events[3].entity_id"},
    {"{'view':'user_activity','entity_id':'a\\u007fb','features':{'is_mobile':true}}", 400,
     "invalid_entity_id", "events[3].entity_id"},
    /* C1 controls (U+0080..U+009F) are control characters too */
    {"{'view':'user_activity','entity_id':'a\\u0085b','features':{'is_mobile':true}}", 400,
     "invalid_entity_id", "events[3].entity_id"},
    {"{'view':'user_activity','entity_id':'\\u0080','features':{'is_mobile':true}}", 400,
     "invalid_entity_id", "events[3].entity_id"},
    {"{'view':'user_activity','entity_id':'ab\\u009f','features':{'is_mobile':true}}", 400,
     "invalid_entity_id", "events[3].entity_id"},
    /* event_ts given as null is refused, not taken as absent */
    {EV("'event_ts':null,'features':{'is_mobile':true}"), 400, "invalid_type",
     "events[3].event_ts"},
    {"{'view':'user_activity','entity_id':1.5,'features':{'is_mobile':true}}", 400, "invalid_type",
     "events[3].entity_id"},
    {"{'view':'user_activity','entity_id':true,'features':{'is_mobile':true}}", 400, "invalid_type",
     "events[3].entity_id"},
    {EV("'event_ts':'2026-11-26T21:00:00','features':{'is_mobile':true}"), 400, "invalid_timestamp",
     "events[3].event_ts"},
    {EV("'event_ts':'2026-02-30T21:00:00Z','features':{'is_mobile':true}"), 400,
     "invalid_timestamp", "events[3].event_ts"},
    {EV("'event_ts':'2025-02-29T00:00:00Z','features':{'is_mobile':true}"), 400,
     "invalid_timestamp", "events[3].event_ts"},
    {EV("'event_ts':'yesterday','features':{'is_mobile':true}"), 400, "invalid_timestamp",
     "events[3].event_ts"},
    {EV("'event_ts':'2026-11-26 21:00:00Z','features':{'is_mobile':true}"), 400,
     "invalid_timestamp", "events[3].event_ts"},
    {EV("'event_ts':1764190800,'features':{'is_mobile':true}"), 400, "invalid_type",
     "events[3].event_ts"},
    {EV("'features':{'is_mobile':true},'idempotency_key':''"), 400, "invalid_idempotency_key",
     "events[3].idempotency_key"},
    {EV("'features':{'is_mobile':true},'idempotency_key':7"), 400, "invalid_type",
     "events[3].idempotency_key"},
    {EV("'features':{'is_mobile':true},'idempotency_key':'a\\tb'"), 400, "invalid_idempotency_key",
     "events[3].idempotency_key"},
    {EV("'idempotency_key':'k'"), 400, "missing_field", "events[3].features"},
    {EV("'features':{}"), 400, "invalid_value", "events[3].features"},
    {EV("'features':[]"), 400, "invalid_type", "events[3].features"},
    {FEATURES("'nope':1"), 400, "unknown_feature", "events[3].features.nope"},
    {FEATURES("'is_mobile':true,'clicks_5m':1"), 400, "unknown_feature",
     "events[3].features.clicks_5m"},
    {FEATURES("'cart_items':3.5"), 400, "type_mismatch", "events[3].features.cart_items"},
    {FEATURES("'cart_items':3.0"), 400, "type_mismatch", "events[3].features.cart_items"},
    {FEATURES("'cart_items':1e2"), 400, "type_mismatch", "events[3].features.cart_items"},
    {FEATURES("'cart_items':'3'"), 400, "type_mismatch", "events[3].features.cart_items"},
    {FEATURES("'cart_items':null"), 400, "type_mismatch", "events[3].features.cart_items"},
    {FEATURES("'dwell_ms':'1.5'"), 400, "type_mismatch", "events[3].features.dwell_ms"},
    {FEATURES("'dwell_ms':true"), 400, "type_mismatch", "events[3].features.dwell_ms"},
    {FEATURES("'last_click':5"), 400, "type_mismatch", "events[3].features.last_click"},
    {FEATURES("'is_mobile':1"), 400, "type_mismatch", "events[3].features.is_mobile"},
    {FEATURES("'is_mobile':'true'"), 400, "type_mismatch", "events[3].features.is_mobile"},
    {FEATURES("'embedding':[1,2,3,4,5,6,7]"), 400, "invalid_value", "events[3].features.embedding"},
    {FEATURES("'embedding':[1,2,3,4,5,6,7,8,9]"), 400, "invalid_value",
     "events[3].features.embedding"},
    {FEATURES("'embedding':[1,2,1e39,4,5,6,7,8]"), 400, "invalid_value",
     "events[3].features.embedding[2]"},
    {FEATURES("'embedding':[1,2,3,4,5,6,7,-3.5e38]"), 400, "invalid_value",
     "events[3].features.embedding[7]"},
    {FEATURES("'embedding':['1',2,3,4,5,6,7,8]"), 400, "type_mismatch",
     "events[3].features.embedding[0]"},
    {FEATURES("'embedding':1"), 400, "type_mismatch", "events[3].features.embedding"},
    {FEATURES("'dwell_ms':1.5,'cart_items':2.5"), 400, "type_mismatch",
     "events[3].features.cart_items"},
};

Test(event, invalid_events_name_code_and_field)
{
	size_t checked = 0;
	for (size_t i = 0; i < sizeof(bad_events) / sizeof(bad_events[0]); i++) {
		const struct bad_event *c = &bad_events[i];
		if (c->code == NULL)
			continue;
		struct fl_event event = {0};
		struct fl_error err;
		fl_error_clear(&err);
		enum fl_status status = validate_at(c->event, "events[3]", ingest_us, &event, &err);
		cr_expect_eq(status, c->status == 404 ? FL_ERR_NOT_FOUND : FL_ERR_INVALID,
			     "case %zu (%s) gave %d", i, c->event, status);
		cr_expect_null(event.view, "case %zu filled the event", i);
		cr_expect_eq(err.http_status, c->status, "case %zu (%s)", i, c->event);
		cr_expect_str_eq(err.code, c->code, "case %zu (%s): %s", i, c->event, err.message);
		cr_expect_str_eq(err.field, c->field, "case %zu (%s)", i, c->event);
		cr_expect_neq(err.message[0], '\0', "case %zu", i);
		checked++;
	}
	cr_assert_geq(checked, 40);
}

Test(event, long_values_rejected)
{
	char id[258];
	memset(id, 'a', 257);
	id[257] = '\0';
	char key[130];
	memset(key, 'k', 129);
	key[129] = '\0';
	char *big = malloc(FL_STRING_MAX_BYTES + 2);
	memset(big, 'x', FL_STRING_MAX_BYTES + 1);
	big[FL_STRING_MAX_BYTES + 1] = '\0';
	struct {
		json_t *event;
		const char *code;
		const char *field;
	} cases[] = {
	    {json_pack("{s:s, s:s, s:{s:b}}", "view", "user_activity", "entity_id", id, "features",
		       "is_mobile", 1),
	     "invalid_entity_id", "entity_id"},
	    {json_pack("{s:s, s:s, s:{s:b}, s:s}", "view", "user_activity", "entity_id", "u",
		       "features", "is_mobile", 1, "idempotency_key", key),
	     "invalid_idempotency_key", "idempotency_key"},
	    {json_pack("{s:s, s:s, s:{s:s}}", "view", "user_activity", "entity_id", "u", "features",
		       "last_click", big),
	     "invalid_value", "features.last_click"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_assert_not_null(cases[i].event);
		struct fl_event event;
		struct fl_error err;
		cr_expect_eq(fl_event_validate(cases[i].event, "", registry, "p", ingest_us, SKEW,
					       &event, &err),
			     FL_ERR_INVALID, "case %zu", i);
		cr_expect_str_eq(err.code, cases[i].code, "case %zu: %s", i, err.message);
		cr_expect_str_eq(err.field, cases[i].field, "case %zu", i);
		json_decref(cases[i].event);
	}
	/* 128 bytes is still a key. */
	key[128] = '\0';
	json_t *event = json_pack("{s:s, s:s, s:{s:b}, s:s}", "view", "user_activity", "entity_id",
				  "u", "features", "is_mobile", 1, "idempotency_key", key);
	struct fl_event validated;
	struct fl_error err;
	cr_assert_eq(fl_event_validate(event, "", registry, "p", ingest_us, SKEW, &validated, &err),
		     FL_OK);
	cr_assert_str_eq(validated.idempotency_key, key);
	fl_event_finish(&validated);
	json_decref(event);
	free(big);
}

Test(event, strings_with_nul_are_escaped_and_ids_with_nul_rejected)
{
	json_t *event = json_pack("{s:s, s:s, s:{s:s#}}", "view", "user_activity", "entity_id", "u",
				  "features", "last_click", "a\0b", (int)3);
	cr_assert_not_null(event);
	struct fl_event validated;
	struct fl_error err;
	cr_assert_eq(fl_event_validate(event, "", registry, "p", ingest_us, SKEW, &validated, &err),
		     FL_OK);
	char *body = body_of(&validated, 1);
	cr_assert(strstr(body, "\"last_click\":\"a\\u0000b\"") != NULL, "%s", body);
	struct fl_stored_event stored;
	cr_assert_eq(fl_stored_event_parse(body, strlen(body), &stored), FL_OK);
	cr_assert_eq(json_string_length(json_object_get(stored.features, "last_click")), 3);
	fl_stored_event_finish(&stored);
	free(body);
	fl_event_finish(&validated);
	json_decref(event);

	event = json_pack("{s:s, s:s#, s:{s:b}}", "view", "user_activity", "entity_id", "a\0b",
			  (int)3, "features", "is_mobile", 1);
	cr_assert_eq(fl_event_validate(event, "", registry, "p", ingest_us, SKEW, &validated, &err),
		     FL_ERR_INVALID);
	cr_assert_str_eq(err.code, "invalid_entity_id");
	json_decref(event);
}

/* ---- Digests ----------------------------------------------------------- */

static void digest_of(const char *text, int64_t ingest, uint8_t out[FL_EVENT_DIGEST_LEN])
{
	struct fl_event event;
	struct fl_error err;
	cr_assert_eq(validate_at(text, "", ingest, &event, &err), FL_OK, "%s: %s", text,
		     err.message);
	memcpy(out, event.digest, FL_EVENT_DIGEST_LEN);
	fl_event_finish(&event);
}

#define BASE_EVENT                                                                                 \
	"{'view':'user_activity','entity_id':'123','event_ts':'2026-11-26T21:00:00.123Z',"         \
	"'features':{'dwell_ms':1200.0,'last_click':'p42','embedding':[1,2,3,4,5,6,7,8]},"         \
	"'idempotency_key':'k1'}"

Test(event, digest_same_for_same_content)
{
	uint8_t base[FL_EVENT_DIGEST_LEN], other[FL_EVENT_DIGEST_LEN];
	digest_of(BASE_EVENT, ingest_us, base);
	static const uint8_t zero[FL_EVENT_DIGEST_LEN] = {0};
	cr_assert_neq(memcmp(base, zero, sizeof(base)), 0);

	static const char *const same[] = {
	    BASE_EVENT,
	    /* Another member and feature order, an integer id, an equal time in
	     * another zone, 1200 for 1200.0, another key. */
	    "{'idempotency_key':'k2','features':{'embedding':[1.0,2,3,4,5,6,7,8.0],"
	    "'last_click':'p42','dwell_ms':1200},'event_ts':'2026-11-26T22:00:00.123+01:00',"
	    "'entity_id':123,'view':'user_activity'}",
	    /* Vector elements equal as float32. */
	    "{'view':'user_activity','entity_id':'123','event_ts':'2026-11-26T21:00:00.123Z',"
	    "'features':{'dwell_ms':1.2e3,'last_click':'p42','embedding':[1.00000001,2,3,4,5,6,7,8]"
	    "}}",
	};
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		/* A retry comes later: another ingest time. */
		digest_of(same[i], ingest_us + 1000000 * (int64_t)(i + 1), other);
		cr_expect_eq(memcmp(base, other, sizeof(base)), 0, "case %zu", i);
	}
}

Test(event, digest_differs_for_other_content)
{
	uint8_t base[FL_EVENT_DIGEST_LEN], other[FL_EVENT_DIGEST_LEN];
	digest_of(BASE_EVENT, ingest_us, base);
	static const char *const different[] = {
	    /* Another value of each feature. */
	    "{'view':'user_activity','entity_id':'123','event_ts':'2026-11-26T21:00:00.123Z',"
	    "'features':{'dwell_ms':1200.5,'last_click':'p42','embedding':[1,2,3,4,5,6,7,8]}}",
	    "{'view':'user_activity','entity_id':'123','event_ts':'2026-11-26T21:00:00.123Z',"
	    "'features':{'dwell_ms':1200.0,'last_click':'p43','embedding':[1,2,3,4,5,6,7,8]}}",
	    "{'view':'user_activity','entity_id':'123','event_ts':'2026-11-26T21:00:00.123Z',"
	    "'features':{'dwell_ms':1200.0,'last_click':'p42','embedding':[1,2,3,4,5,6,7,9]}}",
	    /* A feature less, a feature more. */
	    "{'view':'user_activity','entity_id':'123','event_ts':'2026-11-26T21:00:00.123Z',"
	    "'features':{'dwell_ms':1200.0,'last_click':'p42'}}",
	    "{'view':'user_activity','entity_id':'123','event_ts':'2026-11-26T21:00:00.123Z',"
	    "'features':{'dwell_ms':1200.0,'last_click':'p42','embedding':[1,2,3,4,5,6,7,8],"
	    "'is_mobile':true}}",
	    /* Another entity, another time, no time. */
	    "{'view':'user_activity','entity_id':'124','event_ts':'2026-11-26T21:00:00.123Z',"
	    "'features':{'dwell_ms':1200.0,'last_click':'p42','embedding':[1,2,3,4,5,6,7,8]}}",
	    "{'view':'user_activity','entity_id':'123','event_ts':'2026-11-26T21:00:00.124Z',"
	    "'features':{'dwell_ms':1200.0,'last_click':'p42','embedding':[1,2,3,4,5,6,7,8]}}",
	    "{'view':'user_activity','entity_id':'123',"
	    "'features':{'dwell_ms':1200.0,'last_click':'p42','embedding':[1,2,3,4,5,6,7,8]}}",
	};
	for (size_t i = 0; i < sizeof(different) / sizeof(different[0]); i++) {
		digest_of(different[i], ingest_us, other);
		cr_expect_neq(memcmp(base, other, sizeof(base)), 0, "case %zu", i);
	}
	/* Without event_ts, the ingest time is not part of the content either. */
	uint8_t later[FL_EVENT_DIGEST_LEN];
	digest_of(different[7], ingest_us + 5000000, later);
	cr_assert_eq(memcmp(other, later, sizeof(later)), 0);
}

Test(event, digest_covers_decoded_strings)
{
	json_t *definition = load("{'name':'other','entity':'e','features':{'x':'string'}}");
	struct fl_view *view;
	cr_assert_eq(fl_view_parse(definition, &view, NULL), FL_OK);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	fl_view_unref(view);
	json_decref(definition);
	uint8_t a[FL_EVENT_DIGEST_LEN], b[FL_EVENT_DIGEST_LEN];
	digest_of("{'view':'other','entity_id':'1','features':{'x':'1'}}", ingest_us, a);
	digest_of("{'view':'other','entity_id':'1','features':{'x':'\\u0031'}}", ingest_us, b);
	cr_assert_eq(memcmp(a, b, sizeof(a)), 0);
	digest_of("{'view':'other','entity_id':'1','features':{'x':'2'}}", ingest_us, b);
	cr_assert_neq(memcmp(a, b, sizeof(a)), 0);
}

/* ---- Stored bodies ----------------------------------------------------- */

Test(event, feature_body_round_trip)
{
	struct fl_event event;
	validate_ok(
	    "{'view':'user_activity','entity_id':'u\\\"1','event_ts':'2026-11-26T21:00:00.123Z',"
	    "'features':{'dwell_ms':1200.5,'cart_items':3,'is_mobile':true,'last_click':'p42',"
	    "'embedding':[1,2,3,4,5,6,7,0.5]},'idempotency_key':'k'}",
	    &event);
	char *body = body_of(&event, 42);
	struct fl_stored_event stored;
	cr_assert_eq(fl_stored_event_parse(body, strlen(body), &stored), FL_OK, "%s", body);
	cr_assert_eq(stored.kind, FL_BODY_FEATURE);
	cr_assert_eq(stored.seq, 42);
	cr_assert_str_eq(stored.view_name, "user_activity");
	cr_assert_str_eq(stored.entity_id, "u\"1");
	cr_assert_eq(stored.event_ts_us, event.event_ts_us);
	cr_assert_eq(stored.ingest_ts_us, ingest_us);
	cr_assert_str_eq(stored.producer, "clicks-pipeline");
	cr_assert_str_eq(stored.idempotency_key, "k");
	cr_assert_null(stored.view);
	json_t *expected =
	    load("{'cart_items':3,'dwell_ms':1200.5,'embedding':[1.0,2.0,3.0,4.0,5.0,"
		 "6.0,7.0,0.5],'is_mobile':true,'last_click':'p42'}");
	cr_assert(json_equal(stored.features, expected));
	cr_assert(json_is_integer(json_object_get(stored.features, "cart_items")));
	cr_assert(json_is_real(json_object_get(stored.features, "dwell_ms")));
	/* Stored order is the view's order. */
	void *iter = json_object_iter((json_t *)stored.features);
	cr_assert_str_eq(json_object_iter_key(iter), "cart_items");
	json_decref(expected);
	fl_stored_event_finish(&stored);
	fl_stored_event_finish(NULL);
	free(body);
	fl_event_finish(&event);

	/* Without a key. */
	validate_ok("{'view':'user_activity','entity_id':7,'features':{'is_mobile':false}}",
		    &event);
	body = body_of(&event, 1);
	cr_assert_eq(fl_stored_event_parse(body, strlen(body), &stored), FL_OK, "%s", body);
	cr_assert_null(stored.idempotency_key);
	cr_assert_str_eq(stored.entity_id, "7");
	fl_stored_event_finish(&stored);
	free(body);
	fl_event_finish(&event);
}

Test(event, view_body_round_trip)
{
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(registry, "user_activity", &view), FL_OK);
	char *tail;
	size_t tail_len;
	cr_assert_eq(fl_event_view_body_tail(view, 3, "admin", ingest_us, &tail, &tail_len), FL_OK);
	const char *canonical;
	fl_view_canonical(view, &canonical, NULL);
	char expected[4096];
	snprintf(expected, sizeof(expected),
		 "\"kind\":\"view\",\"view\":\"user_activity\","
		 "\"ingest_ts\":\"2026-11-26T21:00:00.200518Z\","
		 "\"producer\":\"admin\",\"version\":3,\"definition\":%s",
		 canonical);
	cr_assert_str_eq(tail, expected);
	cr_assert_eq(tail_len, strlen(expected));

	char body[4200];
	snprintf(body, sizeof(body), "{\"seq\":9,%s}", tail);
	struct fl_stored_event stored;
	cr_assert_eq(fl_stored_event_parse(body, strlen(body), &stored), FL_OK);
	cr_assert_eq(stored.kind, FL_BODY_VIEW);
	cr_assert_eq(stored.seq, 9);
	cr_assert_eq(stored.version, 3);
	cr_assert_eq(stored.ingest_ts_us, ingest_us);
	cr_assert_str_eq(stored.producer, "admin");
	cr_assert_not_null(stored.view);
	const char *again;
	fl_view_canonical(stored.view, &again, NULL);
	cr_assert_str_eq(again, canonical);
	cr_assert_eq(fl_view_compare(view, stored.view, NULL), FL_VIEW_IDENTICAL);
	/* A rebuilt registry takes the stored version. */
	struct fl_view_registry *rebuilt;
	cr_assert_eq(fl_view_registry_create(&rebuilt), FL_OK);
	cr_assert_eq(fl_view_registry_put(rebuilt, stored.view, 1), FL_OK);
	fl_view_registry_destroy(rebuilt);
	fl_stored_event_finish(&stored);
	free(tail);
	fl_view_unref(view);
}

Test(event, stored_bodies_of_other_kinds_and_garbage)
{
	struct fl_stored_event stored;
	const char *key = "{\"seq\":5,\"kind\":\"key\",\"public_key\":\"abc\"}";
	cr_assert_eq(fl_stored_event_parse(key, strlen(key), &stored), FL_OK);
	cr_assert_eq(stored.kind, FL_BODY_KEY);
	cr_assert_eq(stored.seq, 5);
	cr_assert_str_eq(json_string_value(json_object_get(stored.root, "public_key")), "abc");
	fl_stored_event_finish(&stored);
	const char *read = "{\"seq\":1,\"kind\":\"read\"}";
	cr_assert_eq(fl_stored_event_parse(read, strlen(read), &stored), FL_OK);
	cr_assert_eq(stored.kind, FL_BODY_OTHER);
	fl_stored_event_finish(&stored);

	static const char *const bad[] = {
	    "",
	    "not json",
	    "[1]",
	    "{\"kind\":\"feature\"}",
	    "{\"seq\":0,\"kind\":\"key\"}",
	    "{\"seq\":1}",
	    "{\"seq\":1,\"kind\":7}",
	    /* Members missing, extra or malformed. */
	    "{\"seq\":1,\"kind\":\"feature\",\"view\":\"v\",\"entity_id\":\"e\","
	    "\"event_ts\":\"2026-11-26T21:00:00.000000Z\",\"ingest_ts\":\"2026-11-26T21:00:00."
	    "000000Z\","
	    "\"producer\":\"p\"}",
	    "{\"seq\":1,\"kind\":\"feature\",\"view\":\"v\",\"entity_id\":\"e\","
	    "\"event_ts\":\"2026-11-26T21:00:00.000000Z\",\"ingest_ts\":\"2026-11-26T21:00:00."
	    "000000Z\","
	    "\"producer\":\"p\",\"features\":{\"x\":1},\"extra\":1}",
	    "{\"seq\":1,\"kind\":\"feature\",\"view\":\"v\",\"entity_id\":\"e\","
	    "\"event_ts\":\"2026-11-26T21:00:00\",\"ingest_ts\":\"2026-11-26T21:00:00.000000Z\","
	    "\"producer\":\"p\",\"features\":{\"x\":1}}",
	    "{\"seq\":1,\"kind\":\"feature\",\"view\":\"v\",\"entity_id\":\"\","
	    "\"event_ts\":\"2026-11-26T21:00:00.000000Z\",\"ingest_ts\":\"2026-11-26T21:00:00."
	    "000000Z\","
	    "\"producer\":\"p\",\"features\":{\"x\":1}}",
	    "{\"seq\":1,\"kind\":\"feature\",\"view\":\"v\",\"entity_id\":\"e\","
	    "\"event_ts\":\"2026-11-26T21:00:00.000000Z\",\"ingest_ts\":\"2026-11-26T21:00:00."
	    "000000Z\","
	    "\"producer\":\"p\",\"features\":{}}",
	    "{\"seq\":1,\"seq\":2,\"kind\":\"key\"}",
	    "{\"seq\":1,\"kind\":\"view\",\"ingest_ts\":\"2026-11-26T21:00:00.000000Z\","
	    "\"producer\":\"p\",\"version\":1,\"definition\":{\"name\":\"v\"}}",
	    "{\"seq\":1,\"kind\":\"view\",\"ingest_ts\":\"2026-11-26T21:00:00.000000Z\","
	    "\"producer\":\"p\",\"version\":0,\"definition\":{\"name\":\"v\",\"entity\":\"e\","
	    "\"features\":{\"x\":\"int64\"}}}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(fl_stored_event_parse(bad[i], strlen(bad[i]), &stored), FL_ERR_CORRUPT,
			     "case %zu: %s", i, bad[i]);
}

/* ---- Whole requests ---------------------------------------------------- */

static enum fl_status request(const char *text, struct fl_event **ret_events, size_t *ret_count,
			      struct fl_error *err)
{
	json_t *body = load(text);
	enum fl_status status = fl_event_validate_request(body, registry, "p", ingest_us, SKEW,
							  ret_events, ret_count, err);
	json_decref(body);
	return status;
}

Test(event, requests_single_and_batch)
{
	struct fl_event *events;
	size_t count;
	struct fl_error err;
	cr_assert_eq(request(EV("'features':{'is_mobile':true}"), &events, &count, &err), FL_OK);
	cr_assert_eq(count, 1);
	cr_assert_str_eq(events[0].entity_id, "u1");
	fl_event_array_free(events, count);

	cr_assert_eq(
	    request("{'events':[" EV(
			"'features':{'is_mobile':true}") ","
							 "{'view':'user_activity','entity_id':2,'"
							 "features':{'cart_items':1}}]}",
		    &events, &count, &err),
	    FL_OK);
	cr_assert_eq(count, 2);
	cr_assert_str_eq(events[1].entity_id, "2");
	fl_event_array_free(events, count);
	fl_event_array_free(NULL, 0);

	cr_assert_eq(
	    request("{'events':[" EV(
			"'features':{'is_mobile':true}") ","
							 "{'view':'user_activity','entity_id':2,'"
							 "features':{'cart_items':1.5}}]}",
		    &events, &count, &err),
	    FL_ERR_INVALID);
	cr_assert_str_eq(err.field, "events[1].features.cart_items");
	cr_assert_str_eq(err.code, "type_mismatch");

	cr_assert_eq(request("{'events':[]}", &events, &count, &err), FL_ERR_INVALID);
	cr_assert_str_eq(err.code, "empty_batch");
	cr_assert_str_eq(err.field, "events");
	cr_assert_eq(request("{'events':{}}", &events, &count, &err), FL_ERR_INVALID);
	cr_assert_str_eq(err.code, "invalid_type");
	cr_assert_eq(request("{'events':[], 'view':'user_activity'}", &events, &count, &err),
		     FL_ERR_INVALID);
	cr_assert_str_eq(err.code, "unknown_field");
	cr_assert_str_eq(err.field, "view");
	cr_assert_eq(request("[]", &events, &count, &err), FL_ERR_INVALID);
	cr_assert_str_eq(err.code, "invalid_json");
}

Test(event, batch_limit)
{
	json_t *batch = json_array();
	for (int i = 0; i < FL_EVENT_BATCH_MAX; i++)
		json_array_append_new(batch,
				      json_pack("{s:s, s:i, s:{s:b}}", "view", "user_activity",
						"entity_id", i, "features", "is_mobile", 1));
	json_t *body = json_pack("{s:O}", "events", batch);
	struct fl_event *events;
	size_t count;
	struct fl_error err;
	cr_assert_eq(
	    fl_event_validate_request(body, registry, "p", ingest_us, SKEW, &events, &count, &err),
	    FL_OK);
	cr_assert_eq(count, FL_EVENT_BATCH_MAX);
	cr_assert_str_eq(events[999].entity_id, "999");
	fl_event_array_free(events, count);
	json_array_append_new(batch, json_pack("{s:s, s:i, s:{s:b}}", "view", "user_activity",
					       "entity_id", 1000, "features", "is_mobile", 1));
	cr_assert_eq(
	    fl_event_validate_request(body, registry, "p", ingest_us, SKEW, &events, &count, &err),
	    FL_ERR_INVALID);
	cr_assert_str_eq(err.code, "batch_too_large");
	cr_assert_str_eq(err.field, "events");
	json_decref(body);
	json_decref(batch);
}

/* ---- Feast push -------------------------------------------------------- */

#define PUSH_DF(df) "{'push_source_name':'user_activity','to':'online','df':{" df "}}"

Test(event, feast_push_converts_rows)
{
	json_t *push =
	    load("{'push_source_name':'user_activity','to':'online_and_offline',"
		 "'allow_registry_cache':true,'df':{"
		 "'user_id':[1,'u2','u3'],"
		 "'event_timestamp':['2026-11-26 21:00:00','2026-11-26T21:00:00.5+01:00',"
		 "'2026-11-26 21:00:00.123456+00:00'],"
		 "'dwell_ms':[1.5,null,3],"
		 "'last_click':['a','b',null],"
		 "'created':['x','y','z']}}");
	json_t *events;
	struct fl_error err;
	cr_assert_eq(fl_event_feast_push_convert(push, registry, &events, &err), FL_OK, "%s",
		     err.message);
	json_t *expected = load("[{'view':'user_activity','entity_id':1,"
				"'event_ts':'2026-11-26T21:00:00.000000Z',"
				"'features':{'dwell_ms':1.5,'last_click':'a'}},"
				"{'view':'user_activity','entity_id':'u2',"
				"'event_ts':'2026-11-26T20:00:00.500000Z',"
				"'features':{'last_click':'b'}},"
				"{'view':'user_activity','entity_id':'u3',"
				"'event_ts':'2026-11-26T21:00:00.123456Z',"
				"'features':{'dwell_ms':3}}]");
	char *got = json_dumps(events, JSON_COMPACT);
	cr_assert(json_equal(events, expected), "%s", got);
	free(got);
	json_decref(expected);
	json_decref(events);

	struct fl_event *validated;
	size_t count;
	cr_assert_eq(fl_event_feast_push_validate(push, registry, "pusher", ingest_us, SKEW,
						  &validated, &count, &err),
		     FL_OK, "%s %s", err.field, err.message);
	cr_assert_eq(count, 3);
	cr_assert_str_eq(validated[0].entity_id, "1");
	cr_assert_eq(validated[0].event_ts_us, at("2026-11-26T21:00:00Z"));
	cr_assert(validated[0].event_ts_given);
	cr_assert_str_eq(validated[1].entity_id, "u2");
	cr_assert_str_eq(validated[2].producer, "pusher");
	char *body = body_of(&validated[2], 10);
	cr_assert(strstr(body, "\"features\":{\"dwell_ms\":3.0}") != NULL, "%s", body);
	free(body);
	fl_event_array_free(validated, count);
	json_decref(push);
}

struct bad_push {
	const char *push;
	int status;
	const char *code;
	const char *field;
};

static const struct bad_push bad_pushes[] = {
    {"[]", 400, "invalid_json", ""},
    {"{'push_source_name':'nope','df':{'user_id':[1],'event_timestamp':['2026-11-26T21:00:00Z'],"
     "'dwell_ms':[1.0]}}",
     404, "view_not_found", "push_source_name"},
    {"{'df':{}}", 400, "missing_field", "push_source_name"},
    {"{'push_source_name':'user_activity'}", 400, "missing_field", "df"},
    {"{'push_source_name':'user_activity','to':'offline','df':{'user_id':[1],"
     "'event_timestamp':['2026-11-26T21:00:00Z'],'dwell_ms':[1.0]}}",
     400, "invalid_value", "to"},
    {"{'push_source_name':'user_activity','colour':1,'df':{}}", 400, "unknown_field", "colour"},
    {"{'push_source_name':'user_activity','allow_registry_cache':'yes','df':{}}", 400,
     "invalid_type", "allow_registry_cache"},
    {PUSH_DF("'user_id':[1],'event_timestamp':['2026-11-26T21:00:00Z'],'colour':[1]"), 400,
     "unknown_feature", "df.colour"},
    {PUSH_DF("'user_id':[1,2],'event_timestamp':['2026-11-26T21:00:00Z'],'dwell_ms':[1.0,2.0]"),
     400, "invalid_value", "df.event_timestamp"},
    {PUSH_DF("'event_timestamp':['2026-11-26T21:00:00Z'],'dwell_ms':[1.0]"), 400, "missing_field",
     "df.user_id"},
    {PUSH_DF("'user_id':[1],'dwell_ms':[1.0]"), 400, "missing_field", "df.event_timestamp"},
    {PUSH_DF("'user_id':[1],'event_timestamp':['2026-11-26T21:00:00Z'],'created':[1]"), 400,
     "invalid_value", "df"},
    {PUSH_DF("'user_id':[],'event_timestamp':[],'dwell_ms':[]"), 400, "empty_batch", "df"},
    {PUSH_DF("'user_id':1,'event_timestamp':['2026-11-26T21:00:00Z'],'dwell_ms':[1.0]"), 400,
     "invalid_type", "df.user_id"},
    {PUSH_DF("'user_id':[1,2],'event_timestamp':['2026-11-26T21:00:00Z','2026-02-30 00:00:00'],"
	     "'dwell_ms':[1.0,2.0]"),
     400, "invalid_timestamp", "df.event_timestamp[1]"},
    {PUSH_DF("'user_id':[1],'event_timestamp':[1764190800],'dwell_ms':[1.0]"), 400,
     "invalid_timestamp", "df.event_timestamp[0]"},
    {PUSH_DF("'user_id':[1,2],'event_timestamp':['2026-11-26T21:00:00Z','2026-11-26T21:00:00Z'],"
	     "'dwell_ms':[1.0,null],'last_click':['a',null]"),
     400, "invalid_value", "df"},
    {PUSH_DF("'user_id':[1,2,3,4],'event_timestamp':['2026-11-26T21:00:00Z',"
	     "'2026-11-26T21:00:00Z','2026-11-26T21:00:00Z','2026-11-26T21:00:00Z'],"
	     "'dwell_ms':[1.0,2,3,'x']"),
     400, "type_mismatch", "df.dwell_ms[3]"},
    {PUSH_DF("'user_id':[1,2],'event_timestamp':['2026-11-26T21:00:00Z','2026-11-26T21:00:00Z'],"
	     "'embedding':[[1,2,3,4,5,6,7,8],[1,2,1e39,4,5,6,7,8]]"),
     400, "invalid_value", "df.embedding[1][2]"},
    {PUSH_DF("'user_id':['ok',''],'event_timestamp':['2026-11-26T21:00:00Z',"
	     "'2026-11-26T21:00:00Z'],'dwell_ms':[1.0,2.0]"),
     400, "invalid_entity_id", "df.user_id[1]"},
    {PUSH_DF("'user_id':[null],'event_timestamp':['2026-11-26T21:00:00Z'],'dwell_ms':[1.0]"), 400,
     "invalid_type", "df.user_id[0]"},
};

Test(event, feast_push_errors_name_feast_paths)
{
	for (size_t i = 0; i < sizeof(bad_pushes) / sizeof(bad_pushes[0]); i++) {
		const struct bad_push *c = &bad_pushes[i];
		json_t *push = load(c->push);
		struct fl_event *events = NULL;
		size_t count = 0;
		struct fl_error err;
		fl_error_clear(&err);
		enum fl_status status = fl_event_feast_push_validate(push, registry, "p", ingest_us,
								     SKEW, &events, &count, &err);
		cr_expect_eq(status, c->status == 404 ? FL_ERR_NOT_FOUND : FL_ERR_INVALID,
			     "case %zu (%s) gave %d", i, c->push, status);
		cr_expect_null(events, "case %zu", i);
		cr_expect_eq(err.http_status, c->status, "case %zu", i);
		cr_expect_str_eq(err.code, c->code, "case %zu (%s): %s", i, c->push, err.message);
		cr_expect_str_eq(err.field, c->field, "case %zu (%s): %s", i, c->push, err.message);
		json_decref(push);
	}
}

Test(event, feast_push_row_limit)
{
	json_t *ids = json_array();
	json_t *stamps = json_array();
	json_t *values = json_array();
	for (int i = 0; i < FL_EVENT_BATCH_MAX + 1; i++) {
		json_array_append_new(ids, json_integer(i));
		json_array_append_new(stamps, json_string("2026-11-26T21:00:00Z"));
		json_array_append_new(values, json_real(i));
	}
	json_t *push =
	    json_pack("{s:s, s:{s:o, s:o, s:o}}", "push_source_name", "user_activity", "df",
		      "user_id", ids, "event_timestamp", stamps, "dwell_ms", values);
	json_t *events;
	struct fl_error err;
	cr_assert_eq(fl_event_feast_push_convert(push, registry, &events, &err), FL_ERR_INVALID);
	cr_assert_str_eq(err.code, "batch_too_large");
	json_array_remove(ids, 0);
	json_array_remove(stamps, 0);
	json_array_remove(values, 0);
	cr_assert_eq(fl_event_feast_push_convert(push, registry, &events, &err), FL_OK);
	cr_assert_eq(json_array_size(events), FL_EVENT_BATCH_MAX);
	json_decref(events);
	json_decref(push);
}

/* ---- Allocation failures ----------------------------------------------- */

static int allocations_left; /* jansson allocations that succeed; -1: all */

static void *failing_malloc(size_t size)
{
	if (allocations_left == 0)
		return NULL;
	if (allocations_left > 0)
		allocations_left--;
	return malloc(size);
}

Test(event, feast_push_survives_allocation_failures)
{
	json_t *push = load(PUSH_DF("'user_id':[1,'u2'],'event_timestamp':['2026-11-26 21:00:00',"
				    "'2026-11-26T21:00:00Z'],'dwell_ms':[1.5,2],"
				    "'embedding':[[1,2,3,4,5,6,7,8],null]"));
	bool succeeded = false;
	int failures = 0;
	for (int n = 0; n < 100000 && !succeeded; n++) {
		struct fl_event *events = NULL;
		size_t count = 0;
		struct fl_error err;
		allocations_left = n;
		json_set_alloc_funcs(failing_malloc, free);
		enum fl_status status = fl_event_feast_push_validate(push, registry, "p", ingest_us,
								     SKEW, &events, &count, &err);
		json_set_alloc_funcs(malloc, free);
		if (status == FL_OK) {
			cr_assert_eq(count, 2);
			fl_event_array_free(events, count);
			succeeded = true;
		} else {
			cr_assert_eq(status, FL_ERR_NOMEM, "allocation %d: %s %s", n, err.code,
				     err.message);
			cr_assert_null(events);
			failures++;
		}
	}
	cr_assert(succeeded);
	cr_assert_gt(failures, 5);
	json_decref(push);
}

Test(event, stored_parse_survives_allocation_failures)
{
	struct fl_view *view;
	cr_assert_eq(fl_view_registry_get(registry, "user_activity", &view), FL_OK);
	char *tail;
	size_t tail_len;
	cr_assert_eq(fl_event_view_body_tail(view, 1, "admin", ingest_us, &tail, &tail_len), FL_OK);
	char *body = malloc(tail_len + 16);
	int body_len = snprintf(body, tail_len + 16, "{\"seq\":1,%s}", tail);
	bool succeeded = false;
	for (int n = 0; n < 100000 && !succeeded; n++) {
		struct fl_stored_event stored;
		allocations_left = n;
		json_set_alloc_funcs(failing_malloc, free);
		enum fl_status status = fl_stored_event_parse(body, (size_t)body_len, &stored);
		json_set_alloc_funcs(malloc, free);
		if (status == FL_OK) {
			cr_assert_eq(fl_view_compare(view, stored.view, NULL), FL_VIEW_IDENTICAL);
			fl_stored_event_finish(&stored);
			succeeded = true;
		} else {
			/* jansson 2.14 reports some allocation failures as syntax errors. */
			cr_assert(status == FL_ERR_NOMEM || status == FL_ERR_CORRUPT,
				  "allocation %d gave %d", n, status);
		}
	}
	cr_assert(succeeded);
	free(body);
	free(tail);
	fl_view_unref(view);
}

/* ---- event_ts ahead of the ingest time --------------------------------- */

static enum fl_status validate_skew(const char *text, int64_t ingest, int64_t max_skew,
				    struct fl_error *err)
{
	json_t *event = load(text);
	struct fl_event validated;
	fl_error_clear(err);
	enum fl_status status =
	    fl_event_validate(event, "events[2]", registry, "p", ingest, max_skew, &validated, err);
	if (status == FL_OK)
		fl_event_finish(&validated);
	json_decref(event);
	return status;
}

Test(event, event_ts_too_far_ahead_of_the_ingest_time_is_rejected)
{
	int64_t ingest = at("2026-11-26T21:00:00Z");
	int64_t five_min = FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US;
	struct fl_error err;
	cr_assert_eq(five_min, INT64_C(300) * 1000000);
	struct {
		const char *event_ts;
		int64_t max_skew;
		bool ok;
	} cases[] = {
	    {"2036-11-26T21:00:00Z", five_min, false},		    /* ten years ahead */
	    {"2026-11-26T21:05:00.000001Z", five_min, false},	    /* just over */
	    {"2026-11-26T21:05:00Z", five_min, true},		    /* exactly the bound */
	    {"2026-11-26T21:04:00Z", five_min, true},		    /* four minutes ahead */
	    {"2016-11-26T21:00:00Z", five_min, true},		    /* the past is fine */
	    {"2026-11-26T21:04:00Z", INT64_C(60) * 1000000, false}, /* a lower bound */
	    {"2026-11-26T22:00:00+02:00", five_min, true},	    /* 20:00Z: zones count */
	    {"2026-11-26T23:00:00+01:00", five_min, false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[200];
		snprintf(text, sizeof(text),
			 "{'view':'user_activity','entity_id':'u1','event_ts':'%s',"
			 "'features':{'dwell_ms':1.5}}",
			 cases[i].event_ts);
		enum fl_status st = validate_skew(text, ingest, cases[i].max_skew, &err);
		if (cases[i].ok) {
			cr_expect_eq(st, FL_OK, "case %zu: %s %s", i, err.code, err.message);
			continue;
		}
		cr_expect_eq(st, FL_ERR_INVALID, "case %zu", i);
		cr_expect_eq(err.http_status, 400, "case %zu", i);
		cr_expect_str_eq(err.code, "event_ts_in_future", "case %zu", i);
		cr_expect_str_eq(err.field, "events[2].event_ts", "case %zu", i);
		cr_expect(strstr(err.message, cases[i].event_ts) != NULL ||
			      strstr(err.message, "ahead") != NULL,
			  "case %zu: %s", i, err.message);
	}
	/* Without event_ts the ingest time is used: never ahead. */
	cr_expect_eq(validate_skew("{'view':'user_activity','entity_id':'u1',"
				   "'features':{'dwell_ms':1.5}}",
				   ingest, INT64_C(1), &err),
		     FL_OK);
}

Test(event, feast_push_with_a_row_in_the_future_is_rejected_whole)
{
	json_t *push = load(PUSH_DF("'user_id':[1,2,3],'event_timestamp':['2026-11-26T21:00:00Z',"
				    "'2036-11-26T21:00:00Z','2026-11-26T21:01:00Z'],"
				    "'dwell_ms':[1.0,2.0,3.0]"));
	struct fl_event *events = NULL;
	size_t count = 0;
	struct fl_error err;
	fl_error_clear(&err);
	cr_assert_eq(fl_event_feast_push_validate(push, registry, "p", at("2026-11-26T21:00:00Z"),
						  FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &events,
						  &count, &err),
		     FL_ERR_INVALID);
	cr_assert_null(events);
	cr_assert_str_eq(err.code, "event_ts_in_future");
	cr_assert_str_eq(err.field, "df.event_timestamp[1]");
	json_decref(push);
}
