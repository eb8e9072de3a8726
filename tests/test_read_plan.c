/*
 * query-svc's read parsing (read_plan.h) without a socket: each route's
 * form, the role and ACL denials, the limits and the error each fault
 * answers with; and that a read and a write agree on what an entity id is.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "fledger/auth.h"
#include "fledger/event.h"
#include "fledger/svc.h"
#include "fledger/util.h"
#include "read_plan.h"

static struct fl_view_registry *views;
static struct fl_auth *auth;
static const struct fl_principal *ranker, *fraud, *auditor, *stranger, *admin;

/* user_activity as in schemas/views: readable by inference and fraud, cart_items by fraud only */
static const char *const view_defs[] = {
    "{\"name\":\"user_activity\",\"entity\":\"user_id\",\"max_age\":\"24h\","
    "\"features\":{\"dwell_ms\":\"double\",\"last_click\":\"string\",\"cart_items\":\"int64\"},"
    "\"windows\":[{\"name\":\"clicks_5m\",\"fn\":\"count\",\"of\":\"last_click\",\"size\":\"5m\"},"
    "{\"name\":\"cart_sum_1h\",\"fn\":\"sum\",\"of\":\"cart_items\",\"size\":\"1h\"}],"
    "\"acl\":{\"read\":[\"role:inference\",\"role:fraud\"],"
    "\"features\":{\"cart_items\":{\"read\":[\"role:fraud\"]}}}}",
    "{\"name\":\"user_stats\",\"entity\":\"user_id\",\"features\":{\"dwell_ms\":\"double\","
    "\"score\":\"double\"},\"acl\":{\"read\":[\"role:reader\"]}}",
    "{\"name\":\"item_stats\",\"entity\":\"item_id\",\"features\":{\"price\":\"double\"},"
    "\"acl\":{\"read\":[\"role:reader\"]}}",
};

static void setup(void)
{
	/* the tokens are reader-token, fraud-token, auditor-token and writer-token */
	static const char tokens[] =
	    "{\"principals\":["
	    "{\"name\":\"ranker\",\"roles\":[\"reader\",\"inference\"],\"token_sha256\":"
	    "\"ba5005a40cf5212e4ac0190104cc127edab013294bb71279a975b27a80982d45\"},"
	    "{\"name\":\"fraud\",\"roles\":[\"reader\",\"fraud\"],\"token_sha256\":"
	    "\"92a5b75798d08462a5391e8de3bdf06f50d340b4b05f84184ca1e981726cd450\"},"
	    "{\"name\":\"aud\",\"roles\":[\"auditor\"],\"token_sha256\":"
	    "\"ba1315421b7c58d465abec0bd552af5ff314ed8f9c5c0a7b7a6a6ecbac9bcbe5\"},"
	    "{\"name\":\"stranger\",\"roles\":[\"reader\"],\"token_sha256\":"
	    "\"3590c0a59f72ce02700194a05f228a725c1f135a6dcb3ded9b2d86ab6a6f52cb\"}]}";
	char error[256];
	cr_assert_eq(fl_auth_parse(tokens, strlen(tokens), error, sizeof(error), &auth), FL_OK,
		     "%s", error);
	cr_assert_eq(fl_auth_lookup(auth, "Bearer reader-token", &ranker), FL_OK);
	cr_assert_eq(fl_auth_lookup(auth, "Bearer fraud-token", &fraud), FL_OK);
	cr_assert_eq(fl_auth_lookup(auth, "Bearer auditor-token", &auditor), FL_OK);
	cr_assert_eq(fl_auth_lookup(auth, "Bearer writer-token", &stranger), FL_OK);
	admin = fl_svc_dev_principal();
	cr_assert_eq(fl_view_registry_create(&views), FL_OK);
	for (size_t i = 0; i < sizeof(view_defs) / sizeof(view_defs[0]); i++) {
		json_error_t jerr;
		json_t *def = json_loads(view_defs[i], 0, &jerr);
		struct fl_view *view;
		cr_assert_not_null(def, "%s", jerr.text);
		cr_assert_eq(fl_view_parse(def, &view, NULL), FL_OK, "%s", view_defs[i]);
		json_decref(def);
		cr_assert_eq(fl_view_registry_put(views, view, 1), FL_OK);
		fl_view_unref(view);
	}
}

static struct fl_read_plan plan;

static void teardown(void)
{
	fl_read_plan_finish(&plan);
	fl_view_registry_destroy(views);
	fl_auth_destroy(auth);
}

TestSuite(read_plan, .init = setup, .fini = teardown);

/* Query parameters as "name=value" strings, NULL-terminated. */
static const char *get_param(const void *ctx, const char *name)
{
	size_t n = strlen(name);
	for (const char *const *p = ctx; *p; p++)
		if (strncmp(*p, name, n) == 0 && (*p)[n] == '=')
			return *p + n + 1;
	return NULL;
}

static struct fl_error err;

static bool one(const struct fl_principal *who, const char *rest, const char *const *query)
{
	static const char *const none[] = {NULL};
	const struct fl_read_params params = {get_param, query ? query : none};
	fl_read_plan_finish(&plan);
	fl_read_plan_init(&plan, FL_READ_ONE, who, views);
	fl_error_clear(&err);
	return fl_read_plan_one(&plan, rest, &params, &err);
}

static bool body_plan(enum fl_read_kind kind, const struct fl_principal *who, const char *text)
{
	json_error_t jerr;
	json_t *body = json_loads(text, 0, &jerr);
	cr_assert_not_null(body, "%s: %s", text, jerr.text);
	fl_read_plan_finish(&plan);
	fl_read_plan_init(&plan, kind, who, views);
	fl_error_clear(&err);
	bool ok = kind == FL_READ_BATCH ? fl_read_plan_batch(&plan, body, &err)
					: fl_read_plan_feast(&plan, body, &err);
	json_decref(body);
	return ok;
}

static void expect_error(bool ok, int status, const char *code, const char *field)
{
	cr_assert(!ok, "accepted; expected %d %s", status, code);
	cr_expect_eq(err.http_status, status, "%d %s (%s)", err.http_status, err.code, err.message);
	cr_expect_str_eq(err.code, code, "%s", err.message);
	cr_expect_str_eq(err.field, field ? field : "");
}

static const char *feature_name(size_t part, size_t i)
{
	return plan.parts[part].features[i]->name;
}

Test(read_plan, one_takes_names_and_parameters)
{
	const char *q[] = {"features=dwell_ms,last_click",
			   "windows=clicks_5m",
			   "as_of=2026-11-26T21:00:00 02:00",
			   "min_seq=42",
			   "wait_ms=250",
			   "proof=1",
			   NULL};
	cr_assert(one(ranker, "user_activity/u1", q), "%s", err.message);
	cr_assert_eq(plan.n_parts, 1);
	cr_assert_eq(plan.n_entities, 1);
	cr_expect_str_eq(plan.entity_ids[0], "u1");
	cr_assert_eq(plan.parts[0].n_features, 2);
	cr_expect_str_eq(feature_name(0, 0), "dwell_ms");
	cr_expect_str_eq(feature_name(0, 1), "last_click");
	cr_assert_eq(plan.parts[0].n_windows, 1);
	cr_expect(plan.as_of_given);
	int64_t expected;
	cr_assert_eq(fl_time_parse("2026-11-26T19:00:00Z", &expected), FL_OK);
	cr_expect_eq(plan.as_of_us, expected, "the space is a URL's '+'");
	cr_expect_eq(plan.min_seq, 42);
	cr_expect_eq(plan.wait_ms, 250);
	cr_expect(plan.proof);
}

Test(read_plan, one_without_lists_takes_what_is_readable)
{
	cr_assert(one(ranker, "user_activity/u1", NULL), "%s", err.message);
	cr_expect_eq(plan.parts[0].n_features, 2, "cart_items is for role:fraud");
	cr_expect_eq(plan.parts[0].n_windows, 1, "cart_sum_1h is over cart_items");
	cr_expect_eq(plan.wait_ms, FL_READ_WAIT_MS_DEFAULT);
	cr_expect(!plan.as_of_given && !plan.proof);
	cr_assert(one(fraud, "user_activity/u1", NULL), "%s", err.message);
	cr_expect_eq(plan.parts[0].n_features, 3);
	cr_expect_eq(plan.parts[0].n_windows, 2);
}

Test(read_plan, one_denials)
{
	const char *cart[] = {"features=dwell_ms,cart_items", NULL};
	expect_error(one(ranker, "user_activity/u1", cart), 403, "forbidden", "features");
	const char *cart_window[] = {"windows=cart_sum_1h", NULL};
	expect_error(one(ranker, "user_activity/u1", cart_window), 403, "forbidden", "windows");
	expect_error(one(stranger, "user_activity/u1", NULL), 403, "forbidden", NULL);
	cr_assert(one(stranger, "user_stats/u1", NULL), "a view all readers may read");
	expect_error(one(ranker, "nope/u1", NULL), 404, "view_not_found", NULL);
	const char *unknown[] = {"features=dwell_ms,nope", NULL};
	expect_error(one(ranker, "user_activity/u1", unknown), 400, "unknown_feature", "features");
	const char *trailing[] = {"windows=clicks_5m,", NULL};
	expect_error(one(ranker, "user_activity/u1", trailing), 400, "unknown_window", "windows");
}

Test(read_plan, one_bad_parameters)
{
	const char *as_of[] = {"as_of=yesterday", NULL};
	expect_error(one(ranker, "user_activity/u1", as_of), 400, "invalid_timestamp", "as_of");
	const char *no_zone[] = {"as_of=2026-11-26T21:00:00", NULL};
	expect_error(one(ranker, "user_activity/u1", no_zone), 400, "invalid_timestamp", "as_of");
	const char *min_seq[] = {"min_seq=-1", NULL};
	expect_error(one(ranker, "user_activity/u1", min_seq), 400, "invalid_parameter", "min_seq");
	const char *wait_ms[] = {"wait_ms=60001", NULL};
	expect_error(one(ranker, "user_activity/u1", wait_ms), 400, "invalid_parameter", "wait_ms");
	const char *proof[] = {"proof=2", NULL};
	expect_error(one(ranker, "user_activity/u1", proof), 400, "invalid_parameter", "proof");
}

Test(read_plan, roles)
{
	cr_expect(fl_read_plan_role(FL_READ_ONE, ranker, &err));
	cr_expect(fl_read_plan_role(FL_READ_FEAST, admin, &err));
	cr_expect(fl_read_plan_role(FL_READ_HISTORY, auditor, &err));
	fl_error_clear(&err);
	expect_error(fl_read_plan_role(FL_READ_HISTORY, ranker, &err), 403, "forbidden", NULL);
	fl_error_clear(&err);
	expect_error(fl_read_plan_role(FL_READ_BATCH, auditor, &err), 403, "forbidden", NULL);
}

Test(read_plan, path_rest)
{
	cr_expect_str_eq(fl_read_path_rest("/v1/features/v/e", "/v1/features/"), "v/e");
	cr_expect_str_eq(fl_read_path_rest("/v1/features/v/", "/v1/features/"), "v/");
	cr_expect_null(fl_read_path_rest("/v1/features//e", "/v1/features/"));
	cr_expect_null(fl_read_path_rest("/v1/features/v", "/v1/features/"));
	cr_expect_null(fl_read_path_rest("/v1/history/v/e", "/v1/features/"));
}

Test(read_plan, batch)
{
	cr_assert(body_plan(FL_READ_BATCH, fraud,
			    "{\"view\":\"user_activity\",\"entity_ids\":[\"u1\",7,\"u1\"],"
			    "\"features\":[\"cart_items\"],\"windows\":[],"
			    "\"as_of\":\"2026-11-26T21:00:00Z\",\"proof\":true,\"min_seq\":3,"
			    "\"wait_ms\":0}"),
		  "%s", err.message);
	cr_assert_eq(plan.n_entities, 3);
	cr_expect_str_eq(plan.entity_ids[1], "7", "an integer id is its decimal text");
	cr_assert_eq(plan.parts[0].n_features, 1);
	cr_expect_str_eq(feature_name(0, 0), "cart_items");
	cr_expect_eq(plan.parts[0].n_windows, 0);
	cr_expect(plan.as_of_given && plan.proof);
	cr_expect_eq(plan.min_seq, 3);
	cr_expect_eq(plan.wait_ms, 0);
}

Test(read_plan, batch_faults)
{
	expect_error(body_plan(FL_READ_BATCH, ranker,
			       "{\"view\":\"user_activity\",\"entity_ids\":[\"u1\"],\"colour\":1}"),
		     400, "unknown_field", "colour");
	expect_error(body_plan(FL_READ_BATCH, ranker, "{\"entity_ids\":[\"u1\"]}"), 400,
		     "missing_field", "view");
	expect_error(body_plan(FL_READ_BATCH, ranker, "{\"view\":\"user_activity\"}"), 400,
		     "missing_field", "entity_ids");
	expect_error(
	    body_plan(FL_READ_BATCH, ranker, "{\"view\":\"user_activity\",\"entity_ids\":[]}"), 400,
	    "empty_batch", "entity_ids");
	expect_error(body_plan(FL_READ_BATCH, ranker,
			       "{\"view\":\"user_activity\",\"entity_ids\":[\"u1\",true]}"),
		     400, "invalid_type", "entity_ids[1]");
	expect_error(body_plan(FL_READ_BATCH, ranker,
			       "{\"view\":\"user_activity\",\"entity_ids\":[\"u1\"],"
			       "\"features\":[\"cart_items\"]}"),
		     403, "forbidden", "features[0]");
	expect_error(body_plan(FL_READ_BATCH, ranker,
			       "{\"view\":\"user_activity\",\"entity_ids\":[\"u1\"],"
			       "\"features\":\"dwell_ms\"}"),
		     400, "invalid_type", "features");
	expect_error(body_plan(FL_READ_BATCH, ranker,
			       "{\"view\":\"user_activity\",\"entity_ids\":[\"u1\"],"
			       "\"as_of\":\"2026-11-26T21:00:00 02:00\"}"),
		     400, "invalid_timestamp", "as_of");
	expect_error(body_plan(FL_READ_BATCH, ranker,
			       "{\"view\":\"user_activity\",\"entity_ids\":[\"u1\"],"
			       "\"wait_ms\":60001}"),
		     400, "invalid_value", "wait_ms");
	expect_error(body_plan(FL_READ_BATCH, ranker,
			       "{\"view\":\"user_activity\",\"entity_ids\":[\"u1\"],"
			       "\"proof\":1}"),
		     400, "invalid_type", "proof");
}

/* {"view":"user_stats","entity_ids":[n ids],"features":[m names]} */
static char *sized_batch(size_t n_ids, size_t n_names)
{
	struct fl_text text = FL_TEXT_INIT;
	fl_text_puts(&text, "{\"view\":\"user_stats\",\"entity_ids\":[");
	for (size_t i = 0; i < n_ids; i++)
		fl_text_printf(&text, "%s\"e%zu\"", i ? "," : "", i);
	fl_text_puts(&text, "],\"features\":[");
	for (size_t i = 0; i < n_names; i++)
		fl_text_printf(&text, "%s\"score\"", i ? "," : "");
	fl_text_puts(&text, "]}");
	char *out = fl_text_take(&text, NULL);
	cr_assert_not_null(out);
	return out;
}

Test(read_plan, batch_limits)
{
	char *text = sized_batch(FL_READ_BATCH_MAX, FL_READ_NAME_LIST_MAX);
	cr_expect(body_plan(FL_READ_BATCH, ranker, text), "%s", err.message);
	cr_expect_eq(plan.n_entities, FL_READ_BATCH_MAX);
	cr_expect_eq(plan.parts[0].n_features, 1, "a repeated name is taken once");
	free(text);
	text = sized_batch(FL_READ_BATCH_MAX + 1, 1);
	expect_error(body_plan(FL_READ_BATCH, ranker, text), 400, "batch_too_large", "entity_ids");
	free(text);
	text = sized_batch(1, FL_READ_NAME_LIST_MAX + 1);
	expect_error(body_plan(FL_READ_BATCH, ranker, text), 400, "limit_exceeded", "features");
	free(text);
}

Test(read_plan, feast)
{
	cr_assert(body_plan(FL_READ_FEAST, ranker,
			    "{\"features\":[\"user_activity:dwell_ms\",\"user_stats:score\","
			    "\"user_activity:clicks_5m\"],\"entities\":{\"user_id\":[\"u1\",2]},"
			    "\"project\":\"ignored\"}"),
		  "%s", err.message);
	cr_assert_eq(plan.n_parts, 2);
	cr_assert_eq(plan.n_entities, 2);
	cr_expect_str_eq(plan.entity_column, "user_id");
	cr_assert_eq(plan.n_columns, 3);
	cr_expect_str_eq(plan.columns[0].name, "dwell_ms");
	cr_expect_eq(plan.columns[1].part, 1);
	cr_expect(plan.columns[2].is_window);
	cr_expect(json_is_array(plan.entity_values));
	cr_assert(body_plan(FL_READ_FEAST, ranker,
			    "{\"features\":[\"user_activity:dwell_ms\",\"user_stats:dwell_ms\"],"
			    "\"entities\":{\"user_id\":[\"u1\"]},\"full_feature_names\":true}"),
		  "%s", err.message);
	cr_expect_str_eq(plan.columns[1].name, "user_stats__dwell_ms");
}

Test(read_plan, feast_faults)
{
	expect_error(body_plan(FL_READ_FEAST, ranker,
			       "{\"features\":[\"user_activity:dwell_ms\",\"user_stats:dwell_ms\"],"
			       "\"entities\":{\"user_id\":[\"u1\"]}}"),
		     400, "feature_name_collision", "features[1]");
	expect_error(body_plan(FL_READ_FEAST, ranker,
			       "{\"features\":[\"item_stats:price\"],"
			       "\"entities\":{\"user_id\":[\"u1\"]}}"),
		     400, "entity_mismatch", "entities.user_id");
	expect_error(body_plan(FL_READ_FEAST, ranker,
			       "{\"feature_service\":\"s\",\"entities\":{\"user_id\":[\"u1\"]}}"),
		     400, "unsupported", "feature_service");
	expect_error(body_plan(FL_READ_FEAST, ranker,
			       "{\"features\":[\"user_activity:cart_items\"],"
			       "\"entities\":{\"user_id\":[\"u1\"]}}"),
		     403, "forbidden", "features[0]");
	expect_error(body_plan(FL_READ_FEAST, ranker,
			       "{\"features\":[\"dwell_ms\"],\"entities\":{\"user_id\":[\"u1\"]}}"),
		     400, "invalid_value", "features[0]");
	expect_error(body_plan(FL_READ_FEAST, ranker,
			       "{\"features\":[\"user_stats:score\"],"
			       "\"entities\":{\"user_id\":[\"u1\"],\"item_id\":[\"i\"]}}"),
		     400, "invalid_value", "entities");
	expect_error(body_plan(FL_READ_FEAST, ranker,
			       "{\"features\":[\"user_stats:score\"],"
			       "\"entities\":{\"user_id\":[]}}"),
		     400, "empty_batch", "entities.user_id");
}

static bool history(const struct fl_principal *who, const char *rest, const char *const *query)
{
	const struct fl_read_params params = {get_param, query};
	fl_read_plan_finish(&plan);
	fl_read_plan_init(&plan, FL_READ_HISTORY, who, views);
	fl_error_clear(&err);
	return fl_read_plan_history(&plan, rest, &params, &err);
}

Test(read_plan, history)
{
	const char *q[] = {"from=2026-11-26T00:00:00Z", "to=2026-11-27T00:00:00Z", "limit=5", NULL};
	/* Auditors see every view's history: no view ACL applies. */
	cr_assert(history(auditor, "user_activity/u1", q), "%s", err.message);
	cr_expect_eq(plan.limit, 5);
	cr_expect_lt(plan.from_us, plan.to_us);
	const char *none[] = {NULL};
	cr_assert(history(auditor, "user_activity/u1", none), "%s", err.message);
	cr_expect_eq(plan.limit, FL_READ_HISTORY_LIMIT_DEFAULT);
	cr_expect_eq(plan.from_us, INT64_MIN);
	cr_expect_eq(plan.to_us, INT64_MAX);
	const char *reversed[] = {"from=2026-11-27T00:00:00Z", "to=2026-11-26T00:00:00Z", NULL};
	expect_error(history(auditor, "user_activity/u1", reversed), 400, "invalid_value", "to");
	const char *zero[] = {"limit=0", NULL};
	expect_error(history(auditor, "user_activity/u1", zero), 400, "invalid_parameter", "limit");
	const char *big[] = {"limit=10001", NULL};
	expect_error(history(auditor, "user_activity/u1", big), 400, "invalid_parameter", "limit");
	const char *bad[] = {"from=never", NULL};
	expect_error(history(auditor, "user_activity/u1", bad), 400, "invalid_timestamp", "from");
	expect_error(history(auditor, "nope/u1", none), 404, "view_not_found", NULL);
}

/* Whether a write of an event with entity id bytes[0..len) is accepted. */
static bool write_accepts(const char *bytes, size_t len)
{
	json_t *ev = json_pack("{s:s,s:o,s:{s:f}}", "view", "user_stats", "entity_id",
			       json_stringn_nocheck(bytes, len), "features", "score", 1.0);
	struct fl_event event;
	struct fl_error werr;
	cr_assert_not_null(ev);
	enum fl_status st = fl_event_validate(ev, "", views, "p", fl_time_now_us(),
					      FL_EVENT_DEFAULT_MAX_FUTURE_SKEW_US, &event, &werr);
	json_decref(ev);
	if (st == FL_OK)
		fl_event_finish(&event);
	else
		cr_expect_str_eq(werr.code, "invalid_entity_id");
	return st == FL_OK;
}

/*
 * An event written before C1 controls were refused still replays, so its
 * entity stays readable (docs/decisions.md, "Entity ids"): reads refuse only
 * what no write ever stored.
 */
Test(read_plan, an_id_stored_before_c1_controls_were_refused_is_read)
{
	const char *legacy = "a\xc2\x85z";
	cr_assert(one(admin, "user_stats/a\xc2\x85z", NULL), "%s", err.message);
	cr_assert_str_eq(plan.entity_ids[0], legacy);
	fl_read_plan_finish(&plan);
	fl_read_plan_init(&plan, FL_READ_HISTORY, admin, views);
	cr_assert(fl_read_plan_history(&plan, "user_stats/a\xc2\x85z", NULL, &err), "%s",
		  err.message);
	fl_read_plan_finish(&plan);
}

Test(read_plan, reads_and_writes_agree_on_entity_ids)
{
	char long_id[FL_ENTITY_ID_MAX_LEN + 2];
	memset(long_id, 'a', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	const char *ids[] = {
	    "",			/* empty */
	    "u1",		/* plain */
	    "a\x01z",		/* C0 control */
	    "a\x7fz",		/* DEL */
	    "a\xc2\x85z",	/* C1 control (NEL) */
	    "\xc2\x80",		/* C1 control, the first */
	    "x\xc2\x9f",	/* C1 control, the last */
	    "a\xc2\xa0z",	/* U+00A0: fine */
	    "\xc0\xaf",		/* overlong '/' */
	    "\xe0\x80\xaf",	/* overlong '/', 3 bytes */
	    "\xf0\x80\x80\xaf", /* overlong '/', 4 bytes */
	    "\xed\xa0\x80",	/* a surrogate */
	    "\xf4\x90\x80\x80", /* above U+10FFFF */
	    "\xff",		/* never UTF-8 */
	    "a\xe2\x82",	/* cut short */
	    "\xf0\x9f\x98\x80", /* U+1F600: fine */
	    long_id + 1,	/* 256 bytes: fine */
	    long_id,		/* 257 bytes */
	};
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		size_t len = strlen(ids[i]);
		bool written = write_accepts(ids[i], len);
		char rest[FL_ENTITY_ID_MAX_LEN + 32];
		snprintf(rest, sizeof(rest), "user_stats/%s", ids[i]);
		/* Ids with a C1 control were written before those were refused. */
		bool readable =
		    written || fl_entity_id_check(ids[i], len) == FL_ENTITY_ID_C1_CONTROL;
		bool read = one(admin, rest, NULL);
		cr_expect_eq(read, readable, "id %zu: read %d, write %d", i, read, written);
		if (!read)
			cr_expect_str_eq(err.code, "invalid_entity_id", "id %zu", i);
		json_t *body = json_pack("{s:s,s:[o]}", "view", "user_stats", "entity_ids",
					 json_stringn_nocheck(ids[i], len));
		cr_assert_not_null(body);
		fl_read_plan_finish(&plan);
		fl_read_plan_init(&plan, FL_READ_BATCH, admin, views);
		cr_expect_eq(fl_read_plan_batch(&plan, body, &err), readable, "id %zu in a batch",
			     i);
		json_decref(body);
		cr_expect_eq(fl_entity_id_check(ids[i], len) == FL_ENTITY_ID_OK, written, "id %zu",
			     i);
	}
	fl_read_plan_finish(&plan);
}
