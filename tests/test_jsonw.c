/* The JSON writer prints what jansson prints; the member scanner. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fledger/jsonw.h"
#include "fledger/util.h"

static char *jansson_text(json_t *value)
{
	char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(value);
	cr_assert_not_null(text);
	return text;
}

static char *writer_text(struct fl_jw *w)
{
	char *text = fl_jw_take(w, NULL);
	cr_assert_not_null(text);
	return text;
}

Test(jsonw, strings_match_jansson)
{
	static const char *const samples[] = {
	    "",
	    "plain",
	    "quote\" back\\slash",
	    "a/b",
	    "tab\tnl\ncr\rbs\bff\f",
	    "\x01\x1f\x7f",
	    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
	    "\xe2\x80\xa8",
	};
	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		struct fl_jw w;
		fl_jw_init(&w);
		fl_jw_str(&w, samples[i]);
		char *ours = writer_text(&w);
		char *theirs = jansson_text(json_string(samples[i]));
		cr_expect_str_eq(ours, theirs, "sample %zu", i);
		free(ours);
		free(theirs);
	}
}

Test(jsonw, numbers_match_jansson)
{
	static const double doubles[] = {0.0,
					 -0.0,
					 1.0,
					 -2.5,
					 0.1,
					 1.0 / 3.0,
					 1e20,
					 1e21,
					 1e-5,
					 1.5e-7,
					 123456789012345678.0,
					 1e300,
					 -1e-300,
					 4.9e-324,
					 1e16,
					 12.25,
					 100.0,
					 2e-308};
	for (size_t i = 0; i < sizeof(doubles) / sizeof(doubles[0]); i++) {
		struct fl_jw w;
		fl_jw_init(&w);
		fl_jw_double(&w, doubles[i]);
		char *ours = writer_text(&w);
		char *theirs = jansson_text(json_real(doubles[i]));
		cr_expect_str_eq(ours, theirs, "double %zu (%g)", i, doubles[i]);
		free(ours);
		free(theirs);
	}
	static const int64_t ints[] = {0, 1, -1, 42, INT64_MAX, INT64_MIN, 1000000007};
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		struct fl_jw w;
		fl_jw_init(&w);
		fl_jw_i64(&w, ints[i]);
		char *ours = writer_text(&w);
		char *theirs = jansson_text(json_integer(ints[i]));
		cr_expect_str_eq(ours, theirs);
		free(ours);
		free(theirs);
	}
	struct fl_jw w;
	fl_jw_init(&w);
	fl_jw_u64(&w, UINT64_MAX);
	fl_jw_char(&w, ' ');
	fl_jw_double(&w, NAN);
	fl_jw_char(&w, ' ');
	fl_jw_double(&w, INFINITY);
	char *text = writer_text(&w);
	cr_expect_str_eq(text, "18446744073709551615 null null");
	free(text);
}

Test(jsonw, structure_and_commas)
{
	struct fl_jw w;
	fl_jw_init(&w);
	fl_jw_open(&w, '{');
	fl_jw_key(&w, "a");
	fl_jw_open(&w, '[');
	for (int i = 0; i < 3; i++) {
		fl_jw_sep(&w);
		fl_jw_i64(&w, i);
	}
	fl_jw_close(&w, ']');
	fl_jw_key(&w, "b");
	fl_jw_open(&w, '{');
	fl_jw_close(&w, '}');
	fl_jw_key(&w, "t");
	fl_jw_time(&w, 1700000000123456);
	fl_jw_close(&w, '}');
	size_t len = 0;
	char *text = fl_jw_take(&w, &len);
	cr_assert_not_null(text);
	cr_expect_str_eq(text, "{\"a\":[0,1,2],\"b\":{},\"t\":\"2023-11-14T22:13:20.123456Z\"}");
	cr_expect_eq(len, strlen(text));
	json_error_t jerr;
	json_t *parsed = json_loads(text, 0, &jerr);
	cr_expect_not_null(parsed, "%s", jerr.text);
	json_decref(parsed);
	free(text);
	cr_expect_null(w.text.data);
}

Test(jsonw, grows_past_its_first_block)
{
	struct fl_jw w;
	fl_jw_init(&w);
	fl_jw_open(&w, '[');
	for (int i = 0; i < 10000; i++) {
		fl_jw_sep(&w);
		fl_jw_str(&w, "0123456789");
	}
	fl_jw_close(&w, ']');
	char *text = writer_text(&w);
	json_error_t jerr;
	json_t *parsed = json_loads(text, 0, &jerr);
	cr_assert_not_null(parsed);
	cr_expect_eq(json_array_size(parsed), 10000);
	json_decref(parsed);
	free(text);
}

static void expect_member(const char *object, const char *key, const char *expected)
{
	const char *value = NULL;
	size_t len = 0;
	bool found = fl_json_member(object, strlen(object), key, &value, &len);
	if (!expected) {
		cr_expect_not(found, "%s in %s", key, object);
		return;
	}
	cr_assert(found, "%s in %s", key, object);
	cr_expect_eq(len, strlen(expected), "%s in %s: %.*s", key, object, (int)len, value);
	cr_expect_eq(memcmp(value, expected, len), 0, "%s in %s: %.*s", key, object, (int)len,
		     value);
}

Test(jsonw, member_scanner)
{
	const char *obj = "{\"amount\":12.5,\"tags\":[1,[2,{\"x\":\"]\"}]],\"name\":\"a\\\"b,}\","
			  "\"n\":null,\"o\":{\"amount\":1},\"z\":-3}";
	expect_member(obj, "amount", "12.5");
	expect_member(obj, "tags", "[1,[2,{\"x\":\"]\"}]]");
	expect_member(obj, "name", "\"a\\\"b,}\"");
	expect_member(obj, "n", "null");
	expect_member(obj, "o", "{\"amount\":1}");
	expect_member(obj, "z", "-3");
	expect_member(obj, "x", NULL); /* nested keys are not members */
	expect_member(obj, "am", NULL);
	/* an even run of backslashes does not escape the closing quote */
	expect_member("{\"k\":\"a\\\\\",\"z\":1}", "z", "1");
	expect_member("{\"k\":\"a\\\\\",\"z\":1}", "k", "\"a\\\\\"");
	expect_member("{\"k\":\"\\\\\\\"\",\"z\":2}", "z", "2");
	expect_member(" { \"a\" : 1 , \"b\" : [ 2 ] } ", "a", "1");
	expect_member(" { \"a\" : 1 , \"b\" : [ 2 ] } ", "b", "[ 2 ]");
	expect_member("{}", "a", NULL);
	expect_member("[1]", "a", NULL);
	expect_member("", "a", NULL);
	expect_member("{\"a\":\"unterminated", "a", NULL);
	expect_member("{\"a\":[1,2", "a", NULL);
	expect_member("{\"a\":1,\"b\"", "b", NULL);
	expect_member("{\"a\":,\"b\":1}", "b", NULL);
}

Test(jsonw, member_iterator)
{
	const char *obj = " { \"a\" : 1 , \"b\":[1,{\"c\":2}],\"s\":\"x\\\"}\" , \"e\":{} } ";
	static const char *const keys[] = {"a", "b", "s", "e"};
	static const char *const values[] = {"1", "[1,{\"c\":2}]", "\"x\\\"}\"", "{}"};
	size_t pos = 0, n = 0;
	struct fl_json_member m;
	int rc;
	while ((rc = fl_json_next_member(obj, strlen(obj), &pos, &m)) == 1) {
		cr_assert_lt(n, 4);
		cr_expect_eq(m.key_len, strlen(keys[n]));
		cr_expect_eq(memcmp(m.key, keys[n], m.key_len), 0);
		cr_expect_eq(m.value_len, strlen(values[n]), "%.*s", (int)m.value_len, m.value);
		cr_expect_eq(memcmp(m.value, values[n], m.value_len), 0);
		n++;
	}
	cr_expect_eq(rc, 0);
	cr_expect_eq(n, 4);
	cr_expect_eq(fl_json_next_member(obj, strlen(obj), &pos, &m), 0, "stays at the end");

	pos = 0;
	cr_expect_eq(fl_json_next_member("{}", 2, &pos, &m), 0);
	static const char *const bad[] = {"",	   "[]",      "{\"a\":1",  "{\"a\":1 \"b\":2}",
					  "{a:1}", "{\"a\"}", "{\"a\":1,}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		pos = 0;
		while ((rc = fl_json_next_member(bad[i], strlen(bad[i]), &pos, &m)) == 1)
			;
		cr_expect_eq(rc, -1, "%s", bad[i]);
	}
}
