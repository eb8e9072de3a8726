/*
 * Feature views: parsing and validation of definitions (CONTRACT §2), the
 * canonical form, change classification and the registry.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/view.h"

/* The definition of CONTRACT §2. Single quotes stand for double quotes. */
static const char example[] =
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

/* The same definition, reordered and respaced, with the defaults spelt out. */
static const char example_reordered[] =
    "{ 'audit_reads':true,'retention':'30d',"
    "'acl':{'features':{'cart_items':{'read':['role:fraud','role:fraud']}},"
    "'read':['role:fraud','role:inference'],'write':['clicks-pipeline']},"
    "'windows':[{'size':'24h','n':5,'of':'last_click','fn':'last_n','name':'last_5_clicks'},"
    "{'of':'dwell_ms','size':'1h','name':'dwell_avg_1h','fn':'avg'},"
    "{'fn':'count','of':'last_click','name':'clicks_5m','size':'5m'}],"
    "'max_age':'24h','features':{'embedding':'vector[8]','cart_items':'int64',"
    "'is_mobile':'bool','last_click':'string','dwell_ms':'double'},"
    "'entity':'user_id','name':'user_activity'}";

static const char example_canonical[] =
    "{\"acl\":{\"features\":{\"cart_items\":{\"read\":[\"role:fraud\"]}},"
    "\"read\":[\"role:fraud\",\"role:inference\"],\"write\":[\"clicks-pipeline\"]},"
    "\"audit_reads\":true,\"entity\":\"user_id\","
    "\"features\":{\"cart_items\":\"int64\",\"dwell_ms\":\"double\",\"embedding\":\"vector[8]\","
    "\"is_mobile\":\"bool\",\"last_click\":\"string\"},"
    "\"max_age\":\"24h\",\"name\":\"user_activity\",\"retention\":\"30d\","
    "\"windows\":[{\"fn\":\"count\",\"name\":\"clicks_5m\",\"of\":\"last_click\",\"size\":\"5m\"},"
    "{\"fn\":\"avg\",\"name\":\"dwell_avg_1h\",\"of\":\"dwell_ms\",\"size\":\"1h\"},"
    "{\"fn\":\"last_n\",\"n\":5,\"name\":\"last_5_clicks\",\"of\":\"last_click\",\"size\":\"24h\"}]"
    "}";

/* Parses JSON text in which ' stands for ". */
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

static enum fl_status parse(const char *text, struct fl_view **ret_view, struct fl_error *err)
{
	json_t *root = load(text);
	enum fl_status status = fl_view_parse(root, ret_view, err);
	json_decref(root);
	return status;
}

static struct fl_view *parse_ok(const char *text)
{
	struct fl_view *view = NULL;
	struct fl_error err;
	fl_error_clear(&err);
	enum fl_status status = parse(text, &view, &err);
	cr_assert_eq(status, FL_OK, "parse failed: %s %s (%s)", err.code, err.field, err.message);
	cr_assert_not_null(view);
	return view;
}

Test(view, contract_example_parses)
{
	struct fl_view *view = parse_ok(example);
	cr_assert_str_eq(fl_view_name(view), "user_activity");
	cr_assert_str_eq(fl_view_entity(view), "user_id");
	cr_assert_eq(fl_view_version(view), 0);

	cr_assert_eq(fl_view_feature_count(view), 5);
	static const char *const names[] = {"cart_items", "dwell_ms", "embedding", "is_mobile",
					    "last_click"};
	static const enum fl_feature_type types[] = {FL_FEATURE_INT64, FL_FEATURE_DOUBLE,
						     FL_FEATURE_VECTOR, FL_FEATURE_BOOL,
						     FL_FEATURE_STRING};
	for (size_t i = 0; i < 5; i++) {
		const struct fl_feature *feature = fl_view_feature_at(view, i);
		cr_assert_str_eq(feature->name, names[i]);
		cr_assert_eq(feature->type, types[i], "%s", names[i]);
		cr_assert_eq(feature->index, i);
		cr_assert_eq(fl_view_feature(view, names[i]), feature);
	}
	cr_assert_null(fl_view_feature_at(view, 5));
	cr_assert_null(fl_view_feature(view, "nope"));
	cr_assert_eq(fl_view_feature(view, "embedding")->dims, 8);
	cr_assert_eq(fl_view_feature(view, "dwell_ms")->dims, 0);

	cr_assert_eq(fl_view_window_count(view), 3);
	const struct fl_window *clicks = fl_view_window(view, "clicks_5m");
	cr_assert_not_null(clicks);
	cr_assert_eq(clicks->fn, FL_WINDOW_COUNT);
	cr_assert_str_eq(clicks->of, "last_click");
	cr_assert_eq(clicks->of_index, fl_view_feature(view, "last_click")->index);
	cr_assert_eq(clicks->size_us, INT64_C(300000000));
	cr_assert_eq(clicks->n, 0);
	const struct fl_window *last5 = fl_view_window(view, "last_5_clicks");
	cr_assert_eq(last5->fn, FL_WINDOW_LAST_N);
	cr_assert_eq(last5->n, 5);
	cr_assert_eq(last5->size_us, INT64_C(86400000000));
	cr_assert_str_eq(last5->size_text, "24h");
	cr_assert_eq(fl_view_window(view, "dwell_avg_1h")->fn, FL_WINDOW_AVG);
	cr_assert_str_eq(fl_view_window_at(view, 0)->name, "clicks_5m");
	cr_assert_str_eq(fl_view_window_at(view, 2)->name, "last_5_clicks");
	cr_assert_null(fl_view_window(view, "dwell_ms"));

	cr_assert_eq(fl_view_max_age_us(view), INT64_C(86400000000));
	cr_assert_eq(fl_view_retention_us(view), FL_VIEW_DEFAULT_RETENTION_US);
	cr_assert(fl_view_audit_reads(view));

	cr_assert(fl_acl_contains(fl_view_write_acl(view), "clicks-pipeline"));
	cr_assert_not(fl_acl_contains(fl_view_write_acl(view), "ranker"));
	cr_assert_eq(fl_view_read_acl(view)->count, 2);
	cr_assert_str_eq(fl_view_read_acl(view)->entries[0], "role:fraud");
	cr_assert(fl_acl_contains(fl_view_read_acl(view), "role:inference"));
	const struct fl_feature *cart = fl_view_feature(view, "cart_items");
	cr_assert(cart->read_restricted);
	cr_assert(fl_acl_contains(&cart->read_acl, "role:fraud"));
	cr_assert_not(fl_acl_contains(&cart->read_acl, "role:inference"));
	cr_assert_not(fl_view_feature(view, "dwell_ms")->read_restricted);
	fl_view_unref(view);
}

Test(view, canonical_form_is_exact_and_stable_under_reordering)
{
	struct fl_view *a = parse_ok(example);
	struct fl_view *b = parse_ok(example_reordered);
	const char *text_a, *text_b;
	size_t len_a, len_b;
	fl_view_canonical(a, &text_a, &len_a);
	fl_view_canonical(b, &text_b, &len_b);
	cr_assert_str_eq(text_a, example_canonical);
	cr_assert_eq(len_a, strlen(example_canonical));
	cr_assert_str_eq(text_b, text_a);
	cr_assert_eq(fl_view_compare(a, b, NULL), FL_VIEW_IDENTICAL);
	cr_assert_eq(fl_view_compare(b, a, NULL), FL_VIEW_IDENTICAL);

	/* The canonical text parses back to the same view. */
	struct fl_view *c = parse_ok(text_a);
	const char *text_c;
	fl_view_canonical(c, &text_c, NULL);
	cr_assert_str_eq(text_c, text_a);
	fl_view_unref(a);
	fl_view_unref(b);
	fl_view_unref(c);
}

Test(view, defaults_and_nulls)
{
	struct fl_view *view =
	    parse_ok("{'name':'v','entity':'e','features':{'x':'int64'},'max_age':null,"
		     "'acl':null,'windows':null,'audit_reads':null}");
	const char *text;
	fl_view_canonical(view, &text, NULL);
	cr_assert_str_eq(text,
			 "{\"acl\":{\"features\":{},\"read\":[],\"write\":[]},"
			 "\"audit_reads\":true,\"entity\":\"e\",\"features\":{\"x\":\"int64\"},"
			 "\"name\":\"v\",\"retention\":\"30d\",\"windows\":[]}");
	cr_assert_eq(fl_view_max_age_us(view), 0);
	cr_assert_eq(fl_view_write_acl(view)->count, 0);
	cr_assert_not(fl_acl_contains(fl_view_write_acl(view), "anyone"));
	struct fl_view *bare = parse_ok("{'name':'v','entity':'e','features':{'x':'int64'}}");
	cr_assert_eq(fl_view_compare(view, bare, NULL), FL_VIEW_IDENTICAL);
	fl_view_unref(bare);
	fl_view_unref(view);

	view = parse_ok("{'name':'v','entity':'e','features':{'x':'int64'},'audit_reads':false,"
			"'retention':'0007d','max_age':'90s'}");
	cr_assert_not(fl_view_audit_reads(view));
	cr_assert_eq(fl_view_retention_us(view), INT64_C(7) * 86400 * 1000000);
	cr_assert_eq(fl_view_max_age_us(view), INT64_C(90) * 1000000);
	fl_view_canonical(view, &text, NULL);
	cr_assert(strstr(text, "\"retention\":\"7d\"") != NULL, "%s", text);
	cr_assert(strstr(text, "\"max_age\":\"90s\"") != NULL, "%s", text);
	fl_view_unref(view);
}

/*
 * Names looked up in a view without windows, or in an empty ACL: no match,
 * and no bsearch over a NULL array (undefined behaviour that UBSan reports).
 */
Test(view, lookups_in_empty_lists)
{
	struct fl_view *view = parse_ok("{'name':'v','entity':'e','features':{'x':'int64'}}");
	cr_assert_eq(fl_view_window_count(view), 0);
	cr_assert_null(fl_view_window(view, "zz"));
	cr_assert_null(fl_view_window(view, "x"));
	cr_assert_null(fl_view_feature(view, "zz"));
	cr_assert_not_null(fl_view_feature(view, "x"));
	cr_assert_not(fl_acl_contains(fl_view_read_acl(view), "zz"));
	fl_view_unref(view);
}

Test(view, duration_spelling_is_identical_but_kept)
{
	struct fl_view *a = parse_ok("{'name':'v','entity':'e','features':{'x':'int64'},"
				     "'max_age':'1h','windows':[{'name':'w','fn':'sum','of':'x',"
				     "'size':'1d'}]}");
	struct fl_view *b = parse_ok("{'name':'v','entity':'e','features':{'x':'int64'},"
				     "'max_age':'60m','windows':[{'name':'w','fn':'sum','of':'x',"
				     "'size':'24h'}]}");
	cr_assert_eq(fl_view_compare(a, b, NULL), FL_VIEW_IDENTICAL);
	const char *text;
	fl_view_canonical(b, &text, NULL);
	cr_assert(strstr(text, "\"max_age\":\"60m\"") != NULL, "%s", text);
	cr_assert(strstr(text, "\"size\":\"24h\"") != NULL, "%s", text);
	fl_view_unref(a);
	fl_view_unref(b);
}

Test(view, to_json_with_version)
{
	struct fl_view *view = parse_ok(example);
	struct fl_view_registry *registry;
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
	json_t *json = fl_view_to_json(view, true);
	cr_assert_not_null(json);
	cr_assert_eq(json_integer_value(json_object_get(json, "version")), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json, "name")), "user_activity");
	json_t *plain = fl_view_to_json(view, false);
	cr_assert_null(json_object_get(plain, "version"));
	char *dumped = json_dumps(plain, JSON_COMPACT | JSON_SORT_KEYS);
	cr_assert_str_eq(dumped, example_canonical);
	free(dumped);
	json_decref(plain);
	json_decref(json);
	fl_view_unref(view);
	fl_view_registry_destroy(registry);
}

/* One invalid definition and the error it must give. */
struct bad_case {
	const char *definition;
	const char *code;
	const char *field;
};

#define BASE_FEATURES "'features':{'x':'int64','s':'string','d':'double'}"
#define WITH_WINDOW(w) "{'name':'v','entity':'e'," BASE_FEATURES ",'windows':[" w "]}"
#define WITH(extra) "{'name':'v','entity':'e'," BASE_FEATURES "," extra "}"

static const struct bad_case bad_cases[] = {
    {"[]", "invalid_json", ""},
    {"{'entity':'e'," BASE_FEATURES "}", "missing_field", "name"},
    {"{'name':'User','entity':'e'," BASE_FEATURES "}", "invalid_name", "name"},
    {"{'name':'9v','entity':'e'," BASE_FEATURES "}", "invalid_name", "name"},
    {"{'name':'v-1','entity':'e'," BASE_FEATURES "}", "invalid_name", "name"},
    {"{'name':'a123456789012345678901234567890123456789012345678901234567890123',"
     "'entity':'e'," BASE_FEATURES "}",
     "invalid_name", "name"},
    {"{'name':'','entity':'e'," BASE_FEATURES "}", "invalid_name", "name"},
    {"{'name':7,'entity':'e'," BASE_FEATURES "}", "invalid_type", "name"},
    {"{'name':'v'," BASE_FEATURES "}", "missing_field", "entity"},
    {"{'name':'v','entity':'User'," BASE_FEATURES "}", "invalid_name", "entity"},
    {"{'name':'v','entity':'e'}", "missing_field", "features"},
    {"{'name':'v','entity':'e','features':[]}", "invalid_type", "features"},
    {"{'name':'v','entity':'e','features':{}}", "invalid_value", "features"},
    {"{'name':'v','entity':'e','features':{'Dwell':'double'}}", "invalid_name", "features.Dwell"},
    {"{'name':'v','entity':'e','features':{'a-b':'double'}}", "invalid_name", "features[\"a-b\"]"},
    {"{'name':'v','entity':'e','features':{'e':'double'}}", "duplicate_name", "features.e"},
    {"{'name':'v','entity':'e','features':{'x':'float'}}", "invalid_feature_type", "features.x"},
    {"{'name':'v','entity':'e','features':{'x':'Int64'}}", "invalid_feature_type", "features.x"},
    {"{'name':'v','entity':'e','features':{'x':3}}", "invalid_type", "features.x"},
    {"{'name':'v','entity':'e','features':{'x':'vector[0]'}}", "invalid_feature_type",
     "features.x"},
    {"{'name':'v','entity':'e','features':{'x':'vector[4097]'}}", "invalid_feature_type",
     "features.x"},
    {"{'name':'v','entity':'e','features':{'x':'vector[08]'}}", "invalid_feature_type",
     "features.x"},
    {"{'name':'v','entity':'e','features':{'x':'vector[]'}}", "invalid_feature_type", "features.x"},
    {"{'name':'v','entity':'e','features':{'x':'vector[-1]'}}", "invalid_feature_type",
     "features.x"},
    {"{'name':'v','entity':'e','features':{'x':'vector[8] '}}", "invalid_feature_type",
     "features.x"},
    {"{'name':'v','entity':'e','features':{'x':'vector'}}", "invalid_feature_type", "features.x"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'nope','size':'5m'}"), "unknown_feature",
     "windows[0].of"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'x','size':'5m'},"
		 "{'name':'w2','fn':'count','of':'nope','size':'5m'}"),
     "unknown_feature", "windows[1].of"},
    {WITH_WINDOW("{'name':'w','fn':'sum','of':'s','size':'5m'}"), "invalid_window",
     "windows[0].fn"},
    {WITH_WINDOW("{'name':'w','fn':'stddev','of':'s','size':'5m'}"), "invalid_window",
     "windows[0].fn"},
    {WITH_WINDOW("{'name':'w','fn':'median','of':'x','size':'5m'}"), "invalid_value",
     "windows[0].fn"},
    {WITH_WINDOW("{'name':'w','fn':'last_n','of':'s','size':'5m'}"), "missing_field",
     "windows[0].n"},
    {WITH_WINDOW("{'name':'w','fn':'last_n','of':'s','size':'5m','n':0}"), "invalid_value",
     "windows[0].n"},
    {WITH_WINDOW("{'name':'w','fn':'last_n','of':'s','size':'5m','n':1001}"), "invalid_value",
     "windows[0].n"},
    {WITH_WINDOW("{'name':'w','fn':'last_n','of':'s','size':'5m','n':'5'}"), "invalid_type",
     "windows[0].n"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s','size':'5m','n':5}"), "invalid_window",
     "windows[0].n"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s','size':'5x'}"), "invalid_duration",
     "windows[0].size"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s','size':'5'}"), "invalid_duration",
     "windows[0].size"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s','size':'0s'}"), "invalid_duration",
     "windows[0].size"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s','size':'-5m'}"), "invalid_duration",
     "windows[0].size"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s','size':'1.5h'}"), "invalid_duration",
     "windows[0].size"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s','size':' 5m'}"), "invalid_duration",
     "windows[0].size"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s','size':'36501d'}"), "invalid_duration",
     "windows[0].size"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s','size':300}"), "invalid_type",
     "windows[0].size"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s'}"), "missing_field", "windows[0].size"},
    {WITH_WINDOW("{'name':'x','fn':'count','of':'s','size':'5m'}"), "duplicate_name",
     "windows[0].name"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s','size':'5m'},"
		 "{'name':'w','fn':'max','of':'x','size':'5m'}"),
     "duplicate_name", "windows[1].name"},
    {WITH_WINDOW("{'name':'W','fn':'count','of':'s','size':'5m'}"), "invalid_name",
     "windows[0].name"},
    {WITH_WINDOW("{'fn':'count','of':'s','size':'5m'}"), "missing_field", "windows[0].name"},
    {WITH_WINDOW("{'name':'w','fn':'count','of':'s','size':'5m','every':'1m'}"), "unknown_field",
     "windows[0].every"},
    {WITH_WINDOW("'w'"), "invalid_type", "windows[0]"},
    {WITH("'windows':{}"), "invalid_type", "windows"},
    {WITH("'max_age':'1w'"), "invalid_duration", "max_age"},
    {WITH("'retention':'forever'"), "invalid_duration", "retention"},
    {WITH("'audit_reads':'yes'"), "invalid_type", "audit_reads"},
    {WITH("'colour':'blue'"), "unknown_field", "colour"},
    {WITH("'version':2"), "unknown_field", "version"},
    {WITH("'acl':{'features':{'nope':{'read':['role:fraud']}}}"), "unknown_feature",
     "acl.features.nope"},
    {WITH("'acl':{'features':{'x':{'write':['a']}}}"), "unknown_field", "acl.features.x.write"},
    {WITH("'acl':{'features':{'x':{}}}"), "missing_field", "acl.features.x.read"},
    {WITH("'acl':{'features':{'x':['a']}}"), "invalid_type", "acl.features.x"},
    {WITH("'acl':{'admin':['a']}"), "unknown_field", "acl.admin"},
    {WITH("'acl':{'read':['ok','']}"), "invalid_acl", "acl.read[1]"},
    {WITH("'acl':{'read':['role:']}"), "invalid_acl", "acl.read[0]"},
    {WITH("'acl':{'write':['a\\nb']}"), "invalid_acl", "acl.write[0]"},
    {WITH("'acl':{'write':[5]}"), "invalid_type", "acl.write[0]"},
    {WITH("'acl':{'write':'a'}"), "invalid_type", "acl.write"},
    {WITH("'acl':[]"), "invalid_type", "acl"},
};

Test(view, invalid_definitions_name_code_and_field)
{
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *c = &bad_cases[i];
		struct fl_view *view = NULL;
		struct fl_error err;
		fl_error_clear(&err);
		enum fl_status status = parse(c->definition, &view, &err);
		cr_expect_eq(status, FL_ERR_INVALID, "case %zu (%s) was accepted", i,
			     c->definition);
		cr_expect_null(view, "case %zu", i);
		cr_expect_eq(err.http_status, 400, "case %zu", i);
		cr_expect_str_eq(err.code, c->code, "case %zu (%s): %s", i, c->definition,
				 err.message);
		cr_expect_str_eq(err.field, c->field, "case %zu (%s)", i, c->definition);
		cr_expect_neq(err.message[0], '\0', "case %zu has no message", i);
		fl_view_unref(view);
	}
}

Test(view, vector_bounds_accepted)
{
	struct fl_view *view = parse_ok("{'name':'v','entity':'e','features':{'a':'vector[1]',"
					"'b':'vector[4096]'}}");
	cr_assert_eq(fl_view_feature(view, "a")->dims, 1);
	cr_assert_eq(fl_view_feature(view, "b")->dims, 4096);
	fl_view_unref(view);
}

/* Builds a definition with n features f0..f{n-1} and w windows over f0. */
static char *many(size_t n, size_t w)
{
	size_t cap = 64 + n * 32 + w * 80;
	char *text = malloc(cap);
	cr_assert_not_null(text);
	size_t len = (size_t)snprintf(text, cap, "{\"name\":\"v\",\"entity\":\"e\",\"features\":{");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, cap - len, "%s\"f%zu\":\"int64\"",
					i > 0 ? "," : "", i);
	len += (size_t)snprintf(text + len, cap - len, "},\"windows\":[");
	for (size_t i = 0; i < w; i++)
		len += (size_t)snprintf(text + len, cap - len,
					"%s{\"name\":\"w%zu\",\"fn\":\"sum\",\"of\":\"f0\","
					"\"size\":\"%zum\"}",
					i > 0 ? "," : "", i, i + 1);
	snprintf(text + len, cap - len, "]}");
	return text;
}

Test(view, limits_on_features_and_windows)
{
	char *text = many(FL_VIEW_MAX_FEATURES, FL_VIEW_MAX_WINDOWS);
	struct fl_view *view = parse_ok(text);
	cr_assert_eq(fl_view_feature_count(view), FL_VIEW_MAX_FEATURES);
	cr_assert_eq(fl_view_window_count(view), FL_VIEW_MAX_WINDOWS);
	cr_assert_not_null(fl_view_feature(view, "f999"));
	cr_assert_not_null(fl_view_window(view, "w99"));
	fl_view_unref(view);
	free(text);

	struct fl_error err;
	view = NULL;
	text = many(FL_VIEW_MAX_FEATURES + 1, 0);
	cr_assert_eq(parse(text, &view, &err), FL_ERR_INVALID);
	cr_assert_str_eq(err.code, "limit_exceeded");
	cr_assert_str_eq(err.field, "features");
	free(text);
	text = many(1, FL_VIEW_MAX_WINDOWS + 1);
	cr_assert_eq(parse(text, &view, &err), FL_ERR_INVALID);
	cr_assert_str_eq(err.code, "limit_exceeded");
	cr_assert_str_eq(err.field, "windows");
	free(text);
	cr_assert_null(view);
}

Test(view, acl_lists_are_sets)
{
	struct fl_view *view = parse_ok(WITH("'acl':{'write':['b','a','b','role:x'],'read':[]}"));
	const struct fl_acl *write = fl_view_write_acl(view);
	cr_assert_eq(write->count, 3);
	cr_assert_str_eq(write->entries[0], "a");
	cr_assert_str_eq(write->entries[1], "b");
	cr_assert_str_eq(write->entries[2], "role:x");
	cr_assert_eq(fl_view_read_acl(view)->count, 0);
	fl_view_unref(view);
}

/* ---- Comparisons ------------------------------------------------------- */

static enum fl_view_change compare(const char *current, const char *proposed, struct fl_error *err)
{
	struct fl_view *a = parse_ok(current);
	struct fl_view *b = parse_ok(proposed);
	enum fl_view_change change = fl_view_compare(a, b, err);
	fl_view_unref(a);
	fl_view_unref(b);
	return change;
}

#define V1 "{'name':'v','entity':'e','features':{'x':'int64','s':'string','vec':'vector[4]'},"
#define W1 "'windows':[{'name':'w','fn':'sum','of':'x','size':'5m'}]"

Test(view, compare_identical)
{
	cr_assert_eq(compare(V1 W1 "}", V1 W1 "}", NULL), FL_VIEW_IDENTICAL);
	cr_assert_eq(compare(example, example_reordered, NULL), FL_VIEW_IDENTICAL);
}

Test(view, compare_compatible_changes)
{
	/* New feature. */
	cr_assert_eq(compare(V1 W1 "}",
			     "{'name':'v','entity':'e','features':{'x':'int64','s':'string',"
			     "'vec':'vector[4]','y':'bool'}," W1 "}",
			     NULL),
		     FL_VIEW_COMPATIBLE);
	/* New window, changed window, removed window. */
	cr_assert_eq(compare(V1 W1 "}",
			     V1 "'windows':[{'name':'w','fn':'sum','of':'x','size':'5m'},"
				"{'name':'w2','fn':'count','of':'s','size':'1h'}]}",
			     NULL),
		     FL_VIEW_COMPATIBLE);
	cr_assert_eq(compare(V1 W1 "}",
			     V1 "'windows':[{'name':'w','fn':'avg','of':'x','size':'5m'}]}", NULL),
		     FL_VIEW_COMPATIBLE);
	cr_assert_eq(compare(V1 W1 "}", V1 "'windows':[]}", NULL), FL_VIEW_COMPATIBLE);
	/* ACL, max_age, retention, audit_reads. */
	cr_assert_eq(compare(V1 W1 "}", V1 W1 ",'acl':{'write':['p']}}", NULL), FL_VIEW_COMPATIBLE);
	cr_assert_eq(compare(V1 W1 "}", V1 W1 ",'acl':{'features':{'x':{'read':[]}}}}", NULL),
		     FL_VIEW_COMPATIBLE);
	cr_assert_eq(compare(V1 W1 "}", V1 W1 ",'max_age':'1h'}", NULL), FL_VIEW_COMPATIBLE);
	cr_assert_eq(compare(V1 W1 ",'max_age':'1h'}", V1 W1 ",'max_age':'2h'}", NULL),
		     FL_VIEW_COMPATIBLE);
	cr_assert_eq(compare(V1 W1 "}", V1 W1 ",'retention':'90d'}", NULL), FL_VIEW_COMPATIBLE);
	cr_assert_eq(compare(V1 W1 "}", V1 W1 ",'audit_reads':false}", NULL), FL_VIEW_COMPATIBLE);
}

Test(view, compare_incompatible_changes)
{
	struct fl_error err;
	fl_error_clear(&err);
	cr_assert_eq(
	    compare(V1 W1 "}",
		    "{'name':'v','entity':'e','features':{'x':'double','s':'string',"
		    "'vec':'vector[4]'},'windows':[{'name':'w','fn':'sum','of':'x','size':'5m'}]}",
		    &err),
	    FL_VIEW_INCOMPATIBLE);
	cr_assert_eq(err.http_status, 409);
	cr_assert_str_eq(err.code, "incompatible_view_change");
	cr_assert_str_eq(err.field, "features.x");
	cr_assert(strstr(err.message, "int64") != NULL && strstr(err.message, "double") != NULL,
		  "%s", err.message);

	fl_error_clear(&err);
	cr_assert_eq(
	    compare(V1 W1 "}",
		    "{'name':'v','entity':'e','features':{'x':'int64','vec':'vector[4]'}," W1 "}",
		    &err),
	    FL_VIEW_INCOMPATIBLE);
	cr_assert_str_eq(err.field, "features.s");

	fl_error_clear(&err);
	cr_assert_eq(compare(V1 W1 "}",
			     "{'name':'v','entity':'e','features':{'x':'int64','s':'string',"
			     "'vec':'vector[5]'}," W1 "}",
			     &err),
		     FL_VIEW_INCOMPATIBLE);
	cr_assert_str_eq(err.field, "features.vec");
	cr_assert(strstr(err.message, "vector[5]") != NULL, "%s", err.message);

	fl_error_clear(&err);
	cr_assert_eq(compare(V1 W1 "}",
			     "{'name':'v','entity':'user','features':{'x':'int64','s':'string',"
			     "'vec':'vector[4]'}," W1 "}",
			     &err),
		     FL_VIEW_INCOMPATIBLE);
	cr_assert_str_eq(err.field, "entity");
	cr_assert_eq(err.http_status, 409);
}

/* ---- Registry ---------------------------------------------------------- */

Test(view, registry_versions_and_lookup)
{
	struct fl_view_registry *registry;
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	struct fl_view *found = NULL;
	cr_assert_eq(fl_view_registry_get(registry, "v", &found), FL_ERR_NOT_FOUND);
	cr_assert_null(found);

	struct fl_view *v1 = parse_ok(V1 W1 "}");
	cr_assert_eq(fl_view_registry_put(registry, v1, 2), FL_ERR_CONFLICT);
	cr_assert_eq(fl_view_version(v1), 0);
	cr_assert_eq(fl_view_registry_put(registry, v1, 1), FL_OK);
	cr_assert_eq(fl_view_version(v1), 1);
	cr_assert_eq(fl_view_registry_get(registry, "v", &found), FL_OK);
	cr_assert_eq(found, v1);
	fl_view_unref(found);

	struct fl_view *v2 = parse_ok(V1 "'windows':[]}");
	cr_assert_eq(fl_view_registry_put(registry, v2, 3), FL_ERR_CONFLICT);
	cr_assert_eq(fl_view_registry_put(registry, v2, 1), FL_ERR_CONFLICT);
	cr_assert_eq(fl_view_registry_put(registry, v2, 2), FL_OK);
	/* A view gets its version once. */
	cr_assert_eq(fl_view_registry_put(registry, v2, 3), FL_ERR_INVALID);
	cr_assert_eq(fl_view_registry_get(registry, "v", &found), FL_OK);
	cr_assert_eq(fl_view_version(found), 2);
	cr_assert_eq(fl_view_window_count(found), 0);
	fl_view_unref(found);
	/* The replaced version stays usable through its reference. */
	cr_assert_eq(fl_view_window_count(v1), 1);
	cr_assert_eq(fl_view_version(v1), 1);
	fl_view_unref(v1);
	fl_view_unref(v2);
	fl_view_registry_destroy(registry);
	fl_view_registry_destroy(NULL);
	fl_view_unref(NULL);
}

/*
 * Read models keep only the current version of each view: loading them into
 * an empty registry starts a name at that version, and later versions follow
 * it one by one.
 */
Test(view, registry_restores_stored_versions)
{
	struct fl_view_registry *registry;
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	struct fl_view *v5 = parse_ok(V1 W1 "}");
	cr_assert_eq(fl_view_registry_restore(registry, v5, 0), FL_ERR_INVALID);
	cr_assert_eq(fl_view_registry_restore(registry, v5, 5), FL_OK);
	cr_assert_eq(fl_view_version(v5), 5);
	struct fl_view *found;
	cr_assert_eq(fl_view_registry_get(registry, "v", &found), FL_OK);
	cr_assert_eq(found, v5);
	cr_assert_eq(fl_view_version(found), 5);
	fl_view_unref(found);
	/* A name is restored once; then versions go on from the restored one. */
	struct fl_view *again = parse_ok(V1 W1 "}");
	cr_assert_eq(fl_view_registry_restore(registry, again, 7), FL_ERR_CONFLICT);
	cr_assert_eq(fl_view_version(again), 0);
	struct fl_view *v6 = parse_ok(V1 "'windows':[]}");
	cr_assert_eq(fl_view_registry_put(registry, v6, 7), FL_ERR_CONFLICT);
	cr_assert_eq(fl_view_registry_put(registry, v6, 6), FL_OK);
	cr_assert_eq(fl_view_registry_get(registry, "v", &found), FL_OK);
	cr_assert_eq(fl_view_version(found), 6);
	cr_assert_eq(fl_view_window_count(found), 0);
	fl_view_unref(found);
	/* put still starts a new name at 1 */
	struct fl_view *other = parse_ok("{'name':'w','entity':'e','features':{'x':'int64'}}");
	cr_assert_eq(fl_view_registry_put(registry, other, 3), FL_ERR_CONFLICT);
	cr_assert_eq(fl_view_registry_restore(NULL, other, 3), FL_ERR_INVALID);
	fl_view_unref(other);
	fl_view_unref(again);
	fl_view_unref(v6);
	fl_view_unref(v5);
	fl_view_registry_destroy(registry);
}

Test(view, registry_lists_in_name_order)
{
	struct fl_view_registry *registry;
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	struct fl_view **views = (struct fl_view **)1;
	size_t count = 99;
	cr_assert_eq(fl_view_registry_list(registry, &views, &count), FL_OK);
	cr_assert_null(views);
	cr_assert_eq(count, 0);

	static const char *const names[] = {"mango", "apple", "zebra", "kiwi", "banana"};
	for (size_t i = 0; i < 5; i++) {
		char text[128];
		snprintf(text, sizeof(text), "{'name':'%s','entity':'e','features':{'x':'int64'}}",
			 names[i]);
		struct fl_view *view = parse_ok(text);
		cr_assert_eq(fl_view_registry_put(registry, view, 1), FL_OK);
		fl_view_unref(view);
	}
	cr_assert_eq(fl_view_registry_count(registry), 5);
	cr_assert_eq(fl_view_registry_list(registry, &views, &count), FL_OK);
	cr_assert_eq(count, 5);
	static const char *const sorted[] = {"apple", "banana", "kiwi", "mango", "zebra"};
	for (size_t i = 0; i < 5; i++)
		cr_assert_str_eq(fl_view_name(views[i]), sorted[i]);
	fl_view_registry_destroy(registry);
	/* The list holds its own references. */
	cr_assert_str_eq(fl_view_name(views[4]), "zebra");
	fl_view_list_free(views, count);
	fl_view_list_free(NULL, 0);
}

struct reader_args {
	struct fl_view_registry *registry;
	int rounds;
	int failures;
};

static void *reader(void *arg)
{
	struct reader_args *args = arg;
	for (int i = 0; i < args->rounds; i++) {
		struct fl_view *view;
		if (fl_view_registry_get(args->registry, "v", &view) != FL_OK) {
			args->failures++;
			continue;
		}
		/* Every version has feature x and as many windows as its version. */
		if (fl_view_feature(view, "x") == NULL ||
		    fl_view_window_count(view) + 1 != fl_view_version(view))
			args->failures++;
		fl_view_unref(view);
	}
	return NULL;
}

Test(view, registry_many_readers_one_writer)
{
	struct fl_view_registry *registry;
	cr_assert_eq(fl_view_registry_create(&registry), FL_OK);
	struct fl_view *first = parse_ok("{'name':'v','entity':'e','features':{'x':'int64'}}");
	cr_assert_eq(fl_view_registry_put(registry, first, 1), FL_OK);
	fl_view_unref(first);

	pthread_t threads[4];
	struct reader_args args[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (struct reader_args){registry, 20000, 0};
		cr_assert_eq(pthread_create(&threads[i], NULL, reader, &args[i]), 0);
	}
	char text[8192];
	for (int version = 2; version <= 40; version++) {
		int len =
		    snprintf(text, sizeof(text),
			     "{\"name\":\"v\",\"entity\":\"e\",\"features\":{\"x\":\"int64\"},"
			     "\"windows\":[");
		for (int w = 1; w < version; w++)
			len += snprintf(text + len, sizeof(text) - (size_t)len,
					"%s{\"name\":\"w%d\",\"fn\":\"count\",\"of\":\"x\","
					"\"size\":\"1m\"}",
					w > 1 ? "," : "", w);
		snprintf(text + len, sizeof(text) - (size_t)len, "]}");
		struct fl_view *view = parse_ok(text);
		cr_assert_eq(fl_view_registry_put(registry, view, (uint64_t)version), FL_OK);
		fl_view_unref(view);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(threads[i], NULL);
		cr_assert_eq(args[i].failures, 0);
	}
	fl_view_registry_destroy(registry);
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

Test(view, parse_survives_allocation_failures)
{
	json_t *definition = load(example);
	bool succeeded = false;
	int failures = 0;
	for (int n = 0; n < 100000 && !succeeded; n++) {
		struct fl_view *view = NULL;
		struct fl_error err;
		fl_error_clear(&err);
		allocations_left = n;
		json_set_alloc_funcs(failing_malloc, free);
		enum fl_status status = fl_view_parse(definition, &view, &err);
		json_set_alloc_funcs(malloc, free);
		if (status == FL_OK) {
			const char *text;
			fl_view_canonical(view, &text, NULL);
			cr_assert_str_eq(text, example_canonical);
			fl_view_unref(view);
			succeeded = true;
		} else {
			cr_assert_eq(status, FL_ERR_NOMEM, "allocation %d: %s", n, err.message);
			cr_assert_eq(err.http_status, 500);
			cr_assert_null(view);
			failures++;
		}
	}
	cr_assert(succeeded);
	cr_assert_gt(failures, 10);
	json_decref(definition);
}
